//! Receiver settings that are not configuration entries (limits, admin token, timeouts).

use std::net::IpAddr;
use std::time::Duration;

pub use crate::cors::Cors;

/// Default body limit: 10 MiB, as upstream.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// Default cap on open client connections (lowered to what the file limit allows).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

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
    /// Most events one webhook may hold in the receive queue (its share of it).
    pub receive_queue_per_webhook: usize,
    /// How long shutdown may take in all: in-flight requests, queued events, sink flushes.
    pub shutdown_timeout: Duration,
    /// How long a request head may take to arrive (from the connection's start, or from its
    /// first byte on a keep-alive connection); then 408 and close.
    pub header_read_timeout: Duration,
    /// Longest pause between two chunks of a request body; then 408 and close.
    pub body_idle_timeout: Duration,
    /// How long a keep-alive connection may stay idle between requests.
    pub keep_alive_timeout: Duration,
    /// Most client connections served at once; more wait in the listen backlog while idle
    /// connections are closed to make room.
    pub max_connections: usize,
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
    /// `CORS_ALLOWED_ORIGINS`, validated at startup ([`Cors::parse`]); off by default.
    pub cors: Cors,
    /// Serve `/openapi.json`, `/docs` and `/redoc` (on by default; `DISABLE_OPENAPI_DOCS=true`
    /// turns them off: 404).
    pub openapi_docs: bool,
    /// `ROOT_PATH`: the prefix a reverse proxy serves the receiver under, used only in generated
    /// URLs (the OpenAPI `servers` entry and the links of the docs pages). `""` for none.
    pub root_path: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            admin_token: None,
            delivery_timeout: Duration::from_secs(10),
            receive_queue_capacity: 10_000,
            receive_queue_per_webhook: 1_000,
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            force_https: false,
            retry_after_seconds: 5,
            stats_token: None,
            stats_allowed_ips: Vec::new(),
            stats_rate_limit: 60,
            stats_sanitize_ids: false,
            root_rate_limit: 120,
            trusted_proxy_ips: Vec::new(),
            cors: Cors::disabled(),
            openapi_docs: true,
            root_path: String::new(),
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
            .field("receive_queue_per_webhook", &self.receive_queue_per_webhook)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_idle_timeout", &self.body_idle_timeout)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("max_connections", &self.max_connections)
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
            .field("cors", &self.cors)
            .field("openapi_docs", &self.openapi_docs)
            .field("root_path", &self.root_path)
            .finish()
    }
}
