//! A sink written outside the workspace's crates, used by a webhook and served in process.
//!
//! Shows: a struct implementing `cwm_modules::Sink` and its `SinkBuilder`, with a typed serde
//! `module-config`; registering it with `cwm_modules::Registry::register`; compiling a webhook
//! config that uses it with `cwm_config::compile_webhook` (and how a bad `module-config` is
//! refused); and a `cwm_http::Receiver` answering a request to that webhook without a socket.
//!
//! Run: `cargo run -p cwm-examples --example custom_sink`

use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use cwm_config::{ProcessEnv, Snapshot, StaticProvider, Store, compile_webhook};
use cwm_http::{HttpSettings, Receiver};
use cwm_modules::{
    BuildError, Event, ModuleContext, Payload, Registry, Sink, SinkBuilder, SinkContext, SinkError,
};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::json;

/// The sink's `module-config`. Unknown keys are accepted (configs often carry extra keys).
#[derive(Debug, Deserialize)]
struct MemoryConfig {
    /// Put before every line the sink keeps.
    label: String,
    /// Events kept at most; past it the sink answers "unavailable" (the sender gets 503).
    #[serde(default = "default_capacity")]
    capacity: usize,
}

fn default_capacity() -> usize {
    100
}

/// Keeps one line per event in memory, shared with whoever holds `lines`.
struct MemorySink {
    label: String,
    capacity: usize,
    lines: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Sink for MemorySink {
    fn module(&self) -> &'static str {
        "memory"
    }

    /// `Ok` only once the event is stored: the receiver answers 200 on it.
    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let payload = match &event.payload {
            Payload::Json(json) => json.value().to_string(),
            Payload::Blob(bytes) => format!("{} bytes", bytes.len()),
        };
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() >= self.capacity {
            return Err(SinkError::Unavailable("memory sink is full".into()));
        }
        lines.push(format!("{} {}: {payload}", self.label, event.webhook_id));
        Ok(())
    }
}

/// Builds a [`MemorySink`] for each webhook whose `module` is `memory`.
struct MemoryBuilder {
    lines: Arc<Mutex<Vec<String>>>,
}

impl SinkBuilder for MemoryBuilder {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Runs at config load: checks the config, never touches the network.
    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let config: MemoryConfig = cx.module_config()?;
        if config.capacity == 0 {
            return Err(BuildError::option("capacity", "must be at least 1"));
        }
        Ok(Arc::new(MemorySink {
            label: config.label,
            capacity: config.capacity,
            lines: self.lines.clone(),
        }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new(ModuleContext::new());
    registry.register(MemoryBuilder {
        lines: lines.clone(),
    });

    // A bad `module-config` rejects the webhook at load, naming the key.
    let bad = json!({"module": "memory", "module-config": {"label": "x", "capacity": "lots"}});
    match compile_webhook(&registry, &ProcessEnv, "broken", bad) {
        Ok(_) => return Err("a bad module-config was accepted".into()),
        Err(e) => println!("rejected at load: {e}"),
    }

    let config = json!({"module": "memory", "module-config": {"label": "[orders]"}});
    let hook = compile_webhook(&registry, &ProcessEnv, "orders", config)?;
    let store = Store::new(Snapshot::empty("default", true));
    store.update(|s| s.put_webhook("default", "orders", Arc::new(hook)));
    store.mark_loaded();
    let receiver = Receiver::new(
        Arc::new(StaticProvider(Arc::new(store))),
        HttpSettings::default(),
    );

    let req = http::Request::post("/webhook/orders")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"order": 42}"#)))?;
    let resp = receiver.handle(req).await;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    println!(
        "POST /webhook/orders -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    let lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
    for line in lines.iter() {
        println!("the sink got: {line}");
    }
    if !status.is_success() || lines.len() != 1 {
        return Err("the event was not delivered".into());
    }
    Ok(())
}
