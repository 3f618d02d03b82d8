//! The `kafka` sink's `module-config` and the producer settings of a `kafka` connection.

use crate::opts::truthy_or_false;
use cwm_config::ConnectionConfig;
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

use crate::sink::{BuildError, SinkContext};

/// `module-config` of a `kafka` webhook, as written. [`KafkaSinkConfig::resolve`] checks it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KafkaSinkConfig {
    /// The topic; when absent, the webhook's top-level `topic` key is used.
    #[serde(default, deserialize_with = "opt_string")]
    pub topic: Option<String>,
    /// A static message key: a string, or a number or boolean written as the Python gateway's
    /// `str()` renders it (`True`, `1.5`).
    #[serde(default, deserialize_with = "opt_key")]
    pub key: Option<String>,
    /// A fixed partition (a non-negative integer, also given as a numeric string); librdkafka's
    /// partitioner picks one when absent.
    #[serde(default, deserialize_with = "opt_partition")]
    pub partition: Option<i32>,
    /// Copy every request header (lower-case names) into the message's Kafka headers.
    #[serde(default, deserialize_with = "truthy_or_false")]
    pub forward_headers: bool,
}

/// The checked settings a `kafka` sink produces with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub topic: String,
    pub key: Option<String>,
    pub partition: Option<i32>,
    pub forward_headers: bool,
}

impl KafkaSinkConfig {
    /// Read and check the `module-config` of `cx` (topic falling back to the top-level `topic`).
    pub fn resolve(cx: &SinkContext<'_>) -> Result<Resolved, BuildError> {
        let config: Self = cx.module_config()?;
        let topic = match config.topic {
            Some(topic) => topic,
            None => match cx.config.extra.get("topic") {
                None | Some(Value::Null) => {
                    return Err(BuildError::option("topic", "a topic is required"));
                }
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(BuildError::option("topic", "must be a string")),
            },
        };
        let topic = validate_topic(&topic).map_err(|e| BuildError::option("topic", e))?;
        Ok(Resolved {
            topic,
            key: config.key,
            partition: config.partition,
            forward_headers: config.forward_headers,
        })
    }
}

/// Kafka command words a topic may not be, nor start with (followed by `.`, `_` or `-`).
const FORBIDDEN_WORDS: &[&str] = &[
    "create",
    "delete",
    "describe",
    "list",
    "alter",
    "config",
    "produce",
    "consume",
    "console-producer",
    "console-consumer",
    "kafka-topics",
    "kafka-configs",
];

/// The topic name checks of the Python gateway: trimmed, 2 to 249 characters of
/// `[a-zA-Z0-9._-]`, no `..` or `--`, not a Kafka command word. Returns the trimmed name.
pub fn validate_topic(raw: &str) -> Result<String, String> {
    let topic = raw.trim();
    if topic.is_empty() {
        return Err("the topic name cannot be empty".into());
    }
    let len = topic.chars().count();
    if len > 249 {
        return Err(format!("topic name too long: {len} characters (max: 249)"));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "invalid topic name '{topic}': only letters, digits, '_', '-' and '.' are allowed"
        ));
    }
    for pattern in ["..", "--"] {
        if topic.contains(pattern) {
            return Err(format!(
                "topic name contains the forbidden pattern '{pattern}'"
            ));
        }
    }
    let lower = topic.to_ascii_lowercase();
    for word in FORBIDDEN_WORDS {
        let starts = lower
            .strip_prefix(word)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '_', '-']));
        if starts {
            return Err(format!(
                "topic name contains the forbidden Kafka keyword '{word}'"
            ));
        }
    }
    if len < 2 {
        return Err("topic name too short (minimum 2 characters)".into());
    }
    Ok(topic.to_owned())
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(D::Error::custom("must be a string")),
    }
}

fn opt_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Bool(true) => Ok(Some("True".into())),
        Value::Bool(false) => Ok(Some("False".into())),
        Value::Number(n) => Ok(Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => python_float(f),
            _ => n.to_string(),
        })),
        _ => Err(D::Error::custom("must be a string, a number or a boolean")),
    }
}

fn opt_partition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let bad = || D::Error::custom("must be a non-negative integer");
    let n = match Value::deserialize(d)? {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    i32::try_from(n)
        .ok()
        .filter(|p| *p >= 0)
        .map(Some)
        .ok_or_else(bad)
}

/// A float as Python's `str()` writes it: the shortest round-trip digits, positional for
/// exponents -4..16 (with `.0` when integral), otherwise `d.ddde+XX`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = f.to_string();
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Connection keys without a dot that are read: `bootstrap_servers` is translated, `acks` is
/// passed to librdkafka as it is.
const PLAIN_PROPERTIES: &[&str] = &["acks"];

/// The librdkafka settings of a `kafka` connection: `bootstrap_servers` (a string of
/// comma-separated `host:port`, or a list of them; default `localhost:9092`), `acks` and every
/// key whose name contains a dot as librdkafka properties, and the producer defaults `acks=1`,
/// `linger.ms=0` and `message.timeout.ms=30000` unless the connection sets them. `type`, `host`
/// and `port` are not used; other keys are ignored with a warning. The second value lists the
/// ignored keys.
pub fn producer_config(config: &ConnectionConfig) -> Result<(ClientConfig, Vec<String>), String> {
    let mut cc = ClientConfig::new();
    let servers = match config.extra.get("bootstrap_servers") {
        None | Some(Value::Null) => "localhost:9092".to_owned(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(|s| s.trim().to_owned()).ok_or_else(|| {
                    "'bootstrap_servers' must be a string or a list of strings".to_owned()
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        Some(_) => return Err("'bootstrap_servers' must be a string or a list of strings".into()),
    };
    if servers.is_empty() {
        return Err("'bootstrap_servers' is empty".into());
    }
    cc.set("bootstrap.servers", servers);
    cc.set("acks", "1");
    // Each delivery waits for its acknowledgement: do not hold messages back to fill batches
    // (librdkafka's default is 5 ms). Messages queued while a request is in flight still share
    // the next one.
    cc.set("linger.ms", "0");
    cc.set("message.timeout.ms", "30000");
    let mut ignored = Vec::new();
    for (key, value) in &config.extra {
        if key == "bootstrap_servers" {
            continue;
        }
        if !key.contains('.') && !PLAIN_PROPERTIES.contains(&key.as_str()) {
            ignored.push(key.clone());
            continue;
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return Err(format!("'{key}' must be a string, a number or a boolean")),
        };
        cc.set(key.as_str(), value);
    }
    Ok((cc, ignored))
}
