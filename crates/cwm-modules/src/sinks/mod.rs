//! The sinks this crate ships, and the one list that registers them.
//!
//! Adding a sink: a folder here (`mod.rs` with the builder, `config.rs` with its typed
//! `module-config`, `sink.rs`, `tests.rs`), one line in [`builtin`], and, when it talks to a
//! configured connection, one line in [`clients`] for the connection type's client.

use std::sync::Arc;

use crate::connection::ClientFactory;
use crate::context::ModuleContext;
use crate::sink::SinkBuilder;

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod http_webhook;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod redis;
pub mod redis_publish;
pub mod redis_rq;
pub mod save_to_disk;

/// Every sink of this build, by module name.
pub(crate) fn builtin() -> Vec<Arc<dyn SinkBuilder>> {
    vec![
        Arc::new(log::LogBuilder),
        Arc::new(save_to_disk::SaveToDiskBuilder),
        Arc::new(http_webhook::HttpWebhookBuilder),
        #[cfg(feature = "kafka")]
        Arc::new(kafka::KafkaBuilder),
        Arc::new(redis_rq::RedisRqBuilder),
        Arc::new(redis_publish::RedisPublishBuilder),
        #[cfg(feature = "clickhouse")]
        Arc::new(clickhouse::ClickHouseBuilder),
    ]
}

/// The client of each connection type, by `type`.
pub(crate) fn clients() -> Vec<(&'static str, ClientFactory)> {
    vec![
        #[cfg(feature = "kafka")]
        ("kafka", kafka::client as ClientFactory),
        ("redis-rq", redis::client as ClientFactory),
        ("redis", redis::client as ClientFactory),
        ("redis-publish", redis::client as ClientFactory),
        #[cfg(feature = "clickhouse")]
        ("clickhouse", clickhouse::client as ClientFactory),
    ]
}

impl ModuleContext {
    /// A context whose connection registry builds the client of every connection type this build
    /// ships (the `clients` list above). Build one per process and clone it.
    pub fn new() -> Self {
        Self::with_client_factories(clients())
    }
}
