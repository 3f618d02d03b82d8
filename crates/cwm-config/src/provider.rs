//! The provider interface every configuration backend implements.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::Guard;
use async_trait::async_trait;
use serde::Serialize;

use crate::error::{CompileError, ConfigError};
use crate::model::WebhookConfig;
use crate::snapshot::{Rejection, Snapshot, Store};

/// Turns a validated [`WebhookConfig`] into whatever the application serves from (for the
/// receiver: the config plus its ready-to-use sink). Runs once per config change, never per request.
///
/// An `Err` rejects that one webhook (the others keep serving): an unknown module, a bad `module-config`, ...
pub trait Compiler: Send + Sync + 'static {
    /// What one webhook compiles to; snapshots hold it behind an `Arc`.
    type Webhook: Send + Sync + 'static;
    /// Compile webhook `id`. `Err` carries the reason shown in `/admin/config-status`; it must
    /// not contain secret values.
    fn compile(&self, id: &str, config: WebhookConfig) -> Result<Self::Webhook, CompileError>;

    /// The whole set of connections changed (a load, a reload, a watch event). Backends call it
    /// before compiling the webhooks of the same change, so a compiler that resolves connections
    /// (the receiver's: one shared client per connection) sees the set those webhooks name.
    /// The default ignores connections.
    fn sync_connections(&self, connections: &[(Arc<str>, Arc<crate::model::ConnectionConfig>)]) {
        let _ = connections;
    }
}

/// Connection state of a backend, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// No full load yet: webhook routes answer 503.
    Connecting,
    /// Loaded and in sync with its source.
    Healthy,
    /// Loaded, but the source is unreachable; the last snapshot keeps serving.
    Disconnected,
}

/// What `POST /admin/reload-config` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadRequest {
    /// Reload the webhooks.
    pub webhooks: bool,
    /// Reload the connections.
    pub connections: bool,
}

/// Counts of one kind of entry before and after a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Entries that were not there before.
    pub added: usize,
    /// Entries that are gone.
    pub removed: usize,
    /// Entries whose value changed.
    pub modified: usize,
    /// Entries served after the reload (refused ones that keep a previous value included).
    pub total: usize,
    /// Entries refused.
    pub rejected: usize,
}

/// The outcome of a successful reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// The webhooks' counts; `None` when they were not reloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Diff>,
    /// The connections' counts; `None` when they were not reloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Diff>,
}

/// The last resync of a watching backend.
#[derive(Debug, Clone, Serialize)]
pub struct Resync {
    /// Why the backend listed everything again (`admin`, `compacted`, ...).
    pub reason: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// Everything `/admin/config-status` and `/metrics` show about a backend. Never holds secrets.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    /// `"file"` or `"etcd"`.
    pub backend: &'static str,
    /// Whether a first full load has completed.
    pub initialized: bool,
    /// Whether the source is reachable (always `true` for files).
    pub connected: bool,
    /// The etcd revision the snapshot reflects (0 for files).
    pub revision: i64,
    /// Namespace of routes without one.
    pub default_namespace: String,
    /// Number of namespaces.
    pub namespaces_count: usize,
    /// Namespace names, sorted.
    pub namespaces: Vec<String>,
    /// Webhooks served, all namespaces.
    pub total_webhooks: usize,
    /// Connections served.
    pub connections_count: usize,
    /// Entries refused, by key.
    pub rejected: Vec<Rejection>,
    /// Last successful load or reload, RFC 3339 UTC.
    pub last_reload: Option<String>,
    /// Error of the last failed load, reload or connection attempt; cleared by a success.
    pub last_error: Option<String>,
    /// The last full re-list of a watching backend.
    pub last_resync: Option<Resync>,
    /// Resyncs by reason.
    pub resyncs: BTreeMap<String, u64>,
    /// Backend-specific fields (file paths; etcd endpoints and prefix).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ProviderStatus {
    /// The status every backend shares, read from its store: counts, revision and rejections.
    /// The backend then sets `connected`, the timestamps and its `details`.
    pub fn from_store<W>(backend: &'static str, store: &Store<W>) -> Self {
        let snap = store.load();
        let namespaces = snap.namespaces();
        Self {
            backend,
            initialized: store.is_loaded(),
            connected: false,
            revision: snap.revision(),
            default_namespace: snap.default_namespace().to_owned(),
            namespaces_count: namespaces.len(),
            namespaces,
            total_webhooks: snap.webhook_count(),
            connections_count: snap.connection_count(),
            rejected: store.rejections(),
            last_reload: None,
            last_error: None,
            last_resync: None,
            resyncs: BTreeMap::new(),
            details: serde_json::Map::new(),
        }
    }
}

/// A configuration backend: files or etcd. Reads are lock-free snapshot loads; the backend keeps
/// them current by itself (file watcher, etcd watch).
#[async_trait]
pub trait ConfigProvider<W: Send + Sync + 'static>: Send + Sync {
    /// The current snapshot. Never blocks and never awaits the backend.
    fn snapshot(&self) -> Guard<Arc<Snapshot<W>>>;
    /// `"file"` or `"etcd"`.
    fn backend(&self) -> &'static str;
    /// Whether the backend has loaded and is in sync with its source.
    fn state(&self) -> BackendState;
    /// Counts, timestamps and rejections for `/admin/config-status` and `/metrics`.
    fn status(&self) -> ProviderStatus;
    /// Re-read the source now (files: re-read; etcd: full re-list).
    async fn reload(&self, request: ReloadRequest) -> Result<ReloadReport, ConfigError>;
    /// Stop background work. Safe to call twice.
    async fn shutdown(&self);

    /// A receiver told whenever the provider publishes a new snapshot (a load, a reload, a watch
    /// event); its value counts the snapshots published. Read [`ConfigProvider::snapshot`] after
    /// `changed()` returns: it is that snapshot or a later one (changes in quick succession may
    /// wake a receiver once).
    ///
    /// The default reaches the [`Store`] the current snapshot came from ([`Store::subscribe`]), so
    /// every provider that publishes through a store gets it without code of its own. For a
    /// snapshot no store published the receiver's sender is gone, and `changed()` fails at once.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.snapshot().subscribe()
    }
}

/// A provider over a [`Store`] its owner publishes to: for tests, and for applications that
/// compute their configuration themselves. It reports the `file` backend, always healthy;
/// `reload` does nothing.
pub struct StaticProvider<W>(pub Arc<Store<W>>);

#[async_trait]
impl<W: Send + Sync + 'static> ConfigProvider<W> for StaticProvider<W> {
    fn snapshot(&self) -> Guard<Arc<Snapshot<W>>> {
        self.0.load()
    }
    fn backend(&self) -> &'static str {
        "file"
    }
    fn state(&self) -> BackendState {
        BackendState::Healthy
    }
    fn status(&self) -> ProviderStatus {
        ProviderStatus::from_store("file", &self.0)
    }
    async fn reload(&self, _: ReloadRequest) -> Result<ReloadReport, ConfigError> {
        Ok(ReloadReport::default())
    }
    async fn shutdown(&self) {}
}

/// A [`Compiler`] that serves the validated [`WebhookConfig`] unchanged: for a program that reads
/// the webhook configs (through [`crate::file::FileProvider`] or [`crate::etcd::EtcdProvider`])
/// without building sinks.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl Compiler for PassThrough {
    type Webhook = WebhookConfig;

    fn compile(&self, _id: &str, config: WebhookConfig) -> Result<WebhookConfig, CompileError> {
        Ok(config)
    }
}

/// Validate and compile one webhook entry exactly as every backend does: the id rules, object
/// check, substitution, typed fields, then the compiler (module known, module-config valid).
pub fn compile_webhook<C: Compiler>(
    compiler: &C,
    env: &dyn crate::subst::Env,
    id: &str,
    value: serde_json::Value,
) -> Result<C::Webhook, CompileError> {
    check_webhook_id(id)?;
    let config = WebhookConfig::from_value(value, env)?;
    compiler.compile(id, config)
}

/// [`compile_webhook`] from the JSON text of the entry (an etcd value), with the same checks and
/// messages; JSON that does not parse is refused as `invalid JSON: ...`. Reads the text straight
/// into the typed config (see [`WebhookConfig::from_json`]).
pub fn compile_webhook_json<C: Compiler>(
    compiler: &C,
    env: &dyn crate::subst::Env,
    id: &str,
    json: &[u8],
) -> Result<C::Webhook, CompileError> {
    let config = WebhookConfig::from_json(json, env);
    // Same order of checks as parsing the text first, then calling `compile_webhook`.
    if let Err(e @ crate::model::EntryError::Json(_)) = &config {
        return Err(e.clone().into());
    }
    check_webhook_id(id)?;
    compiler.compile(id, config?)
}

fn check_webhook_id(id: &str) -> Result<(), CompileError> {
    if id.trim() != id {
        return Err(CompileError::Name(
            "invalid webhook id: surrounding whitespace".into(),
        ));
    }
    crate::names::validate_webhook_id(id)
        .map_err(|e| CompileError::Name(format!("invalid webhook id: {e}")))
}

/// Validate one connection entry exactly as every backend does.
pub fn parse_connection(
    env: &dyn crate::subst::Env,
    name: &str,
    value: serde_json::Value,
) -> Result<crate::model::ConnectionConfig, CompileError> {
    if name.trim().is_empty() {
        return Err(CompileError::Name("empty connection name".into()));
    }
    Ok(crate::model::ConnectionConfig::from_value(value, env)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_serves_the_validated_config() {
        let env = |_: &str| Some("secret".to_owned());
        let doc = serde_json::json!({"module": "log", "authorization": "{$TOKEN}", "x": 1});
        let config = compile_webhook(&PassThrough, &env, "hook", doc).unwrap();
        assert_eq!(config.module.as_deref(), Some("log"));
        assert_eq!(config.authorization.as_deref(), Some("secret"));
        assert_eq!(config.extra.get("x"), Some(&serde_json::json!(1)));
        assert!(compile_webhook(&PassThrough, &env, " bad", serde_json::json!({})).is_err());
    }
}

/// Compilers for the backends' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::Compiler;
    use crate::error::CompileError;
    use crate::model::{ConnectionConfig, WebhookConfig};

    /// Refuses a webhook that names a connection it was not handed, as the receiver's compiler
    /// does.
    #[derive(Default)]
    pub(crate) struct ConnCompiler {
        known: Mutex<HashSet<String>>,
    }

    impl Compiler for ConnCompiler {
        type Webhook = WebhookConfig;

        fn compile(&self, _id: &str, config: WebhookConfig) -> Result<WebhookConfig, CompileError> {
            match &config.connection {
                #[allow(clippy::unwrap_used)]
                Some(name) if !self.known.lock().unwrap().contains(name) => {
                    Err(format!("connection '{name}' is not defined").into())
                }
                _ => Ok(config),
            }
        }

        #[allow(clippy::unwrap_used)]
        fn sync_connections(&self, connections: &[(Arc<str>, Arc<ConnectionConfig>)]) {
            *self.known.lock().unwrap() = connections.iter().map(|(n, _)| n.to_string()).collect();
        }
    }
}
