//! The connection registry: one long-lived client per named connection, shared by every webhook
//! that names it.
//!
//! Sinks hold a [`Connection`] (a slot for one name), not a client. When the configuration
//! changes, [`Connections::sync`] compares each connection with the one it replaces: an
//! unchanged connection keeps its client; a changed one gets a new client (a new *version*) in
//! its slot, and the old client is retired: it stays usable for the deliveries that already hold
//! it and is closed once the last of them has finished. A removed connection leaves its slot
//! empty, and deliveries through it fail with a retryable error until it comes back.
//!
//! Building a client never blocks or touches the network: clients connect on first use.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use cwm_config::ConnectionConfig;
use serde::Serialize;

use crate::event::SinkError;
use crate::outbound::HttpClient;

/// A client for one version of one connection (a Kafka producer, a Redis connection, ...).
#[async_trait]
pub trait Client: Any + Send + Sync {
    /// The client as `Any`, for [`Connection::client`].
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Finish buffered work and release the client. Called once, after its last delivery.
    async fn close(&self) {}
}

/// Builds the client of a connection type. Must not block: connect lazily.
pub type ClientFactory = fn(
    name: &str,
    config: &ConnectionConfig,
    deps: ClientDeps<'_>,
) -> Result<Arc<dyn Client>, String>;

/// Where the process's outbound HTTP client comes from ([`ModuleContext`] in a running process).
///
/// [`ModuleContext`]: crate::ModuleContext
#[cfg_attr(
    not(feature = "clickhouse"),
    allow(dead_code, reason = "only the clickhouse client uses the HTTP client")
)]
pub(crate) trait HttpSource: Send + Sync {
    /// The shared HTTP(S) client, built on first use.
    fn http_client(&self) -> Result<HttpClient, String>;
}

/// What a [`ClientFactory`] may use of the process's shared resources: the outbound HTTP client.
#[derive(Clone, Copy)]
#[cfg_attr(
    not(feature = "clickhouse"),
    allow(dead_code, reason = "only the clickhouse client uses the HTTP client")
)]
pub struct ClientDeps<'a> {
    http: &'a dyn HttpSource,
}

impl<'a> ClientDeps<'a> {
    pub(crate) fn new(http: &'a dyn HttpSource) -> Self {
        Self { http }
    }

    /// The process's HTTP(S) client, built on first use.
    #[cfg_attr(
        not(feature = "clickhouse"),
        allow(dead_code, reason = "only the clickhouse client uses the HTTP client")
    )]
    pub(crate) fn http_client(&self) -> Result<HttpClient, String> {
        self.http.http_client()
    }
}

/// How deliveries through a connection have been going, as `/health` and `/admin/config-status`
/// show it. Sinks report each outcome with [`Connection::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Configured; nothing delivered through it yet.
    Idle,
    /// The last delivery succeeded.
    Healthy,
    /// The last delivery failed because the destination was unreachable or slow.
    Unavailable,
    /// Its client could not be built from its config.
    Failed,
    /// No module of this build uses its type (a `rabbitmq` or `postgresql` connection kept for
    /// a shared `connections.json`).
    Unsupported,
    /// Webhooks name it, but no connection of that name is configured.
    Missing,
}

/// One version of a connection: its config and the client built from it.
struct Version {
    config: Arc<ConnectionConfig>,
    number: u64,
    created_at: SystemTime,
    client: Result<Arc<dyn Client>, String>,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

const IDLE: u8 = 0;
const HEALTHY: u8 = 1;
const UNAVAILABLE: u8 = 2;

/// A named connection as sinks hold it. Its current client changes when the connection's config
/// changes; a sink reads it at every delivery.
pub struct Connection {
    name: Arc<str>,
    current: ArcSwapOption<Version>,
    versions: AtomicU64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The client a delivery uses, kept alive (not closed) while the delivery holds it.
pub struct Lease<T: ?Sized> {
    version: Arc<Version>,
    client: Arc<T>,
}

impl<T: ?Sized> std::fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("version", &self.version.number)
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> std::ops::Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.client
    }
}

impl<T: ?Sized> Lease<T> {
    /// The version of the connection this client belongs to (1 for the first).
    pub fn version(&self) -> u64 {
        self.version.number
    }
}

impl Connection {
    /// The connection's name in the config.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The connection's current config, if one is configured.
    pub fn config(&self) -> Option<Arc<ConnectionConfig>> {
        self.current.load().as_ref().map(|v| v.config.clone())
    }

    /// The current client, as the type its factory built. Fails (retryably: the configuration may
    /// be mended) when the connection is not configured, its client could not be built, or its
    /// type is not one `T` serves.
    pub fn client<T: Client>(&self) -> Result<Lease<T>, SinkError> {
        let Some(version) = self.current.load_full() else {
            return Err(SinkError::Unavailable(format!(
                "connection '{}' is not configured",
                self.name
            )));
        };
        let client = match &version.client {
            Ok(c) => c.clone().into_any(),
            Err(e) => {
                return Err(SinkError::Unavailable(format!(
                    "connection '{}' has no client: {e}",
                    self.name
                )));
            }
        };
        match client.downcast::<T>() {
            Ok(client) => Ok(Lease { version, client }),
            Err(_) => Err(SinkError::Unavailable(format!(
                "connection '{}' (type '{}') cannot serve this module",
                self.name, version.config.kind
            ))),
        }
    }

    /// Record the outcome of a delivery through `lease` for the connection's state.
    pub fn report<T: ?Sized>(lease: &Lease<T>, result: &Result<(), SinkError>) {
        let v = &lease.version;
        match result {
            Ok(()) => {
                if v.state.swap(HEALTHY, Ordering::Relaxed) != HEALTHY {
                    *v.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
            }
            Err(e) if e.retryable() => {
                v.state.store(UNAVAILABLE, Ordering::Relaxed);
                *v.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
            // The destination answered: the connection itself works.
            Err(_) => v.state.store(HEALTHY, Ordering::Relaxed),
        }
    }
}

/// What `/admin/config-status` shows of one connection. Never holds secrets.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    /// The connection's name in the config.
    pub connection_name: String,
    /// The connection `type`; `None` once the connection is no longer configured.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// How deliveries through it have been going.
    pub state: ConnectionState,
    /// 1 for the first client of this name, +1 at every config change.
    pub version: u64,
    /// RFC 3339 UTC, when this version's client was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Webhooks (and chain steps) currently built on this connection.
    pub webhooks: usize,
    /// The last delivery error (destination unreachable), if the last delivery failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The registry. Clones share it.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    factories: BTreeMap<&'static str, ClientFactory>,
    slots: Mutex<HashMap<Arc<str>, Arc<Connection>>>,
    /// Replaced versions not yet closed.
    retired: Mutex<Vec<Arc<Version>>>,
    sweeping: Mutex<bool>,
}

/// How often retired clients are checked for their last delivery.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// A retired client still held after this long is closed anyway.
const RETIRE_MAX: Duration = Duration::from_secs(300);

impl Connections {
    /// A registry building clients with `factories`, keyed by connection `type`.
    pub fn new(factories: impl IntoIterator<Item = (&'static str, ClientFactory)>) -> Self {
        Self {
            inner: Arc::new(Inner {
                factories: factories.into_iter().collect(),
                slots: Mutex::default(),
                retired: Mutex::default(),
                sweeping: Mutex::new(false),
            }),
        }
    }

    /// Connection types this registry builds clients for.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inner.factories.keys().copied()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Connection>>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot for `name`, created empty when no connection of that name was configured yet.
    pub fn get(&self, name: &str) -> Arc<Connection> {
        let mut slots = self.slots();
        if let Some(c) = slots.get(name) {
            return c.clone();
        }
        let c = Arc::new(Connection {
            name: name.into(),
            current: ArcSwapOption::empty(),
            versions: AtomicU64::new(0),
        });
        slots.insert(c.name.clone(), c.clone());
        c
    }

    /// Make the registry match `connections` (the whole set): build clients for new and changed
    /// connections, retire the clients of changed and removed ones.
    pub fn sync<'a>(
        &self,
        connections: impl IntoIterator<Item = (&'a str, &'a Arc<ConnectionConfig>)>,
        deps: ClientDeps<'_>,
    ) {
        let mut retired = Vec::new();
        let mut slots = self.slots();
        let mut seen = std::collections::HashSet::new();
        for (name, config) in connections {
            seen.insert(name.to_owned());
            let slot = match slots.get(name) {
                Some(s) => s.clone(),
                None => {
                    let c = Arc::new(Connection {
                        name: name.into(),
                        current: ArcSwapOption::empty(),
                        versions: AtomicU64::new(0),
                    });
                    slots.insert(c.name.clone(), c.clone());
                    c
                }
            };
            if let Some(v) = slot.current.load().as_ref()
                && (Arc::ptr_eq(&v.config, config) || *v.config == **config)
            {
                continue;
            }
            let client = match self.inner.factories.get(config.kind.as_str()) {
                Some(factory) => factory(name, config, deps),
                None => Err(format!("no client for connection type '{}'", config.kind)),
            };
            if let Err(e) = &client
                && self.inner.factories.contains_key(config.kind.as_str())
            {
                tracing::warn!(connection = name, error = %e, "connection client not built");
            }
            let number = slot.versions.fetch_add(1, Ordering::Relaxed) + 1;
            let version = Arc::new(Version {
                config: config.clone(),
                number,
                created_at: SystemTime::now(),
                client,
                state: AtomicU8::new(IDLE),
                last_error: Mutex::new(None),
            });
            if let Some(old) = slot.current.swap(Some(version)) {
                tracing::info!(
                    connection = name,
                    version = number,
                    "connection changed; new client"
                );
                retired.push(old);
            }
        }
        for (name, slot) in slots.iter() {
            if !seen.contains(&**name)
                && let Some(old) = slot.current.swap(None)
            {
                tracing::info!(connection = %name, "connection removed");
                retired.push(old);
            }
        }
        // Forget names that are neither configured nor used.
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.current.load().is_some());
        drop(slots);
        if !retired.is_empty() {
            self.retire(retired);
        }
    }

    fn retire(&self, versions: Vec<Arc<Version>>) {
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(versions);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (a blocking thread of a provider): the next sync or `close_all` sweeps.
            return;
        };
        let mut sweeping = self
            .inner
            .sweeping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *sweeping {
            return;
        }
        *sweeping = true;
        let this = self.clone();
        runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                let force = started.elapsed() >= RETIRE_MAX;
                if this.sweep(force).await {
                    break;
                }
            }
            *this
                .inner
                .sweeping
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = false;
        });
    }

    /// Close retired clients nobody holds any more (all of them with `force`). True when none
    /// is left.
    async fn sweep(&self, force: bool) -> bool {
        let done: Vec<Arc<Version>> = {
            let mut retired = self
                .inner
                .retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (done, keep) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|v| force || Arc::strong_count(v) == 1);
            *retired = keep;
            done
        };
        for v in done {
            if let Ok(client) = &v.client {
                client.close().await;
            }
        }
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Close every client, current and retired, waiting at most `timeout`. Call once at exit,
    /// after the last delivery.
    pub async fn close_all(&self, timeout: Duration) {
        let current: Vec<Arc<Version>> = self
            .slots()
            .values()
            .filter_map(|s| s.current.swap(None))
            .collect();
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(current);
        let _ = tokio::time::timeout(timeout, self.sweep(true)).await;
    }

    /// Every connection that is configured or named by a webhook, sorted by name.
    pub fn status(&self) -> Vec<ConnectionStatus> {
        let slots = self.slots();
        let mut out: Vec<ConnectionStatus> = slots
            .values()
            .map(|slot| {
                // The registry's own reference does not count.
                let webhooks = Arc::strong_count(slot).saturating_sub(1);
                match slot.current.load_full() {
                    None => ConnectionStatus {
                        connection_name: slot.name.to_string(),
                        kind: None,
                        state: ConnectionState::Missing,
                        version: slot.versions.load(Ordering::Relaxed),
                        created_at: None,
                        webhooks,
                        last_error: None,
                    },
                    Some(v) => {
                        let supported = self.inner.factories.contains_key(v.config.kind.as_str());
                        let (state, last_error) = match &v.client {
                            Err(_) if !supported => (ConnectionState::Unsupported, None),
                            Err(e) => (ConnectionState::Failed, Some(e.clone())),
                            Ok(_) => {
                                let state = match v.state.load(Ordering::Relaxed) {
                                    HEALTHY => ConnectionState::Healthy,
                                    UNAVAILABLE => ConnectionState::Unavailable,
                                    _ => ConnectionState::Idle,
                                };
                                let e = v
                                    .last_error
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .clone();
                                (state, e)
                            }
                        };
                        ConnectionStatus {
                            connection_name: slot.name.to_string(),
                            kind: Some(v.config.kind.clone()),
                            state,
                            version: v.number,
                            created_at: Some(
                                humantime::format_rfc3339_seconds(v.created_at).to_string(),
                            ),
                            webhooks,
                            last_error,
                        }
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.connection_name.cmp(&b.connection_name));
        out
    }

    /// Retired clients still waiting for their last delivery.
    pub fn retired_count(&self) -> usize {
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    static CLOSED: AtomicUsize = AtomicUsize::new(0);

    struct Probe(String);

    #[async_trait]
    impl Client for Probe {
        fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
            self
        }
        async fn close(&self) {
            CLOSED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe(_: &str, c: &ConnectionConfig, _: ClientDeps<'_>) -> Result<Arc<dyn Client>, String> {
        Ok(Arc::new(Probe(c.host.clone().unwrap_or_default())))
    }

    fn conn(host: &str) -> Arc<ConnectionConfig> {
        Arc::new(serde_json::from_value(json!({"type":"probe","host":host})).unwrap())
    }

    #[tokio::test]
    async fn one_client_per_connection_rebuilt_on_change_old_closed_after_last_use() {
        let registry = Connections::new([("probe", probe as ClientFactory)]);
        struct NoHttp;
        impl HttpSource for NoHttp {
            fn http_client(&self) -> Result<HttpClient, String> {
                Err("no HTTP client in this test".into())
            }
        }
        let ctx = ClientDeps::new(&NoHttp);
        let slot = registry.get("q");
        assert!(slot.client::<Probe>().unwrap_err().retryable(), "missing");
        assert_eq!(registry.status()[0].state, ConnectionState::Missing);

        let a = conn("a");
        registry.sync([("q", &a)], ctx);
        let first = slot.client::<Probe>().unwrap();
        assert_eq!((first.0.as_str(), first.version()), ("a", 1));
        // The same config again (a reload that changed nothing) keeps the client.
        registry.sync([("q", &conn("a"))], ctx);
        assert_eq!(slot.client::<Probe>().unwrap().version(), 1);

        registry.sync([("q", &conn("b"))], ctx);
        let second = slot.client::<Probe>().unwrap();
        assert_eq!((second.0.as_str(), second.version()), ("b", 2));
        // The old client is not closed while a delivery holds it.
        assert_eq!(registry.retired_count(), 1);
        tokio::time::sleep(SWEEP_INTERVAL * 2).await;
        assert_eq!(CLOSED.load(Ordering::SeqCst), 0);
        drop(first);
        tokio::time::sleep(SWEEP_INTERVAL * 3).await;
        assert_eq!(CLOSED.load(Ordering::SeqCst), 1);
        assert_eq!(registry.retired_count(), 0);

        let st = &registry.status()[0];
        assert_eq!(
            (st.version, st.webhooks, st.state),
            (2, 1, ConnectionState::Idle)
        );
        Connection::report(&second, &Err(SinkError::Timeout));
        assert_eq!(registry.status()[0].state, ConnectionState::Unavailable);
        Connection::report(&second, &Ok(()));
        assert_eq!(registry.status()[0].state, ConnectionState::Healthy);

        // Removed: deliveries fail retryably; a type without a client is reported as such.
        registry.sync(std::iter::empty(), ctx);
        assert!(slot.client::<Probe>().is_err());
        let other: Arc<ConnectionConfig> =
            Arc::new(serde_json::from_value(json!({"type":"mqtt"})).unwrap());
        registry.sync([("q", &other)], ctx);
        assert_eq!(registry.status()[0].state, ConnectionState::Unsupported);
        drop(second);
        registry.close_all(Duration::from_secs(1)).await;
        assert_eq!(CLOSED.load(Ordering::SeqCst), 2);
    }
}
