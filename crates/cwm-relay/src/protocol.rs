//! The Webhook Connect wire protocol, defined once for both halves.
//!
//! The receiver (cloud) sends [`ServerFrame`]s: over a WebSocket as JSON text frames, over SSE
//! as `event: <name>` / `data: <json>` pairs (see [`ServerFrame::sse_event`]), and over
//! long-poll as a [`PollResponse`]. A connector answers each [`WebhookMessage`] with an ack or a
//! nack: a [`ClientFrame`] on a WebSocket, `POST /connect/ack` ([`AckQuery`]) otherwise.
//!
//! All timestamps are ISO-8601 UTC with an explicit offset and microseconds
//! (`2025-01-01T12:00:00.123456+00:00`), as the Python gateway writes them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Path prefix of the streaming API.
pub const CONNECT_PREFIX: &str = "/connect";
/// Path of the ack/nack endpoint used by SSE and long-poll connectors.
pub const ACK_PATH: &str = "/connect/ack";
/// Header naming the connector (optional, informational).
pub const CONNECTOR_ID_HEADER: &str = "x-connector-id";
/// Header naming the connection an SSE or long-poll ack belongs to.
pub const CONNECTION_ID_HEADER: &str = "x-connection-id";

/// SSE event name of [`ServerFrame::Connected`].
pub const SSE_CONNECTED: &str = "connected";
/// SSE event name of [`ServerFrame::Webhook`].
pub const SSE_WEBHOOK: &str = "webhook";
/// SSE event name of [`ServerFrame::Heartbeat`].
pub const SSE_HEARTBEAT: &str = "heartbeat";
/// SSE event name of [`ServerFrame::Error`].
pub const SSE_ERROR: &str = "error";

/// WebSocket close code: the channel token is wrong.
pub const CLOSE_INVALID_TOKEN: u16 = 4001;
/// WebSocket close code: no such channel.
pub const CLOSE_CHANNEL_NOT_FOUND: u16 = 4002;
/// WebSocket close code: the channel has `max_connections` connections already.
pub const CLOSE_MAX_CONNECTIONS: u16 = 4003;
/// WebSocket close code: the connection was evicted (stale) or disconnected by an operator.
pub const CLOSE_EVICTED: u16 = 4004;

/// Long-poll `timeout` bounds, seconds.
pub const POLL_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=60;
/// Long-poll `max_messages` bounds.
pub const POLL_MAX_MESSAGES_RANGE: std::ops::RangeInclusive<usize> = 1..=100;

/// How a message's `payload` is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// `payload` is a JSON string holding the base64 (standard alphabet, padded) of the raw
    /// request body: webhooks with `data_type: blob`.
    Base64,
}

/// One webhook event as a connector receives it (`"type": "webhook"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookMessage {
    /// Unique id (`msg_` + 16 lower-case hex digits); the key of ack and nack. Empty when a
    /// (foreign) sender left it out: connectors drop such messages.
    #[serde(default)]
    pub message_id: String,
    /// Per-channel sequence number, informational (restarts with the receiver).
    #[serde(default)]
    pub sequence: u64,
    /// The receiver's webhook id (bare, without namespace). `None`: connectors nack it without
    /// retry.
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// When the receiver accepted the request.
    #[serde(default)]
    pub timestamp: String,
    /// The request headers, lower-case names, credentials masked by credential cleanup.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body: the JSON document, or with [`PayloadEncoding::Base64`] the base64 of
    /// the raw bytes.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Set for blob payloads; absent for JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<PayloadEncoding>,
}

impl WebhookMessage {
    /// The payload as bytes to deliver: the decoded blob, a JSON string's text as is (the Python
    /// connector sends strings raw), or the JSON text of any other value.
    pub fn body_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        use base64::Engine as _;
        match (&self.payload_encoding, &self.payload) {
            (Some(PayloadEncoding::Base64), serde_json::Value::String(s)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| ProtocolError(format!("payload is not valid base64: {e}")))
            }
            (Some(PayloadEncoding::Base64), _) => Err(ProtocolError(
                "base64 payload is not a JSON string".to_owned(),
            )),
            (None, serde_json::Value::String(s)) => Ok(s.clone().into_bytes()),
            (None, v) => serde_json::to_vec(v).map_err(|e| ProtocolError(e.to_string())),
        }
    }
}

/// A frame the receiver sends to a connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of a stream.
    Connected {
        /// The connection's id; SSE connectors send it back in [`CONNECTION_ID_HEADER`].
        connection_id: String,
        /// The channel subscribed to.
        channel: String,
        /// Server time.
        #[serde(default)]
        timestamp: String,
    },
    /// Liveness, every heartbeat interval when idle (WebSocket: always).
    Heartbeat {
        /// Server time.
        #[serde(default)]
        timestamp: String,
        /// Server time again (the Python gateway sends both on WebSocket).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_time: Option<String>,
    },
    /// One event to deliver.
    Webhook(WebhookMessage),
    /// A failure after the stream started (SSE), e.g. `max_connections_reached`.
    Error {
        /// What went wrong.
        error: String,
    },
    /// A frame type this version does not know: ignored.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// The SSE event name of this frame.
    pub fn sse_event(&self) -> &'static str {
        match self {
            Self::Connected { .. } => SSE_CONNECTED,
            Self::Heartbeat { .. } => SSE_HEARTBEAT,
            Self::Webhook(_) => SSE_WEBHOOK,
            Self::Error { .. } | Self::Unknown => SSE_ERROR,
        }
    }

    /// This frame as one SSE event: `event: <name>\ndata: <one-line JSON>\n\n`. The data of a
    /// `connected`, `heartbeat` or `error` event omits `type`, as the Python gateway sends it.
    pub fn to_sse(&self) -> String {
        let data = match self {
            Self::Webhook(_) => serde_json::to_value(self),
            _ => serde_json::to_value(self).map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.shift_remove("type");
                }
                v
            }),
        }
        .unwrap_or_default();
        format!("event: {}\ndata: {}\n\n", self.sse_event(), data)
    }

    /// Read one SSE event (its name and joined data) back into a frame. `None` for events that
    /// carry nothing to act on (unknown names, unparsable data).
    pub fn from_sse(event: &str, data: &str) -> Option<Self> {
        let mut value: serde_json::Value = serde_json::from_str(data).ok()?;
        let obj = value.as_object_mut()?;
        let kind = match event {
            SSE_CONNECTED | SSE_HEARTBEAT | SSE_ERROR | SSE_WEBHOOK => event,
            _ => return None,
        };
        obj.insert("type".to_owned(), serde_json::Value::from(kind));
        serde_json::from_value(value).ok()
    }
}

/// A frame a connector sends on a WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The message was delivered: remove it from the buffer.
    Ack {
        /// The message acknowledged.
        message_id: String,
    },
    /// The message was not delivered.
    Nack {
        /// The message refused.
        message_id: String,
        /// `true` (the default): deliver it again later; `false`: dead-letter it.
        #[serde(default = "yes")]
        retry: bool,
    },
    /// Client liveness.
    Heartbeat {
        /// Client time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    /// Any other type: ignored.
    #[serde(other)]
    Unknown,
}

fn yes() -> bool {
    true
}

/// The body of a long-poll answer with messages (200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollResponse {
    /// The messages, at most `max_messages`.
    pub messages: Vec<WebhookMessage>,
    /// The poll's connection id: send it with the acks of these messages.
    pub connection_id: String,
    /// The channel.
    pub channel: String,
    /// Server time.
    #[serde(default)]
    pub timestamp: String,
}

/// Ack or nack, in the query of `POST /connect/ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Delivered.
    Ack,
    /// Not delivered; `retry` decides between redelivery and dead-letter.
    Nack {
        /// Deliver again (`true`) or dead-letter (`false`).
        retry: bool,
    },
}

impl AckStatus {
    /// The query string of `POST /connect/ack` for `message_id` (percent-encoded).
    pub fn query(self, message_id: &str) -> String {
        let id = encode_component(message_id);
        match self {
            Self::Ack => format!("message_id={id}&status=ack"),
            Self::Nack { retry } => format!("message_id={id}&status=nack&retry={retry}"),
        }
    }
}

/// A protocol value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Whether `name` is a valid channel name: `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`, at most 64
/// characters, no `..`.
pub fn is_valid_channel(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !name.contains("..")
}

/// `/connect/stream/{channel}` (WebSocket).
pub fn stream_path(channel: &str) -> String {
    format!("{CONNECT_PREFIX}/stream/{}", encode_component(channel))
}

/// `/connect/stream/{channel}/sse`.
pub fn sse_path(channel: &str) -> String {
    format!("{}/sse", stream_path(channel))
}

/// `/connect/stream/{channel}/poll`.
pub fn poll_path(channel: &str) -> String {
    format!("{}/poll", stream_path(channel))
}

/// Percent-encode one path segment or query value (RFC 3986 unreserved characters kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A new message id: `msg_` + 16 lower-case hex digits.
pub fn new_message_id() -> String {
    format!("msg_{:016x}", rand::random::<u64>())
}

/// `t` as `2025-01-01T12:00:00.123456+00:00`.
pub fn timestamp(t: SystemTime) -> String {
    let mut s = humantime::format_rfc3339_micros(t).to_string();
    if s.ends_with('Z') {
        s.pop();
        s.push_str("+00:00");
    }
    s
}

/// The current time as [`timestamp`] writes it.
pub fn now() -> String {
    timestamp(SystemTime::now())
}

/// Read a timestamp written by [`timestamp`] (or with a `Z`, or without fraction).
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let z = s
        .strip_suffix("+00:00")
        .map(|base| format!("{base}Z"))
        .unwrap_or_else(|| s.to_owned());
    humantime::parse_rfc3339_weak(z.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(&z).ok())
}

/// Seconds as a [`Duration`], for settings given as floats; `None` unless finite and positive.
pub fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_frame_round_trips_in_the_python_shape() {
        let text = r#"{"type":"webhook","message_id":"msg_0123456789abcdef","sequence":7,"webhook_id":"stripe_relay","timestamp":"2025-01-01T12:00:00.123456+00:00","headers":{"content-type":"application/json"},"payload":{"a":1}}"#;
        let frame: ServerFrame = serde_json::from_str(text).unwrap();
        let ServerFrame::Webhook(m) = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(m.message_id, "msg_0123456789abcdef");
        assert_eq!(m.webhook_id.as_deref(), Some("stripe_relay"));
        assert_eq!(m.body_bytes().unwrap(), br#"{"a":1}"#);
        let back: serde_json::Value = serde_json::to_value(&frame).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    #[test]
    fn client_frames_default_retry_and_ignore_unknown_types() {
        let nack: ClientFrame =
            serde_json::from_str(r#"{"type":"nack","message_id":"m"}"#).unwrap();
        assert_eq!(
            nack,
            ClientFrame::Nack {
                message_id: "m".into(),
                retry: true
            }
        );
        let other: ClientFrame = serde_json::from_str(r#"{"type":"subscribe","x":1}"#).unwrap();
        assert_eq!(other, ClientFrame::Unknown);
        let ack = serde_json::to_string(&ClientFrame::Ack {
            message_id: "m".into(),
        })
        .unwrap();
        assert_eq!(ack, r#"{"type":"ack","message_id":"m"}"#);
    }

    #[test]
    fn sse_events_round_trip() {
        let f = ServerFrame::Connected {
            connection_id: "sse_1_2".into(),
            channel: "c".into(),
            timestamp: String::new(),
        };
        let text = f.to_sse();
        assert!(
            text.starts_with("event: connected\ndata: {\"connection_id\""),
            "{text}"
        );
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        assert_eq!(ServerFrame::from_sse("connected", data), Some(f));
        assert_eq!(ServerFrame::from_sse("message", data), None);
    }

    #[test]
    fn blob_payloads_decode_and_bad_base64_is_an_error() {
        let mut m: WebhookMessage = serde_json::from_str(
            r#"{"message_id":"m","payload":"AAEC","payload_encoding":"base64"}"#,
        )
        .unwrap();
        assert_eq!(m.body_bytes().unwrap(), vec![0, 1, 2]);
        m.payload = serde_json::Value::from("!!");
        assert!(m.body_bytes().is_err());
    }

    #[test]
    fn timestamps_in_the_python_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_735_732_800_123_456);
        let s = timestamp(t);
        assert_eq!(s, "2025-01-01T12:00:00.123456+00:00");
        assert_eq!(parse_timestamp(&s), Some(t));
        assert!(parse_timestamp("2025-01-01T12:00:00Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn channel_names() {
        assert!(is_valid_channel("stripe-payments.v2_x"));
        for bad in ["", "-a", "a..b", "a/b", "a b", &"a".repeat(65)] {
            assert!(!is_valid_channel(bad), "{bad}");
        }
        assert_eq!(stream_path("a b"), "/connect/stream/a%20b");
        assert_eq!(
            AckStatus::Nack { retry: false }.query("m 1"),
            "message_id=m%201&status=nack&retry=false"
        );
    }
}
