//! The Redis client shared by `redis_rq` and `redis_publish`: one per connection (types
//! `redis-rq`, `redis`, `redis-publish`), connecting on first use and reconnecting by itself.
//!
//! A connection of these types:
//!
//! ```json
//! {"redis_main": {"type": "redis-rq", "host": "redis.internal", "port": 6379, "db": 0,
//!                 "username": "webhooks", "password": "{$REDIS_PASSWORD}"}}
//! ```
//!
//! - `host` (default `localhost`), `port` (default 6379; a numeric string is accepted), `db`
//!   (default 0; a numeric string is accepted).
//! - `username` and `password` (optional; the Python gateway had neither): Redis ACL or
//!   `requirepass` credentials. An empty string counts as absent, so `"{$REDIS_PASSWORD:}"`
//!   works for servers without a password.
//! - `url` (optional): `redis://[user[:password]@]host[:port][/db]` (or `unix://`), used instead
//!   of `host` and `port`; `db`, `username` and `password` keys, when given, override the URL's.
//!   `rediss://` (TLS) is not supported by this build.
//!
//! Building the client does no I/O. The first delivery connects (a `ConnectionManager`); a
//! failed connect leaves nothing behind, so the next delivery tries again. Once connected, a
//! dropped connection is re-established in the background with a short backoff (20 ms doubling,
//! at most 2 retries per attempt). Connecting times out after 2 s and every command after 3 s, so
//! a stopped or unreachable Redis fails deliveries quickly instead of holding requests.
//!
//! Errors: a refused, dropped or timed-out connection, and the server states that pass (`LOADING`,
//! `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY`, `OOM`, `MISCONF`, `NOREPLICAS`),
//! are retryable ([`SinkError::Unavailable`] / [`SinkError::Timeout`]); any other error reply
//! (`WRONGTYPE`, `NOAUTH`, `WRONGPASS`, `NOPERM`, ...) and a failed authentication are
//! [`SinkError::Rejected`].

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use cwm_config::ConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};
use serde_json::{Map, Value};

use crate::connection::Client;
use crate::sink::SinkError;

/// Host used when a connection names none.
pub const DEFAULT_HOST: &str = "localhost";
/// Port used when a connection names none.
pub const DEFAULT_PORT: u16 = 6379;

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(20);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Error replies that describe a passing server state: trying again later can succeed.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
];

/// Where a Redis client connects, and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Host name or IP address (ignored when `url` is set).
    pub host: String,
    /// TCP port (ignored when `url` is set).
    pub port: u16,
    /// The database; `None`: the URL's, else 0.
    pub db: Option<i64>,
    /// ACL user name.
    pub username: Option<String>,
    /// ACL or `requirepass` password.
    pub password: Option<String>,
    /// `redis://...`: used instead of `host` and `port`.
    pub url: Option<String>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("url", &self.url.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl RedisSettings {
    /// `host:port`, db 0, no credentials.
    pub fn tcp(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
            db: None,
            username: None,
            password: None,
            url: None,
        }
    }

    /// Read a connection config (`host`, `port`, `db`, `username`, `password`, `url`).
    pub fn from_connection(config: &ConnectionConfig) -> Result<Self, String> {
        let host = config
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_HOST);
        let port = config
            .port()
            .map_err(|e| e.to_string())?
            .unwrap_or(DEFAULT_PORT);
        let mut settings = Self::tcp(host, port);
        settings.db = db(&config.extra)?;
        settings.username = opt_string(&config.extra, "username")?;
        settings.password = opt_string(&config.extra, "password")?;
        settings.url = opt_string(&config.extra, "url")?;
        Ok(settings)
    }

    /// The connection parameters, checked (a URL's host passes the connection host rules).
    pub fn connection_info(&self) -> Result<ConnectionInfo, String> {
        let info = match &self.url {
            Some(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| {
                        format!(
                            "invalid Redis url ({}); expected redis://[user[:password]@]host[:port][/db]",
                            e.category()
                        )
                    })?;
                if let ConnectionAddr::Tcp(host, _) = info.addr() {
                    cwm_config::model::check_connection_host(host).map_err(|e| e.to_string())?;
                }
                info
            }
            None => {
                cwm_config::model::check_connection_host(&self.host).map_err(|e| e.to_string())?;
                let host = self.host.trim_start_matches('[').trim_end_matches(']');
                ConnectionAddr::Tcp(host.to_owned(), self.port)
                    .into_connection_info()
                    .map_err(|e| e.to_string())?
            }
        };
        let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        Ok(info.set_redis_settings(redis))
    }
}

/// `db`: a non-negative integer, also as a numeric string.
fn db(extra: &Map<String, Value>) -> Result<Option<i64>, String> {
    let bad = || "'db' must be a non-negative integer".to_owned();
    match extra.get("db") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u32>()
            .map(|n| Some(i64::from(n)))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// An optional string key; empty counts as absent.
fn opt_string(extra: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

/// One lazily connected, self-reconnecting Redis connection (multiplexed: concurrent deliveries
/// share it).
pub struct RedisClient {
    /// What error messages call it: `connection 'name'` or `redis host:port`.
    label: String,
    client: redis::Client,
    manager: ArcSwapOption<ConnectionManager>,
    /// Held while connecting, so concurrent first deliveries make one connection.
    connecting: tokio::sync::Mutex<()>,
    /// The last failed connect: deliveries that waited for it fail with its error at once
    /// instead of each trying (and, against an unreachable host, timing out) in turn.
    last_failure: std::sync::Mutex<Option<(Instant, SinkError)>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("label", &self.label)
            .field("connected", &self.manager.load().is_some())
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// A client for `settings`. Does no I/O.
    pub fn new(label: impl Into<String>, settings: &RedisSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.connection_info()?)
            .map_err(|e| format!("invalid Redis settings: {e}"))?;
        Ok(Self {
            label: label.into(),
            client,
            manager: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    fn manager_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_exponent_base(2.0)
    }

    /// The connection, connecting first if there is none.
    async fn manager(&self) -> Result<ConnectionManager, SinkError> {
        if let Some(m) = self.manager.load_full() {
            return Ok((*m).clone());
        }
        let waited_since = Instant::now();
        let _connecting = self.connecting.lock().await;
        if let Some(m) = self.manager.load_full() {
            return Ok((*m).clone());
        }
        if let Some((at, e)) = self.last_failure().as_ref()
            && *at >= waited_since
        {
            return Err(e.clone());
        }
        match ConnectionManager::new_with_config(self.client.clone(), Self::manager_config()).await
        {
            Ok(manager) => {
                self.manager.store(Some(Arc::new(manager.clone())));
                Ok(manager)
            }
            Err(e) => {
                let e = self.error(&e);
                *self.last_failure() = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn last_failure(&self) -> std::sync::MutexGuard<'_, Option<(Instant, SinkError)>> {
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `pipeline` (a `MULTI`/`EXEC` transaction when it is atomic).
    pub async fn exec(&self, pipeline: &redis::Pipeline) -> Result<(), SinkError> {
        let mut conn = self.manager().await?;
        let result = pipeline.query_async::<redis::Value>(&mut conn).await;
        self.outcome(result.map(drop))
    }

    /// `PUBLISH channel message`. Succeeds whether or not anyone is subscribed.
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), SinkError> {
        let mut conn = self.manager().await?;
        let result = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await;
        self.outcome(result.map(drop))
    }

    fn outcome(&self, result: redis::RedisResult<()>) -> Result<(), SinkError> {
        let Err(e) = result else {
            return Ok(());
        };
        // The manager re-establishes a connection dropped by an I/O error itself; a connection
        // that failed otherwise (authentication, a protocol error) would stay failed: drop it,
        // the next delivery connects anew.
        if !e.is_io_error()
            && (e.code().is_none() || matches!(e.code(), Some("NOAUTH" | "WRONGPASS")))
        {
            self.manager.store(None);
        }
        Err(self.error(&e))
    }

    fn error(&self, e: &RedisError) -> SinkError {
        let label = &self.label;
        if e.is_timeout() {
            return SinkError::Timeout;
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            return SinkError::Unavailable(format!("redis {label}: {e}"));
        }
        if e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
            return SinkError::Unavailable(format!("redis {label}: {e}"));
        }
        match e.kind() {
            ErrorKind::ClusterConnectionNotFound
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::NoValidReplicasFoundBySentinel => {
                SinkError::Unavailable(format!("redis {label}: {e}"))
            }
            _ => SinkError::Rejected(format!("redis {label}: {e}")),
        }
    }
}

#[async_trait]
impl Client for RedisClient {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    async fn close(&self) {
        self.manager.store(None);
    }
}

/// The connection client of types `redis-rq`, `redis` and `redis-publish`.
pub(crate) fn client(
    name: &str,
    config: &ConnectionConfig,
    _deps: crate::connection::ClientDeps<'_>,
) -> Result<Arc<dyn Client>, String> {
    let settings = RedisSettings::from_connection(config)?;
    Ok(Arc::new(RedisClient::new(
        format!("connection '{name}'"),
        &settings,
    )?))
}

/// A port given as a number or a numeric string, in 1..=65535.
pub(crate) fn port_value(value: &Value) -> Result<u16, String> {
    let bad = || "port must be an integer in 1..65535".to_owned();
    let n = match value {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad()),
    }
}
