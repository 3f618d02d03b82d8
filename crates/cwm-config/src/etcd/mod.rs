//! The etcd backend: a read-only, list-then-watch cache of `{prefix}`.
//!
//! # How it works
//!
//! [`EtcdProvider::start`] returns at once and spawns one background task that owns the etcd
//! client. The task loops over *sessions*:
//!
//! 1. connect (authenticating when credentials are set);
//! 2. list the whole prefix in pages, every page pinned to the revision `R` of the first one,
//!    build a fresh [`Snapshot`] off to the side and publish it with [`Store::replace`];
//! 3. watch the prefix from `R + 1`, applying each response with one [`Store::update`]
//!    (O(log n) per event on the persistent maps).
//!
//! A watch cancelled for compaction, a revision going backwards (etcd restored or wiped) or an
//! admin reload starts a new listing with the same client (a *resync*). Any other failure drops
//! the client and its stream, waits an exponential backoff with jitter (cut short by an admin
//! reload) and starts a new session, which re-lists everything. An expired auth token rebuilds the
//! client at once (one immediate retry, then backoff). Every resync is counted by reason.
//!
//! Readers only ever call [`ConfigProvider::snapshot`], a lock-free load that never awaits etcd,
//! so the last good configuration keeps serving while etcd is away.
//!
//! The provider never writes to etcd; [`connect`] and [`read_all`] are public so that the
//! command-line tool reads the same way, and [`tls_hint`] so that it explains a plain-text
//! connection refused by a TLS server the same way.
//!
//! Both providers start the same way: `start(source, compiler, env, ...)` returns an
//! `Arc<Provider>` that loads and keeps itself current (see [`crate::file::FileProvider::start`]).
//! The etcd one returns at once and loads in the background ([`EtcdProvider::wait_loaded`] waits).
//!
//! # Layout
//!
//! - `settings`: [`EtcdSettings`], [`EtcdTls`], endpoint parsing and validation;
//! - `tls`: reading and checking the TLS files;
//! - `client`: [`connect`], [`tls_hint`] and the classification of failures;
//! - `listing`: [`read_all`] and the paginated listing behind it;
//! - `io`: the small trait through which the background task reaches etcd (the real client, or
//!   an in-memory fake in the unit tests);
//! - `worker`: the background task (sessions, watch, resyncs, backoff);
//! - `build`: the verdict on one key and the snapshot built from a full listing.

mod build;
mod client;
#[cfg(test)]
mod fake;
mod io;
mod listing;
mod settings;
#[cfg(test)]
mod tests;
mod tls;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::Guard;
use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub(crate) use build::{Entry, evaluate};
pub use client::{connect, tls_hint};
use io::{EtcdIo, RealEtcd};
pub use listing::read_all;
use settings::parse_endpoint;
pub use settings::{
    DEFAULT_ENDPOINT, DEFAULT_NAMESPACE, DEFAULT_PAGE_SIZE, DEFAULT_PREFIX, EtcdSettings, EtcdTls,
    parse_endpoints,
};
use worker::{Worker, new_backoff};

use crate::error::ConfigError;
use crate::provider::{
    BackendState, Compiler, ConfigProvider, ProviderStatus, ReloadReport, ReloadRequest, Resync,
};
use crate::secrets::{SecretEnv, SecretResolver, Secrets, prefetch, references_in_json};
use crate::snapshot::{Snapshot, Store, now_rfc3339};
use crate::subst::Env;

/// How long `reload()` waits for the background task to finish a re-list.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `shutdown()` waits for the background task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const STATE_CONNECTING: u8 = 0;
const STATE_HEALTHY: u8 = 1;
const STATE_DISCONNECTED: u8 = 2;

#[derive(Default)]
struct Info {
    last_reload: Option<String>,
    last_error: Option<String>,
    last_resync: Option<Resync>,
    resyncs: BTreeMap<String, u64>,
}

/// State shared by the provider handle and its background task.
pub(crate) struct Shared<C: Compiler> {
    settings: EtcdSettings,
    compiler: Arc<C>,
    env: Arc<dyn Env + Send + Sync>,
    /// Resolves `{$vault:...}` references; `None` when Vault is off.
    secrets: Option<Arc<SecretResolver>>,
    store: Store<C::Webhook>,
    /// `STATE_*`; the watch is confirmed only in `STATE_HEALTHY`.
    state: AtomicU8,
    info: Mutex<Info>,
    /// Flips to true after the first full load, for [`EtcdProvider::wait_loaded`].
    loaded: watch::Sender<bool>,
}

pub(crate) type ReloadReply = oneshot::Sender<Result<ReloadReport, String>>;

/// A request from the handle to the background task.
pub(crate) enum Cmd {
    Reload(ReloadRequest, ReloadReply),
}

/// Serves webhooks and connections from etcd, kept current by a watch. See the module docs.
pub struct EtcdProvider<C: Compiler> {
    shared: Arc<Shared<C>>,
    cmds: mpsc::Sender<Cmd>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Compiler> EtcdProvider<C> {
    /// Validate the settings and start the background task; returns at once. Until the first
    /// full load, [`ConfigProvider::state`] is [`BackendState::Connecting`] and the snapshot is
    /// empty and not loaded; the task keeps retrying with backoff. Must run inside a Tokio runtime.
    ///
    /// `{$vault:...}` references are resolved through `secrets` (see [`crate::secrets`]); with
    /// `None` (Vault off) they take their inline default.
    ///
    /// Starts the same way as [`crate::file::FileProvider::start`] (source, compiler, env,
    /// secrets; an `Arc` back), except that it does not wait for the first load.
    pub fn start(
        settings: EtcdSettings,
        compiler: Arc<C>,
        env: Arc<dyn Env + Send + Sync>,
        secrets: Option<Arc<SecretResolver>>,
    ) -> Result<Arc<Self>, ConfigError> {
        Self::start_with(settings, compiler, env, secrets, RealEtcd)
    }

    /// [`EtcdProvider::start`] with etcd reached through `io` (an in-memory fake in unit tests).
    pub(crate) fn start_with<B: EtcdIo>(
        settings: EtcdSettings,
        compiler: Arc<C>,
        env: Arc<dyn Env + Send + Sync>,
        secrets: Option<Arc<SecretResolver>>,
        io: B,
    ) -> Result<Arc<Self>, ConfigError> {
        let settings = settings.validated()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::Setting("the etcd provider must be started inside a Tokio runtime".into())
        })?;
        if !settings.username.is_empty() && settings.password.is_empty() {
            tracing::warn!("ETCD_USERNAME is set without ETCD_PASSWORD: connecting without auth");
        }
        let shared = Arc::new(Shared {
            store: Store::new(Snapshot::empty(&settings.default_namespace, false)),
            settings,
            compiler,
            env,
            secrets,
            state: AtomicU8::new(STATE_CONNECTING),
            info: Mutex::new(Info::default()),
            loaded: watch::Sender::new(false),
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let worker = Worker {
            io,
            backoff: new_backoff(&shared.settings),
            shared: shared.clone(),
            cmds: cmd_rx,
            tracker: Arc::default(),
            waiting: Vec::new(),
            next_reason: None,
            last_seen: 0,
            auth_retry: true,
        };
        tracing::info!(
            endpoints = ?shared.settings.endpoints,
            prefix = %shared.settings.prefix,
            default_namespace = %shared.settings.default_namespace,
            auth = shared.settings.credentials().is_some(),
            tls = shared.settings.uses_tls(),
            "starting etcd configuration provider"
        );
        let task_shared = shared.clone();
        let task = runtime.spawn(async move {
            tokio::select! {
                () = worker.run() => {}
                _ = stop_rx.wait_for(|stop| *stop) => {}
            }
            task_shared.mark_stopped();
        });
        Ok(Arc::new(Self {
            shared,
            cmds: cmd_tx,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Wait until the first full load has been published, at most `timeout`. For the CLI and
    /// tests, and for a binary that prefers to fail at startup when etcd is unreachable.
    pub async fn wait_loaded(&self, timeout: Duration) -> Result<(), ConfigError> {
        let mut rx = self.shared.loaded.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|loaded| *loaded)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ConfigError::Etcd("the provider has stopped".into())),
            Err(_) => {
                let last = self.shared.info().last_error.clone();
                Err(ConfigError::Etcd(format!(
                    "no complete load within {timeout:?}{}",
                    last.map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    /// The validated settings (the password is redacted by `Debug`).
    pub fn settings(&self) -> &EtcdSettings {
        &self.shared.settings
    }
}

impl<C: Compiler> Drop for EtcdProvider<C> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl<C: Compiler> Shared<C> {
    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Release);
    }

    fn mark_stopped(&self) {
        self.set_state(if self.store.is_loaded() {
            STATE_DISCONNECTED
        } else {
            STATE_CONNECTING
        });
    }

    fn record_error(&self, message: &str) {
        self.info().last_error = Some(message.to_owned());
    }

    fn record_resync(&self, reason: &str) {
        let mut info = self.info();
        *info.resyncs.entry(reason.to_owned()).or_insert(0) += 1;
        info.last_resync = Some(Resync {
            reason: reason.to_owned(),
            at: now_rfc3339(),
        });
    }

    fn rejection_key(key: &[u8]) -> String {
        String::from_utf8_lossy(key).into_owned()
    }

    /// Parse and compile one key's value, with the Vault references fetched for it
    /// ([`Shared::prefetch`]). Never fails as a whole: the result says whether this key is
    /// ignored, refused or usable.
    fn evaluate<'k>(
        &self,
        key: &'k [u8],
        value: &[u8],
        secrets: Option<&Secrets>,
    ) -> Entry<'k, C::Webhook> {
        let env = SecretEnv {
            env: &*self.env,
            secrets,
        };
        evaluate(&self.settings.prefix, &*self.compiler, &env, key, value)
    }

    /// Fetch the Vault references of `values` (etcd values about to be evaluated); `None` when
    /// Vault is off.
    async fn prefetch<'v>(&self, values: impl Iterator<Item = &'v [u8]>) -> Option<Secrets> {
        prefetch(self.secrets.as_deref(), |references| {
            for value in values {
                references_in_json(value, references);
            }
        })
        .await
    }
}

#[async_trait]
impl<C: Compiler> ConfigProvider<C::Webhook> for EtcdProvider<C> {
    fn snapshot(&self) -> Guard<Arc<Snapshot<C::Webhook>>> {
        self.shared.store.load()
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn state(&self) -> BackendState {
        if !self.shared.store.is_loaded() {
            return BackendState::Connecting;
        }
        match self.shared.state.load(Ordering::Acquire) {
            STATE_HEALTHY => BackendState::Healthy,
            _ => BackendState::Disconnected,
        }
    }

    fn status(&self) -> ProviderStatus {
        let settings = &self.shared.settings;
        let mut details = Map::new();
        details.insert(
            "endpoints".into(),
            Value::Array(
                settings
                    .endpoints
                    .iter()
                    .map(|e| Value::String(e.clone()))
                    .collect(),
            ),
        );
        if let Some(Ok((host, port))) = settings.endpoints.first().map(|e| parse_endpoint(e)) {
            details.insert("host".into(), Value::String(host.to_owned()));
            details.insert("port".into(), Value::from(port.unwrap_or(2379)));
        }
        details.insert("prefix".into(), Value::String(settings.prefix.clone()));
        let (last_reload, last_error, last_resync, resyncs) = {
            let info = self.shared.info();
            (
                info.last_reload.clone(),
                info.last_error.clone(),
                info.last_resync.clone(),
                info.resyncs.clone(),
            )
        };
        let mut status = ProviderStatus::from_store("etcd", &self.shared.store);
        status.connected = self.state() == BackendState::Healthy;
        status.last_reload = last_reload;
        status.last_error = last_error.map(|e| settings.redact(e));
        status.last_resync = last_resync;
        status.resyncs = resyncs;
        status.details = details;
        status
    }

    /// A full re-list now (reason "admin"), whatever `request` says, with every Vault reference
    /// fetched again (the secret cache is cleared); the report only carries the requested kinds. While disconnected this cuts the backoff wait short and tries now.
    async fn reload(&self, request: ReloadRequest) -> Result<ReloadReport, ConfigError> {
        // Every Vault reference is fetched again by the re-list.
        if let Some(resolver) = &self.shared.secrets {
            resolver.invalidate();
        }
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Reload(request, tx))
            .await
            .map_err(|_| ConfigError::Etcd("the provider has stopped".into()))?;
        match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
            Err(_) => Err(ConfigError::Etcd(format!(
                "reload did not complete within {RELOAD_TIMEOUT:?}"
            ))),
            Ok(Err(_)) => Err(ConfigError::Etcd("the provider has stopped".into())),
            Ok(Ok(result)) => result.map_err(ConfigError::Etcd),
        }
    }

    /// Stop the background task (dropping the client and the watch) within 5 s, even during a
    /// backoff wait. The last snapshot stays readable. Idempotent.
    async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
            tracing::info!("etcd configuration provider stopped");
        }
        self.shared.mark_stopped();
    }
}
