//! Typed webhook and connection configs.
//!
//! Both keep every key they do not model in `extra`, so a sink still sees the whole document and
//! a config written for the upstream gateway round-trips unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::subst::{Env, substitute};

/// How the request body is handed to the sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Parse the body as JSON (depth and string limits apply).
    #[default]
    Json,
    /// Pass the raw bytes.
    Blob,
}

/// When the receiver answers 200: once the sink took the event, or at once (`receive`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// After the sink accepted the event; 503 with Retry-After when it did not.
    #[default]
    Delivery,
    /// At once, after queueing in memory (the upstream's fire-and-forget).
    Receive,
}

/// Retry policy for a sink delivery (the `retry` object), already clamped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1..=20 (default 3).
    pub max_attempts: u32,
    /// Seconds before the first retry: 0..=60 (default 1).
    pub initial_delay: f64,
    /// Longest wait between attempts, in seconds: `initial_delay`..=60 (default 60).
    pub max_delay: f64,
    /// Factor applied to the wait after each attempt: 0.1..=10 (default 2).
    pub backoff_multiplier: f64,
}

/// One webhook: the value of a `webhooks.json` entry or an etcd webhook key.
///
/// Deserializing is hand-written (see the `Deserialize` impl below): known keys go straight into
/// their typed fields, every other key into `extra`, and a repeated key keeps its last value, as a
/// `Value` parse of the same document would.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookConfig {
    /// Sink module name, e.g. `log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// How the body is handed to the sink (`json` by default).
    pub data_type: DataType,
    /// Name of a global connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The sink's own settings. A `module-config` that is not an object counts as `{}`, as
    /// upstream.
    #[serde(rename = "module-config", skip_serializing_if = "Map::is_empty")]
    pub module_config: Map<String, Value>,
    /// Static token or `Bearer <token>` the `Authorization` header must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// When the receiver answers 200 (`delivery` by default).
    pub ack: Ack,
    /// Raw `retry` object; see [`WebhookConfig::retry_policy`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
    /// Every key not modelled above, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The keys of a webhook document.
enum Field {
    Module,
    DataType,
    Connection,
    ModuleConfig,
    Authorization,
    Ack,
    Retry,
    Other(String),
}

impl Field {
    fn known(name: &str) -> Option<Self> {
        Some(match name {
            "module" => Self::Module,
            "data_type" => Self::DataType,
            "connection" => Self::Connection,
            "module-config" => Self::ModuleConfig,
            "authorization" => Self::Authorization,
            "ack" => Self::Ack,
            "retry" => Self::Retry,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl serde::de::Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::known(v).unwrap_or_else(|| Field::Other(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Field, E> {
                Ok(Field::known(&v).unwrap_or(Field::Other(v)))
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for WebhookConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ConfigVisitor;
        impl<'de> serde::de::Visitor<'de> for ConfigVisitor {
            type Value = WebhookConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a webhook config object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<WebhookConfig, A::Error> {
                let mut cfg = WebhookConfig {
                    module: None,
                    data_type: DataType::default(),
                    connection: None,
                    module_config: Map::new(),
                    authorization: None,
                    ack: Ack::default(),
                    retry: None,
                    extra: Map::new(),
                };
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Module => cfg.module = map.next_value()?,
                        Field::DataType => cfg.data_type = map.next_value()?,
                        Field::Connection => cfg.connection = map.next_value()?,
                        Field::ModuleConfig => {
                            cfg.module_config = match map.next_value::<Value>()? {
                                Value::Object(m) => m,
                                _ => Map::new(),
                            }
                        }
                        Field::Authorization => cfg.authorization = map.next_value()?,
                        Field::Ack => cfg.ack = map.next_value()?,
                        Field::Retry => cfg.retry = map.next_value()?,
                        Field::Other(key) => {
                            cfg.extra.insert(key, map.next_value()?);
                        }
                    }
                }
                Ok(cfg)
            }
        }
        d.deserialize_map(ConfigVisitor)
    }
}

/// Whether `{$VAR}` substitution could change this JSON text: it holds `{$`, or a `\u` escape
/// that might spell one.
fn may_substitute(json: &[u8]) -> bool {
    json.windows(2).any(|w| w == b"{$" || w == b"\\u")
}

/// Why a config document was refused. The message names the problem, never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The text is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The document is not a JSON object.
    #[error("value is not a JSON object")]
    NotAnObject,
    /// A `{$VAR}` placeholder could not be resolved.
    #[error("substitution failed: {0}")]
    Subst(#[from] crate::subst::SubstError),
    /// A known field has the wrong type or value (serde's message).
    #[error("invalid field: {0}")]
    Shape(String),
    /// A rule beyond the JSON shape is broken (a forbidden character, a bad port, ...).
    #[error("{0}")]
    Invalid(String),
}

impl WebhookConfig {
    /// Parse one webhook document: object check, env substitution, typed fields.
    pub fn from_value(mut value: Value, env: &dyn Env) -> Result<Self, EntryError> {
        if !value.is_object() {
            return Err(EntryError::NotAnObject);
        }
        substitute(&mut value, env)?;
        serde_json::from_value::<Self>(value)
            .map_err(|e| EntryError::Shape(e.to_string()))?
            .checked()
    }

    /// Parse one webhook document from its JSON text, with the same result (and the same error)
    /// as parsing it into a `Value` and calling [`WebhookConfig::from_value`]. A document with no
    /// placeholder (the common case) is read straight into the typed fields, without a `Value`
    /// of the whole document.
    pub fn from_json(json: &[u8], env: &dyn Env) -> Result<Self, EntryError> {
        if !may_substitute(json)
            && let Ok(cfg) = serde_json::from_slice::<Self>(json)
        {
            return cfg.checked();
        }
        // Placeholders, or a document the typed parse refused: the `Value` route, whose errors
        // (invalid JSON, not an object, the bad field) are the ones reported.
        let value: Value =
            serde_json::from_slice(json).map_err(|e| EntryError::Json(e.to_string()))?;
        Self::from_value(value, env)
    }

    /// The checks that are not about JSON shape.
    fn checked(self) -> Result<Self, EntryError> {
        if let Some(a) = &self.authorization
            && a.contains(['\r', '\n', '\0'])
        {
            return Err(EntryError::Invalid(
                "authorization contains a forbidden character".into(),
            ));
        }
        Ok(self)
    }

    /// The chain list, if this webhook is in chain mode (upstream `chain` key).
    pub fn chain(&self) -> Option<&Value> {
        self.extra.get("chain").filter(|v| !v.is_null())
    }

    /// The clamped retry policy, or `None` when retries are off.
    pub fn retry_policy(&self) -> Option<RetryPolicy> {
        let r = self.retry.as_ref()?.as_object()?;
        if !r.get("enabled").is_some_and(truthy) {
            return None;
        }
        let num = |k: &str, dflt: f64, lo: f64, hi: f64| {
            r.get(k)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .map_or(dflt, |v| v.clamp(lo, hi))
        };
        let max_attempts = r
            .get("max_attempts")
            .and_then(Value::as_u64)
            .map_or(3, |v| v.clamp(1, 20)) as u32;
        let initial_delay = num("initial_delay", 1.0, 0.0, 60.0);
        let max_delay = num("max_delay", 60.0, 0.0, 60.0).max(initial_delay);
        Some(RetryPolicy {
            max_attempts,
            initial_delay,
            max_delay,
            backoff_multiplier: num("backoff_multiplier", 2.0, 0.1, 10.0),
        })
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// One connection: the value of a `connections.json` entry or `/cwm/global/connections/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionConfig {
    /// `redis-rq`, `kafka`, `clickhouse`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or address; required for some types (see [`ConnectionConfig::from_value`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A number or a numeric string (substitution always yields strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
    /// Every other key, kept verbatim for the client of this type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Connection types whose `host` and `port` are required and checked at load.
const HOST_PORT_TYPES: &[&str] = &["rabbitmq", "redis-rq", "postgresql", "mysql", "clickhouse"];

impl ConnectionConfig {
    /// Parse and validate one connection document (see [`check_connection_host`]).
    pub fn from_value(mut value: Value, env: &dyn Env) -> Result<Self, EntryError> {
        if !value.is_object() {
            return Err(EntryError::NotAnObject);
        }
        substitute(&mut value, env)?;
        let cfg: Self =
            serde_json::from_value(value).map_err(|e| EntryError::Shape(e.to_string()))?;
        if cfg.kind.trim().is_empty() {
            return Err(EntryError::Invalid("connection type is empty".into()));
        }
        if let Some(host) = &cfg.host {
            check_connection_host(host)?;
        }
        if cfg.port.is_some() {
            cfg.port()?;
        }
        if HOST_PORT_TYPES.contains(&cfg.kind.as_str()) {
            if cfg.host.as_deref().is_none_or(|h| h.trim().is_empty()) {
                return Err(EntryError::Invalid(format!(
                    "{} connection needs a host",
                    cfg.kind
                )));
            }
            if cfg.port.is_none() {
                return Err(EntryError::Invalid(format!(
                    "{} connection needs a port",
                    cfg.kind
                )));
            }
        }
        Ok(cfg)
    }

    /// The port as a number, accepting numeric strings; an error outside 1..=65535.
    pub fn port(&self) -> Result<Option<u16>, EntryError> {
        let bad = || EntryError::Invalid("port must be an integer in 1..65535".into());
        let n = match &self.port {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
            Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
        };
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(bad()),
        }
    }
}

/// Connection hosts are operator configuration: localhost, loopback and private
/// addresses are fine; cloud metadata endpoints and shell metacharacters are not.
pub fn check_connection_host(host: &str) -> Result<(), EntryError> {
    let h = host.trim();
    let fail = |why: &str| {
        Err(EntryError::Invalid(format!(
            "connection host rejected: {why}"
        )))
    };
    if h.is_empty() || h.len() > 253 || h.contains('\0') {
        return fail("empty, too long or contains NUL");
    }
    if h.contains([
        ';', '|', '&', '$', '`', '(', ')', '{', '}', '<', '>', '?', '*', '!', '\\', ' ',
    ]) {
        return fail("contains a forbidden character");
    }
    let lower = h.to_ascii_lowercase();
    let bare = lower.trim_start_matches('[').trim_end_matches(']');
    if is_metadata_host(bare) {
        return fail("cloud metadata address");
    }
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if ip.is_multicast() || is_link_local(&ip) {
            return fail("link-local or multicast address");
        }
        return Ok(());
    }
    if lower.starts_with('[') {
        return fail("brackets around something that is not an IPv6 address");
    }
    if !bare
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return fail("not a host name");
    }
    Ok(())
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Cloud metadata endpoints, by name or address.
pub fn is_metadata_host(host: &str) -> bool {
    const NAMES: &[&str] = &[
        "169.254.169.254",
        "metadata.google.internal",
        "metadata.azure.com",
        "metadata.cloud.ibm.com",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "metadata",
        "instance-data",
    ];
    let h = host.trim_end_matches('.');
    NAMES
        .iter()
        .any(|n| h == *n || h.ends_with(&format!(".{n}")))
        || (h.contains("metadata")
            && (h.contains("internal") || h.contains("azure") || h.contains("google")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn webhook_keeps_unknown_keys() {
        let v = json!({"module":"log","module-config":{"pretty_print":true},"hmac":{"secret":"x"},"data_type":"blob"});
        let w = WebhookConfig::from_value(v.clone(), &no_env).unwrap();
        assert_eq!(w.module.as_deref(), Some("log"));
        assert_eq!(w.data_type, DataType::Blob);
        assert_eq!(w.extra.get("hmac"), Some(&json!({"secret":"x"})));
        assert_eq!(
            serde_json::to_value(&w).unwrap()["hmac"],
            json!({"secret":"x"})
        );
    }

    /// `from_json` must give what parsing into a `Value` and calling `from_value` gives, result
    /// and error message alike, on the fast path and off it.
    #[test]
    fn from_json_matches_from_value() {
        let env = |n: &str| (n == "T").then(|| "tok\"en".to_owned());
        let docs: &[&str] = &[
            r#"{"module":"log","module-config":{"pretty_print":true},"hmac":{"secret":"x"},"data_type":"blob"}"#,
            r#"{"data_type":"json","module":"log","module-config":{"pretty_print":false,"redact_sensitive":true},"authorization":"Bearer t","ack":"delivery","retry":{"enabled":true,"max_attempts":3},"description":"d"}"#,
            r#"{"module":"log","module-config":"not an object","retry":null,"connection":null}"#,
            r#"{"module":"log","authorization":"Bearer {$T}","extra":["{$T:x}"]}"#,
            r#"{"module":"log","authorization":"\u007b$T}"}"#,
            r#"{"module":"log","description":"caf\u00e9 \n"}"#,
            "{\"module\":\"log\",\"description\":\"café \\n\\\"q\\\"\"}",
            // A repeated key keeps its last value, known or not.
            r#"{"module":5,"module":"log","x":1,"x":2}"#,
            r#"{"module":"log","module":5}"#,
            r#"{}"#,
            r#" {"module" : "log"} "#,
            // Refused: bad JSON, not an object, bad fields, forbidden characters.
            r#"{"module":"log""#,
            r#"{"module":"log"} x"#,
            "not json",
            r#""a string""#,
            "[1,2]",
            "null",
            r#"{"data_type":"xml"}"#,
            r#"{"ack":"never"}"#,
            r#"{"module":["log"]}"#,
            r#"{"authorization":"a\nb"}"#,
            r#"{"authorization":"{$NOPE}"}"#,
        ];
        // The typical documents take the fast path (the others test the fallback).
        for doc in &docs[..3] {
            assert!(!may_substitute(doc.as_bytes()), "{doc}");
        }
        assert!(!may_substitute(docs[6].as_bytes()), "{}", docs[6]);
        for doc in docs {
            let via_value = match serde_json::from_slice::<Value>(doc.as_bytes()) {
                Ok(v) => WebhookConfig::from_value(v, &env),
                Err(e) => Err(EntryError::Json(e.to_string())),
            };
            assert_eq!(
                WebhookConfig::from_json(doc.as_bytes(), &env),
                via_value,
                "{doc}"
            );
        }
        let w = WebhookConfig::from_json(br#"{"module":"log","authorization":"\u007b$T}"}"#, &env)
            .unwrap();
        assert_eq!(w.authorization.as_deref(), Some("tok\"en"));
        let w =
            WebhookConfig::from_json(br#"{"module":5,"module":"log","x":1,"x":2}"#, &env).unwrap();
        assert_eq!(
            (w.module.as_deref(), w.extra.get("x")),
            (Some("log"), Some(&json!(2)))
        );
        assert_eq!(
            WebhookConfig::from_json(b"[1]", &env),
            Err(EntryError::NotAnObject)
        );
        assert!(
            WebhookConfig::from_json(b"{", &env)
                .unwrap_err()
                .to_string()
                .starts_with("invalid JSON: ")
        );
    }

    #[test]
    fn webhook_serializes_back_with_unknown_keys_in_place() {
        let doc = r#"{"module":"log","data_type":"json","module-config":{"b":1,"a":2},"ack":"receive","retry":{"enabled":true},"z":1,"a":[1]}"#;
        let w = WebhookConfig::from_json(doc.as_bytes(), &no_env).unwrap();
        // Compared as text: `Value` equality ignores key order, which is what this is about.
        assert_eq!(serde_json::to_string(&w).unwrap(), doc);
    }

    #[test]
    fn webhook_rejects_non_objects_and_bad_types() {
        for v in [json!("a"), json!([1]), json!(1), json!(null)] {
            assert_eq!(
                WebhookConfig::from_value(v, &no_env),
                Err(EntryError::NotAnObject)
            );
        }
        assert!(WebhookConfig::from_value(json!({"data_type":"xml"}), &no_env).is_err());
        assert!(WebhookConfig::from_value(json!({"ack":"never"}), &no_env).is_err());
        assert!(WebhookConfig::from_value(json!({"authorization":"{$NOPE}"}), &no_env).is_err());
    }

    #[test]
    fn retry_policy_is_clamped() {
        let w = WebhookConfig::from_value(
            json!({"module":"log","retry":{"enabled":true,"max_attempts":99,"initial_delay":-1,"max_delay":0.5,"backoff_multiplier":"x"}}),
            &no_env,
        )
        .unwrap();
        let p = w.retry_policy().unwrap();
        assert_eq!(p.max_attempts, 20);
        assert_eq!(p.initial_delay, 0.0);
        assert_eq!(p.max_delay, 0.5);
        assert_eq!(p.backoff_multiplier, 2.0);
        let off = WebhookConfig::from_value(json!({"retry":{"enabled":false}}), &no_env).unwrap();
        assert!(off.retry_policy().is_none());
    }

    #[test]
    fn connections() {
        let env = |n: &str| (n == "P").then(|| "6380".to_owned());
        let c = ConnectionConfig::from_value(
            json!({"type":"redis-rq","host":"localhost","port":"{$P}"}),
            &env,
        )
        .unwrap();
        assert_eq!(c.port().unwrap(), Some(6380));
        for (host, ok) in [
            ("localhost", true),
            ("127.0.0.1", true),
            ("10.0.0.5", true),
            ("redis.example.com", true),
            ("169.254.169.254", false),
            ("metadata.google.internal", false),
            ("a;rm -rf", false),
            ("[notip]", false),
            ("fe80::1", false),
        ] {
            let r = ConnectionConfig::from_value(
                json!({"type":"redis-rq","host":host,"port":6379}),
                &no_env,
            );
            assert_eq!(r.is_ok(), ok, "{host}");
        }
        assert!(
            ConnectionConfig::from_value(json!({"type":"mysql","host":"db","port":99999}), &no_env)
                .is_err()
        );
        assert!(
            ConnectionConfig::from_value(json!({"type":"postgresql","host":"db"}), &no_env)
                .is_err()
        );
        assert!(ConnectionConfig::from_value(json!({"host":"db"}), &no_env).is_err());
        assert!(
            ConnectionConfig::from_value(
                json!({"type":"kafka","bootstrap_servers":"k:9092"}),
                &no_env
            )
            .is_ok()
        );
    }
}
