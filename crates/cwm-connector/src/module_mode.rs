//! Module and etcd modes: events go to the gateway's own sink modules, built from webhook configs
//! in the receiver's format.
//!
//! Module mode reads `webhooks_config` (and `connections_config`) once at start; etcd mode reads
//! `{prefix}{namespace}/webhooks/{id}` through the receiver's etcd provider (initial load, then a
//! watch), so a change in etcd applies to the next message. Both fetch `{$vault:...}`
//! references through the [`SecretResolver`] they are given, as the receiver does.
//!
//! Keys that only matter where the request arrives (`authorization` and every other request
//! check: `hmac`, `jwt`, `basic_auth`, `ip_whitelist`, `rate_limit`, ...) are removed before a
//! config is compiled: the receiver already checked the request, and a check that cannot run here
//! must not make the webhook fail.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cwm_config::etcd::EtcdProvider;
use cwm_config::secrets::{SecretEnv, SecretResolver, prefetch};
use cwm_config::subst::vault_references;
use cwm_config::{
    CompileError, Compiler, ConfigProvider, ConnectionConfig, Env, EtcdSettings, WebhookConfig,
};
use cwm_modules::{CompiledWebhook, Event, JsonPayload, ModuleContext, Payload, Registry};
use cwm_relay::protocol::{AckStatus, PayloadEncoding, WebhookMessage};

/// Keys read by request checks besides the `validators` table's own (`ip_whitelist` reads it).
const EXTRA_CHECK_KEYS: &[&str] = &["trusted_proxies", "allowed_ips"];

/// The registry as a [`Compiler`], minus the request checks (see the module docs).
pub(crate) struct ConnectorCompiler(pub(crate) Registry);

impl Compiler for ConnectorCompiler {
    type Webhook = CompiledWebhook;

    fn compile(
        &self,
        id: &str,
        mut config: WebhookConfig,
    ) -> Result<CompiledWebhook, CompileError> {
        config.authorization = None;
        for (key, _) in cwm_modules::validators::VALIDATORS {
            config.extra.shift_remove(*key);
        }
        for key in EXTRA_CHECK_KEYS {
            config.extra.shift_remove(*key);
        }
        self.0.compile(id, config)
    }

    fn sync_connections(&self, connections: &[(Arc<str>, Arc<ConnectionConfig>)]) {
        self.0.sync_connections(connections);
    }
}

/// Why module or etcd mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not a JSON object.
    #[error("{path} must hold a JSON object of {{name: config}}: {message}")]
    NotAnObject {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A connection entry is invalid.
    #[error("connection '{name}' in {path}: {reason}")]
    Connection {
        /// The file.
        path: String,
        /// The connection.
        name: String,
        /// Why.
        reason: String,
    },
    /// etcd settings or the first load failed.
    #[error("etcd: {0}")]
    Etcd(String),
}

enum Source {
    /// Module mode: compiled once. Refused webhooks keep their reason: their messages are nacked
    /// with retry (the Python gateway's connector fails them at delivery the same way).
    Static {
        hooks: HashMap<String, Arc<CompiledWebhook>>,
        refused: HashMap<String, String>,
    },
    /// etcd mode: the live snapshot.
    Etcd {
        provider: Arc<EtcdProvider<ConnectorCompiler>>,
        namespace: String,
    },
}

/// Delivers events through sink modules.
pub(crate) struct ModuleDelivery {
    source: Source,
    modules: ModuleContext,
}

async fn read_object(
    path: &Path,
) -> Result<serde_json::Map<String, serde_json::Value>, StartError> {
    let shown = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| StartError::Read {
            path: shown.clone(),
            source,
        })?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(StartError::NotAnObject {
            path: shown,
            message: "not an object".into(),
        }),
        Err(e) => Err(StartError::NotAnObject {
            path: shown,
            message: e.to_string(),
        }),
    }
}

impl ModuleDelivery {
    /// Module mode: read and compile both files. An unreadable or malformed file, or an invalid
    /// connection, is an error; a webhook that does not compile is logged and its messages are
    /// nacked with retry.
    pub(crate) async fn from_files(
        webhooks: &Path,
        connections: Option<&Path>,
        modules: ModuleContext,
        env: &(dyn Env + Send + Sync),
        secrets: Option<&SecretResolver>,
    ) -> Result<Self, StartError> {
        let compiler = ConnectorCompiler(Registry::with_builtin_sinks(modules.clone()));
        let hooks_doc = read_object(webhooks).await?;
        let conns_doc = match connections {
            Some(path) => Some((path, read_object(path).await?)),
            None => None,
        };
        let fetched = prefetch(secrets, |references| {
            let conn_values = conns_doc.iter().flat_map(|(_, doc)| doc.values());
            for value in hooks_doc.values().chain(conn_values) {
                vault_references(value, references);
            }
        })
        .await;
        let env = &SecretEnv {
            env,
            secrets: fetched.as_ref(),
        };
        let mut conns = Vec::new();
        if let Some((path, doc)) = conns_doc {
            for (name, value) in doc {
                let conn = cwm_config::parse_connection(env, &name, value).map_err(|e| {
                    StartError::Connection {
                        path: path.display().to_string(),
                        name: name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                conns.push((Arc::<str>::from(name.as_str()), Arc::new(conn)));
            }
        }
        compiler.sync_connections(&conns);
        let mut hooks = HashMap::new();
        let mut refused = HashMap::new();
        for (id, value) in hooks_doc {
            match cwm_config::compile_webhook(&compiler, env, &id, value) {
                Ok(hook) => {
                    hooks.insert(id, Arc::new(hook));
                }
                Err(e) => {
                    tracing::error!(webhook_id = %id, reason = %e, "webhook config refused; its messages will be nacked with retry");
                    refused.insert(id, e.to_string());
                }
            }
        }
        tracing::info!(
            webhooks = hooks.len(),
            refused = refused.len(),
            connections = conns.len(),
            "module mode: webhook configs loaded"
        );
        Ok(Self {
            source: Source::Static { hooks, refused },
            modules,
        })
    }

    /// etcd mode: start the provider and wait at most `wait` for its first full load.
    pub(crate) async fn from_etcd(
        settings: EtcdSettings,
        modules: ModuleContext,
        env: Arc<dyn Env + Send + Sync>,
        secrets: Option<Arc<SecretResolver>>,
        wait: Duration,
    ) -> Result<Self, StartError> {
        let namespace = settings.default_namespace.clone();
        let compiler = Arc::new(ConnectorCompiler(Registry::with_builtin_sinks(
            modules.clone(),
        )));
        let provider = EtcdProvider::start(settings, compiler, env, secrets)
            .map_err(|e| StartError::Etcd(e.to_string()))?;
        if let Err(e) = provider.wait_loaded(wait).await {
            provider.shutdown().await;
            return Err(StartError::Etcd(e.to_string()));
        }
        let status = provider.status();
        for r in &status.rejected {
            tracing::error!(key = %r.key, reason = %r.reason, "etcd entry refused");
        }
        tracing::info!(
            namespace = %namespace,
            webhooks = provider.snapshot().webhooks_in(&namespace).len(),
            revision = status.revision,
            "etcd mode: webhook configs loaded"
        );
        Ok(Self {
            source: Source::Etcd {
                provider,
                namespace,
            },
            modules,
        })
    }

    /// Stop the etcd watch and flush the sinks (at most `timeout`).
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        if let Source::Etcd { provider, .. } = &self.source {
            provider.shutdown().await;
        }
        if !self.modules.shutdown(timeout).await {
            tracing::warn!("sinks still flushing at the shutdown deadline");
        }
    }

    fn find(&self, webhook_id: &str) -> Result<Arc<CompiledWebhook>, AckStatus> {
        match &self.source {
            Source::Static { hooks, refused } => {
                if let Some(h) = hooks.get(webhook_id) {
                    return Ok(h.clone());
                }
                if let Some(reason) = refused.get(webhook_id) {
                    tracing::error!(webhook_id, reason = %reason, "webhook config refused at start: nack with retry");
                    return Err(AckStatus::Nack { retry: true });
                }
                Err(AckStatus::Nack { retry: false })
            }
            Source::Etcd {
                provider,
                namespace,
            } => provider
                .snapshot()
                .webhook_exact(namespace, webhook_id)
                .cloned()
                .ok_or(AckStatus::Nack { retry: false }),
        }
    }

    pub(crate) async fn deliver(&self, message: &WebhookMessage, webhook_id: &str) -> AckStatus {
        let id = message.message_id.as_str();
        let hook = match self.find(webhook_id) {
            Ok(h) => h,
            Err(status) => {
                if status == (AckStatus::Nack { retry: false }) {
                    tracing::warn!(
                        message_id = id,
                        webhook_id,
                        "unknown webhook: nack without retry"
                    );
                }
                return status;
            }
        };
        let event = match event(message, webhook_id) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(message_id = id, webhook_id, error = %e, "undecodable payload: nack without retry");
                return AckStatus::Nack { retry: false };
            }
        };
        match hook.sink.deliver(&event).await {
            Ok(()) => {
                tracing::debug!(
                    message_id = id,
                    webhook_id,
                    module = hook.sink.module(),
                    "delivered"
                );
                AckStatus::Ack
            }
            Err(e) => {
                tracing::warn!(message_id = id, webhook_id, module = hook.sink.module(), error = %e, "sink failed: nack with retry");
                AckStatus::Nack { retry: true }
            }
        }
    }
}

/// The sink event of a message: a blob for base64 payloads, the JSON document otherwise.
fn event(message: &WebhookMessage, webhook_id: &str) -> Result<Event, String> {
    let payload = match message.payload_encoding {
        Some(PayloadEncoding::Base64) => {
            Payload::Blob(message.body_bytes().map_err(|e| e.to_string())?.into())
        }
        None => Payload::Json(JsonPayload::from(message.payload.clone())),
    };
    Ok(Event {
        namespace: None,
        webhook_id: webhook_id.into(),
        payload,
        headers: message
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        received_at: cwm_relay::protocol::parse_timestamp(&message.timestamp)
            .unwrap_or_else(SystemTime::now),
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn context() -> ModuleContext {
        ModuleContext::new()
    }

    fn msg(webhook: &str, payload: serde_json::Value) -> WebhookMessage {
        WebhookMessage {
            message_id: "msg_1".into(),
            sequence: 1,
            webhook_id: Some(webhook.into()),
            timestamp: cwm_relay::protocol::now(),
            headers: Default::default(),
            payload,
            payload_encoding: None,
        }
    }

    #[tokio::test]
    async fn module_mode_delivers_through_sinks_and_ignores_cloud_only_checks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hooks = dir.path().join("webhooks.json");
        std::fs::write(
            &hooks,
            serde_json::json!({
                "disk": {"module": "save_to_disk", "module-config": {"path": "out"},
                         "authorization": "Bearer x", "hmac": {}, "rate_limit": {"max_requests": 1}},
                "broken": {"module": "no_such_module"}
            })
            .to_string(),
        )
        .unwrap();
        let mut ctx = context();
        ctx.base_dir = dir.path().to_owned();
        let env = |_: &str| None;
        let d = ModuleDelivery::from_files(&hooks, None, ctx, &env, None)
            .await
            .unwrap();
        let m = msg("disk", serde_json::json!({"a": 1}));
        assert_eq!(d.deliver(&m, "disk").await, AckStatus::Ack);
        assert_eq!(d.deliver(&m, "disk").await, AckStatus::Ack);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
        assert_eq!(
            d.deliver(&m, "unknown").await,
            AckStatus::Nack { retry: false }
        );
        assert_eq!(
            d.deliver(&m, "broken").await,
            AckStatus::Nack { retry: true }
        );
    }

    #[tokio::test]
    async fn module_mode_fetches_vault_references() {
        use cwm_config::secrets::{CacheSettings, VaultAuth, VaultSettings, VaultStore};
        use cwm_testkit::{FAKE_VAULT_ROOT_TOKEN, FakeVault};

        let vault = FakeVault::start();
        vault.put("app/disk", "dir", "from-vault");
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("webhooks.json");
        std::fs::write(
            &hooks,
            serde_json::json!({
                "disk": {"module": "save_to_disk", "module-config": {"path": "{$vault:app/disk#dir}"}},
                "missing": {"module": "save_to_disk", "module-config": {"path": "{$vault:app/none#dir}"}}
            })
            .to_string(),
        )
        .unwrap();
        let store = VaultStore::new(VaultSettings::new(
            vault.addr(),
            VaultAuth::Token(FAKE_VAULT_ROOT_TOKEN.into()),
        ))
        .unwrap();
        let resolver = SecretResolver::new(Arc::new(store), CacheSettings::default());
        let mut ctx = context();
        ctx.base_dir = dir.path().to_owned();
        let env = |_: &str| None;
        let d = ModuleDelivery::from_files(&hooks, None, ctx, &env, Some(&resolver))
            .await
            .unwrap();
        let m = msg("disk", serde_json::json!({"a": 1}));
        assert_eq!(d.deliver(&m, "disk").await, AckStatus::Ack);
        assert_eq!(
            std::fs::read_dir(dir.path().join("from-vault"))
                .unwrap()
                .count(),
            1
        );
        // An unreadable secret refuses its webhook alone: its messages come back later.
        assert_eq!(
            d.deliver(&m, "missing").await,
            AckStatus::Nack { retry: true }
        );
    }

    #[tokio::test]
    async fn module_mode_start_errors() {
        let dir = tempfile::tempdir().unwrap();
        let env = |_: &str| None;
        let missing = dir.path().join("missing.json");
        let e = ModuleDelivery::from_files(&missing, None, context(), &env, None)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.json"), "{e}");
        let list = dir.path().join("list.json");
        std::fs::write(&list, "[1]").unwrap();
        let e = ModuleDelivery::from_files(&list, None, context(), &env, None)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("JSON object"), "{e}");
    }
}
