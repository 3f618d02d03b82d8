//! Receiver settings that are not configuration entries (limits, admin token, timeouts).

use std::net::IpAddr;
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
    /// `STATS_AUTH_TOKEN`: when set, `/stats` needs it (`Bearer T` or `T`).
    pub stats_token: Option<String>,
    /// `STATS_ALLOWED_IPS`: when non-empty, only these client IPs may read `/stats`.
    pub stats_allowed_ips: Vec<IpAddr>,
    /// `STATS_RATE_LIMIT`: `/stats` requests per minute per client IP.
    pub stats_rate_limit: u32,
    /// `STATS_SANITIZE_IDS`: hash webhook ids in `/stats`.
    pub stats_sanitize_ids: bool,
    /// `DEFAULT_ENDPOINT_RATE_LIMIT`: `GET /` requests per minute per client IP.
    pub root_rate_limit: u32,
    /// `TRUSTED_PROXY_IPS`: peers whose `X-Forwarded-For` / `X-Real-IP` names the client.
    pub trusted_proxy_ips: Vec<IpAddr>,
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
            stats_token: None,
            stats_allowed_ips: Vec::new(),
            stats_rate_limit: 60,
            stats_sanitize_ids: false,
            root_rate_limit: 120,
            trusted_proxy_ips: Vec::new(),
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
            .field(
                "stats_token",
                &self.stats_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("stats_allowed_ips", &self.stats_allowed_ips)
            .field("stats_rate_limit", &self.stats_rate_limit)
            .field("stats_sanitize_ids", &self.stats_sanitize_ids)
            .field("root_rate_limit", &self.root_rate_limit)
            .field("trusted_proxy_ips", &self.trusted_proxy_ips)
            .finish()
    }
}
