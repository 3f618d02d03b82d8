//! `redis_publish`: PUBLISH each event on a Redis channel.
//!
//! Two ways to configure it. With a connection (of type `redis-publish`, `redis` or
//! `redis-rq`; see [`crate::sinks::redis`] for its keys):
//!
//! ```json
//! {"events": {"module": "redis_publish", "connection": "redis_main",
//!             "module-config": {"channel": "webhook_events"}}}
//! ```
//!
//! or, as the Python gateway read it, with a top-level `redis` object and no connection:
//!
//! ```json
//! {"events": {"module": "redis_publish",
//!             "redis": {"host": "10.0.0.5", "port": 6379, "channel": "webhook_events"}}}
//! ```
//!
//! A webhook with both a `connection` and a `redis` object uses the connection.
//!
//! - `module-config.channel` (connection form) or `redis.channel` (default `webhook_events`):
//!   trimmed, 1 to 255 characters of letters, digits, `_`, `-` and `.`, without `..` or `--`,
//!   and neither a Redis command word (pubsub, publish, subscribe, psubscribe, unsubscribe,
//!   punsubscribe, keys, get, set, del, exists, expire, ttl, flushdb, flushall, config, info,
//!   monitor, debug, eval, evalsha, script) nor starting with one followed by `.` or `_`
//!   (case-insensitive).
//! - `redis.host` (default `localhost`) must pass the connection host rules (no cloud metadata
//!   address, no shell characters); when `redis.allowed_hosts` is a list, the host must also be
//!   one of its names (case-insensitive; an empty list allows none). `redis.port` (default
//!   6379) is a number or a numeric string in 1..65535. This form has no `db` or credentials.
//!   The sink has its own client, connected on first delivery and kept for the webhook's
//!   lifetime.
//!
//! The message is JSON: `{"payload": <payload>, "headers": {<lower-case name>: <value>, ...}}`.
//! A JSON payload is the request's text as received (or the cleaned document when credential
//! cleanup changed it). A `data_type: blob` payload (which the Python gateway could not
//! publish) is the body in standard base64 with an `"encoding": "base64"` member:
//! `{"payload": "<base64>", "encoding": "base64", "headers": {...}}`.
//!
//! The delivery succeeds once Redis answered the PUBLISH, whether or not anyone is subscribed
//! (Redis pub/sub keeps nothing for absent subscribers). Redis down or slow fails it
//! retryably (the sender gets 503 and retries).

mod config;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::{DEFAULT_CHANNEL, RedisPublishConfig, Resolved, WebhookRedis, validate_channel};
pub use sink::{RedisPublishSink, message};

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};
use crate::sinks::redis::RedisClient;
use sink::Target;

/// Builds `redis_publish` sinks.
#[derive(Debug)]
pub struct RedisPublishBuilder;

impl SinkBuilder for RedisPublishBuilder {
    fn name(&self) -> &'static str {
        "redis_publish"
    }

    fn connection_types(&self) -> &'static [&'static str] {
        &["redis-publish", "redis", "redis-rq"]
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let config = RedisPublishConfig::resolve(cx)?;
        let target = match config.own {
            Some(settings) => {
                let label = format!("{}:{}", settings.host, settings.port);
                Target::Own(Box::new(
                    RedisClient::new(label, &settings).map_err(BuildError::Invalid)?,
                ))
            }
            // The registry's slot for that name (the same `Connection`, shared).
            None => Target::Connection(
                cx.modules
                    .connections()
                    .get(cx.require_connection()?.name()),
            ),
        };
        Ok(Arc::new(RedisPublishSink {
            target,
            channel: config.channel,
        }))
    }
}
