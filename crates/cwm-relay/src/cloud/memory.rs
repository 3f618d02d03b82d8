//! The in-process buffer: one instance only, lost on restart.
//!
//! STUB: to be written.

use std::time::Duration;

use async_trait::async_trait;

use super::{Buffer, BufferError, Delivery, DeliveryTag, Envelope, QueueKey, QueueSettings};

/// Queues in this process's memory. For a single receiver and for `make run`; everything
/// buffered is lost when the process stops.
#[derive(Default)]
pub struct MemoryBuffer {}

impl MemoryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Buffer for MemoryBuffer {
    fn kind(&self) -> &'static str {
        "memory"
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
