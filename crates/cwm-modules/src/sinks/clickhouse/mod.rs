//! `clickhouse`: one row per event into a ClickHouse table, over ClickHouse's HTTP interface,
//! in batches.
//!
//! # Connection (`type: "clickhouse"`)
//!
//! `host` (required), `port`, `http_port`, `secure` (or `https`), `database` (default
//! `default`), `user` (default `default`), `password` (empty: none is sent). Credentials go in
//! the `X-ClickHouse-User` / `X-ClickHouse-Key` headers.
//!
//! The Python gateway spoke ClickHouse's native protocol on `port` (default 9000); this sink
//! speaks HTTP. The HTTP port is `http_port` when given; otherwise `port`, unless that is a
//! native-protocol port (9000, or 9440 for TLS), in which case ClickHouse's HTTP default is used:
//! 8123, or 8443 when `secure`. So a Python-gateway connection with `port: 9000` reaches the
//! same server's HTTP interface on 8123 unchanged; set `http_port` when it listens elsewhere.
//!
//! The connection has one client (see [`ClickHouseClient`]); it does no I/O until the first
//! delivery.
//!
//! # `module-config`
//!
//! - `table` (default `webhook_logs`): surrounding whitespace is stripped; at most 255
//!   characters of `[A-Za-z0-9_]`, without `..`, `--`, `xp_` or `sp_`, and not one of the words
//!   `select insert update delete drop create alter truncate exec execute union script`.
//!   The Python gateway refused names that merely *contain* one of those words (so
//!   `created_events` failed there); here the name is always backquoted in the SQL, so only the
//!   bare words are refused.
//! - `include_headers` (default true): the `headers` column holds the request headers as a JSON
//!   object, otherwise `{}`.
//! - `include_timestamp`: accepted for the Python gateway's configs; every row has a timestamp.
//! - `batch_size` (default 1000, 1..100000) and `flush_interval_ms` (default 200, 1..10000):
//!   see Batching.
//!
//! # Table and rows
//!
//! Before its first INSERT, the client creates the table if it does not exist (once per client
//! and table; after a failure, the next batch tries again and the failed batch's deliveries fail
//! retryably):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `db`.`table` (id String, webhook_id String, timestamp DateTime,
//!   payload String, headers String, created_at DateTime DEFAULT now())
//!   ENGINE = MergeTree() PARTITION BY toYYYYMM(timestamp) ORDER BY (webhook_id, timestamp)
//! ```
//!
//! Each event becomes a row: `id` a random UUID, `webhook_id` the webhook id (`namespace/id` on
//! the namespaced route), `timestamp` the time of delivery in UTC as `YYYY-MM-DD hh:mm:ss`
//! (ClickHouse reads it in the server's time zone, as it read the Python gateway's naive
//! datetimes), `payload` the JSON text of the body as received (a `blob` body is stored
//! base64-encoded, so no byte is lost), `headers` as above. Rows are sent as
//! `INSERT INTO db.table (id, webhook_id, timestamp, payload, headers) FORMAT JSONEachRow`.
//!
//! # Batching and the delivery promise
//!
//! A delivery queues its row and waits for the result of the INSERT that carries it: the sender
//! gets 200 only once ClickHouse has accepted the row. Each table of a connection has one queue
//! and one writer task (started by the first delivery), shared by every webhook writing that
//! table through that connection; the first webhook to use it sets its `batch_size` and
//! `flush_interval_ms`. A batch is sent when `batch_size` rows wait or `flush_interval_ms` after
//! its first row was queued, whichever comes first, so a row waits at most about
//! `flush_interval_ms` plus the INSERTs ahead of it. A row whose delivery gave up (timed out)
//! before its batch was sent is dropped. At most 10 × `batch_size` rows (and 256 MiB) wait per
//! table; beyond that a delivery fails at once, retryably.
//!
//! Errors: refused connections, timeouts (30 s per request), 5xx answers without a ClickHouse
//! error code, and transient ClickHouse errors (overload, limits, read-only tables) are
//! retryable; other ClickHouse errors (unknown column, bad data, authentication, a missing
//! database) and 4xx answers reject the event. Unlike the Python gateway, insert errors are
//! never swallowed.
//!
//! When the connection's config changes or the process exits, the client writes what is queued
//! and stops its tasks.

pub(crate) mod analytics;
mod batch;
/// `module-config` and connection settings.
pub mod config;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use cwm_config::ConnectionConfig;

use crate::connection::{Client, ClientDeps};
use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};

pub use config::{ClickHouseConfig, Endpoint, http_port};
pub use sink::{ClickHouseClient, ClickHouseSink};

/// Builds `clickhouse` sinks.
#[derive(Debug)]
pub struct ClickHouseBuilder;

impl SinkBuilder for ClickHouseBuilder {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    fn connection_types(&self) -> &'static [&'static str] {
        &["clickhouse"]
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let config: ClickHouseConfig = cx.module_config()?;
        let settings = config.settings()?;
        let name = cx.require_connection()?.name();
        let connection = cx.modules.connections().get(name);
        Ok(Arc::new(ClickHouseSink {
            connection,
            settings,
        }))
    }
}

/// The client of a `clickhouse` connection. Does no I/O.
pub(crate) fn client(
    name: &str,
    config: &ConnectionConfig,
    deps: ClientDeps<'_>,
) -> Result<Arc<dyn Client>, String> {
    let endpoint =
        Endpoint::from_config(config).map_err(|e| format!("connection '{name}': {e}"))?;
    let http = deps.http_client()?;
    let client =
        ClickHouseClient::new(endpoint, http).map_err(|e| format!("connection '{name}': {e}"))?;
    Ok(Arc::new(client))
}
