//! In-process tests of the request path: a [`Receiver`] over a static provider and fake sinks,
//! driven through `Receiver::handle` without a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, LazyLock};

use arc_swap::Guard;
use async_trait::async_trait;
use bytes::Bytes;
use cwm_config::{
    BackendState, ConfigError, ConfigProvider, ProviderStatus, ReloadReport, ReloadRequest,
    Snapshot, Store, WebhookConfig,
};
use cwm_http::{HttpSettings, Receiver};
use cwm_modules::{CompiledWebhook, Event, ModuleContext, Registry, Sink, SinkError};
use http_body_util::Full;
use tokio::sync::Semaphore;

/// A provider serving a fixed set of webhooks.
struct Static(Store<CompiledWebhook>);

#[async_trait]
impl ConfigProvider<CompiledWebhook> for Static {
    fn snapshot(&self) -> Guard<Arc<Snapshot<CompiledWebhook>>> {
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

/// Deliveries of the `gate` sink wait for a permit here.
static GATE: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(0)));

struct GateSink;

#[async_trait]
impl Sink for GateSink {
    fn module(&self) -> &'static str {
        "gate"
    }
    async fn deliver(&self, _: &Event) -> Result<(), SinkError> {
        GATE.acquire()
            .await
            .map_err(|_| SinkError::Unavailable("closed".into()))?
            .forget();
        Ok(())
    }
}

struct Instant;

#[async_trait]
impl Sink for Instant {
    fn module(&self) -> &'static str {
        "instant"
    }
    async fn deliver(&self, _: &Event) -> Result<(), SinkError> {
        Ok(())
    }
}

fn gate(_: &WebhookConfig, _: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    Ok(Arc::new(GateSink))
}

fn instant(_: &WebhookConfig, _: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    Ok(Arc::new(Instant))
}

fn receiver(hooks: &[(&str, &str)], settings: HttpSettings) -> Receiver {
    let mut registry = Registry::new(ModuleContext::new());
    registry.register("gate", gate);
    registry.register("instant", instant);
    let store = Store::new(Snapshot::empty("default", true));
    for (id, doc) in hooks {
        let hook = cwm_config::compile_webhook_json(&registry, &|_: &str| None, id, doc.as_bytes())
            .unwrap();
        store.update(|s| s.put_webhook("default", id, Arc::new(hook)));
    }
    store.mark_loaded();
    Receiver::new(Arc::new(Static(store)), settings)
}

async fn post(rx: &Receiver, path: &str) -> u16 {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    rx.handle(req).await.status().as_u16()
}

#[tokio::test]
async fn one_slow_webhook_cannot_take_the_receive_queue_of_the_others() {
    let rx = receiver(
        &[
            ("slow", r#"{"module":"gate","ack":"receive"}"#),
            ("other", r#"{"module":"instant","ack":"receive"}"#),
        ],
        HttpSettings {
            receive_queue_capacity: 10,
            receive_queue_per_webhook: 2,
            ..HttpSettings::default()
        },
    );
    assert_eq!(post(&rx, "/webhook/slow").await, 200);
    assert_eq!(post(&rx, "/webhook/slow").await, 200);
    // The slow webhook's share is full: its sender is asked to retry...
    assert_eq!(post(&rx, "/webhook/slow").await, 503);
    // ... while every other webhook still has room.
    for _ in 0..5 {
        assert_eq!(post(&rx, "/webhook/other").await, 200);
        // Let the queued delivery run (this test's runtime has one thread).
        tokio::task::yield_now().await;
    }
    assert!(rx.queued() >= 2);
    // The slow sink takes its two events: the share is free again.
    GATE.add_permits(2);
    for _ in 0..200 {
        if rx.queued() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(rx.queued(), 0);
    assert_eq!(post(&rx, "/webhook/slow").await, 200);
    GATE.add_permits(1);
}
