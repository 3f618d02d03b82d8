//! The `redis_publish` sink's settings: `module-config.channel` with a connection, or the
//! Python gateway's top-level `redis` object.

use serde::Deserialize;
use serde_json::Value;

use crate::sink::{BuildError, SinkContext};
use crate::sinks::redis::{DEFAULT_HOST, DEFAULT_PORT, RedisSettings, port_value};

/// The channel used when none is named.
pub const DEFAULT_CHANNEL: &str = "webhook_events";

/// `module-config` of a `redis_publish` webhook.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisPublishConfig {
    /// The channel (default `webhook_events`).
    #[serde(default)]
    pub channel: Option<String>,
}

/// The top-level `redis` object of a webhook (the Python gateway's form).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WebhookRedis {
    /// Default `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    /// Default 6379; a number or a numeric string.
    #[serde(default)]
    pub port: Option<Value>,
    /// Default `webhook_events`.
    #[serde(default)]
    pub channel: Option<String>,
    /// When a list: the host must be one of these names (case-insensitive); an empty list
    /// allows none.
    #[serde(default)]
    pub allowed_hosts: Option<Value>,
}

/// Where a `redis_publish` sink publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The checked, trimmed channel name.
    pub channel: String,
    /// `Some` for the top-level `redis` form: the sink's own server. `None`: the connection.
    pub own: Option<RedisSettings>,
}

impl RedisPublishConfig {
    /// Read and check the settings of `cx`: its connection and `module-config.channel` when
    /// it has a connection, otherwise its top-level `redis` object.
    pub fn resolve(cx: &SinkContext<'_>) -> Result<Resolved, BuildError> {
        let config: Self = cx.module_config()?;
        if cx.connection.is_some() {
            let channel = config.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
            let channel =
                validate_channel(channel).map_err(|e| BuildError::option("channel", e))?;
            return Ok(Resolved { channel, own: None });
        }
        let Some(redis) = cx.config.extra.get("redis").filter(|v| !v.is_null()) else {
            return Err(BuildError::Connection(
                "module 'redis_publish' needs a 'connection' (of type 'redis-publish', 'redis' or \
                 'redis-rq') or a top-level 'redis' object"
                    .into(),
            ));
        };
        if !redis.is_object() {
            return Err(BuildError::Invalid("'redis' must be an object".into()));
        }
        let redis: WebhookRedis = serde_path_to_error::deserialize(redis.clone()).map_err(|e| {
            let key = e.path().to_string();
            BuildError::Invalid(format!("'redis.{key}': {}", e.into_inner()))
        })?;
        let bad =
            |key: &str, message: String| BuildError::Invalid(format!("'redis.{key}': {message}"));
        let host = redis
            .host
            .as_deref()
            .map(str::trim)
            .unwrap_or(DEFAULT_HOST)
            .to_owned();
        if host.is_empty() {
            return Err(bad("host", "the host cannot be empty".into()));
        }
        check_allowed(&host, redis.allowed_hosts.as_ref()).map_err(|e| bad("allowed_hosts", e))?;
        cwm_config::model::check_connection_host(&host).map_err(|e| bad("host", e.to_string()))?;
        let port = match redis.port.as_ref().filter(|p| !p.is_null()) {
            Some(p) => port_value(p).map_err(|e| bad("port", e))?,
            None => DEFAULT_PORT,
        };
        let channel = redis
            .channel
            .or(config.channel)
            .unwrap_or_else(|| DEFAULT_CHANNEL.to_owned());
        let channel = validate_channel(&channel).map_err(|e| bad("channel", e))?;
        Ok(Resolved {
            channel,
            own: Some(RedisSettings::tcp(&host, port)),
        })
    }
}

/// `allowed_hosts`, when a list, must name `host`.
fn check_allowed(host: &str, allowed: Option<&Value>) -> Result<(), String> {
    let Some(Value::Array(list)) = allowed else {
        return Ok(());
    };
    let listed = list
        .iter()
        .filter_map(Value::as_str)
        .any(|h| h.trim().eq_ignore_ascii_case(host));
    if listed {
        Ok(())
    } else {
        Err(format!("host '{host}' is not in allowed_hosts"))
    }
}

/// Redis commands a channel may not be named after (nor start with, followed by `.` or `_`).
const FORBIDDEN_WORDS: &[&str] = &[
    "pubsub",
    "publish",
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "keys",
    "get",
    "set",
    "del",
    "exists",
    "expire",
    "ttl",
    "flushdb",
    "flushall",
    "config",
    "info",
    "monitor",
    "debug",
    "eval",
    "evalsha",
    "script",
];

/// The Python gateway's channel checks: trimmed, 1 to 255 characters of letters, digits, `_`,
/// `-` and `.`, no `..` or `--`, and not a Redis command word nor starting with one followed by
/// `.` or `_` (case-insensitive). Returns the trimmed name.
pub fn validate_channel(raw: &str) -> Result<String, String> {
    let channel = raw.trim();
    if channel.is_empty() {
        return Err("the channel name cannot be empty".into());
    }
    if channel.len() > 255 {
        return Err(format!(
            "channel name too long: {} characters (max: 255)",
            channel.len()
        ));
    }
    if !channel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "invalid channel name '{channel}': only letters, digits, '_', '-' and '.' are allowed"
        ));
    }
    for pattern in ["..", "--"] {
        if channel.contains(pattern) {
            return Err(format!(
                "channel name contains the forbidden pattern '{pattern}'"
            ));
        }
    }
    let lower = channel.to_ascii_lowercase();
    for word in FORBIDDEN_WORDS {
        let starts = lower
            .strip_prefix(word)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '_']));
        if starts {
            return Err(format!(
                "channel name contains the forbidden Redis keyword '{word}'"
            ));
        }
    }
    Ok(channel.to_owned())
}
