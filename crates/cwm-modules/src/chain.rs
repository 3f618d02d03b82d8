//! `chain`: one event delivered to several sinks, in order or at once.
//!
//! The config rules and messages are the upstream's; an invalid chain rejects the webhook at
//! load. Each step is built once, like any sink, from a copy of the webhook config with the
//! step's `module`, `connection` and `module-config` (shallow-merged over the webhook's), and
//! is delivered with the step's own `retry`.
//!
//! The delivery promise holds for the whole chain: it succeeds only when every step accepted the
//! event, so the sender gets 200 only then and 503 otherwise (and sends the event again, so steps
//! that succeeded may see it twice). `continue_on_error: false` stops a sequential chain at the
//! first failure and cancels the other steps of a parallel one; `true` (the default) runs every
//! step. `timeout` bounds the whole chain in both modes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cwm_config::WebhookConfig;
use serde_json::{Map, Value};

use crate::context::Observer;
use crate::retry::{self, Retry};
use crate::sink::{BuildError, Event, Sink, SinkError};

/// Most steps a chain may have.
pub const MAX_STEPS: usize = 20;
const ITEM_FIELDS: [&str; 7] = [
    "connection",
    "destination",
    "module",
    "module-config",
    "queue_name",
    "retry",
    "topic",
];
const CONFIG_FIELDS: [&str; 3] = ["continue_on_error", "execution", "timeout"];

struct Step {
    module: String,
    sink: Arc<dyn Sink>,
    retry: Option<Retry>,
}

/// Builds the sink of one chain step from the step's view of the webhook config.
pub(crate) type BuildStep<'a> = dyn Fn(&WebhookConfig) -> Result<Arc<dyn Sink>, BuildError> + 'a;

/// What a chain needs of the module registry to build its steps.
pub(crate) struct StepBuilder<'a> {
    /// Whether a module name is registered.
    pub(crate) is_registered: &'a dyn Fn(&str) -> bool,
    /// Build the sink a step's config names.
    pub(crate) build: &'a BuildStep<'a>,
    /// Sees every step's delivery attempts.
    pub(crate) observe: Observer,
}

/// A built chain.
pub struct Chain {
    steps: Vec<Step>,
    parallel: bool,
    continue_on_error: bool,
    timeout: Duration,
    observe: Arc<dyn Fn(&'static str, bool, Duration) + Send + Sync>,
}

impl Chain {
    /// Check `chain` and `chain-config` and build every step. The error is the upstream's
    /// message (without its `Invalid chain configuration: ` prefix).
    pub(crate) fn build(
        steps_from: &StepBuilder<'_>,
        config: &WebhookConfig,
        chain: &Value,
    ) -> Result<Self, String> {
        let items = chain.as_array().ok_or("Chain must be a list/array")?;
        if items.is_empty() {
            return Err("Chain must contain at least 1 module".into());
        }
        if items.len() > MAX_STEPS {
            return Err(format!(
                "Chain length {} exceeds security limit {MAX_STEPS}",
                items.len()
            ));
        }
        let (parallel, continue_on_error, timeout) =
            chain_config(config.extra.get("chain-config"))?;
        let mut steps = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let step_config = item_config(steps_from.is_registered, config, i, item)?;
            let sink =
                (steps_from.build)(&step_config).map_err(|e| format!("Chain item {i}: {e}"))?;
            steps.push(Step {
                module: step_config.module.clone().unwrap_or_default(),
                sink,
                retry: Retry::from_config(&step_config),
            });
        }
        Ok(Self {
            steps,
            parallel,
            continue_on_error,
            timeout,
            observe: steps_from.observe.clone(),
        })
    }

    async fn step(
        &self,
        step: &Step,
        event: &Event,
        deadline: tokio::time::Instant,
    ) -> Result<(), SinkError> {
        retry::deliver(
            &*step.sink,
            event,
            step.retry.as_ref(),
            deadline,
            &*self.observe,
        )
        .await
    }
}

/// `chain-config`: execution mode, continue_on_error, timeout.
fn chain_config(cc: Option<&Value>) -> Result<(bool, bool, Duration), String> {
    let cc = match cc {
        None | Some(Value::Null) => return Ok((false, true, Duration::from_secs(30))),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("chain-config must be a dictionary".into()),
    };
    if let Some(k) = cc.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "chain-config: unknown field '{k}' (allowed: {})",
            CONFIG_FIELDS.join(", ")
        ));
    }
    let parallel = match cc.get("execution") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "sequential" => false,
        Some(Value::String(s)) if s == "parallel" => true,
        Some(v) => {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            return Err(format!(
                "chain-config.execution must be one of {{'parallel', 'sequential'}}, got '{shown}'"
            ));
        }
    };
    let continue_on_error = match cc.get("continue_on_error") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("chain-config.continue_on_error must be a boolean".into()),
    };
    let timeout = match cc.get("timeout") {
        None | Some(Value::Null) => 30.0,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or("chain-config.timeout must be a positive number")?,
        Some(_) => return Err("chain-config.timeout must be a positive number".into()),
    };
    Ok((
        parallel,
        continue_on_error,
        Duration::from_secs_f64(timeout.min(3600.0)),
    ))
}

/// The webhook config as chain item `i` sees it.
fn item_config(
    is_registered: &dyn Fn(&str) -> bool,
    config: &WebhookConfig,
    i: usize,
    item: &Value,
) -> Result<WebhookConfig, String> {
    let mut step = config.clone();
    step.extra.remove("chain");
    step.extra.remove("chain-config");
    step.retry = None;
    match item {
        Value::String(module) => {
            if !is_registered(module) {
                return Err(format!(
                    "Chain item {i}: module '{module}' is not registered"
                ));
            }
            step.module = Some(module.clone());
        }
        Value::Object(o) => {
            let module = match o.get("module") {
                None | Some(Value::Null) => {
                    return Err(format!("Chain item {i}: missing required 'module' field"));
                }
                Some(Value::String(m)) => m,
                Some(_) => return Err(format!("Chain item {i}: 'module' must be a string")),
            };
            if module.trim().is_empty() {
                return Err(format!(
                    "Chain item {i}: module name cannot be empty or whitespace-only"
                ));
            }
            if !is_registered(module) {
                return Err(format!(
                    "Chain item {i}: module '{module}' is not registered"
                ));
            }
            if let Some(k) = o.keys().find(|k| !ITEM_FIELDS.contains(&k.as_str())) {
                return Err(format!(
                    "Chain item {i}: unknown field '{k}' (allowed: {})",
                    ITEM_FIELDS.join(", ")
                ));
            }
            step.module = Some(module.clone());
            match o.get("connection") {
                None | Some(Value::Null) => {}
                Some(Value::String(c)) => step.connection = Some(c.clone()),
                Some(_) => {
                    return Err(format!(
                        "Chain item {i}: 'connection' must be a string if provided"
                    ));
                }
            }
            let item_mc = match o.get("module-config") {
                None | Some(Value::Null) => None,
                Some(Value::Object(mc)) => Some(mc),
                Some(_) => {
                    return Err(format!(
                        "Chain item {i}: 'module-config' must be a dictionary if provided"
                    ));
                }
            };
            for k in ["topic", "queue_name", "destination"] {
                if o.contains_key(k) && item_mc.is_some_and(|mc| mc.contains_key(k)) {
                    return Err(format!(
                        "Chain item {i}: '{k}' should be in 'module-config', not at top level"
                    ));
                }
                // The deprecated top-level form still reaches the sink.
                if let Some(v) = o.get(k) {
                    step.extra.insert(k.to_owned(), v.clone());
                }
            }
            if let Some(mc) = item_mc {
                merge(&mut step.module_config, mc);
            }
            match o.get("retry") {
                None | Some(Value::Null) => {}
                Some(Value::Object(r)) => {
                    if r.get("enabled").is_some_and(|v| !v.is_boolean()) {
                        return Err(format!("Chain item {i}: 'retry.enabled' must be a boolean"));
                    }
                    if r.get("max_attempts")
                        .is_some_and(|v| v.as_u64().is_none_or(|n| n < 1))
                    {
                        return Err(format!(
                            "Chain item {i}: 'retry.max_attempts' must be a positive integer"
                        ));
                    }
                    step.retry = Some(Value::Object(r.clone()));
                }
                Some(_) => {
                    return Err(format!(
                        "Chain item {i}: 'retry' must be a dictionary if provided"
                    ));
                }
            }
        }
        other => {
            let kind = match other {
                Value::Null => "NoneType",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                _ => "list",
            };
            return Err(format!(
                "Chain item {i}: must be a string or dictionary, got {kind}"
            ));
        }
    }
    Ok(step)
}

fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        base.insert(k.clone(), v.clone());
    }
}

#[async_trait]
impl Sink for Chain {
    fn module(&self) -> &'static str {
        "chain"
    }

    fn needs_shutdown(&self) -> bool {
        self.steps.iter().any(|s| s.sink.needs_shutdown())
    }

    async fn shutdown(&self) {
        for s in &self.steps {
            if s.sink.needs_shutdown() && Arc::strong_count(&s.sink) == 1 {
                s.sink.shutdown().await;
            }
        }
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut failed: Vec<(&str, SinkError)> = Vec::new();
        if self.parallel {
            let runs = self
                .steps
                .iter()
                .map(|s| async move { (s, self.step(s, event, deadline).await) });
            if self.continue_on_error {
                for (s, r) in futures_util::future::join_all(runs).await {
                    if let Err(e) = r {
                        failed.push((&s.module, e));
                    }
                }
            } else {
                // The first failure cancels the steps still running.
                let all = futures_util::future::try_join_all(runs.map(|f| async move {
                    match f.await {
                        (_, Ok(())) => Ok(()),
                        (s, Err(e)) => Err((s.module.as_str(), e)),
                    }
                }));
                if let Err(f) = all.await {
                    failed.push(f);
                }
            }
        } else {
            for s in &self.steps {
                if let Err(e) = self.step(s, event, deadline).await {
                    failed.push((&s.module, e));
                    if !self.continue_on_error {
                        break;
                    }
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        for (module, e) in &failed {
            tracing::warn!(webhook = %event.webhook_id, module, error = %e, "chain step failed");
        }
        let what = failed
            .iter()
            .map(|(m, e)| format!("{m}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        if failed.iter().any(|(_, e)| e.retryable()) {
            Err(SinkError::Unavailable(format!(
                "chain steps failed: {what}"
            )))
        } else {
            Err(SinkError::Rejected(format!("chain steps failed: {what}")))
        }
    }
}
