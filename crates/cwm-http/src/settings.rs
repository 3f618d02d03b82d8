//! Receiver settings that are not configuration entries (limits, admin token, timeouts).

use std::time::Duration;

/// Default body limit: 10 MiB, as upstream (DECISIONS H4).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// Settings of the HTTP layer.
#[derive(Clone)]
pub struct HttpSettings {
    /// Bodies larger than this get 413, detected while streaming.
    pub max_payload_bytes: usize,
    /// `CONFIG_RELOAD_ADMIN_TOKEN`, trimmed; `None` disables the admin API (403).
    pub admin_token: Option<String>,
    /// Deadline for one delivery, retries included; past it the sender gets 503.
    pub delivery_timeout: Duration,
    /// Events held in memory for `"ack": "receive"` webhooks before 503.
    pub receive_queue_capacity: usize,
    /// How long shutdown waits for in-flight requests and queued events.
    pub shutdown_timeout: Duration,
    /// Always send Strict-Transport-Security.
    pub force_https: bool,
    /// Seconds suggested in `Retry-After` when a delivery failed.
    pub retry_after_seconds: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            admin_token: None,
            delivery_timeout: Duration::from_secs(10),
            receive_queue_capacity: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            force_https: false,
            retry_after_seconds: 5,
        }
    }
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("delivery_timeout", &self.delivery_timeout)
            .field("receive_queue_capacity", &self.receive_queue_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("force_https", &self.force_https)
            .finish()
    }
}
