//! The RabbitMQ buffer: topic exchange, per-webhook queues and dead-letter queues.
//!
//! STUB: to be written.

use std::time::Duration;

use async_trait::async_trait;

use super::{Buffer, BufferError, Delivery, DeliveryTag, Envelope, QueueKey, QueueSettings};

/// Queues in this process's memory. For a single receiver and for `make run`; everything
/// buffered is lost when the process stops.
pub struct RabbitBuffer {}

impl RabbitBuffer {
    /// A buffer on the broker at `url`; connects lazily (a malformed URL is an error now).
    pub fn new(url: &str) -> Result<Self, BufferError> {
        let _ = url;
        unimplemented!()
    }
}

#[async_trait]
impl Buffer for RabbitBuffer {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }
    async fn ensure_queue(
        &self,
        _key: &QueueKey,
        _settings: QueueSettings,
    ) -> Result<(), BufferError> {
        unimplemented!()
    }
    async fn push(
        &self,
        _key: &QueueKey,
        _settings: QueueSettings,
        _envelope: &Envelope,
    ) -> Result<(), BufferError> {
        unimplemented!()
    }
    async fn depth(&self, _key: &QueueKey) -> Result<u64, BufferError> {
        unimplemented!()
    }
    async fn fetch(
        &self,
        _queues: &[QueueKey],
        _max: usize,
        _wait: Duration,
    ) -> Result<Vec<Delivery>, BufferError> {
        unimplemented!()
    }
    async fn ack(&self, _tag: &DeliveryTag) -> Result<(), BufferError> {
        unimplemented!()
    }
    async fn nack(&self, _tag: &DeliveryTag, _retry: bool) -> Result<(), BufferError> {
        unimplemented!()
    }
    async fn release(&self, _queues: &[QueueKey]) {
        unimplemented!()
    }
    async fn dead_letters(
        &self,
        _queues: &[QueueKey],
        _limit: usize,
    ) -> Result<Vec<Envelope>, BufferError> {
        unimplemented!()
    }
    async fn health(&self) -> bool {
        true
    }
}
