//! Module name to sink constructor, and the [`Compiler`] that turns a webhook config into a
//! ready-to-serve [`CompiledWebhook`].

use std::collections::BTreeMap;
use std::sync::Arc;

use cwm_config::names::is_valid_module_name;
use cwm_config::{Compiler, RetryPolicy, WebhookConfig};

use crate::cleanup::CredentialCleanup;
use crate::context::ModuleContext;
use crate::sink::Sink;

/// Builds a sink from a webhook config. An `Err` rejects that webhook at load time.
pub type SinkFactory =
    fn(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String>;

/// A webhook ready to serve: its config and its sink, built once per config version.
pub struct CompiledWebhook {
    pub config: WebhookConfig,
    pub sink: Arc<dyn Sink>,
    pub retry: Option<RetryPolicy>,
    /// What sinks must not see (credential_cleanup).
    pub cleanup: CredentialCleanup,
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

    fn compile(&self, _id: &str, config: WebhookConfig) -> Result<CompiledWebhook, String> {
        if config.chain().is_some() {
            return Err("'chain' is not supported by this version of cwm".into());
        }
        let cleanup = CredentialCleanup::from_config(&config)?;
        let sink = self.build(&config)?;
        let retry = config.retry_policy();
        Ok(CompiledWebhook {
            config,
            sink,
            retry,
            cleanup,
        })
    }
}
