//! The file backend: `webhooks.json` and `connections.json`, reloaded when they change.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::Guard;
use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::provider::{
    BackendState, Compiler, ConfigProvider, Diff, ProviderStatus, ReloadReport, ReloadRequest,
    compile_webhook, parse_connection,
};
use crate::secrets::{SecretEnv, SecretResolver, Secrets, prefetch};
use crate::snapshot::{Snapshot, Store, now_rfc3339};
use crate::subst::{Env, vault_references};

/// The namespace file-backed webhooks live in. Lookups ignore the namespace (upstream behaviour).
pub const FILE_NAMESPACE: &str = "default";

/// What was last loaded from one file, to diff reloads and skip no-op file events.
#[derive(Default)]
struct Source {
    /// Hash of the content in service; `None` while the file has never existed (no entries).
    hash: Option<u64>,
    raw: Map<String, Value>,
    /// Hash of the content last read, loaded or refused (`None`: the file did not exist). The
    /// watcher skips a file whose content is still this, so a refused file is reported once per
    /// change, not once per unrelated event in its directory.
    seen: Option<u64>,
}

#[derive(Default)]
struct Loaded {
    webhooks: Source,
    connections: Source,
}

#[derive(Default)]
struct Info {
    last_reload: Option<String>,
    last_error: Option<String>,
}

/// Serves webhooks and connections from two JSON files.
pub struct FileProvider<C: Compiler> {
    webhooks_path: PathBuf,
    connections_path: PathBuf,
    compiler: Arc<C>,
    env: Arc<dyn Env + Send + Sync>,
    /// Resolves `{$vault:...}` references; `None` when Vault is off.
    secrets: Option<Arc<SecretResolver>>,
    store: Store<C::Webhook>,
    loaded: tokio::sync::Mutex<Loaded>,
    info: Mutex<Info>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

enum Kind {
    Webhooks,
    Connections,
}

impl<C: Compiler> FileProvider<C> {
    /// Load both files, mark the provider loaded and, when `watch` is `Some(debounce)`, reload
    /// when they change ([`FileProvider::watch`]). `{$vault:...}` references are resolved
    /// through `secrets` (see [`crate::secrets`]); with `None` (Vault off) they take their inline
    /// default. An unreadable or malformed file, or a watcher that cannot start, is an error (the
    /// receiver refuses to start). Must run inside a Tokio runtime when watching.
    ///
    /// Both providers start the same way: source, compiler, env, secrets, an `Arc` back, loaded
    /// and kept current by the provider itself (see [`crate::etcd::EtcdProvider::start`], which
    /// returns before its first load instead). [`FileProvider::new`], [`FileProvider::load`] and
    /// [`FileProvider::watch`] remain for callers that need the steps apart (without Vault).
    pub async fn start(
        webhooks_path: impl Into<PathBuf>,
        connections_path: impl Into<PathBuf>,
        compiler: Arc<C>,
        env: Arc<dyn Env + Send + Sync>,
        secrets: Option<Arc<SecretResolver>>,
        watch: Option<Duration>,
    ) -> Result<Arc<Self>, ConfigError> {
        let mut provider = Self::new(webhooks_path, connections_path, compiler, env);
        provider.secrets = secrets;
        let provider = Arc::new(provider);
        let report = provider.load().await?;
        tracing::info!(
            webhooks = report.webhooks.map_or(0, |d| d.total),
            connections = report.connections.map_or(0, |d| d.total),
            "configuration loaded from files"
        );
        if let Some(debounce) = watch {
            provider.watch(debounce)?;
        }
        Ok(provider)
    }

    /// A provider that has loaded nothing yet; see [`FileProvider::start`].
    pub fn new(
        webhooks_path: impl Into<PathBuf>,
        connections_path: impl Into<PathBuf>,
        compiler: Arc<C>,
        env: Arc<dyn Env + Send + Sync>,
    ) -> Self {
        Self {
            webhooks_path: webhooks_path.into(),
            connections_path: connections_path.into(),
            compiler,
            env,
            secrets: None,
            store: Store::new(Snapshot::empty(FILE_NAMESPACE, true)),
            loaded: tokio::sync::Mutex::new(Loaded::default()),
            info: Mutex::new(Info::default()),
            watcher: Mutex::new(None),
        }
    }

    /// The first load. An unreadable or malformed file is an error (the receiver refuses to start).
    pub async fn load(&self) -> Result<ReloadReport, ConfigError> {
        let report = self
            .reload(ReloadRequest {
                webhooks: true,
                connections: true,
            })
            .await?;
        self.store.mark_loaded();
        Ok(report)
    }

    /// Reload automatically when either file changes: `debounce` after the first change, every
    /// change seen meanwhile is taken as one. Watches the parent directories, so atomic renames
    /// and symlink swaps are seen; unchanged content is not reloaded.
    ///
    /// Opening and reading a file are not changes: the watcher would otherwise see the provider's
    /// own reads and wake it again after every reload, forever.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<(), ConfigError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|event| may_change_content(&event.kind)) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| ConfigError::Watch(e.to_string()))?;
        let mut dirs: Vec<PathBuf> = [&self.webhooks_path, &self.connections_path]
            .iter()
            .map(|p| parent_dir(p))
            .collect();
        dirs.dedup();
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| ConfigError::Watch(format!("{}: {e}", dir.display())))?;
        }
        *self.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(debounce).await;
                while rx.try_recv().is_ok() {}
                let Some(this) = this.upgrade() else { break };
                this.reload_changed().await;
            }
        });
        Ok(())
    }

    /// Whether the file watcher is running.
    pub fn is_watching(&self) -> bool {
        self.watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    async fn reload_changed(&self) {
        let mut loaded = self.loaded.lock().await;
        // Connections first: the webhooks of the same change are compiled against them.
        for kind in [Kind::Connections, Kind::Webhooks] {
            let (path, source) = match kind {
                Kind::Webhooks => (&self.webhooks_path, &loaded.webhooks),
                Kind::Connections => (&self.connections_path, &loaded.connections),
            };
            // Config files are small and read by the provider's own task, never on the request
            // path.
            #[allow(clippy::disallowed_methods)]
            let hash = std::fs::read(path).ok().map(|b| hash_bytes(&b));
            if hash == source.seen {
                continue;
            }
            let result = self.load_kind(&kind, &mut loaded).await;
            match result {
                Ok(diff) => {
                    tracing::info!(file = %path.display(), ?diff, "configuration file reloaded");
                    self.note_success();
                }
                Err(e @ ConfigError::Deleted { .. }) => {
                    tracing::warn!(error = %e, "configuration file deleted; previous configuration kept");
                    self.note_error(&e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration file rejected; previous configuration kept");
                    self.note_error(&e);
                }
            }
        }
    }

    fn note_success(&self) {
        let mut info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        info.last_reload = Some(now_rfc3339());
        info.last_error = None;
    }

    fn note_error(&self, e: &ConfigError) {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error = Some(e.to_string());
    }

    /// Read one file and note its content as seen. A file that does not exist and never did is
    /// an empty map (with a warning: no implicit catch-all); one that was loaded before and is gone now
    /// is an error, so its previous entries keep serving until it is back.
    fn read(path: &Path, source: &mut Source) -> Result<Map<String, Value>, ConfigError> {
        // Config files are small and read at load or by the watcher's task, never on the
        // request path.
        #[allow(clippy::disallowed_methods)]
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                source.seen = None;
                if source.hash.is_some() {
                    return Err(ConfigError::Deleted {
                        path: path.to_owned(),
                    });
                }
                tracing::warn!(file = %path.display(), "configuration file not found; it holds no entries");
                return Ok(Map::new());
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        source.seen = Some(hash_bytes(&bytes));
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Json {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(ConfigError::NotAnObject {
                path: path.to_owned(),
            }),
        }
    }

    async fn load_kind(&self, kind: &Kind, loaded: &mut Loaded) -> Result<Diff, ConfigError> {
        let (path, source) = match kind {
            Kind::Webhooks => (&self.webhooks_path, &mut loaded.webhooks),
            Kind::Connections => (&self.connections_path, &mut loaded.connections),
        };
        let raw = Self::read(path, source)?;
        // Fetch the Vault references first (the webhooks too after a connection change: they are
        // compiled again below).
        let webhooks = matches!(kind, Kind::Connections).then_some(&loaded.webhooks.raw);
        let secrets = prefetch(self.secrets.as_deref(), |references| {
            for value in raw
                .values()
                .chain(webhooks.into_iter().flat_map(|w| w.values()))
            {
                vault_references(value, references);
            }
        })
        .await;
        let source = match kind {
            Kind::Webhooks => &mut loaded.webhooks,
            Kind::Connections => &mut loaded.connections,
        };
        let diff = match kind {
            Kind::Webhooks => self.apply_webhooks(&raw, &source.raw, secrets.as_ref()),
            Kind::Connections => self.apply_connections(&raw, &source.raw, secrets.as_ref()),
        };
        source.hash = source.seen;
        source.raw = raw;
        if matches!(kind, Kind::Connections) && diff.added + diff.removed + diff.modified > 0 {
            // A webhook's sink is checked against the connection it names (type, existence):
            // compile the webhooks again, as they are, against the new connections.
            let webhooks = &loaded.webhooks.raw;
            self.apply_webhooks(webhooks, webhooks, secrets.as_ref());
        }
        Ok(diff)
    }

    fn env<'a>(&'a self, secrets: Option<&'a Secrets>) -> SecretEnv<'a> {
        SecretEnv {
            env: &*self.env,
            secrets,
        }
    }

    fn apply_webhooks(
        &self,
        raw: &Map<String, Value>,
        old: &Map<String, Value>,
        secrets: Option<&Secrets>,
    ) -> Diff {
        let env = self.env(secrets);
        let current = self.store.load();
        let mut diff = diff_keys(raw, old);
        self.store.clear_rejections_with_prefix("webhooks/");
        let mut next = Snapshot::clone(&current);
        next.clear_webhooks();
        for (id, value) in raw {
            let key = format!("webhooks/{id}");
            let compiled = compile_webhook(&*self.compiler, &env, id, value.clone());
            match compiled {
                Ok(w) => next.put_webhook(FILE_NAMESPACE, id, Arc::new(w)),
                Err(reason) => {
                    diff.rejected += 1;
                    let previous = current.webhook_exact(FILE_NAMESPACE, id).cloned();
                    self.store
                        .reject(&key, reason.to_string(), previous.is_some());
                    if let Some(p) = previous {
                        next.put_webhook(FILE_NAMESPACE, id, p);
                    }
                }
            }
        }
        diff.total = next.webhook_count();
        self.store.replace(next);
        diff
    }

    fn apply_connections(
        &self,
        raw: &Map<String, Value>,
        old: &Map<String, Value>,
        secrets: Option<&Secrets>,
    ) -> Diff {
        let env = self.env(secrets);
        let current = self.store.load();
        let mut diff = diff_keys(raw, old);
        self.store.clear_rejections_with_prefix("connections/");
        let mut next = Snapshot::clone(&current);
        next.clear_connections();
        for (name, value) in raw {
            let key = format!("connections/{name}");
            match parse_connection(&env, name, value.clone()) {
                Ok(c) => next.put_connection(name, Arc::new(c)),
                Err(reason) => {
                    diff.rejected += 1;
                    let previous = current.connection(name).cloned();
                    self.store
                        .reject(&key, reason.to_string(), previous.is_some());
                    if let Some(p) = previous {
                        next.put_connection(name, p);
                    }
                }
            }
        }
        diff.total = next.connection_count();
        self.compiler.sync_connections(&next.connections());
        self.store.replace(next);
        diff
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Whether a watcher event may mean that a file's content changed. Opening, reading and closing
/// a file read-only do not (they are what the provider's own reads cause); closing it after
/// writing does.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn diff_keys(new: &Map<String, Value>, old: &Map<String, Value>) -> Diff {
    Diff {
        added: new.keys().filter(|k| !old.contains_key(*k)).count(),
        removed: old.keys().filter(|k| !new.contains_key(*k)).count(),
        modified: new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .count(),
        ..Diff::default()
    }
}

#[async_trait]
impl<C: Compiler> ConfigProvider<C::Webhook> for FileProvider<C> {
    fn snapshot(&self) -> Guard<Arc<Snapshot<C::Webhook>>> {
        self.store.load()
    }

    fn backend(&self) -> &'static str {
        "file"
    }

    fn state(&self) -> BackendState {
        if self.store.is_loaded() {
            BackendState::Healthy
        } else {
            BackendState::Connecting
        }
    }

    fn status(&self) -> ProviderStatus {
        let info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        let mut details = Map::new();
        details.insert(
            "webhook_config_file".into(),
            Value::String(self.webhooks_path.display().to_string()),
        );
        details.insert(
            "connection_config_file".into(),
            Value::String(self.connections_path.display().to_string()),
        );
        details.insert(
            "file_watching_enabled".into(),
            Value::Bool(self.is_watching()),
        );
        let mut status = ProviderStatus::from_store("file", &self.store);
        status.connected = true;
        status.last_reload = info.last_reload.clone();
        status.last_error = info.last_error.clone();
        status.details = details;
        status
    }

    /// Re-read both files (or the requested one) and resolve every Vault reference again (the
    /// secret cache is cleared first).
    async fn reload(&self, request: ReloadRequest) -> Result<ReloadReport, ConfigError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(resolver) = &self.secrets {
            resolver.invalidate();
        }
        let mut report = ReloadReport::default();
        let result = async {
            // Connections first: the webhooks are compiled against them.
            if request.connections {
                report.connections = Some(self.load_kind(&Kind::Connections, &mut loaded).await?);
            }
            if request.webhooks {
                report.webhooks = Some(self.load_kind(&Kind::Webhooks, &mut loaded).await?);
            }
            Ok::<(), ConfigError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.note_success();
                Ok(report)
            }
            Err(e) => {
                self.note_error(&e);
                Err(e)
            }
        }
    }

    async fn shutdown(&self) {
        self.watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::model::WebhookConfig;

    /// Accepts any webhook with a `module`, rejects module "nope".
    struct TestCompiler;
    impl Compiler for TestCompiler {
        type Webhook = WebhookConfig;
        fn compile(
            &self,
            _id: &str,
            config: WebhookConfig,
        ) -> Result<WebhookConfig, crate::CompileError> {
            match config.module.as_deref() {
                Some("nope") => Err("unknown module 'nope'".into()),
                Some(_) => Ok(config),
                None => Err("module is required".into()),
            }
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "abc".to_owned())
    }

    use crate::provider::testing::ConnCompiler;

    #[tokio::test]
    async fn webhooks_are_compiled_against_the_connections_of_the_same_load() {
        let dir = tempfile::tempdir().unwrap();
        let redis = json!({"type":"redis-rq","host":"localhost","port":6379});
        write(
            dir.path(),
            "webhooks.json",
            &json!({"a":{"module":"redis_rq","connection":"r"},"b":{"module":"redis_rq","connection":"later"}}),
        );
        write(dir.path(), "connections.json", &json!({"r": redis}));
        let p = Arc::new(FileProvider::new(
            dir.path().join("webhooks.json"),
            dir.path().join("connections.json"),
            Arc::new(ConnCompiler::default()),
            Arc::new(env),
        ));
        p.load().await.unwrap();
        assert!(p.snapshot().webhook_exact(FILE_NAMESPACE, "a").is_some());
        assert!(p.snapshot().webhook_exact(FILE_NAMESPACE, "b").is_none());
        // Adding the connection alone brings the webhook that named it.
        write(
            dir.path(),
            "connections.json",
            &json!({"r": redis, "later": redis}),
        );
        p.reload(ReloadRequest {
            webhooks: false,
            connections: true,
        })
        .await
        .unwrap();
        assert!(p.snapshot().webhook_exact(FILE_NAMESPACE, "b").is_some());
        assert!(p.status().rejected.is_empty());
    }

    fn provider(dir: &Path) -> Arc<FileProvider<TestCompiler>> {
        Arc::new(FileProvider::new(
            dir.join("webhooks.json"),
            dir.join("connections.json"),
            Arc::new(TestCompiler),
            Arc::new(env),
        ))
    }

    fn write(dir: &Path, name: &str, v: &Value) {
        std::fs::write(dir.join(name), serde_json::to_vec(v).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn loads_both_files_with_substitution() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "webhooks.json",
            &json!({"h1":{"module":"log","authorization":"Bearer {$TOKEN}"},"h2":{"module":"save_to_disk"}}),
        );
        write(
            dir.path(),
            "connections.json",
            &json!({"r":{"type":"redis-rq","host":"redis.example.com","port":6379}}),
        );
        let p = provider(dir.path());
        let report = p.load().await.unwrap();
        assert_eq!(report.webhooks.unwrap().total, 2);
        assert_eq!(report.connections.unwrap().total, 1);
        let snap = p.snapshot();
        assert_eq!(
            snap.webhook(None, "h1").unwrap().authorization.as_deref(),
            Some("Bearer abc")
        );
        assert!(snap.webhook(Some("any-namespace"), "h2").is_some());
        assert!(snap.webhook(None, "unknown").is_none());
        assert_eq!(p.state(), BackendState::Healthy);
        let st = p.status();
        assert_eq!(
            (st.total_webhooks, st.connections_count, st.initialized),
            (2, 1, true)
        );
    }

    #[tokio::test]
    async fn missing_files_mean_no_entries_and_no_catch_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path());
        p.load().await.unwrap();
        assert_eq!(p.snapshot().webhook_count(), 0);
        assert!(p.snapshot().webhook(None, "anything").is_none());
    }

    #[tokio::test]
    async fn explicit_default_catches_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "webhooks.json",
            &json!({"default":{"module":"log"}}),
        );
        let p = provider(dir.path());
        p.load().await.unwrap();
        assert!(p.snapshot().webhook(None, "whatever").is_some());
    }

    #[tokio::test]
    async fn bad_entries_are_rejected_alone_and_keep_their_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "webhooks.json",
            &json!({"a":{"module":"log"},"b":{"module":"log"}}),
        );
        let p = provider(dir.path());
        p.load().await.unwrap();
        write(
            dir.path(),
            "webhooks.json",
            &json!({"a":{"module":"nope"},"b":{"module":"log","x":1},"c":"not an object","d":{"module":"log","authorization":"{$UNSET}"},"admin":{"module":"log"}}),
        );
        let report = p
            .reload(ReloadRequest {
                webhooks: true,
                connections: false,
            })
            .await
            .unwrap();
        let diff = report.webhooks.unwrap();
        assert_eq!(diff.rejected, 4);
        assert_eq!((diff.added, diff.modified), (3, 2));
        let snap = p.snapshot();
        assert_eq!(
            snap.webhook(None, "a").unwrap().module.as_deref(),
            Some("log")
        );
        assert_eq!(
            snap.webhook(None, "b").unwrap().extra.get("x"),
            Some(&json!(1))
        );
        assert!(snap.webhook(None, "c").is_none());
        let rejected = p.status().rejected;
        assert_eq!(rejected.len(), 4);
        assert!(
            rejected
                .iter()
                .any(|r| r.key == "webhooks/a" && r.serving_previous)
        );
    }

    #[tokio::test]
    async fn invalid_file_keeps_previous_config_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks.json", &json!({"a":{"module":"log"}}));
        let p = provider(dir.path());
        p.load().await.unwrap();
        std::fs::write(dir.path().join("webhooks.json"), "{invalid json").unwrap();
        assert!(
            p.reload(ReloadRequest {
                webhooks: true,
                connections: true
            })
            .await
            .is_err()
        );
        assert!(p.snapshot().webhook(None, "a").is_some());
        assert!(p.status().last_error.is_some());
        write(dir.path(), "webhooks.json", &json!([1, 2]));
        assert!(matches!(
            p.reload(ReloadRequest {
                webhooks: true,
                connections: false
            })
            .await,
            Err(ConfigError::NotAnObject { .. })
        ));
        assert!(p.snapshot().webhook(None, "a").is_some());
    }

    #[tokio::test]
    async fn deleted_file_keeps_previous_config_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks.json", &json!({"a":{"module":"log"}}));
        write(
            dir.path(),
            "connections.json",
            &json!({"k":{"type":"kafka"}}),
        );
        let p = provider(dir.path());
        p.load().await.unwrap();
        std::fs::remove_file(dir.path().join("webhooks.json")).unwrap();
        std::fs::remove_file(dir.path().join("connections.json")).unwrap();
        let all = ReloadRequest {
            webhooks: true,
            connections: true,
        };
        assert!(matches!(
            p.reload(all).await,
            Err(ConfigError::Deleted { .. })
        ));
        let only_connections = ReloadRequest {
            webhooks: false,
            connections: true,
        };
        assert!(matches!(
            p.reload(only_connections).await,
            Err(ConfigError::Deleted { .. })
        ));
        assert!(p.snapshot().webhook(None, "a").is_some());
        assert!(p.snapshot().connection("k").is_some());
        let err = p.status().last_error.unwrap();
        assert!(err.contains("connections.json was deleted"), "{err}");
        write(dir.path(), "webhooks.json", &json!({"b":{"module":"log"}}));
        let report = p
            .reload(ReloadRequest {
                webhooks: true,
                connections: false,
            })
            .await
            .unwrap();
        assert_eq!(report.webhooks.unwrap().total, 1);
        assert!(p.snapshot().webhook(None, "a").is_none());
        assert!(p.snapshot().webhook(None, "b").is_some());
        assert_eq!(p.status().last_error, None);
    }

    #[tokio::test]
    async fn a_file_missing_from_the_start_stays_empty_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path());
        p.load().await.unwrap();
        let report = p
            .reload(ReloadRequest {
                webhooks: true,
                connections: true,
            })
            .await
            .unwrap();
        assert_eq!(report.webhooks.unwrap().total, 0);
        assert_eq!(p.status().last_error, None);
    }

    #[tokio::test]
    async fn watcher_keeps_config_of_a_deleted_file_and_loads_it_again() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks.json", &json!({"a":{"module":"log"}}));
        let p = provider(dir.path());
        p.load().await.unwrap();
        p.watch(Duration::from_millis(50)).unwrap();
        std::fs::remove_file(dir.path().join("webhooks.json")).unwrap();
        wait_for(|| {
            p.status()
                .last_error
                .is_some_and(|e| e.contains("webhooks.json was deleted"))
        })
        .await;
        assert!(p.snapshot().webhook(None, "a").is_some());
        write(dir.path(), "webhooks.json", &json!({"b":{"module":"log"}}));
        wait_for(|| p.snapshot().webhook(None, "b").is_some()).await;
        assert!(p.snapshot().webhook(None, "a").is_none());
        assert_eq!(p.status().last_error, None);
        p.shutdown().await;
    }

    #[tokio::test]
    async fn watcher_reloads_good_content_that_follows_a_refused_version() {
        let dir = tempfile::tempdir().unwrap();
        let good = json!({"a":{"module":"log"}});
        write(dir.path(), "webhooks.json", &good);
        let p = provider(dir.path());
        p.load().await.unwrap();
        p.watch(Duration::from_millis(50)).unwrap();
        std::fs::write(dir.path().join("webhooks.json"), "{broken").unwrap();
        wait_for(|| p.status().last_error.is_some()).await;
        // The exact content that was in service before: the error is cleared.
        write(dir.path(), "webhooks.json", &good);
        wait_for(|| p.status().last_error.is_none()).await;
        assert!(p.snapshot().webhook(None, "a").is_some());
        p.shutdown().await;
    }

    #[test]
    fn opening_and_reading_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Other,
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn initial_invalid_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhooks.json"), "{nope").unwrap();
        assert!(provider(dir.path()).load().await.is_err());
    }

    #[tokio::test]
    async fn watcher_picks_up_edits_and_atomic_renames() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks.json", &json!({"a":{"module":"log"}}));
        let p = provider(dir.path());
        p.load().await.unwrap();
        p.watch(Duration::from_millis(50)).unwrap();
        assert!(p.is_watching());
        write(
            dir.path(),
            "webhooks.json",
            &json!({"a":{"module":"log"},"b":{"module":"log"}}),
        );
        wait_for(|| p.snapshot().webhook(None, "b").is_some()).await;
        write(dir.path(), "tmp.json", &json!({"c":{"module":"log"}}));
        std::fs::rename(
            dir.path().join("tmp.json"),
            dir.path().join("webhooks.json"),
        )
        .unwrap();
        wait_for(|| p.snapshot().webhook(None, "c").is_some()).await;
        assert!(p.snapshot().webhook(None, "a").is_none());
        write(
            dir.path(),
            "connections.json",
            &json!({"k":{"type":"kafka"}}),
        );
        wait_for(|| p.snapshot().connection("k").is_some()).await;
        p.shutdown().await;
        assert!(!p.is_watching());
    }

    #[tokio::test]
    async fn start_loads_marks_loaded_and_watches_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks.json", &json!({"a":{"module":"log"}}));
        let start = |watch| {
            FileProvider::start(
                dir.path().join("webhooks.json"),
                dir.path().join("connections.json"),
                Arc::new(TestCompiler),
                Arc::new(env),
                None,
                watch,
            )
        };
        let still = start(None).await.unwrap();
        assert!(!still.is_watching());
        assert_eq!(still.state(), BackendState::Healthy);
        assert!(still.snapshot().webhook(None, "a").is_some());

        let p = start(Some(Duration::from_millis(50))).await.unwrap();
        assert!(p.is_watching());
        write(
            dir.path(),
            "webhooks.json",
            &json!({"a":{"module":"log"},"b":{"module":"log"}}),
        );
        wait_for(|| p.snapshot().webhook(None, "b").is_some()).await;
        p.shutdown().await;

        std::fs::write(dir.path().join("webhooks.json"), "{nope").unwrap();
        assert!(
            start(None).await.is_err(),
            "an invalid file stops the start"
        );
    }

    async fn wait_for(f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition not reached within 5 s");
    }
}
