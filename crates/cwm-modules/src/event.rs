//! What a sink is given and what it answers: the [`Event`] of one accepted request and the
//! [`SinkError`] of a failed delivery.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::payload::JsonPayload;

/// The body of one webhook request as the sink receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `data_type: json`: the checked document (the request's text, or a cleaned copy).
    Json(JsonPayload),
    /// `data_type: blob`: the raw bytes.
    Blob(Bytes),
}

/// One accepted webhook request, ready for delivery.
#[derive(Debug, Clone)]
pub struct Event {
    /// The namespace of the route, when the namespaced route was used.
    pub namespace: Option<Arc<str>>,
    /// The id from the URL (not the catch-all's id).
    pub webhook_id: Arc<str>,
    /// The request body.
    pub payload: Payload,
    /// Request headers: lower-case names, the last occurrence of a repeated name wins.
    pub headers: Vec<(String, String)>,
    /// When the receiver accepted the request.
    pub received_at: SystemTime,
}

/// Why a delivery failed. `retryable` tells the receiver whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The destination is down, refused the connection or answered 5xx: try again later.
    #[error("destination unavailable: {0}")]
    Unavailable(String),
    /// The destination did not answer in time.
    #[error("delivery timed out")]
    Timeout,
    /// The destination refused this event (4xx, invalid data): retrying will not help.
    #[error("destination rejected the event: {0}")]
    Rejected(String),
    /// The sink's configuration cannot work (bad path, bad URL).
    #[error("sink configuration error: {0}")]
    Config(String),
}

impl SinkError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout)
    }

    /// The upstream's Python exception names this error answers to in a `retry` policy's
    /// `retryable_errors` / `non_retryable_errors` lists.
    pub fn kinds(&self) -> &'static [&'static str] {
        match self {
            Self::Unavailable(_) => &["ConnectionError", "ConnectionRefusedError", "OSError"],
            Self::Timeout => &["TimeoutError", "OSError"],
            Self::Rejected(_) => &["ValueError"],
            Self::Config(_) => &["ValueError", "TypeError", "KeyError"],
        }
    }
}
