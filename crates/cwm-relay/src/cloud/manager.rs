//! Channels, connections, dispatch and in-flight tracking.
//!
//! API CONTRACT (stubs: bodies to be written). Signatures here are what `cwm-http` builds on;
//! change them only together with it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Buffer, BufferError, Envelope};
use crate::protocol::{AckStatus, WebhookMessage};

/// Process-wide settings (fixed upstream; configurable here for tests).
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// WebSocket/SSE heartbeat interval (30 s). WebSocket connections silent for three
    /// intervals are stale.
    pub heartbeat_interval: Duration,
    /// Largest JSON envelope accepted by publish (10 MiB).
    pub max_message_size: usize,
    /// How often stale connections are looked for (30 s).
    pub eviction_interval: Duration,
    /// An SSE connection that was sent nothing for this long is stale (86400 s).
    pub sse_idle_limit: Duration,
    /// A long-poll connection with no request for this long is stale (300 s).
    pub poll_idle_limit: Duration,
    /// Token required by the admin API; empty: the admin API answers 403.
    pub admin_token: String,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            max_message_size: 10 * 1024 * 1024,
            eviction_interval: Duration::from_secs(30),
            sse_idle_limit: Duration::from_secs(86_400),
            poll_idle_limit: Duration::from_secs(300),
            admin_token: String::new(),
        }
    }
}

/// A channel as a `webhook_connect` webhook declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel name.
    pub name: Arc<str>,
    /// The bare webhook id feeding it.
    pub webhook_id: Arc<str>,
    /// The configured channel token.
    pub token: String,
    /// Message TTL (86400 s).
    pub ttl: Duration,
    /// Per-queue depth limit (10000).
    pub max_queue_size: u64,
    /// Concurrent connections (10).
    pub max_connections: usize,
    /// Unacknowledged messages per WebSocket/SSE connection (100).
    pub max_in_flight: usize,
    /// How long a sent message may stay unacknowledged before it is requeued (30 s).
    pub ack_timeout: Duration,
}

/// The transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `GET /connect/stream/{channel}` upgraded.
    Websocket,
    /// `GET /connect/stream/{channel}/sse`.
    Sse,
    /// `GET /connect/stream/{channel}/poll`: one request is one connection.
    LongPoll,
}

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The transport.
    pub protocol: Protocol,
    /// `X-Connector-ID`, if sent.
    pub connector_id: Option<String>,
    /// The peer address.
    pub remote_ip: Option<IpAddr>,
    /// Long-poll only: the most messages this request takes (`max_messages`).
    pub max_messages: Option<usize>,
}

/// What a connection's transport must send next.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// One event (already counted in flight on this connection).
    Webhook(Arc<WebhookMessage>),
    /// Close the stream (WebSocket close code and reason; SSE and long-poll just end).
    Close {
        /// A `CLOSE_*` code of [`crate::protocol`].
        code: u16,
        /// Why.
        reason: &'static str,
    },
}

/// A live connection. Dropping it removes the connection: its in-flight messages are
/// requeued, and the channel's consumption stops if it was the last one.
pub struct Connection {
    _private: (),
}

impl Connection {
    /// The connection id (`wsc_…`, `sse_…`, `poll_…`).
    pub fn id(&self) -> &str {
        unimplemented!()
    }
    /// The channel.
    pub fn channel(&self) -> &str {
        unimplemented!()
    }
    /// The next thing to send; `None` once the manager has dropped the connection.
    pub async fn next(&mut self) -> Option<Outgoing> {
        unimplemented!()
    }
    /// The next thing to send if one is ready now.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        unimplemented!()
    }
    /// A WebSocket ack or nack of a message sent on this connection; ignored when the message
    /// is not in flight here.
    pub async fn acknowledge(&self, message_id: &str, status: AckStatus) {
        let _ = (message_id, status);
        unimplemented!()
    }
    /// The client sent a heartbeat (WebSocket liveness).
    pub fn heartbeat(&self) {
        unimplemented!()
    }
    /// Long-poll: the answer was sent. Keep the messages it carried ackable through
    /// `POST /connect/ack` for the channel's ack timeout; unacknowledged ones are requeued
    /// then. The connection stops counting toward `max_connections` now.
    pub fn finish_poll(self) {
        unimplemented!()
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No channel of that name is registered.
    #[error("channel '{0}' is not registered")]
    UnknownChannel(String),
    /// The envelope is larger than `max_message_size`.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The buffer refused it (queue full) or is unreachable.
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong, empty or expired token, or unknown channel (the two are not told apart).
    #[error("Invalid channel token")]
    InvalidToken,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The channel is not registered.
    #[error("Channel not found")]
    ChannelNotFound,
    /// The channel has `max_connections` connections.
    #[error("Max connections reached")]
    MaxConnections,
}

/// Why `POST /connect/ack` failed, in the order it checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No (live or lingering) connection of that id.
    #[error("Connection not found")]
    ConnectionNotFound,
    /// The token is not valid for the connection's channel.
    #[error("Invalid token")]
    InvalidToken,
    /// The message is not in flight on that connection.
    #[error("Message not in flight")]
    NotInFlight,
    /// The buffer failed.
    #[error("Failed to process acknowledgment")]
    Failed,
}

/// Why an operator's disconnect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// No connection of that id.
    #[error("Connection not found")]
    NotFound,
    /// It belongs to another channel.
    #[error("Connection not on this channel")]
    WrongChannel,
}

/// A rotated channel token.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The channel.
    pub channel: String,
    /// `ch_tok_` + 48 hex digits.
    pub new_token: String,
    /// Until when the previous token is still accepted (ISO-8601).
    pub old_token_expires_at: String,
    /// `Old token valid for N seconds grace period`.
    pub message: String,
}

/// Channels, connections and dispatch. Cheap to clone.
#[derive(Clone)]
pub struct ChannelManager {
    _private: (),
}

impl ChannelManager {
    /// A manager over `buffer`. Must be called inside a tokio runtime: it starts the
    /// eviction and ack-timeout tasks.
    pub fn new(buffer: Arc<dyn Buffer>, settings: ManagerSettings) -> Self {
        let _ = (buffer, settings);
        unimplemented!()
    }
    /// The process settings.
    pub fn settings(&self) -> &ManagerSettings {
        unimplemented!()
    }
    /// Register (or update) a channel from a webhook's config. Synchronous (config load):
    /// creating the queue in the buffer happens in the background, and again before the first
    /// publish. A token rotated through the admin API survives re-registration with the same
    /// configured token; a changed configured token replaces it.
    pub fn register(&self, spec: ChannelSpec) {
        let _ = spec;
        unimplemented!()
    }
    /// Buffer one event. `Ok` only once the buffer holds it. `payload` is the JSON body, or for
    /// a blob the base64 text with `blob = true`.
    pub async fn publish(
        &self,
        channel: &str,
        webhook_id: &str,
        headers: BTreeMap<String, String>,
        payload: serde_json::Value,
        blob: bool,
    ) -> Result<u64, PublishError> {
        let _ = (channel, webhook_id, headers, payload, blob);
        unimplemented!()
    }
    /// Check a channel token (constant-time, rotation grace included).
    pub fn authenticate(&self, channel: &str, token: &str) -> Result<(), AuthError> {
        let _ = (channel, token);
        unimplemented!()
    }
    /// Open a connection on an (authenticated) channel.
    pub fn connect(
        &self,
        channel: &str,
        request: ConnectRequest,
    ) -> Result<Connection, ConnectError> {
        let _ = (channel, request);
        unimplemented!()
    }
    /// `POST /connect/ack`.
    pub async fn ack(
        &self,
        connection_id: &str,
        token: &str,
        message_id: &str,
        status: AckStatus,
    ) -> Result<(), AckError> {
        let _ = (connection_id, token, message_id, status);
        unimplemented!()
    }
    /// Channel statistics in the Python shape (`ChannelStats`): `channel`, `messages_queued`,
    /// `messages_in_flight`, `messages_delivered`, `messages_expired`,
    /// `messages_dead_lettered`, `connected_clients`. `None`: no such channel.
    pub async fn stats(&self, channel: &str) -> Option<serde_json::Value> {
        let _ = channel;
        unimplemented!()
    }
    /// `GET /admin/webhook-connect/channels`.
    pub fn channels(&self) -> serde_json::Value {
        unimplemented!()
    }
    /// `GET /admin/webhook-connect/channels/{ch}`; `None`: no such channel.
    pub async fn channel_detail(&self, channel: &str) -> Option<serde_json::Value> {
        let _ = channel;
        unimplemented!()
    }
    /// Rotate a channel's token; `None`: no such channel.
    pub fn rotate_token(&self, channel: &str, grace: Duration) -> Option<Rotation> {
        let _ = (channel, grace);
        unimplemented!()
    }
    /// Close one connection (its socket or stream ends; its in-flight messages are requeued).
    pub fn disconnect(&self, channel: &str, connection_id: &str) -> Result<(), DisconnectError> {
        let _ = (channel, connection_id);
        unimplemented!()
    }
    /// Pending messages per webhook id of a channel; `None`: no such channel.
    pub async fn webhook_stats(&self, channel: &str) -> Option<BTreeMap<String, u64>> {
        let _ = channel;
        unimplemented!()
    }
    /// Dead letters of a channel, newest first, not consumed; `Ok(None)`: no such channel.
    pub async fn dead_letters(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, BufferError> {
        let _ = (channel, limit);
        unimplemented!()
    }
    /// `GET /admin/webhook-connect/health`: `status`, `buffer`, `channels_count`,
    /// `connections_count`, `timestamp`.
    pub async fn health(&self) -> serde_json::Value {
        unimplemented!()
    }
    /// `GET /admin/webhook-connect/overview`.
    pub async fn overview(&self) -> serde_json::Value {
        unimplemented!()
    }
    /// Stop: close every connection (their in-flight messages are requeued).
    pub async fn shutdown(&self) {
        unimplemented!()
    }
}
