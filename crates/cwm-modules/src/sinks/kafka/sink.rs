//! The Kafka producer client of a `kafka` connection, and the sink that produces through it.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::config::Resolved;
use crate::connection::{Client, Connection};
use crate::sink::{Event, Payload, Sink, SinkError};

/// How long closing a client waits for messages still queued.
pub(crate) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One librdkafka producer per `kafka` connection, shared by every webhook naming it.
pub struct KafkaClient {
    name: String,
    /// Taken out by `close` (and on drop) so that the blocking flush and teardown of librdkafka
    /// run on a blocking thread.
    producer: ArcSwapOption<FutureProducer>,
}

impl KafkaClient {
    pub(crate) fn new(name: &str, producer: FutureProducer) -> Self {
        Self {
            name: name.to_owned(),
            producer: ArcSwapOption::from_pointee(producer),
        }
    }

    fn producer(&self) -> Result<Arc<FutureProducer>, SinkError> {
        self.producer.load_full().ok_or_else(|| {
            SinkError::Unavailable(format!(
                "the Kafka producer of connection '{}' is closed",
                self.name
            ))
        })
    }
}

#[async_trait]
impl Client for KafkaClient {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    /// Wait (at most [`CLOSE_FLUSH_TIMEOUT`]) for queued messages, then destroy the producer.
    async fn close(&self) {
        let Some(producer) = self.producer.swap(None) else {
            return;
        };
        let name = self.name.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let result = producer.flush(CLOSE_FLUSH_TIMEOUT);
            drop(producer);
            result
        })
        .await;
        match flushed {
            Ok(Ok(())) => tracing::debug!(connection = %name, "Kafka producer closed"),
            Ok(Err(e)) => {
                tracing::warn!(connection = %name, error = %e, "Kafka producer closed before every message was sent");
            }
            Err(e) => {
                tracing::warn!(connection = %name, error = %e, "closing the Kafka producer failed")
            }
        }
    }
}

impl Drop for KafkaClient {
    /// librdkafka's teardown blocks (a short flush, joining its threads): keep it off the
    /// runtime's worker threads when there is a runtime.
    fn drop(&mut self) {
        if let Some(producer) = self.producer.swap(None)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(producer));
        }
    }
}

/// A `kafka` webhook: produces each event to its topic and waits for the broker's
/// acknowledgement.
pub struct KafkaSink {
    pub(crate) connection: Arc<Connection>,
    pub(crate) config: Resolved,
}

impl KafkaSink {
    async fn produce(&self, producer: &FutureProducer, event: &Event) -> Result<(), SinkError> {
        let value: Bytes = match &event.payload {
            Payload::Json(json) => json
                .to_json_bytes()
                .map_err(|e| SinkError::Rejected(format!("cannot serialize the payload: {e}")))?,
            Payload::Blob(bytes) => bytes.clone(),
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.config.topic).payload(&value[..]);
        if let Some(key) = &self.config.key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = self.config.partition {
            record = record.partition(partition);
        }
        if self.config.forward_headers && !event.headers.is_empty() {
            let headers = event.headers.iter().fold(
                OwnedHeaders::new_with_capacity(event.headers.len()),
                |headers, (name, value)| {
                    headers.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    })
                },
            );
            record = record.headers(headers);
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| classify(&e))?;
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(classify(&e)),
            Err(_) => Err(SinkError::Unavailable(
                "the Kafka producer was closed before the delivery report".into(),
            )),
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn module(&self) -> &'static str {
        "kafka"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let lease = self.connection.client::<KafkaClient>()?;
        let result = match lease.producer() {
            Ok(producer) => self.produce(&producer, event).await,
            Err(e) => Err(e),
        };
        Connection::report(&lease, &result);
        result
    }
}

/// Whether another attempt can help: a broker that is down, slow or changing leaders can;
/// a message too large, a missing or invalid topic or a refused authorization cannot.
pub(crate) fn classify(error: &KafkaError) -> SinkError {
    let Some(code) = error.rdkafka_error_code() else {
        return SinkError::Unavailable(error.to_string());
    };
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue => {
            SinkError::Timeout
        }
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::BadMessage
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::UnsupportedForMessageFormat
        | C::PolicyViolation
        | C::InvalidTopic
        | C::UnknownTopic
        | C::UnknownPartition
        | C::UnknownTopicOrPartition
        | C::InvalidRequiredAcks
        | C::InvalidArgument
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism => SinkError::Rejected(error.to_string()),
        _ => SinkError::Unavailable(error.to_string()),
    }
}
