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
