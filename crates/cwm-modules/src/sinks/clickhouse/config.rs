//! The `clickhouse` sink's `module-config` and the settings of a `clickhouse` connection.

use std::time::Duration;

use crate::opts::{truthy_or_true, truthy_value, yes};
use cwm_config::ConnectionConfig;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::sink::BuildError;

/// Table written when `module-config.table` is absent.
pub const DEFAULT_TABLE: &str = "webhook_logs";
/// Rows per INSERT when `module-config.batch_size` is absent.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Largest `batch_size` accepted.
pub const MAX_BATCH_SIZE: usize = 100_000;
/// How long a row waits for more rows when `module-config.flush_interval_ms` is absent.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;
/// Largest `flush_interval_ms` accepted.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 10_000;
/// Longest table name accepted.
const MAX_TABLE_LEN: usize = 255;

/// The HTTP port used when the connection names a native-protocol port (or none).
pub const DEFAULT_HTTP_PORT: u16 = 8123;
/// The HTTPS port used when a `secure` connection names a native-protocol port (or none).
pub const DEFAULT_HTTPS_PORT: u16 = 8443;
/// The native protocol's ports, which the Python gateway's configs carry in `port`.
const NATIVE_PORTS: [u16; 2] = [9000, 9440];

/// Table names the Python gateway refused outright. It refused names *containing* them (so
/// `created_events` failed); here only a name equal to one of them is refused, since the name
/// is always backquoted in the SQL sent.
const RESERVED_WORDS: &[&str] = &[
    "select", "insert", "update", "delete", "drop", "create", "alter", "truncate", "exec",
    "execute", "union", "script",
];

/// `module-config` of a `clickhouse` webhook. Unknown keys are ignored, numbers may be given as
/// numeric strings and booleans as strings (`{$VAR}` substitution yields strings).
#[derive(Debug, Clone, Deserialize)]
pub struct ClickHouseConfig {
    /// Table to write, in the connection's database (default `webhook_logs`).
    #[serde(default, deserialize_with = "optional_string")]
    pub table: Option<String>,
    /// Whether the `headers` column holds the request headers (default true) or `{}`.
    #[serde(default = "yes", deserialize_with = "truthy_or_true")]
    pub include_headers: bool,
    /// Accepted for the Python gateway's configs; every row has a `timestamp` anyway.
    #[serde(default)]
    pub include_timestamp: Option<Value>,
    /// Rows per INSERT at most (1..=100000, default 1000).
    #[serde(default, deserialize_with = "optional_integer")]
    pub batch_size: Option<u64>,
    /// Longest wait of a row for others to share its INSERT, in ms (1..=10000, default 200).
    #[serde(default, deserialize_with = "optional_integer")]
    pub flush_interval_ms: Option<u64>,
}

/// The checked `module-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The checked table name.
    pub table: String,
    /// Whether rows carry the request headers.
    pub include_headers: bool,
    /// How rows are batched (the table's first webhook decides; see the module docs).
    pub batching: Batching,
}

/// When a table's queued rows are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// A batch is sent as soon as it holds this many rows.
    pub batch_size: usize,
    /// ... or this long after its first row was queued, whichever comes first.
    pub flush_interval: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS),
        }
    }
}

impl ClickHouseConfig {
    /// Check the values; errors name the key.
    pub fn settings(&self) -> Result<Settings, BuildError> {
        let table = check_table(self.table.as_deref().unwrap_or(DEFAULT_TABLE))
            .map_err(|m| BuildError::option("table", m))?;
        let batch_size = match self.batch_size {
            None => DEFAULT_BATCH_SIZE,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_BATCH_SIZE).contains(n))
                .ok_or_else(|| {
                    BuildError::option("batch_size", format!("must be in 1..{MAX_BATCH_SIZE}"))
                })?,
        };
        let flush_ms = match self.flush_interval_ms {
            None => DEFAULT_FLUSH_INTERVAL_MS,
            Some(n) if (1..=MAX_FLUSH_INTERVAL_MS).contains(&n) => n,
            Some(_) => {
                return Err(BuildError::option(
                    "flush_interval_ms",
                    format!("must be in 1..{MAX_FLUSH_INTERVAL_MS}"),
                ));
            }
        };
        Ok(Settings {
            table,
            include_headers: self.include_headers,
            batching: Batching {
                batch_size,
                flush_interval: Duration::from_millis(flush_ms),
            },
        })
    }
}

/// The Python gateway's table-name rules, except for reserved words (see [`RESERVED_WORDS`]).
/// Returns the name without surrounding whitespace.
pub fn check_table(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_TABLE_LEN {
        return Err(format!("must be at most {MAX_TABLE_LEN} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("may only contain letters, digits and '_'".into());
    }
    let lower = name.to_ascii_lowercase();
    if ["..", "--", "xp_", "sp_"].iter().any(|p| lower.contains(p)) {
        return Err("must not contain '..', '--', 'xp_' or 'sp_'".into());
    }
    if RESERVED_WORDS.contains(&lower.as_str()) {
        return Err(format!("'{name}' is a reserved word"));
    }
    Ok(name.to_owned())
}

/// Where and as whom a `clickhouse` connection writes.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Lower-case, without brackets.
    pub host: String,
    /// The HTTP interface's port (see [`http_port`]).
    pub port: u16,
    /// The database holding the tables (default `default`).
    pub database: String,
    /// The account (default `default`).
    pub user: String,
    /// Empty: no password is sent.
    pub password: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Read a `clickhouse` connection: `host` (required), `port`, `http_port`, `secure` (or
    /// `https`), `database` (default `default`), `user` (default `default`), `password`.
    pub fn from_config(config: &ConnectionConfig) -> Result<Self, String> {
        let host = config
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or("a clickhouse connection needs a 'host'")?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase();
        let port = config.port().map_err(|e| e.to_string())?;
        let http = match config.extra.get("http_port") {
            None | Some(Value::Null) => None,
            Some(v) => Some(port_value(v).ok_or("'http_port' must be an integer in 1..65535")?),
        };
        let secure = ["secure", "https"]
            .iter()
            .any(|k| config.extra.get(*k).is_some_and(truthy_value));
        let text = |key: &str, default: &str| -> Result<String, String> {
            match config.extra.get(key) {
                None | Some(Value::Null) => Ok(default.to_owned()),
                Some(Value::String(s)) if s.is_empty() => Ok(default.to_owned()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(_) => Err(format!("'{key}' must be a string")),
            }
        };
        Ok(Self {
            scheme: if secure { "https" } else { "http" },
            host,
            port: http_port(port, http, secure),
            database: text("database", "default")?,
            user: text("user", "default")?,
            password: text("password", "")?,
        })
    }
}

/// The HTTP interface's port. The Python gateway spoke ClickHouse's native protocol on `port`;
/// this sink speaks HTTP: `http_port` when given; otherwise `port`, unless that is a native
/// port (9000, 9440) or absent, in which case the HTTP default (8123, or 8443 when `secure`).
pub fn http_port(port: Option<u16>, http_port: Option<u16>, secure: bool) -> u16 {
    match (http_port, port) {
        (Some(p), _) => p,
        (None, Some(p)) if !NATIVE_PORTS.contains(&p) => p,
        _ if secure => DEFAULT_HTTPS_PORT,
        _ => DEFAULT_HTTP_PORT,
    }
}

fn port_value(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(serde::de::Error::custom("must be a string")),
    }
}

fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bad = || serde::de::Error::custom("must be a positive integer");
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(bad),
        Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}
