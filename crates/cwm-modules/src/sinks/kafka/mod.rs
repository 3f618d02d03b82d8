//! `kafka`: produce each event to a Kafka topic and answer once the broker acknowledged it.
//!
//! ```json
//! {"events": {"module": "kafka", "connection": "kafka_local",
//!             "module-config": {"topic": "webhook_events", "key": "event_key",
//!                               "partition": 0, "forward_headers": true}}}
//! ```
//!
//! `module-config`:
//! - `topic` (required; the webhook's top-level `topic` key is used when `module-config` has
//!   none): trimmed, 2 to 249 characters of letters, digits, `_`, `-` and `.`, without `..` or
//!   `--`, and neither one of the Kafka command words (`create`, `delete`, `describe`, `list`,
//!   `alter`, `config`, `produce`, `consume`, `console-producer`, `console-consumer`,
//!   `kafka-topics`, `kafka-configs`) nor starting with one followed by `.`, `_` or `-`
//!   (case-insensitive). A bad topic rejects the webhook at load.
//! - `key`: a static message key. A number or boolean is written as the Python gateway's `str()`
//!   writes it (`1.5`, `True`).
//! - `partition`: a fixed partition (a non-negative integer); otherwise librdkafka's partitioner
//!   chooses.
//! - `forward_headers` (default false): every request header (lower-case name) becomes a Kafka
//!   header of the message.
//!
//! The message value is the JSON payload's text as received (or the cleaned document when
//! credential cleanup changed it). A `data_type: blob` webhook sends the request body's raw
//! bytes (the Python gateway failed on blob payloads).
//!
//! The webhook must name a connection of type `kafka` (`connections.json`):
//!
//! ```json
//! {"kafka_local": {"type": "kafka", "bootstrap_servers": "k1:9092,k2:9092",
//!                  "security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
//!                  "sasl.username": "u", "sasl.password": "{$KAFKA_PASSWORD}"}}
//! ```
//!
//! - `bootstrap_servers` (default `localhost:9092`): comma-separated `host:port`, or a list.
//! - `acks` and every key whose name contains a dot are passed to librdkafka as producer
//!   properties (numbers and booleans as their text): `security.protocol`, `compression.type`,
//!   `linger.ms`, ... A property librdkafka does not know, or a bad value, fails the
//!   connection's client (shown by `/admin/config-status`; deliveries through it fail with a
//!   retryable error).
//! - Defaults, unless set: `acks=1` and `linger.ms=0` (as the Python gateway's producer: every
//!   request waits for its acknowledgement, so holding messages back for batches only adds
//!   latency; messages queued while a request is in flight still share the next one),
//!   `message.timeout.ms=30000`.
//! - `type`, `host` and `port` are not used; other keys (such as the Python gateway's
//!   `security_protocol` or `sasl_username`, which its producer never read) are ignored, with a
//!   warning in the log.
//!
//! One producer serves every webhook of a connection. A delivery succeeds once the partition
//! leader acknowledged the message (per `acks`). A broker that is down or slow, a full producer
//! queue or a leader election fail it with a retryable error (the sender gets 503); a message too
//! large, a topic or partition the cluster does not have, or an authorization failure fail it for
//! good. When the connection changes or the process exits, its producer is flushed (at most 5 s)
//! and closed.

mod config;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use rdkafka::producer::FutureProducer;

pub use config::{KafkaSinkConfig, validate_topic};
pub use sink::{KafkaClient, KafkaSink};

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};

/// Builds `kafka` sinks.
#[derive(Debug)]
pub struct KafkaBuilder;

impl SinkBuilder for KafkaBuilder {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn connection_types(&self) -> &'static [&'static str] {
        &["kafka"]
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let connection = cx.require_connection()?;
        let config = KafkaSinkConfig::resolve(cx)?;
        // The registry's slot for that name (the same `Connection`, shared).
        let connection = cx.modules.connections().get(connection.name());
        Ok(Arc::new(KafkaSink { connection, config }))
    }
}

/// The client of a `kafka` connection: one librdkafka producer. Creating it does not block; it
/// connects to the brokers in the background.
pub(crate) fn client(
    name: &str,
    config: &cwm_config::ConnectionConfig,
    _deps: crate::connection::ClientDeps<'_>,
) -> Result<Arc<dyn crate::connection::Client>, String> {
    let (client_config, ignored) = config::producer_config(config)?;
    if !ignored.is_empty() {
        tracing::warn!(
            connection = name,
            keys = ?ignored,
            "kafka connection keys ignored (librdkafka properties contain a dot, e.g. 'security.protocol')"
        );
    }
    let producer: FutureProducer = client_config
        .create()
        .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
    Ok(Arc::new(KafkaClient::new(name, producer)))
}
