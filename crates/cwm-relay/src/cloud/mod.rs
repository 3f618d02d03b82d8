//! The receiver's half of Webhook Connect: channels, buffers, dispatch and the
//! `webhook_connect` sink.
//!
//! - [`Buffer`]: where events wait for a connector, one queue per (channel, webhook id).
//!   [`memory`](MemoryBuffer), [`redis`](RedisBuffer) and [`rabbitmq`](RabbitBuffer) implement it.
//! - [`ChannelManager`]: channels (registered eagerly at config load by the sink builder),
//!   connections, dispatch to the least-loaded connection, in-flight tracking, ack timeouts,
//!   stale-connection eviction, token rotation, and the figures the admin API shows.
//! - [`WebhookConnectSink`]: the `webhook_connect` module; a webhook's 200 means the event is in
//!   the buffer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::protocol::{PayloadEncoding, WebhookMessage};

#[cfg(test)]
mod conformance;
mod manager;
mod memory;
mod rabbitmq;
mod redis;
mod select;
mod sink;

pub use manager::{
    AckError, AuthError, ChannelManager, ChannelSpec, ConnectError, ConnectRequest, Connection,
    DisconnectError, ManagerSettings, Outgoing, Protocol, PublishError, Rotation,
};
pub use memory::MemoryBuffer;
pub use rabbitmq::RabbitBuffer;
pub use redis::RedisBuffer;
pub use select::{BufferChoice, SelectError, open_buffer};
pub use sink::WebhookConnectSink;

/// Redeliveries after dispatch failures before a message is dead-lettered.
pub const MAX_REDELIVERY_ATTEMPTS: u32 = 10;
/// Wait before a message that could not be dispatched is offered again.
pub const REQUEUE_DELAY: Duration = Duration::from_millis(500);

/// One queue: a (channel, webhook id) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// The channel.
    pub channel: Arc<str>,
    /// The bare webhook id.
    pub webhook_id: Arc<str>,
}

impl QueueKey {
    /// A key from its parts.
    pub fn new(channel: &str, webhook_id: &str) -> Self {
        Self {
            channel: channel.into(),
            webhook_id: webhook_id.into(),
        }
    }
}

/// Where a message is in its life, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Waiting for a connector (how every message is stored).
    #[default]
    Pending,
    /// Sent to a connection, not yet acknowledged.
    InFlight,
    /// Acknowledged.
    Delivered,
    /// Its TTL passed before delivery.
    Expired,
    /// Refused by a connector (nack without retry), failed too often, or expired (RabbitMQ).
    DeadLettered,
}

/// A message as stored in a buffer and listed by the dead-letters API, in the Python gateway's
/// shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `msg_` + 16 hex digits.
    pub message_id: String,
    /// The channel.
    pub channel: String,
    /// The bare webhook id.
    pub webhook_id: String,
    /// When the receiver accepted the request (ISO-8601).
    pub timestamp: String,
    /// When the message stops being delivered (ISO-8601).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// `{"source": "webhook_connect_module"}`.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Request headers, lower-case names, credentials masked.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON, or base64 text with `payload_encoding`.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Set for blob payloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<PayloadEncoding>,
    /// Per-channel sequence number.
    #[serde(default)]
    pub sequence: u64,
    /// Times sent to a connection.
    #[serde(default)]
    pub delivery_count: u32,
    /// Stored as `pending`.
    #[serde(default)]
    pub state: MessageState,
}

impl Envelope {
    /// What a connector receives.
    pub fn to_wire(&self) -> WebhookMessage {
        WebhookMessage {
            message_id: self.message_id.clone(),
            sequence: self.sequence,
            webhook_id: Some(self.webhook_id.clone()),
            timestamp: self.timestamp.clone(),
            headers: self.headers.clone(),
            payload: self.payload.clone(),
            payload_encoding: self.payload_encoding,
        }
    }

    /// Whether the TTL has passed at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at
            .as_deref()
            .and_then(crate::protocol::parse_timestamp)
            .is_some_and(|at| at < now)
    }
}

/// A buffer's handle on one fetched message, for ack and nack. Opaque outside the buffer that
/// made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    /// The queue the message came from.
    pub queue: QueueKey,
    /// The buffer's id of the entry (Redis stream id, AMQP delivery tag, memory sequence).
    pub id: String,
}

/// One message handed out by [`Buffer::fetch`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// For ack and nack.
    pub tag: DeliveryTag,
    /// The stored message.
    pub envelope: Envelope,
}

/// Settings of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Message time to live.
    pub ttl: Duration,
    /// Messages a queue may hold; a push beyond it fails with [`BufferError::QueueFull`].
    pub max_queue_size: u64,
    /// How long a fetched message may stay unacknowledged before any consumer (another
    /// process too) may take it again.
    pub ack_timeout: Duration,
}

/// Why a buffer operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// The queue holds `max_queue_size` messages.
    #[error("queue '{channel}/{webhook_id}' is full ({limit} messages)")]
    QueueFull {
        /// The channel.
        channel: String,
        /// The webhook id.
        webhook_id: String,
        /// Its limit.
        limit: u64,
    },
    /// The broker cannot be reached or answered an error.
    #[error("buffer unavailable: {0}")]
    Unavailable(String),
    /// The tag does not name a message this buffer handed out (already acked, or stale).
    #[error("unknown delivery")]
    UnknownDelivery,
}

/// Where events wait for a connector: one FIFO queue per (channel, webhook id), at-least-once.
///
/// A fetched message stays in the buffer until [`ack`](Buffer::ack); [`nack`](Buffer::nack)
/// with retry, [`release`](Buffer::release), or its `ack_timeout` passing make it deliverable
/// again (possibly to another process sharing the broker); nack without retry moves it to the
/// dead letters.
#[async_trait]
pub trait Buffer: Send + Sync + 'static {
    /// `memory`, `redis` or `rabbitmq`.
    fn kind(&self) -> &'static str;
    /// Create the queue (and its dead-letter queue) if missing. Idempotent; called at
    /// registration and before the first push to a queue.
    async fn ensure_queue(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
    ) -> Result<(), BufferError>;
    /// Append a message, unless the queue already holds `settings.max_queue_size`. Returns once
    /// the broker has it (a sender's 200 rests on this).
    async fn push(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
        envelope: &Envelope,
    ) -> Result<(), BufferError>;
    /// Messages waiting in the queue (not yet fetched or fetched and not acknowledged).
    async fn depth(&self, key: &QueueKey) -> Result<u64, BufferError>;
    /// Up to `max` deliverable messages from these (distinct) queues, oldest first per queue; waits up to
    /// `wait` when there is none. Expired messages are not returned (they are dropped or
    /// dead-lettered as the backend does, and counted by [`Buffer::expired_count`]).
    async fn fetch(
        &self,
        queues: &[QueueKey],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BufferError>;
    /// Delivered: remove the message.
    async fn ack(&self, tag: &DeliveryTag) -> Result<(), BufferError>;
    /// Not delivered: `retry` makes it deliverable again (after [`REQUEUE_DELAY`] at most),
    /// otherwise it goes to the dead letters.
    async fn nack(&self, tag: &DeliveryTag, retry: bool) -> Result<(), BufferError>;
    /// Nobody consumes these queues any more: fetched, unacknowledged messages become
    /// deliverable again (the manager nacks what it knows of first; this covers the rest).
    async fn release(&self, queues: &[QueueKey]);
    /// Dead letters of these queues, newest first, without consuming them.
    async fn dead_letters(
        &self,
        queues: &[QueueKey],
        limit: usize,
    ) -> Result<Vec<Envelope>, BufferError>;
    /// Messages of `channel` that expired in this process's buffer so far (the
    /// `messages_expired` figure).
    fn expired_count(&self, channel: &str) -> u64 {
        let _ = channel;
        0
    }
    /// Whether the broker answers.
    async fn health(&self) -> bool;
}
