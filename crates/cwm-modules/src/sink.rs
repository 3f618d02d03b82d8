//! The sink contract: set up once, deliver events, shut down.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
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
    pub payload: Payload,
    /// Request headers: lower-case names, the last occurrence of a repeated name wins.
    pub headers: Vec<(String, String)>,
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
}

/// A destination for webhook events. Built once per webhook config version (at load time), shared
/// by every request to that webhook, and told to shut down when the process stops.
///
/// `deliver` returns `Ok` only once the destination has accepted the event (file written, HTTP 2xx,
/// broker acknowledged): the receiver answers 200 on that promise.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The module name this sink was built for.
    fn module(&self) -> &'static str;
    async fn deliver(&self, event: &Event) -> Result<(), SinkError>;
    /// Flush and release resources. Called once at shutdown; the default does nothing.
    async fn shutdown(&self) {}
}
