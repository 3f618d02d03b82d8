//! Channels, connections, dispatch and in-flight tracking.
//!
//! State lives in one small map behind a `std` mutex (never held across an await):
//!
//! - channels, registered eagerly at config load (several webhook ids may feed one channel);
//! - connections, each with its in-flight set (message id → buffer tag and ack deadline).
//!   A finished long-poll connection lingers, not counted as a connection, until its in-flight
//!   messages are acknowledged or time out.
//!
//! A per-channel pump task runs while the channel has connections (or lingering in-flight
//! messages): it fetches from the buffer only what the connections can take and hands each
//! message to the least-loaded connection (round-robin among equals). When the channel has
//! nobody left, the pump ends and releases the channel's queues in the buffer. One maintenance
//! task requeues messages whose ack timeout passed (every second) and evicts stale connections
//! (every `eviction_interval`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{
    Buffer, BufferError, Delivery, DeliveryTag, Envelope, MAX_REDELIVERY_ATTEMPTS, MessageState,
    QueueKey, QueueSettings,
};
use crate::protocol::{self, AckStatus, CLOSE_EVICTED, PayloadEncoding, WebhookMessage};

/// How long one buffer fetch of the pump waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Period of the ack-timeout sweep, and the longest a pump sleeps without looking again.
const TICK: Duration = Duration::from_secs(1);
/// WebSocket close code sent to every connection at shutdown (going away).
const CLOSE_GOING_AWAY: u16 = 1001;
/// `max_messages` of a long-poll request that gave none.
const DEFAULT_POLL_MESSAGES: usize = 10;

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
    id: String,
    channel: Arc<str>,
    rx: mpsc::UnboundedReceiver<Outgoing>,
    inner: Arc<Inner>,
    /// Set by `finish_poll`: the drop must not remove the (lingering) connection.
    finished: bool,
}

impl Connection {
    /// The connection id (`wsc_…`, `sse_…`, `poll_…`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }
    /// The next thing to send; `None` once the manager has dropped the connection.
    pub async fn next(&mut self) -> Option<Outgoing> {
        self.rx.recv().await
    }
    /// The next thing to send if one is ready now.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        self.rx.try_recv().ok()
    }
    /// A WebSocket ack or nack of a message sent on this connection; ignored when the message
    /// is not in flight here.
    ///
    /// The message leaves this connection's in-flight set at once; the buffer's round trip runs
    /// in a task of its own, so a connector's acks are not read one round trip at a time.
    pub async fn acknowledge(&self, message_id: &str, status: AckStatus) {
        let taken = match self.inner.take_in_flight(&self.id, None, message_id) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::debug!(connection = %self.id, message_id, error = %e, "acknowledgment ignored");
                return;
            }
        };
        let inner = self.inner.clone();
        let id = self.id.clone();
        let message_id = message_id.to_owned();
        tokio::spawn(async move {
            let (tag, channel) = taken;
            let _ = inner
                .complete(&id, &message_id, tag, &channel, status)
                .await;
        });
    }
    /// The client sent a heartbeat (WebSocket liveness).
    pub fn heartbeat(&self) {
        let mut st = self.inner.lock();
        if let Some(c) = st.conns.get_mut(&self.id) {
            c.last_heartbeat = Instant::now();
            c.last_heartbeat_at = Some(protocol::now());
        }
    }
    /// Long-poll: the answer was sent. Keep the messages it carried ackable through
    /// `POST /connect/ack` for the channel's ack timeout; unacknowledged ones are requeued
    /// then. The connection stops counting toward `max_connections` now.
    ///
    /// Messages dispatched to this connection but not taken from it (by [`next`](Self::next)
    /// or [`try_next`](Self::try_next)) were not sent: they are requeued at once.
    pub fn finish_poll(mut self) {
        self.finished = true;
        let mut unsent = Vec::new();
        while let Ok(out) = self.rx.try_recv() {
            if let Outgoing::Webhook(m) = out {
                unsent.push(m.message_id.clone());
            }
        }
        self.inner.linger(&self.id, &unsent);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.remove_later(&self.id, None);
        }
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
    inner: Arc<Inner>,
}

impl ChannelManager {
    /// A manager over `buffer`. Must be called inside a tokio runtime: it starts the
    /// eviction and ack-timeout tasks.
    pub fn new(buffer: Arc<dyn Buffer>, settings: ManagerSettings) -> Self {
        let inner = Arc::new(Inner {
            buffer,
            settings,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(State::default()),
            next_connection: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        inner.runtime.spawn(maintenance(Arc::downgrade(&inner)));
        Self { inner }
    }
    /// The process settings.
    pub fn settings(&self) -> &ManagerSettings {
        &self.inner.settings
    }
    /// Register (or update) a channel from a webhook's config. Synchronous (config load):
    /// creating the queue in the buffer happens in the background, and again before the first
    /// publish. A token rotated through the admin API survives re-registration with the same
    /// configured token; a changed configured token replaces it.
    pub fn register(&self, spec: ChannelSpec) {
        let key = QueueKey {
            channel: spec.name.clone(),
            webhook_id: spec.webhook_id.clone(),
        };
        let settings = queue_settings(&spec);
        let now = protocol::now();
        {
            let mut st = self.inner.lock();
            match st.channels.get_mut(&spec.name) {
                Some(ch) => {
                    if spec.token != ch.configured_token {
                        ch.configured_token = spec.token.clone();
                        ch.token = spec.token.clone();
                        ch.old_token = None;
                    }
                    ch.webhook_ids.insert(spec.webhook_id.clone());
                    ch.updated_at = now;
                    ch.spec = spec;
                    ch.pump.wake.notify_one();
                }
                None => {
                    let ch = Channel::new(spec, now);
                    st.channels.insert(ch.spec.name.clone(), ch);
                }
            }
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner.runtime.spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            match inner.buffer.ensure_queue(&key, settings).await {
                Ok(()) => inner.mark_ensured(&key),
                Err(e) => tracing::warn!(
                    channel = %key.channel, webhook_id = %key.webhook_id, error = %e,
                    "could not create the webhook connect queue (retried at the first publish)"
                ),
            }
        });
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
        let unknown = || PublishError::UnknownChannel(channel.to_owned());
        let (key, settings, ensured, next_sequence) = {
            let mut st = self.inner.lock();
            let ch = st.channels.get_mut(channel).ok_or_else(unknown)?;
            let webhook: Arc<str> = match ch.webhook_ids.get(webhook_id) {
                Some(w) => w.clone(),
                None => {
                    let w: Arc<str> = webhook_id.into();
                    ch.webhook_ids.insert(w.clone());
                    ch.pump.wake.notify_one();
                    w
                }
            };
            let key = QueueKey {
                channel: ch.spec.name.clone(),
                webhook_id: webhook.clone(),
            };
            (
                key,
                queue_settings(&ch.spec),
                ch.ensured.contains(&webhook),
                ch.sequence + 1,
            )
        };
        if !ensured {
            self.inner.buffer.ensure_queue(&key, settings).await?;
            self.inner.mark_ensured(&key);
        }
        let received = SystemTime::now();
        let mut metadata = serde_json::Map::new();
        metadata.insert("source".into(), Value::from("webhook_connect_module"));
        let mut envelope = Envelope {
            message_id: protocol::new_message_id(),
            channel: channel.to_owned(),
            webhook_id: webhook_id.to_owned(),
            timestamp: protocol::timestamp(received),
            expires_at: Some(protocol::timestamp(received + settings.ttl)),
            metadata,
            headers,
            payload,
            payload_encoding: blob.then_some(PayloadEncoding::Base64),
            sequence: next_sequence,
            delivery_count: 0,
            state: MessageState::Pending,
        };
        let size = json_size(&envelope);
        let limit = self.inner.settings.max_message_size;
        if size > limit {
            return Err(PublishError::TooLarge { size, limit });
        }
        envelope.sequence = {
            let mut st = self.inner.lock();
            let ch = st.channels.get_mut(channel).ok_or_else(unknown)?;
            ch.sequence += 1;
            ch.sequence
        };
        self.inner.buffer.push(&key, settings, &envelope).await?;
        Ok(envelope.sequence)
    }
    /// Check a channel token (constant-time, rotation grace included).
    pub fn authenticate(&self, channel: &str, token: &str) -> Result<(), AuthError> {
        let st = self.inner.lock();
        match st.channels.get(channel) {
            Some(ch) if ch.accepts(token, Instant::now()) => Ok(()),
            _ => Err(AuthError::InvalidToken),
        }
    }
    /// Open a connection on an (authenticated) channel.
    pub fn connect(
        &self,
        channel: &str,
        request: ConnectRequest,
    ) -> Result<Connection, ConnectError> {
        let n = self.inner.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, name, start_pump) = {
            let mut guard = self.inner.lock();
            let State { channels, conns } = &mut *guard;
            let ch = channels
                .get_mut(channel)
                .ok_or(ConnectError::ChannelNotFound)?;
            if ch.active.len() >= ch.spec.max_connections {
                return Err(ConnectError::MaxConnections);
            }
            let connector_id = request
                .connector_id
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| match request.protocol {
                    Protocol::Websocket => format!("ws_{n}"),
                    Protocol::Sse => "sse_default".to_owned(),
                    Protocol::LongPoll => "poll_default".to_owned(),
                });
            let base = match request.protocol {
                Protocol::Websocket => format!("wsc_{n}_{ts}"),
                Protocol::Sse => format!("sse_{n}_{ts}"),
                Protocol::LongPoll => format!("poll_{connector_id}_{ts}"),
            };
            // Two polls of one connector within a second would share an id.
            let id = if conns.contains_key(&base) {
                format!("{base}_{n}")
            } else {
                base
            };
            let now = Instant::now();
            let connected_at = protocol::now();
            conns.insert(
                id.clone(),
                Conn {
                    channel: ch.spec.name.clone(),
                    protocol: request.protocol,
                    connector_id,
                    remote_ip: request.remote_ip,
                    tx: Some(tx),
                    in_flight: HashMap::new(),
                    poll_left: request.max_messages.unwrap_or(DEFAULT_POLL_MESSAGES),
                    lingering: false,
                    last_heartbeat: now,
                    last_heartbeat_at: (request.protocol == Protocol::Websocket)
                        .then(|| connected_at.clone()),
                    last_message: now,
                    last_message_at: None,
                    connected_at,
                    received: 0,
                    acked: 0,
                    nacked: 0,
                },
            );
            ch.active.push(id.clone());
            let start = if ch.pump_running {
                ch.pump.wake.notify_one();
                None
            } else {
                ch.pump_running = true;
                Some(ch.pump.clone())
            };
            (id, ch.spec.name.clone(), start)
        };
        if let Some(ctl) = start_pump {
            self.inner
                .runtime
                .spawn(pump(self.inner.clone(), name.clone(), ctl));
        }
        Ok(Connection {
            id,
            channel: name,
            rx,
            inner: self.inner.clone(),
            finished: false,
        })
    }
    /// `POST /connect/ack`.
    pub async fn ack(
        &self,
        connection_id: &str,
        token: &str,
        message_id: &str,
        status: AckStatus,
    ) -> Result<(), AckError> {
        self.inner
            .settle(connection_id, Some(token), message_id, status)
            .await
    }
    /// Channel statistics in the Python shape (`ChannelStats`): `channel`, `messages_queued`,
    /// `messages_in_flight`, `messages_delivered`, `messages_expired`,
    /// `messages_dead_lettered`, `connected_clients`. `None`: no such channel.
    pub async fn stats(&self, channel: &str) -> Option<serde_json::Value> {
        let snap = self.inner.snapshot(channel)?;
        let depths = self.inner.depths(&snap.queues).await;
        Some(self.inner.stats_json(&snap, &depths))
    }
    /// `GET /admin/webhook-connect/channels`.
    pub fn channels(&self) -> serde_json::Value {
        let st = self.inner.lock();
        Value::Array(
            st.channels
                .values()
                .map(|ch| {
                    json!({
                        "name": &*ch.spec.name,
                        "webhook_id": &*ch.spec.webhook_id,
                        "created_at": ch.created_at,
                        "ttl_seconds": seconds_json(ch.spec.ttl),
                        "max_queue_size": ch.spec.max_queue_size,
                        "max_connections": ch.spec.max_connections,
                        "connected_clients": ch.active.len(),
                    })
                })
                .collect(),
        )
    }
    /// `GET /admin/webhook-connect/channels/{ch}`; `None`: no such channel.
    pub async fn channel_detail(&self, channel: &str) -> Option<serde_json::Value> {
        let snap = self.inner.snapshot(channel)?;
        let depths = self.inner.depths(&snap.queues).await;
        let mut stats = self.inner.stats_json(&snap, &depths);
        let webhook_stats: serde_json::Map<String, Value> = snap
            .queues
            .iter()
            .zip(&depths)
            .map(|(k, d)| (k.webhook_id.to_string(), Value::from(*d)))
            .collect();
        if let Some(o) = stats.as_object_mut() {
            o.insert("webhook_stats".into(), Value::Object(webhook_stats));
        }
        Some(json!({
            "name": snap.config["name"],
            "webhook_id": snap.config["webhook_id"],
            "created_at": snap.config["created_at"],
            "config": snap.config,
            "stats": stats,
            "connected_clients": snap.connections,
        }))
    }
    /// Rotate a channel's token; `None`: no such channel.
    pub fn rotate_token(&self, channel: &str, grace: Duration) -> Option<Rotation> {
        let new_token = format!(
            "ch_tok_{:032x}{:016x}",
            rand::random::<u128>(),
            rand::random::<u64>()
        );
        let mut st = self.inner.lock();
        let ch = st.channels.get_mut(channel)?;
        let old = std::mem::replace(&mut ch.token, new_token.clone());
        ch.old_token = Some(OldToken {
            token: old,
            until: Instant::now() + grace,
        });
        ch.updated_at = protocol::now();
        Some(Rotation {
            channel: ch.spec.name.to_string(),
            new_token,
            old_token_expires_at: protocol::timestamp(SystemTime::now() + grace),
            message: format!(
                "Old token valid for {} seconds grace period",
                grace.as_secs()
            ),
        })
    }
    /// Close one connection (its socket or stream ends; its in-flight messages are requeued).
    pub fn disconnect(&self, channel: &str, connection_id: &str) -> Result<(), DisconnectError> {
        {
            let st = self.inner.lock();
            match st.conns.get(connection_id) {
                Some(c) if c.lingering => return Err(DisconnectError::NotFound),
                Some(c) if &*c.channel != channel => return Err(DisconnectError::WrongChannel),
                Some(_) => {}
                None => return Err(DisconnectError::NotFound),
            }
        }
        self.inner.remove_later(
            connection_id,
            Some((CLOSE_EVICTED, "disconnected by an operator")),
        );
        Ok(())
    }
    /// Pending messages per webhook id of a channel; `None`: no such channel.
    pub async fn webhook_stats(&self, channel: &str) -> Option<BTreeMap<String, u64>> {
        let queues = self.inner.queues(channel)?;
        let depths = self.inner.depths(&queues).await;
        Some(
            queues
                .iter()
                .zip(depths)
                .map(|(k, d)| (k.webhook_id.to_string(), d))
                .collect(),
        )
    }
    /// Dead letters of a channel, newest first, not consumed; `Ok(None)`: no such channel.
    pub async fn dead_letters(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, BufferError> {
        let Some(queues) = self.inner.queues(channel) else {
            return Ok(None);
        };
        self.inner
            .buffer
            .dead_letters(&queues, limit)
            .await
            .map(Some)
    }
    /// `GET /admin/webhook-connect/health`: `status`, `buffer`, `channels_count`,
    /// `connections_count`, `timestamp`.
    pub async fn health(&self) -> serde_json::Value {
        let ok = self.inner.buffer.health().await;
        let (channels, connections) = self.inner.counts();
        json!({
            "status": if ok { "healthy" } else { "unhealthy" },
            "buffer": ok,
            "channels_count": channels,
            "connections_count": connections,
            "timestamp": protocol::now(),
        })
    }
    /// `GET /admin/webhook-connect/overview`.
    pub async fn overview(&self) -> serde_json::Value {
        let ok = self.inner.buffer.health().await;
        let (count, connections) = self.inner.counts();
        let channels: serde_json::Map<String, Value> = {
            let st = self.inner.lock();
            st.channels
                .values()
                .map(|ch| {
                    (
                        ch.spec.name.to_string(),
                        json!({
                            "webhook_id": &*ch.spec.webhook_id,
                            "connected_clients": ch.active.len(),
                            "max_connections": ch.spec.max_connections,
                            "ttl_seconds": seconds_json(ch.spec.ttl),
                        }),
                    )
                })
                .collect()
        };
        json!({
            "timestamp": protocol::now(),
            "health": {
                "buffer": ok,
                "channels_count": count,
                "connections_count": connections,
            },
            "total_channels": count,
            "total_connections": connections,
            "channels": channels,
        })
    }
    /// Stop: close every connection (their in-flight messages are requeued).
    ///
    /// WebSocket connections get close code 1001 (going away). Waits until every channel's
    /// consumption has stopped and its queues are released.
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        let ids: Vec<String> = self.inner.lock().conns.keys().cloned().collect();
        for id in ids {
            let tags = self
                .inner
                .remove(&id, Some((CLOSE_GOING_AWAY, "server shutting down")));
            self.inner.requeue(tags).await;
        }
        let pumps: Vec<Arc<PumpCtl>> = self
            .inner
            .lock()
            .channels
            .values()
            .map(|ch| ch.pump.clone())
            .collect();
        for ctl in pumps {
            ctl.wake.notify_one();
            drop(ctl.lifetime.lock().await);
        }
    }
}

/// The buffer settings of a channel's queues.
fn queue_settings(spec: &ChannelSpec) -> QueueSettings {
    QueueSettings {
        ttl: spec.ttl,
        max_queue_size: spec.max_queue_size,
        ack_timeout: spec.ack_timeout,
    }
}

/// Whole seconds as an integer, otherwise a float.
fn seconds_json(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        Value::from(d.as_secs())
    } else {
        Value::from(d.as_secs_f64())
    }
}

/// The length of `value`'s compact JSON, without building it.
fn json_size(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

// ---------------------------------------------------------------------------------------------
// Internals.

struct Inner {
    buffer: Arc<dyn Buffer>,
    settings: ManagerSettings,
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
    next_connection: AtomicU64,
    /// Set by shutdown: the maintenance task ends.
    stopped: AtomicBool,
}

#[derive(Default)]
struct State {
    channels: BTreeMap<Arc<str>, Channel>,
    /// Every connection, live or lingering (finished long-poll with messages in flight).
    conns: HashMap<String, Conn>,
}

struct Channel {
    /// The last registration's settings.
    spec: ChannelSpec,
    /// The token the config gave (rotations keep it as long as the config does).
    configured_token: String,
    token: String,
    old_token: Option<OldToken>,
    webhook_ids: BTreeSet<Arc<str>>,
    /// Webhook ids whose queue exists in the buffer.
    ensured: HashSet<Arc<str>>,
    created_at: String,
    updated_at: String,
    sequence: u64,
    /// Live connections in connect order (lingering polls are not in it).
    active: Vec<String>,
    /// Round-robin cursor among equally loaded connections.
    next_pick: usize,
    delivered: u64,
    dead_lettered: u64,
    /// Expired messages the buffer let through (the buffer counts the rest).
    expired: u64,
    /// Dispatch failures per message id.
    failures: HashMap<String, u32>,
    pump: Arc<PumpCtl>,
    pump_running: bool,
}

struct OldToken {
    token: String,
    until: Instant,
}

/// Control of a channel's pump task.
#[derive(Default)]
struct PumpCtl {
    /// Capacity or connections changed: look again.
    wake: Notify,
    /// Held by the running pump until its queues are released; a new pump waits for it.
    lifetime: tokio::sync::Mutex<()>,
}

struct Conn {
    channel: Arc<str>,
    protocol: Protocol,
    connector_id: String,
    remote_ip: Option<IpAddr>,
    /// `None` once the connection lingers.
    tx: Option<mpsc::UnboundedSender<Outgoing>>,
    in_flight: HashMap<String, InFlight>,
    /// Long-poll: messages it may still be sent.
    poll_left: usize,
    lingering: bool,
    connected_at: String,
    last_heartbeat: Instant,
    last_heartbeat_at: Option<String>,
    last_message: Instant,
    last_message_at: Option<String>,
    received: u64,
    acked: u64,
    nacked: u64,
}

struct InFlight {
    tag: DeliveryTag,
    deadline: Instant,
}

/// What a stats answer needs, read under the lock.
struct Snapshot {
    name: String,
    queues: Vec<QueueKey>,
    config: Value,
    connections: Vec<Value>,
    in_flight: usize,
    delivered: u64,
    dead_lettered: u64,
    expired: u64,
    clients: usize,
}

impl Channel {
    fn new(spec: ChannelSpec, now: String) -> Self {
        Self {
            configured_token: spec.token.clone(),
            token: spec.token.clone(),
            old_token: None,
            webhook_ids: BTreeSet::from([spec.webhook_id.clone()]),
            ensured: HashSet::new(),
            created_at: now.clone(),
            updated_at: now,
            sequence: 0,
            active: Vec::new(),
            next_pick: 0,
            delivered: 0,
            dead_lettered: 0,
            expired: 0,
            failures: HashMap::new(),
            pump: Arc::new(PumpCtl::default()),
            pump_running: false,
            spec,
        }
    }

    fn accepts(&self, token: &str, now: Instant) -> bool {
        if token.is_empty() {
            return false;
        }
        let current = self.token.as_bytes().ct_eq(token.as_bytes());
        let old = self.old_token.as_ref().is_some_and(|o| {
            now < o.until && bool::from(o.token.as_bytes().ct_eq(token.as_bytes()))
        });
        bool::from(current) | old
    }

    fn queues(&self) -> Vec<QueueKey> {
        self.webhook_ids
            .iter()
            .map(|w| QueueKey {
                channel: self.spec.name.clone(),
                webhook_id: w.clone(),
            })
            .collect()
    }
}

impl Conn {
    /// Messages this connection can take now.
    fn free(&self, max_in_flight: usize) -> usize {
        if self.tx.is_none() {
            return 0;
        }
        match self.protocol {
            Protocol::LongPoll => self.poll_left,
            Protocol::Websocket | Protocol::Sse => {
                max_in_flight.saturating_sub(self.in_flight.len())
            }
        }
    }

    fn to_json(&self, id: &str) -> Value {
        json!({
            "connection_id": id,
            "connector_id": self.connector_id,
            "channel": &*self.channel,
            "protocol": self.protocol,
            "connected_at": self.connected_at,
            "last_heartbeat_at": self.last_heartbeat_at,
            "last_message_at": self.last_message_at,
            "state": if self.lingering { "disconnecting" } else { "connected" },
            "in_flight_count": self.in_flight.len(),
            "messages_received": self.received,
            "messages_acked": self.acked,
            "messages_nacked": self.nacked,
            "remote_ip": self.remote_ip.map(|ip| ip.to_string()),
        })
    }
}

enum Step {
    Exit,
    Wait,
    Fetch(usize),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_ensured(&self, key: &QueueKey) {
        if let Some(ch) = self.lock().channels.get_mut(&key.channel) {
            ch.ensured.insert(key.webhook_id.clone());
        }
    }

    fn queues(&self, channel: &str) -> Option<Vec<QueueKey>> {
        self.lock().channels.get(channel).map(Channel::queues)
    }

    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        let connections = st.channels.values().map(|ch| ch.active.len()).sum();
        (st.channels.len(), connections)
    }

    async fn depths(&self, queues: &[QueueKey]) -> Vec<u64> {
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.push(self.buffer.depth(q).await.unwrap_or(0));
        }
        out
    }

    fn snapshot(&self, channel: &str) -> Option<Snapshot> {
        let st = self.lock();
        let ch = st.channels.get(channel)?;
        let spec = &ch.spec;
        let config = json!({
            "name": &*spec.name,
            "webhook_id": &*spec.webhook_id,
            "ttl_seconds": seconds_json(spec.ttl),
            "max_queue_size": spec.max_queue_size,
            "max_message_size": self.settings.max_message_size,
            "max_in_flight": spec.max_in_flight,
            "ack_timeout_seconds": seconds_json(spec.ack_timeout),
            "max_connections": spec.max_connections,
            "heartbeat_interval_seconds": seconds_json(self.settings.heartbeat_interval),
            "allowed_ips": Value::Null,
            "rate_limit_per_second": Value::Null,
            "created_at": ch.created_at,
            "updated_at": ch.updated_at,
        });
        let connections = ch
            .active
            .iter()
            .filter_map(|id| st.conns.get(id).map(|c| c.to_json(id)))
            .collect();
        let in_flight = st
            .conns
            .values()
            .filter(|c| &*c.channel == channel)
            .map(|c| c.in_flight.len())
            .sum();
        Some(Snapshot {
            name: spec.name.to_string(),
            queues: ch.queues(),
            config,
            connections,
            in_flight,
            delivered: ch.delivered,
            dead_lettered: ch.dead_lettered,
            expired: ch.expired,
            clients: ch.active.len(),
        })
    }

    fn stats_json(&self, snap: &Snapshot, depths: &[u64]) -> Value {
        json!({
            "channel": snap.name,
            "messages_queued": depths.iter().sum::<u64>(),
            "messages_in_flight": snap.in_flight,
            "messages_delivered": snap.delivered,
            "messages_expired": snap.expired + self.buffer.expired_count(&snap.name),
            "messages_dead_lettered": snap.dead_lettered,
            "connected_clients": snap.clients,
        })
    }

    /// Ack or nack a message in flight on a connection; `token`, when given, must be valid for
    /// the connection's channel.
    async fn settle(
        &self,
        connection_id: &str,
        token: Option<&str>,
        message_id: &str,
        status: AckStatus,
    ) -> Result<(), AckError> {
        let (tag, channel) = self.take_in_flight(connection_id, token, message_id)?;
        self.complete(connection_id, message_id, tag, &channel, status)
            .await
    }

    /// The first half of [`settle`](Self::settle): check the connection (and token) and take the
    /// message out of its in-flight set. Returns the buffer tag and the channel.
    fn take_in_flight(
        &self,
        connection_id: &str,
        token: Option<&str>,
        message_id: &str,
    ) -> Result<(DeliveryTag, Arc<str>), AckError> {
        {
            let mut guard = self.lock();
            let State { channels, conns } = &mut *guard;
            let conn = conns
                .get_mut(connection_id)
                .ok_or(AckError::ConnectionNotFound)?;
            if let Some(token) = token {
                let valid = channels
                    .get(&conn.channel)
                    .is_some_and(|ch| ch.accepts(token, Instant::now()));
                if !valid {
                    return Err(AckError::InvalidToken);
                }
            }
            let f = conn
                .in_flight
                .remove(message_id)
                .ok_or(AckError::NotInFlight)?;
            let channel = conn.channel.clone();
            if let Some(ch) = channels.get(&channel) {
                // Room for one more message on this connection.
                ch.pump.wake.notify_one();
            }
            Ok((f.tag, channel))
        }
    }

    /// The second half of [`settle`](Self::settle): tell the buffer, then count the outcome.
    async fn complete(
        &self,
        connection_id: &str,
        message_id: &str,
        tag: DeliveryTag,
        channel: &Arc<str>,
        status: AckStatus,
    ) -> Result<(), AckError> {
        let result = match status {
            AckStatus::Ack => self.buffer.ack(&tag).await,
            AckStatus::Nack { retry } => self.buffer.nack(&tag, retry).await,
        };
        let mut guard = self.lock();
        let State { channels, conns } = &mut *guard;
        if let Some(conn) = conns.get_mut(connection_id) {
            if result.is_ok() {
                match status {
                    AckStatus::Ack => conn.acked += 1,
                    AckStatus::Nack { .. } => conn.nacked += 1,
                }
            }
            if conn.lingering && conn.in_flight.is_empty() {
                conns.remove(connection_id);
            }
        }
        if let Some(ch) = channels.get_mut(channel) {
            if result.is_ok() {
                match status {
                    AckStatus::Ack => {
                        ch.delivered += 1;
                        ch.failures.remove(message_id);
                    }
                    AckStatus::Nack { retry: false } => {
                        ch.dead_lettered += 1;
                        ch.failures.remove(message_id);
                    }
                    AckStatus::Nack { retry: true } => {}
                }
            }
            ch.pump.wake.notify_one();
        }
        drop(guard);
        result.map_err(|e| {
            tracing::warn!(connection = connection_id, message_id, error = %e, "acknowledgment failed");
            AckError::Failed
        })
    }

    /// Remove a connection now (optionally telling its transport to close) and return the
    /// tags of its in-flight messages, to requeue.
    fn remove(&self, connection_id: &str, close: Option<(u16, &'static str)>) -> Vec<DeliveryTag> {
        let mut guard = self.lock();
        let State { channels, conns } = &mut *guard;
        let Some(conn) = conns.remove(connection_id) else {
            return Vec::new();
        };
        if let (Some((code, reason)), Some(tx)) = (close, &conn.tx) {
            let _ = tx.send(Outgoing::Close { code, reason });
        }
        if let Some(ch) = channels.get_mut(&conn.channel) {
            ch.active.retain(|id| id != connection_id);
            ch.pump.wake.notify_one();
        }
        conn.in_flight.into_values().map(|f| f.tag).collect()
    }

    /// [`remove`](Self::remove), requeueing in the background.
    fn remove_later(self: &Arc<Self>, connection_id: &str, close: Option<(u16, &'static str)>) {
        let tags = self.remove(connection_id, close);
        self.requeue_later(tags);
    }

    fn requeue_later(self: &Arc<Self>, tags: Vec<DeliveryTag>) {
        if tags.is_empty() {
            return;
        }
        let inner = self.clone();
        self.runtime.spawn(async move { inner.requeue(tags).await });
    }

    async fn requeue(&self, tags: Vec<DeliveryTag>) {
        for tag in tags {
            if let Err(e) = self.buffer.nack(&tag, true).await {
                tracing::debug!(queue = %tag.queue.channel, error = %e, "requeue failed");
            }
        }
    }

    /// A long-poll answer was sent: the connection stops counting and lingers while messages
    /// are in flight on it. `unsent` were dispatched but never sent: requeued now.
    fn linger(self: &Arc<Self>, connection_id: &str, unsent: &[String]) {
        let mut tags = Vec::new();
        {
            let mut guard = self.lock();
            let State { channels, conns } = &mut *guard;
            let Some(conn) = conns.get_mut(connection_id) else {
                return;
            };
            conn.lingering = true;
            conn.tx = None;
            for id in unsent {
                if let Some(f) = conn.in_flight.remove(id) {
                    tags.push(f.tag);
                }
            }
            let channel = conn.channel.clone();
            if conn.in_flight.is_empty() {
                conns.remove(connection_id);
            }
            if let Some(ch) = channels.get_mut(&channel) {
                ch.active.retain(|id| id != connection_id);
                ch.pump.wake.notify_one();
            }
        }
        self.requeue_later(tags);
    }

    /// What the pump of `channel` does next; refreshes `queues`.
    fn pump_step(&self, channel: &str, queues: &mut Vec<QueueKey>) -> Step {
        let mut guard = self.lock();
        let State { channels, conns } = &mut *guard;
        let Some(ch) = channels.get_mut(channel) else {
            return Step::Exit;
        };
        *queues = ch.queues();
        if ch.active.is_empty() {
            let lingering = conns.values().any(|c| &*c.channel == channel);
            if lingering {
                return Step::Wait;
            }
            ch.pump_running = false;
            return Step::Exit;
        }
        let free: usize = ch
            .active
            .iter()
            .filter_map(|id| conns.get(id))
            .map(|c| c.free(ch.spec.max_in_flight))
            .sum();
        if free == 0 {
            Step::Wait
        } else {
            Step::Fetch(free)
        }
    }

    /// Hand fetched messages to the channel's connections.
    async fn dispatch(&self, channel: &str, deliveries: Vec<Delivery>) {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        {
            let mut guard = self.lock();
            let State { channels, conns } = &mut *guard;
            match channels.get_mut(channel) {
                None => nacks.extend(deliveries.into_iter().map(|d| (d.tag, true))),
                Some(ch) => {
                    for d in deliveries {
                        if d.envelope.expired(wall) {
                            ch.expired += 1;
                            acks.push(d.tag);
                            continue;
                        }
                        let Some(id) = pick(ch, conns) else {
                            nacks.push((d.tag, true));
                            continue;
                        };
                        let message_id = d.envelope.message_id.clone();
                        // A redelivery of a message still tracked elsewhere: that old tag is
                        // stale now.
                        for c in conns.values_mut().filter(|c| c.channel == ch.spec.name) {
                            c.in_flight.remove(&message_id);
                        }
                        let Some(conn) = conns.get_mut(&id) else {
                            nacks.push((d.tag, true));
                            continue;
                        };
                        let mut envelope = d.envelope;
                        envelope.delivery_count += 1;
                        let message = Arc::new(envelope.to_wire());
                        let sent = conn
                            .tx
                            .as_ref()
                            .is_some_and(|tx| tx.send(Outgoing::Webhook(message)).is_ok());
                        if sent {
                            conn.in_flight.insert(
                                message_id,
                                InFlight {
                                    tag: d.tag,
                                    deadline: now + ch.spec.ack_timeout,
                                },
                            );
                            conn.received += 1;
                            conn.last_message = now;
                            conn.last_message_at = Some(protocol::timestamp(wall));
                            if conn.protocol == Protocol::LongPoll {
                                conn.poll_left = conn.poll_left.saturating_sub(1);
                            }
                        } else {
                            let failures = ch.failures.entry(message_id.clone()).or_default();
                            *failures += 1;
                            if *failures >= MAX_REDELIVERY_ATTEMPTS {
                                ch.failures.remove(&message_id);
                                ch.dead_lettered += 1;
                                nacks.push((d.tag, false));
                            } else {
                                nacks.push((d.tag, true));
                            }
                        }
                    }
                }
            }
        }
        for tag in acks {
            let _ = self.buffer.ack(&tag).await;
        }
        for (tag, retry) in nacks {
            if let Err(e) = self.buffer.nack(&tag, retry).await {
                tracing::debug!(channel, error = %e, "nack after dispatch failed");
            }
        }
    }

    /// Requeue messages in flight past their ack deadline; drop lingering connections with
    /// nothing left in flight.
    async fn sweep_ack_timeouts(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut guard = self.lock();
            let State { channels, conns } = &mut *guard;
            let mut gone = Vec::new();
            for (id, conn) in conns.iter_mut() {
                let late: Vec<String> = conn
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.deadline <= now)
                    .map(|(m, _)| m.clone())
                    .collect();
                if !late.is_empty() {
                    for m in &late {
                        if let Some(f) = conn.in_flight.remove(m) {
                            due.push(f.tag);
                        }
                    }
                    if let Some(ch) = channels.get(&conn.channel) {
                        ch.pump.wake.notify_one();
                    }
                }
                if conn.lingering && conn.in_flight.is_empty() {
                    gone.push(id.clone());
                }
            }
            for id in gone {
                if let Some(conn) = conns.remove(&id)
                    && let Some(ch) = channels.get(&conn.channel)
                {
                    ch.pump.wake.notify_one();
                }
            }
        }
        self.requeue(due).await;
    }

    /// Close and remove connections that went quiet.
    async fn evict_stale(&self) {
        let now = Instant::now();
        let s = &self.settings;
        let stale: Vec<String> = {
            let st = self.lock();
            st.conns
                .iter()
                .filter(|(_, c)| !c.lingering)
                .filter(|(_, c)| {
                    let known = st.channels.contains_key(&c.channel);
                    let quiet = match c.protocol {
                        Protocol::Websocket => {
                            now.duration_since(c.last_heartbeat) > s.heartbeat_interval * 3
                        }
                        Protocol::Sse => now.duration_since(c.last_message) > s.sse_idle_limit,
                        Protocol::LongPoll => {
                            now.duration_since(c.last_message) > s.poll_idle_limit
                        }
                    };
                    quiet || !known
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in stale {
            tracing::info!(connection = %id, "evicting stale connection");
            let tags = self.remove(&id, Some((CLOSE_EVICTED, "stale connection")));
            self.requeue(tags).await;
        }
    }
}

/// The connection of `ch` with the fewest messages in flight among those with room; equals
/// take turns.
fn pick(ch: &mut Channel, conns: &HashMap<String, Conn>) -> Option<String> {
    let n = ch.active.len();
    let mut best: Option<(usize, usize)> = None;
    for k in 0..n {
        let i = (ch.next_pick + k) % n;
        let Some(c) = conns.get(&ch.active[i]) else {
            continue;
        };
        if c.free(ch.spec.max_in_flight) == 0 {
            continue;
        }
        let load = c.in_flight.len();
        if best.is_none_or(|(_, l)| load < l) {
            best = Some((i, load));
        }
    }
    let (i, _) = best?;
    ch.next_pick = (i + 1) % n;
    Some(ch.active[i].clone())
}

/// A channel's consumption: runs while it has connections or lingering in-flight messages.
async fn pump(inner: Arc<Inner>, channel: Arc<str>, ctl: Arc<PumpCtl>) {
    let _lifetime = ctl.lifetime.lock().await;
    let mut queues = Vec::new();
    loop {
        match inner.pump_step(&channel, &mut queues) {
            Step::Exit => break,
            Step::Wait => {
                let _ = tokio::time::timeout(TICK, ctl.wake.notified()).await;
            }
            Step::Fetch(max) => match inner.buffer.fetch(&queues, max, FETCH_WAIT).await {
                Ok(deliveries) => {
                    if !deliveries.is_empty() {
                        inner.dispatch(&channel, deliveries).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "webhook connect fetch failed");
                    let _ = tokio::time::timeout(TICK, ctl.wake.notified()).await;
                }
            },
        }
    }
    if !queues.is_empty() {
        inner.buffer.release(&queues).await;
    }
}

/// Ack timeouts every second, stale-connection eviction every `eviction_interval`.
async fn maintenance(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_eviction = Instant::now();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { break };
        if inner.stopped.load(Ordering::Relaxed) {
            break;
        }
        inner.sweep_ack_timeouts().await;
        if last_eviction.elapsed() >= inner.settings.eviction_interval {
            last_eviction = Instant::now();
            inner.evict_stale().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::cloud::MemoryBuffer;
    use crate::protocol::CLOSE_EVICTED;

    const TOKEN: &str = "secret";

    fn spec(name: &str, webhook: &str) -> ChannelSpec {
        ChannelSpec {
            name: name.into(),
            webhook_id: webhook.into(),
            token: TOKEN.into(),
            ttl: Duration::from_secs(3600),
            max_queue_size: 100,
            max_connections: 2,
            max_in_flight: 10,
            ack_timeout: Duration::from_secs(30),
        }
    }

    fn setup(specs: Vec<ChannelSpec>) -> (ChannelManager, Arc<MemoryBuffer>) {
        let buffer = Arc::new(MemoryBuffer::new());
        let settings = ManagerSettings {
            eviction_interval: Duration::from_secs(10),
            ..ManagerSettings::default()
        };
        let m = ChannelManager::new(buffer.clone(), settings);
        for s in specs {
            m.register(s);
        }
        (m, buffer)
    }

    fn req(protocol: Protocol) -> ConnectRequest {
        ConnectRequest {
            protocol,
            connector_id: None,
            remote_ip: None,
            max_messages: None,
        }
    }

    async fn publish(m: &ChannelManager, channel: &str, n: u32) -> Result<u64, PublishError> {
        m.publish(
            channel,
            "hook",
            BTreeMap::from([("x-n".to_owned(), n.to_string())]),
            json!({ "n": n }),
            false,
        )
        .await
    }

    /// The next webhook sent on `c` (waits up to 10 s of paused time).
    async fn recv(c: &mut Connection) -> Arc<WebhookMessage> {
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Some(Outgoing::Webhook(m))) => m,
            Ok(Some(Outgoing::Close { code, .. })) => panic!("closed with {code}"),
            Ok(None) => panic!("connection ended"),
            Err(_) => panic!("nothing received"),
        }
    }

    /// Let the pump and background tasks run.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    async fn stat(m: &ChannelManager, channel: &str, key: &str) -> u64 {
        m.stats(channel).await.unwrap()[key].as_u64().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn publish_sequence_and_queue_limit() {
        let mut s = spec("c", "hook");
        s.max_queue_size = 3;
        let (m, buffer) = setup(vec![s]);
        assert_eq!(publish(&m, "c", 1).await.unwrap(), 1);
        assert_eq!(publish(&m, "c", 2).await.unwrap(), 2);
        assert_eq!(publish(&m, "c", 3).await.unwrap(), 3);
        for n in [4, 5] {
            assert!(matches!(
                publish(&m, "c", n).await,
                Err(PublishError::Buffer(BufferError::QueueFull {
                    limit: 3,
                    ..
                }))
            ));
        }
        assert!(matches!(
            publish(&m, "nope", 1).await,
            Err(PublishError::UnknownChannel(_))
        ));
        assert_eq!(stat(&m, "c", "messages_queued").await, 3);
        // The stored envelope.
        let key = QueueKey::new("c", "hook");
        let d = buffer
            .fetch(std::slice::from_ref(&key), 1, Duration::ZERO)
            .await
            .unwrap();
        let e = &d[0].envelope;
        assert!(e.message_id.starts_with("msg_") && e.message_id.len() == 20);
        assert_eq!(e.metadata["source"], "webhook_connect_module");
        assert_eq!(e.payload, json!({"n": 1}));
        assert!(e.expires_at.is_some());
        buffer.release(&[key]).await;
        // Drain through a connection: accepted again.
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        let first = recv(&mut c).await;
        assert_eq!(first.sequence, 1);
        c.acknowledge(&first.message_id, AckStatus::Ack).await;
        settle().await;
        assert!(publish(&m, "c", 6).await.unwrap() > 3);
        assert_eq!(stat(&m, "c", "messages_delivered").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_and_blob_encoding() {
        let buffer = Arc::new(MemoryBuffer::new());
        let settings = ManagerSettings {
            max_message_size: 600,
            ..ManagerSettings::default()
        };
        let m = ChannelManager::new(buffer.clone(), settings);
        m.register(spec("c", "hook"));
        let big = json!("x".repeat(1000));
        assert!(matches!(
            m.publish("c", "hook", BTreeMap::new(), big, false).await,
            Err(PublishError::TooLarge { limit: 600, .. })
        ));
        m.publish("c", "hook", BTreeMap::new(), json!("AAEC"), true)
            .await
            .unwrap();
        let mut c = m.connect("c", req(Protocol::Sse)).unwrap();
        let msg = recv(&mut c).await;
        assert_eq!(msg.payload_encoding, Some(PayloadEncoding::Base64));
        assert_eq!(msg.body_bytes().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn channels_are_isolated() {
        let (m, _) = setup(vec![spec("a", "hook"), spec("b", "hook")]);
        let mut ca = m.connect("a", req(Protocol::Websocket)).unwrap();
        let mut cb = m.connect("b", req(Protocol::Websocket)).unwrap();
        publish(&m, "a", 1).await.unwrap();
        let got = recv(&mut ca).await;
        assert_eq!(got.payload, json!({"n": 1}));
        settle().await;
        assert!(cb.try_next().is_none());
        assert_eq!(stat(&m, "b", "messages_queued").await, 0);
        assert_eq!(stat(&m, "a", "messages_in_flight").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dispatch_goes_to_the_least_loaded_connection() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let mut c1 = m.connect("c", req(Protocol::Websocket)).unwrap();
        let mut c2 = m.connect("c", req(Protocol::Websocket)).unwrap();
        for n in 0..4 {
            publish(&m, "c", n).await.unwrap();
        }
        settle().await;
        let mut one = Vec::new();
        while let Some(Outgoing::Webhook(msg)) = c1.try_next() {
            one.push(msg);
        }
        let mut two = 0;
        while let Some(Outgoing::Webhook(_)) = c2.try_next() {
            two += 1;
        }
        assert_eq!((one.len(), two), (2, 2));
        for msg in &one {
            c1.acknowledge(&msg.message_id, AckStatus::Ack).await;
        }
        // c1 has nothing in flight, c2 two: the next two go to c1.
        publish(&m, "c", 10).await.unwrap();
        publish(&m, "c", 11).await.unwrap();
        settle().await;
        assert!(matches!(c1.try_next(), Some(Outgoing::Webhook(_))));
        assert!(matches!(c1.try_next(), Some(Outgoing::Webhook(_))));
        assert!(c2.try_next().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn max_in_flight_holds_back_messages() {
        let mut s = spec("c", "hook");
        s.max_in_flight = 2;
        let (m, _) = setup(vec![s]);
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        for n in 0..5 {
            publish(&m, "c", n).await.unwrap();
        }
        let a = recv(&mut c).await;
        let _b = recv(&mut c).await;
        settle().await;
        assert!(c.try_next().is_none());
        assert_eq!(stat(&m, "c", "messages_in_flight").await, 2);
        assert_eq!(stat(&m, "c", "messages_queued").await, 5);
        c.acknowledge(&a.message_id, AckStatus::Ack).await;
        let third = recv(&mut c).await;
        assert_eq!(third.payload, json!({"n": 2}));
        settle().await;
        assert!(c.try_next().is_none());
        assert_eq!(stat(&m, "c", "messages_queued").await, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn nack_retry_redelivers_and_nack_without_retry_dead_letters() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        publish(&m, "c", 1).await.unwrap();
        let first = recv(&mut c).await;
        c.acknowledge(&first.message_id, AckStatus::Nack { retry: true })
            .await;
        let again = recv(&mut c).await;
        assert_eq!(again.message_id, first.message_id);
        c.acknowledge(&again.message_id, AckStatus::Nack { retry: false })
            .await;
        settle().await;
        assert!(c.try_next().is_none());
        let dead = m.dead_letters("c", 10).await.unwrap().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, first.message_id);
        assert_eq!(dead[0].state, MessageState::DeadLettered);
        assert_eq!(stat(&m, "c", "messages_dead_lettered").await, 1);
        assert_eq!(stat(&m, "c", "messages_queued").await, 0);
        assert!(m.dead_letters("nope", 10).await.unwrap().is_none());
        let detail = m.channel_detail("c").await.unwrap();
        let conn = &detail["connected_clients"][0];
        assert_eq!(conn["messages_nacked"], 2);
        assert_eq!(conn["messages_received"], 2);
        assert_eq!(conn["protocol"], "websocket");
    }

    #[tokio::test(start_paused = true)]
    async fn ack_timeout_requeues() {
        let mut s = spec("c", "hook");
        s.ack_timeout = Duration::from_secs(5);
        let (m, _) = setup(vec![s]);
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        publish(&m, "c", 1).await.unwrap();
        let first = recv(&mut c).await;
        let t0 = Instant::now();
        let again = recv(&mut c).await;
        assert_eq!(again.message_id, first.message_id);
        assert!(t0.elapsed() >= Duration::from_secs(5));
        assert_eq!(stat(&m, "c", "messages_in_flight").await, 1);
        c.acknowledge(&again.message_id, AckStatus::Ack).await;
        settle().await;
        assert_eq!(stat(&m, "c", "messages_delivered").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_connection_requeues_its_messages() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let mut c1 = m.connect("c", req(Protocol::Websocket)).unwrap();
        publish(&m, "c", 1).await.unwrap();
        let first = recv(&mut c1).await;
        drop(c1);
        let mut c2 = m.connect("c", req(Protocol::Sse)).unwrap();
        let again = recv(&mut c2).await;
        assert_eq!(again.message_id, first.message_id);
        assert!(c2.id().starts_with("sse_"));
    }

    #[tokio::test(start_paused = true)]
    async fn max_connections_and_eviction() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let c1 = m.connect("c", req(Protocol::Websocket)).unwrap();
        let mut c2 = m.connect("c", req(Protocol::Websocket)).unwrap();
        assert!(c1.id().starts_with("wsc_"));
        assert!(matches!(
            m.connect("c", req(Protocol::Sse)),
            Err(ConnectError::MaxConnections)
        ));
        assert!(matches!(
            m.connect("nope", req(Protocol::Sse)),
            Err(ConnectError::ChannelNotFound)
        ));
        drop(c1);
        let mut c3 = m.connect("c", req(Protocol::Websocket)).unwrap();
        assert_eq!(m.channels()[0]["connected_clients"], 2);
        // c2 keeps sending heartbeats, c3 does not: c3 is evicted after 90 s.
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            c2.heartbeat();
        }
        match c3.try_next() {
            Some(Outgoing::Close { code, .. }) => assert_eq!(code, CLOSE_EVICTED),
            other => panic!("{other:?}"),
        }
        assert!(c3.next().await.is_none());
        assert!(c2.try_next().is_none());
        let _c4 = m.connect("c", req(Protocol::Websocket)).unwrap();
        // An operator's disconnect.
        assert_eq!(
            m.disconnect("other", c2.id()),
            Err(DisconnectError::WrongChannel)
        );
        assert_eq!(m.disconnect("c", "wsc_x"), Err(DisconnectError::NotFound));
        m.disconnect("c", c2.id()).unwrap();
        assert!(matches!(
            c2.next().await,
            Some(Outgoing::Close {
                code: CLOSE_EVICTED,
                ..
            })
        ));
        assert_eq!(m.health().await["connections_count"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn token_rotation_with_grace() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        assert_eq!(m.authenticate("c", TOKEN), Ok(()));
        assert_eq!(m.authenticate("c", ""), Err(AuthError::InvalidToken));
        assert_eq!(m.authenticate("c", "wrong"), Err(AuthError::InvalidToken));
        assert_eq!(m.authenticate("nope", TOKEN), Err(AuthError::InvalidToken));
        assert!(m.rotate_token("nope", Duration::from_secs(60)).is_none());
        let r = m.rotate_token("c", Duration::from_secs(60)).unwrap();
        assert!(r.new_token.starts_with("ch_tok_") && r.new_token.len() == 7 + 48);
        assert!(r.new_token[7..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(r.message, "Old token valid for 60 seconds grace period");
        assert_eq!(m.authenticate("c", &r.new_token), Ok(()));
        assert_eq!(m.authenticate("c", TOKEN), Ok(()));
        // Re-registration with the same configured token keeps the rotation.
        m.register(spec("c", "hook2"));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(m.authenticate("c", TOKEN), Err(AuthError::InvalidToken));
        assert_eq!(m.authenticate("c", &r.new_token), Ok(()));
        m.register(spec("c", "hook"));
        assert_eq!(m.authenticate("c", &r.new_token), Ok(()));
        // A second rotation keeps only the latest previous token.
        let r2 = m.rotate_token("c", Duration::from_secs(60)).unwrap();
        assert_eq!(m.authenticate("c", &r.new_token), Ok(()));
        assert_eq!(m.authenticate("c", &r2.new_token), Ok(()));
        // A changed configured token replaces both.
        let mut changed = spec("c", "hook");
        changed.token = "other".into();
        m.register(changed);
        assert_eq!(m.authenticate("c", "other"), Ok(()));
        assert_eq!(
            m.authenticate("c", &r.new_token),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            m.authenticate("c", &r2.new_token),
            Err(AuthError::InvalidToken)
        );
        let detail = m.channel_detail("c").await.unwrap();
        assert!(!detail.to_string().contains("other"));
        assert!(!detail.to_string().contains(TOKEN));
        let ids = m.webhook_stats("c").await.unwrap();
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["hook", "hook2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_messages_stay_ackable_then_requeue() {
        let mut s = spec("c", "hook");
        s.ack_timeout = Duration::from_secs(10);
        s.max_connections = 1;
        let (m, _) = setup(vec![s]);
        for n in 0..3 {
            publish(&m, "c", n).await.unwrap();
        }
        let mut poll = m
            .connect(
                "c",
                ConnectRequest {
                    max_messages: Some(2),
                    connector_id: Some("edge".into()),
                    ..req(Protocol::LongPoll)
                },
            )
            .unwrap();
        let id = poll.id().to_owned();
        assert!(id.starts_with("poll_edge_"), "{id}");
        let a = recv(&mut poll).await;
        let b = recv(&mut poll).await;
        settle().await;
        assert!(poll.try_next().is_none());
        poll.finish_poll();
        // The slot is free again; the messages are still ackable by id.
        assert_eq!(stat(&m, "c", "connected_clients").await, 0);
        assert_eq!(stat(&m, "c", "messages_in_flight").await, 2);
        assert_eq!(
            m.ack("nope", TOKEN, &a.message_id, AckStatus::Ack).await,
            Err(AckError::ConnectionNotFound)
        );
        assert_eq!(
            m.ack(&id, "wrong", &a.message_id, AckStatus::Ack).await,
            Err(AckError::InvalidToken)
        );
        assert_eq!(
            m.ack(&id, TOKEN, "msg_x", AckStatus::Ack).await,
            Err(AckError::NotInFlight)
        );
        m.ack(&id, TOKEN, &a.message_id, AckStatus::Ack)
            .await
            .unwrap();
        assert_eq!(
            m.ack(&id, TOKEN, &a.message_id, AckStatus::Ack).await,
            Err(AckError::NotInFlight)
        );
        // `b` is not acked: requeued after the ack timeout, and the lingering connection goes.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(
            m.ack(&id, TOKEN, &b.message_id, AckStatus::Ack).await,
            Err(AckError::ConnectionNotFound)
        );
        assert_eq!(stat(&m, "c", "messages_in_flight").await, 0);
        let mut next = m.connect("c", req(Protocol::LongPoll)).unwrap();
        let first = recv(&mut next).await;
        let second = recv(&mut next).await;
        assert_eq!(first.message_id, b.message_id);
        assert_eq!(second.payload, json!({"n": 2}));
        assert_eq!(stat(&m, "c", "messages_delivered").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn admin_shapes_and_shutdown() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        publish(&m, "c", 1).await.unwrap();
        let _ = recv(&mut c).await;
        let detail = m.channel_detail("c").await.unwrap();
        let config = detail["config"].as_object().unwrap();
        let keys: Vec<&str> = config.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "webhook_id",
                "ttl_seconds",
                "max_queue_size",
                "max_message_size",
                "max_in_flight",
                "ack_timeout_seconds",
                "max_connections",
                "heartbeat_interval_seconds",
                "allowed_ips",
                "rate_limit_per_second",
                "created_at",
                "updated_at"
            ]
        );
        assert_eq!(detail["stats"]["webhook_stats"]["hook"], 1);
        assert_eq!(detail["stats"]["messages_in_flight"], 1);
        let conn = detail["connected_clients"][0].as_object().unwrap();
        assert_eq!(conn.len(), 13);
        assert_eq!(conn["connector_id"].as_str().unwrap(), "ws_1");
        let health = m.health().await;
        assert_eq!(health["status"], "healthy");
        assert_eq!(health["channels_count"], 1);
        let overview = m.overview().await;
        assert_eq!(overview["channels"]["c"]["ttl_seconds"], 3600);
        assert_eq!(overview["total_connections"], 1);
        assert!(m.stats("nope").await.is_none());
        m.shutdown().await;
        assert!(matches!(c.next().await, Some(Outgoing::Close { .. })));
        assert!(c.next().await.is_none());
        assert_eq!(stat(&m, "c", "messages_in_flight").await, 0);
        assert_eq!(stat(&m, "c", "messages_queued").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_sends_end_in_dead_letters() {
        let (m, _) = setup(vec![spec("c", "hook")]);
        let mut c = m.connect("c", req(Protocol::Websocket)).unwrap();
        // The transport's receiver is gone while the manager still lists the connection.
        let (_tx, closed) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut c.rx, closed));
        publish(&m, "c", 1).await.unwrap();
        settle().await;
        let dead = m.dead_letters("c", 10).await.unwrap().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(stat(&m, "c", "messages_dead_lettered").await, 1);
        assert_eq!(stat(&m, "c", "messages_queued").await, 0);
    }
}
