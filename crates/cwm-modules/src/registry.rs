//! Module name to sink constructor, and the [`Compiler`] that turns a webhook config into a
//! ready-to-serve [`CompiledWebhook`].

use std::collections::BTreeMap;
use std::sync::Arc;

use cwm_config::names::is_valid_module_name;
use cwm_config::{Ack, Compiler, DataType, RetryPolicy, WebhookConfig};

use crate::cleanup::CredentialCleanup;
use crate::context::ModuleContext;
use crate::sink::Sink;
use crate::validators::{BuildContext, Validators};

/// Builds a sink from a webhook config. An `Err` rejects that webhook at load time.
pub type SinkFactory =
    fn(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String>;

/// A webhook ready to serve: what the request path reads of its config and its sink, built once
/// per config version.
pub struct CompiledWebhook {
    pub config: RequestConfig,
    /// The checks a request must pass, built once.
    pub validators: Validators,
    pub sink: Arc<dyn Sink>,
    pub retry: Option<RetryPolicy>,
    /// What sinks must not see (credential_cleanup).
    pub cleanup: CredentialCleanup,
}

/// The part of a [`WebhookConfig`] the request path reads. The rest of the document
/// (`module-config`, `retry`, unknown keys) is used once, to build the sink, the retry policy and
/// the credential cleanup, and is not kept: a receiver serving 250,000 webhooks would otherwise
/// hold 250,000 parsed copies of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestConfig {
    pub data_type: DataType,
    pub ack: Ack,
}

impl From<WebhookConfig> for RequestConfig {
    fn from(config: WebhookConfig) -> Self {
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

/// The known modules. A webhook naming a module that is not registered is rejected at load.
pub struct Registry {
    factories: BTreeMap<&'static str, SinkFactory>,
    ctx: ModuleContext,
}

impl Registry {
    /// An empty registry.
    pub fn new(ctx: ModuleContext) -> Self {
        Self {
            factories: BTreeMap::new(),
            ctx,
        }
    }

    /// A registry with every sink this crate ships.
    pub fn with_builtin_sinks(ctx: ModuleContext) -> Self {
        let mut r = Self::new(ctx);
        r.register("log", crate::log::factory);
        r.register("save_to_disk", crate::disk::factory);
        r.register("http_webhook", crate::http::factory);
        r
    }

    /// Add (or replace) a module.
    pub fn register(&mut self, name: &'static str, factory: SinkFactory) {
        self.factories.insert(name, factory);
    }

    /// Registered module names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    pub fn context(&self) -> &ModuleContext {
        &self.ctx
    }

    /// Build the sink for `module`.
    pub fn build(&self, config: &WebhookConfig) -> Result<Arc<dyn Sink>, String> {
        let module = config
            .module
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| "'module' is required".to_owned())?;
        let factory = is_valid_module_name(module)
            .then(|| self.factories.get(module))
            .flatten()
            .ok_or_else(|| format!("unknown module '{module}'"))?;
        factory(config, &self.ctx)
    }
}

impl Compiler for Registry {
    type Webhook = CompiledWebhook;

    fn compile(&self, id: &str, config: WebhookConfig) -> Result<CompiledWebhook, String> {
        if config.chain().is_some() {
            return Err("'chain' is not supported by this version of cwm".into());
        }
        let cleanup = CredentialCleanup::from_config(&config)?;
        let validators = Validators::build(&BuildContext {
            webhook_id: id,
            config: &config,
            modules: &self.ctx,
        })
        .map_err(|e| e.to_string())?;
        let sink = self.build(&config)?;
        let retry = config.retry_policy();
        Ok(CompiledWebhook {
            config: config.into(),
            validators,
            sink,
            retry,
            cleanup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(doc: &str) -> Result<CompiledWebhook, String> {
        let registry =
            Registry::with_builtin_sinks(ModuleContext::with_log_target(Box::new(std::io::sink())));
        cwm_config::compile_webhook_json(&registry, &|_: &str| None, "hook", doc.as_bytes())
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
        assert_eq!(hook.retry.map(|r| r.max_attempts), Some(3));
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
            (r#"{"module":"log","chain":[]}"#, "'chain'"),
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
