//! Module name to [`SinkBuilder`], and the [`Compiler`] that turns a webhook config into a
//! ready-to-serve [`CompiledWebhook`].

use std::collections::BTreeMap;
use std::sync::Arc;

use cwm_config::names::is_valid_module_name;
use cwm_config::{Ack, CompileError, Compiler, ConnectionConfig, DataType, WebhookConfig};

use crate::chain::{Chain, StepBuilder};
use crate::cleanup::CredentialCleanup;
use crate::context::ModuleContext;
use crate::openapi::OpenApiInfo;
use crate::retry::Retry;
use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};
use crate::validators::{BuildContext, Validators};

/// A webhook ready to serve: what the request path reads of its config and its sink, built once
/// per config version.
pub struct CompiledWebhook {
    /// What the request path reads of the config.
    pub config: RequestConfig,
    /// The checks a request must pass, built once.
    pub validators: Validators,
    /// Where accepted events go (a chain is one sink).
    pub sink: Arc<dyn Sink>,
    /// The webhook's `retry` policy; `None` for no retries and for chains (they retry per step).
    pub retry: Option<Retry>,
    /// What sinks must not see (credential_cleanup).
    pub cleanup: CredentialCleanup,
    /// What the generated OpenAPI document shows of this webhook (`None`: no check, no schema).
    pub openapi: Option<Box<OpenApiInfo>>,
}

/// The part of a [`WebhookConfig`] the request path reads. The rest of the document
/// (`module-config`, `retry`, unknown keys) is used once, to build the sink, the retry policy and
/// the credential cleanup, and is not kept: a receiver serving 250,000 webhooks would otherwise
/// hold 250,000 parsed copies of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestConfig {
    /// How the body is read: `json` (checked and parsed) or `blob` (raw bytes).
    pub data_type: DataType,
    /// When the sender gets its answer.
    pub ack: Ack,
}

impl From<&WebhookConfig> for RequestConfig {
    fn from(config: &WebhookConfig) -> Self {
        Self {
            data_type: config.data_type,
            ack: config.ack,
        }
    }
}

impl std::fmt::Debug for CompiledWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledWebhook")
            .field("module", &self.sink.module())
            .finish_non_exhaustive()
    }
}

impl Drop for CompiledWebhook {
    /// A superseded webhook is dropped once its last request has finished with it: shut its sink
    /// down then (buffering sinks flush; most sinks have nothing to do and skip the task).
    fn drop(&mut self) {
        if !self.sink.needs_shutdown() || Arc::strong_count(&self.sink) > 1 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let sink = self.sink.clone();
            runtime.spawn(async move { sink.shutdown().await });
        }
    }
}

/// The known modules. A webhook naming a module that is not registered is rejected at load.
pub struct Registry {
    builders: BTreeMap<&'static str, Arc<dyn SinkBuilder>>,
    ctx: ModuleContext,
}

impl Registry {
    /// An empty registry.
    pub fn new(ctx: ModuleContext) -> Self {
        Self {
            builders: BTreeMap::new(),
            ctx,
        }
    }

    /// A registry with every sink this build ships (see [`crate::sinks`]).
    pub fn with_builtin_sinks(ctx: ModuleContext) -> Self {
        let mut r = Self::new(ctx);
        for builder in crate::sinks::builtin() {
            r.builders.insert(builder.name(), builder);
        }
        r
    }

    /// Add (or replace) a module under its builder's name.
    pub fn register(&mut self, builder: impl SinkBuilder) {
        self.builders.insert(builder.name(), Arc::new(builder));
    }

    /// Registered module names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.builders.keys().copied()
    }

    /// Whether `module` names a registered sink.
    pub fn contains(&self, module: &str) -> bool {
        is_valid_module_name(module) && self.builders.contains_key(module)
    }

    /// The shared resources sinks are built with.
    pub fn context(&self) -> &ModuleContext {
        &self.ctx
    }

    /// Build the sink `config` names (`module`, `connection`, `module-config`).
    pub fn build(&self, id: &str, config: &WebhookConfig) -> Result<Arc<dyn Sink>, BuildError> {
        let module = config
            .module
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| BuildError::Invalid("'module' is required".into()))?;
        let builder = is_valid_module_name(module)
            .then(|| self.builders.get(module))
            .flatten()
            .ok_or_else(|| BuildError::Invalid(format!("unknown module '{module}'")))?;
        let connection = match config.connection.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() && !builder.connection_types().is_empty() => {
                let slot = self.ctx.connections().get(name);
                check_connection_type(
                    module,
                    name,
                    slot.config().as_deref(),
                    builder.connection_types(),
                )?;
                Some(slot)
            }
            _ => None,
        };
        builder.build(&SinkContext {
            webhook_id: id,
            config,
            connection: connection.as_deref(),
            modules: &self.ctx,
        })
    }
}

/// A connection a module uses must exist and be of a type the module can use.
fn check_connection_type(
    module: &str,
    name: &str,
    config: Option<&ConnectionConfig>,
    types: &[&str],
) -> Result<(), BuildError> {
    let Some(config) = config else {
        return Err(BuildError::Connection(format!(
            "connection '{name}' is not defined"
        )));
    };
    if types.contains(&config.kind.as_str()) {
        Ok(())
    } else {
        Err(BuildError::Connection(format!(
            "connection '{name}' has type '{}'; module '{module}' needs {}",
            config.kind,
            types
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

#[cfg(test)]
impl Registry {
    /// The built-in sinks, with `connections` (name, connection document) synced, for tests.
    pub(crate) fn for_tests(connections: &[(&str, serde_json::Value)]) -> Self {
        #[allow(clippy::unwrap_used)]
        let list: Vec<(Arc<str>, Arc<ConnectionConfig>)> = connections
            .iter()
            .map(|(n, c)| {
                (
                    (*n).into(),
                    Arc::new(serde_json::from_value(c.clone()).unwrap()),
                )
            })
            .collect();
        let registry = Self::with_builtin_sinks(ModuleContext::new());
        registry.sync_connections(&list);
        registry
    }
}

impl Compiler for Registry {
    type Webhook = CompiledWebhook;

    fn compile(&self, id: &str, config: WebhookConfig) -> Result<CompiledWebhook, CompileError> {
        let cleanup = CredentialCleanup::from_config(&config)?;
        let validators = Validators::build(&BuildContext {
            webhook_id: id,
            config: &config,
            modules: &self.ctx,
        })
        .map_err(|e| e.to_string())?;
        let sink: Arc<dyn Sink> = match config.chain() {
            Some(chain) => {
                let steps = StepBuilder {
                    is_registered: &|module: &str| self.contains(module),
                    build: &|step: &WebhookConfig| self.build(id, step),
                    observe: self.ctx.observer(),
                };
                Arc::new(
                    Chain::build(&steps, &config, chain)
                        .map_err(|e| format!("Invalid chain configuration: {e}"))?,
                )
            }
            None => self.build(id, &config).map_err(|e| e.to_string())?,
        };
        let openapi = OpenApiInfo::capture(&config, &validators);
        Ok(CompiledWebhook {
            config: RequestConfig::from(&config),
            validators,
            sink,
            // A chain retries per step; the webhook's own `retry` is not applied to it (upstream).
            retry: config
                .chain()
                .is_none()
                .then(|| Retry::from_config(&config))
                .flatten(),
            cleanup,
            openapi,
        })
    }

    fn sync_connections(&self, connections: &[(Arc<str>, Arc<ConnectionConfig>)]) {
        self.ctx.connections().sync(
            connections.iter().map(|(n, c)| (&**n, c)),
            self.ctx.client_deps(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(doc: &str) -> Result<CompiledWebhook, String> {
        let registry =
            Registry::with_builtin_sinks(ModuleContext::with_log_target(Box::new(std::io::sink())));
        cwm_config::compile_webhook_json(&registry, &|_: &str| None, "hook", doc.as_bytes())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn compiled_webhooks_keep_what_requests_read() {
        let hook = compile(
            r#"{"module":"log","data_type":"blob","ack":"receive","authorization":"Bearer t",
                "retry":{"enabled":true},"credential_cleanup":{"mode":"remove"},"note":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            hook.config,
            RequestConfig {
                data_type: DataType::Blob,
                ack: Ack::Receive,
            }
        );
        assert_eq!(hook.sink.module(), "log");
        assert_eq!(hook.retry.as_ref().map(|r| r.policy.max_attempts), Some(3));
        assert!(hook.cleanup.enabled());
        let plain = compile(r#"{"module":"log"}"#).unwrap();
        assert_eq!(
            hook.validators.names().collect::<Vec<_>>(),
            ["authorization"]
        );
        assert!(plain.validators.is_empty() && plain.retry.is_none());
        for (doc, why) in [
            (r#"{"module":"nope"}"#, "unknown module"),
            (r#"{"data_type":"json"}"#, "'module' is required"),
            (
                r#"{"module":"log","chain":[]}"#,
                "Invalid chain configuration: Chain must contain at least 1 module",
            ),
            (
                r#"{"module":"log","credential_cleanup":1}"#,
                "credential_cleanup",
            ),
            (r#"{"module":"log""#, "invalid JSON"),
            // A check whose config cannot work rejects the webhook at load.
            (r#"{"module":"log","hmac":{}}"#, "'hmac'"),
            (
                r#"{"module":"save_to_disk","ip_whitelist":[]}"#,
                "'ip_whitelist': the list is empty",
            ),
        ] {
            let e = compile(doc).err().unwrap_or_default();
            assert!(e.contains(why), "{doc}: {e}");
        }
    }
}

#[cfg(test)]
mod chain_tests {
    //! `chain` webhooks, compiled through the registry (chain.rs builds steps with what the
    //! registry hands it).
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::fake::{FakeBuilder, FakeSink, Outcome, event};
    use crate::sink::SinkError;

    fn registry(a: &FakeSink, b: &FakeSink) -> Registry {
        let mut r = Registry::new(ModuleContext::new());
        r.register(FakeBuilder {
            name: "a",
            sink: a.clone(),
        });
        r.register(FakeBuilder {
            name: "b",
            sink: b.clone(),
        });
        r
    }

    fn compile(r: &Registry, doc: Value) -> Result<CompiledWebhook, String> {
        cwm_config::compile_webhook(r, &|_: &str| None, "hook", doc).map_err(|e| e.to_string())
    }

    #[test]
    fn invalid_chains_are_rejected_with_the_upstream_messages() {
        let (a, b) = (FakeSink::new(), FakeSink::new());
        let r = registry(&a, &b);
        for (chain, cc, why) in [
            (json!("a"), Value::Null, "Chain must be a list/array"),
            (
                json!([]),
                Value::Null,
                "Chain must contain at least 1 module",
            ),
            (
                json!(vec!["a"; 21]),
                Value::Null,
                "Chain length 21 exceeds security limit 20",
            ),
            (
                json!(["nope"]),
                Value::Null,
                "Chain item 0: module 'nope' is not registered",
            ),
            (
                json!([{"connection":"x"}]),
                Value::Null,
                "Chain item 0: missing required 'module' field",
            ),
            (
                json!([{"module":7}]),
                Value::Null,
                "Chain item 0: 'module' must be a string",
            ),
            (
                json!(["a",{"module":" "}]),
                Value::Null,
                "Chain item 1: module name cannot be empty",
            ),
            (
                json!([{"module":"a","connection":1}]),
                Value::Null,
                "'connection' must be a string if provided",
            ),
            (
                json!([{"module":"a","module-config":[]}]),
                Value::Null,
                "'module-config' must be a dictionary if provided",
            ),
            (
                json!([{"module":"a","topic":"t","module-config":{"topic":"t"}}]),
                Value::Null,
                "'topic' should be in 'module-config'",
            ),
            (
                json!([{"module":"a","retry":{"enabled":"yes"}}]),
                Value::Null,
                "'retry.enabled' must be a boolean",
            ),
            (
                json!([{"module":"a","retry":{"max_attempts":0}}]),
                Value::Null,
                "'retry.max_attempts' must be a positive integer",
            ),
            (
                json!([{"module":"a","retry":1}]),
                Value::Null,
                "'retry' must be a dictionary if provided",
            ),
            (
                json!([{"module":"a","extra":1}]),
                Value::Null,
                "unknown field 'extra'",
            ),
            (
                json!([1]),
                Value::Null,
                "must be a string or dictionary, got int",
            ),
            (json!(["a"]), json!([]), "chain-config must be a dictionary"),
            (
                json!(["a"]),
                json!({"execution":"both"}),
                "chain-config.execution must be one of",
            ),
            (
                json!(["a"]),
                json!({"continue_on_error":1}),
                "continue_on_error must be a boolean",
            ),
            (
                json!(["a"]),
                json!({"timeout":0}),
                "chain-config.timeout must be a positive number",
            ),
            (
                json!(["a"]),
                json!({"retries":1}),
                "chain-config: unknown field 'retries'",
            ),
        ] {
            let e = compile(&r, json!({"chain":chain,"chain-config":cc}))
                .err()
                .unwrap_or_default();
            assert!(
                e.starts_with("Invalid chain configuration: ") && e.contains(why),
                "{chain} {cc}: {e}"
            );
        }
        let ok = compile(&r, json!({"chain":["a",{"module":"b","retry":{"enabled":true}}],"chain-config":{"execution":"parallel"}})).unwrap();
        assert_eq!(ok.sink.module(), "chain");
    }

    #[tokio::test(start_paused = true)]
    async fn every_step_must_take_the_event() {
        let (a, b) = (FakeSink::new(), FakeSink::new());
        let r = registry(&a, &b);
        let seq = compile(&r, json!({"chain":["a",{"module":"b","retry":{"enabled":true,"max_attempts":3,"initial_delay":0.1}}]})).unwrap();
        b.push([Outcome::Fail(SinkError::Timeout)]);
        seq.sink.deliver(&event(json!({"n":1}))).await.unwrap();
        assert_eq!(
            (a.delivered().len(), b.delivered().len(), b.attempts()),
            (1, 1, 2)
        );

        // continue_on_error: false stops at the first failure; the chain fails retryably.
        let stop = compile(
            &r,
            json!({"chain":["a","b"],"chain-config":{"continue_on_error":false}}),
        )
        .unwrap();
        a.push([Outcome::Fail(SinkError::Unavailable("down".into()))]);
        let e = stop.sink.deliver(&event(json!({"n":2}))).await.unwrap_err();
        assert!(e.retryable(), "{e}");
        assert_eq!(b.attempts(), 2, "b never ran");

        // Default: every step runs; a rejection alone is not retryable.
        a.push([Outcome::Fail(SinkError::Rejected("bad".into()))]);
        let e = seq.sink.deliver(&event(json!({"n":3}))).await.unwrap_err();
        assert!(!e.retryable());
        assert_eq!(b.delivered().len(), 2);

        // Parallel, under the chain timeout.
        let par = compile(
            &r,
            json!({"chain":["a","b"],"chain-config":{"execution":"parallel","timeout":2}}),
        )
        .unwrap();
        b.push([Outcome::Hang]);
        let started = tokio::time::Instant::now();
        let e = par.sink.deliver(&event(json!({"n":4}))).await.unwrap_err();
        assert_eq!(
            (e.retryable(), started.elapsed()),
            (true, Duration::from_secs(2))
        );
        assert_eq!(a.delivered().len(), 2);
    }
}
