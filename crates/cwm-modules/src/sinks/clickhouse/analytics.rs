//! The ClickHouse side of analytics logging ([`crate::analytics`]): the named connection's
//! client, the tables and the rows of the `clickhouse` sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::sink::{ClickHouseClient, create_table_sql, quote_ident, row};
use crate::analytics::{Destination, LOGS_TABLE, STATS_TABLE};
use crate::connection::Connection;
use crate::context::ModuleContext;
use crate::sink::{Event, SinkError};

/// The analytics destination of the connection `name`, followed live in `modules`' registry.
pub(crate) fn destination(modules: &ModuleContext, name: &str) -> Arc<dyn Destination> {
    Arc::new(ClickHouseDestination {
        connection: modules.connections().get(name),
        name: name.to_owned(),
        tables_for: AtomicU64::new(0),
    })
}

struct ClickHouseDestination {
    connection: Arc<Connection>,
    name: String,
    /// The connection version whose client created the tables (0: none yet).
    tables_for: AtomicU64,
}

/// `webhook_stats` as the Python gateway created it, in the order 18.16 accepts.
pub(crate) fn stats_table_sql(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (id String, webhook_id String, timestamp DateTime, \
         total UInt64, minute UInt64, minute_5 UInt64, minute_15 UInt64, minute_30 UInt64, \
         hour UInt64, day UInt64, week UInt64, month UInt64, created_at DateTime DEFAULT now()) \
         ENGINE = MergeTree() PARTITION BY toYYYYMM(timestamp) ORDER BY (webhook_id, timestamp)",
        quote_ident(database),
        quote_ident(STATS_TABLE)
    )
}

/// `webhook_stats` rows computed from `webhook_logs` in one statement: per webhook id, the total
/// and the counts over the last 1, 5, 15 and 30 minutes, hour, day, 7 and 30 days (the Python
/// analytics processor's columns), every row with the same `now()`.
pub(crate) fn stats_refresh_sql(database: &str) -> String {
    let db = quote_ident(database);
    let since: Vec<String> = [
        "1 MINUTE",
        "5 MINUTE",
        "15 MINUTE",
        "30 MINUTE",
        "1 HOUR",
        "1 DAY",
        "7 DAY",
        "30 DAY",
    ]
    .iter()
    .map(|interval| format!("countIf(timestamp > now() - INTERVAL {interval})"))
    .collect();
    format!(
        "INSERT INTO {db}.{stats} (id, webhook_id, timestamp, total, minute, minute_5, \
         minute_15, minute_30, hour, day, week, month) \
         SELECT toString(generateUUIDv4()), webhook_id, now(), count(), {} \
         FROM {db}.{logs} GROUP BY webhook_id",
        since.join(", "),
        stats = quote_ident(STATS_TABLE),
        logs = quote_ident(LOGS_TABLE),
    )
}

/// Fill `webhook_stats` once through the connection `name` of `modules` (see
/// [`crate::analytics::refresh_stats`]).
pub(crate) async fn refresh_stats(modules: &ModuleContext, name: &str) -> Result<(), String> {
    let dest = ClickHouseDestination {
        connection: modules.connections().get(name),
        name: name.to_owned(),
        tables_for: AtomicU64::new(0),
    };
    dest.check()?;
    let lease = dest
        .connection
        .client::<ClickHouseClient>()
        .map_err(|e| e.to_string())?;
    let db = lease.endpoint().database.clone();
    let mut result = Ok(());
    for sql in [
        create_table_sql(&db, LOGS_TABLE),
        stats_table_sql(&db),
        stats_refresh_sql(&db),
    ] {
        result = lease.execute(sql).await;
        if result.is_err() {
            break;
        }
    }
    Connection::report(&lease, &result);
    result.map_err(|e| e.to_string())
}

impl ClickHouseDestination {
    async fn write_with(
        &self,
        client: &ClickHouseClient,
        version: u64,
        body: Bytes,
    ) -> Result<(), SinkError> {
        if self.tables_for.load(Ordering::Acquire) != version {
            let db = &client.endpoint().database;
            for ddl in [create_table_sql(db, LOGS_TABLE), stats_table_sql(db)] {
                client.execute(ddl).await.map_err(|e| match e {
                    SinkError::Timeout => SinkError::Timeout,
                    e => SinkError::Unavailable(format!("cannot create the analytics tables: {e}")),
                })?;
            }
            self.tables_for.store(version, Ordering::Release);
        }
        client.insert_rows(LOGS_TABLE, body).await
    }
}

#[async_trait]
impl Destination for ClickHouseDestination {
    fn check(&self) -> Result<String, String> {
        match self.connection.config() {
            None => Err(format!("connection '{}' is not configured", self.name)),
            Some(c) if c.kind != "clickhouse" => Err(format!(
                "connection '{}' has type '{}', not 'clickhouse'",
                self.name, c.kind
            )),
            Some(_) => {
                let lease = self
                    .connection
                    .client::<ClickHouseClient>()
                    .map_err(|e| e.to_string())?;
                let e = lease.endpoint();
                Ok(format!(
                    "{}://{}:{} database {}",
                    e.scheme, e.host, e.port, e.database
                ))
            }
        }
    }

    fn encode(&self, event: &Event) -> Result<Bytes, String> {
        row(event, true, event.received_at).map_err(|e| e.to_string())
    }

    async fn write(&self, body: Bytes, _rows: usize) -> Result<(), String> {
        let lease = self
            .connection
            .client::<ClickHouseClient>()
            .map_err(|e| e.to_string())?;
        let result = self.write_with(&lease, lease.version(), body).await;
        Connection::report(&lease, &result);
        result.map_err(|e| e.to_string())
    }
}
