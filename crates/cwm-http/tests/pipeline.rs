//! In-process tests of the request path: a [`Receiver`] over a static provider and fake sinks,
//! driven through `Receiver::handle` without a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use cwm_config::StaticProvider;
use cwm_config::{Snapshot, Store};
use cwm_http::{HttpSettings, Receiver};
use cwm_modules::fake::{FakeBuilder, FakeSink, Outcome};
use cwm_modules::{
    BuildError, Event, ModuleContext, Registry, Sink, SinkBuilder, SinkContext, SinkError,
};
use http_body_util::Full;
use tokio::sync::Semaphore;

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

/// Registers one sink instance under a module name.
struct Fixed(&'static str, Arc<dyn Sink>);

impl SinkBuilder for Fixed {
    fn name(&self) -> &'static str {
        self.0
    }
    fn build(&self, _: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(self.1.clone())
    }
}

fn receiver(hooks: &[(&str, &str)], settings: HttpSettings) -> Receiver {
    receiver_with(hooks, settings, &FakeSink::new())
}

/// A receiver whose `fake` module delivers to `fake`.
fn receiver_with(hooks: &[(&str, &str)], settings: HttpSettings, fake: &FakeSink) -> Receiver {
    let mut registry = Registry::new(ModuleContext::new());
    registry.register(Fixed("gate", Arc::new(GateSink)));
    registry.register(Fixed("instant", Arc::new(Instant)));
    registry.register(FakeBuilder {
        name: "fake",
        sink: fake.clone(),
    });
    let store = Store::new(Snapshot::empty("default", true));
    for (id, doc) in hooks {
        let hook = cwm_config::compile_webhook_json(&registry, &|_: &str| None, id, doc.as_bytes())
            .unwrap();
        store.update(|s| s.put_webhook("default", id, Arc::new(hook)));
    }
    store.mark_loaded();
    Receiver::new(Arc::new(StaticProvider(Arc::new(store))), settings)
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

async fn post_full(rx: &Receiver, path: &str) -> http::Response<cwm_http::Body> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    rx.handle(req).await
}

fn settings(delivery_timeout_secs: u64) -> HttpSettings {
    HttpSettings {
        delivery_timeout: std::time::Duration::from_secs(delivery_timeout_secs),
        ..HttpSettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_answers_503_with_retry_after() {
    let fake = FakeSink::new();
    let rx = receiver_with(&[("h", r#"{"module":"fake"}"#)], settings(10), &fake);
    fake.push([Outcome::Fail(SinkError::Unavailable("down".into()))]);
    let r = post_full(&rx, "/webhook/h").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(fake.attempts(), 1, "no retry without a retry policy");
    // The next one goes through.
    assert_eq!(post_full(&rx, "/webhook/h").await.status(), 200);
    assert_eq!(fake.delivered().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_inside_the_delivery_timeout() {
    let fake = FakeSink::new();
    let hook = r#"{"module":"fake","retry":{"enabled":true,"max_attempts":5,"initial_delay":1,"max_delay":4}}"#;
    let rx = receiver_with(&[("h", hook)], settings(10), &fake);
    fake.push([
        Outcome::Fail(SinkError::Timeout),
        Outcome::Fail(SinkError::Unavailable("down".into())),
    ]);
    let started = tokio::time::Instant::now();
    assert_eq!(post_full(&rx, "/webhook/h").await.status(), 200);
    assert_eq!(fake.attempts(), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A rejected event is not retried: 503 after one attempt.
    fake.push([Outcome::Fail(SinkError::Rejected("bad".into()))]);
    assert_eq!(post_full(&rx, "/webhook/h").await.status(), 503);
    assert_eq!(fake.attempts(), 4);

    // Failures past the delivery timeout: 503 once the deadline comes, not after every attempt.
    fake.push(vec![Outcome::Fail(SinkError::Timeout); 5]);
    let started = tokio::time::Instant::now();
    let r = post_full(&rx, "/webhook/h").await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() <= std::time::Duration::from_secs(10));
    assert!(fake.attempts() < 4 + 5 + 1);
}

#[tokio::test(start_paused = true)]
async fn the_delivery_deadline_answers_503() {
    let fake = FakeSink::new();
    let rx = receiver_with(&[("h", r#"{"module":"fake"}"#)], settings(3), &fake);
    fake.push([Outcome::Hang]);
    let started = tokio::time::Instant::now();
    let r = post_full(&rx, "/webhook/h").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(3));
    assert!(fake.delivered().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_receive_queue_answers_503() {
    let fake = FakeSink::new();
    let rx = receiver_with(
        &[("h", r#"{"module":"fake","ack":"receive"}"#)],
        HttpSettings {
            receive_queue_capacity: 2,
            receive_queue_per_webhook: 2,
            ..settings(30)
        },
        &fake,
    );
    fake.push([Outcome::Hang, Outcome::Hang]);
    assert_eq!(post_full(&rx, "/webhook/h").await.status(), 200);
    assert_eq!(post_full(&rx, "/webhook/h").await.status(), 200);
    let r = post_full(&rx, "/webhook/h").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(start_paused = true)]
async fn a_chain_answers_200_only_when_every_step_took_the_event() {
    let fake = FakeSink::new();
    let hook = r#"{"chain":["fake","instant",{"module":"fake","retry":{"enabled":true,"initial_delay":0.5}}]}"#;
    let rx = receiver_with(&[("c", hook)], settings(10), &fake);
    assert_eq!(post_full(&rx, "/webhook/c").await.status(), 200);
    assert_eq!(fake.delivered().len(), 2);
    // The first step fails (no retry there): the chain's answer is 503.
    fake.push([Outcome::Fail(SinkError::Unavailable("down".into()))]);
    assert_eq!(post_full(&rx, "/webhook/c").await.status(), 503);
}

fn request(method: &str, path: &str, peer: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(cwm_http::PeerAddr(peer.parse().unwrap()));
    }
    req
}

#[tokio::test]
async fn the_webhook_service_answers_only_the_webhook_routes() {
    let fake = FakeSink::new();
    let rx = receiver_with(&[("h", r#"{"module":"fake"}"#)], settings(10), &fake);
    let webhooks = rx.webhooks();
    let r = webhooks.handle(request("POST", "/webhook/h", None)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY", "security headers");
    assert_eq!(fake.delivered().len(), 1);
    // The namespaced route too (the file-style snapshot ignores the namespace).
    let r = webhooks
        .handle(request("POST", "/webhook/ns/h", None))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        webhooks
            .handle(request("POST", "/webhook/nope", None))
            .await
            .status(),
        404
    );
    assert_eq!(
        webhooks
            .handle(request("GET", "/webhook/h", None))
            .await
            .status(),
        405
    );
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/admin/config-status"),
        ("POST", "/admin/reload-config"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("POST", "/webhook"),
        ("OPTIONS", "/health"),
    ] {
        let r = webhooks.handle(request(method, path, None)).await;
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
    }
    // The full receiver still answers them, and counted what the webhook service served.
    assert_eq!(
        rx.handle(request("GET", "/health", None)).await.status(),
        200
    );
    let r = rx.handle(request("GET", "/metrics", None)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fake.delivered().len(), 2);
}

#[tokio::test]
async fn without_a_peer_address_ip_whitelist_denies() {
    let rx = receiver(
        &[("h", r#"{"module":"instant","ip_whitelist":["127.0.0.1"]}"#)],
        HttpSettings::default(),
    );
    let webhooks = rx.webhooks();
    let r = webhooks.handle(request("POST", "/webhook/h", None)).await;
    assert_eq!(r.status(), 403);
    let peer = Some("127.0.0.1:5000");
    let r = webhooks.handle(request("POST", "/webhook/h", peer)).await;
    assert_eq!(r.status(), 200);
    let other = Some("192.0.2.1:5000");
    let r = webhooks.handle(request("POST", "/webhook/h", other)).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn without_a_peer_address_rate_limit_counts_every_request() {
    let rx = receiver(
        &[(
            "h",
            r#"{"module":"instant","rate_limit":{"max_requests":2,"window_seconds":60}}"#,
        )],
        HttpSettings::default(),
    );
    let webhooks = rx.webhooks();
    for expected in [200, 200, 429, 429] {
        let r = webhooks.handle(request("POST", "/webhook/h", None)).await;
        assert_eq!(r.status(), expected);
    }
    // One window per webhook, whoever sends: a known peer is refused as well.
    let peer = Some("127.0.0.1:5000");
    let r = webhooks.handle(request("POST", "/webhook/h", peer)).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn without_a_peer_address_the_stats_allow_list_denies() {
    let rx = receiver(
        &[],
        HttpSettings {
            stats_allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            ..HttpSettings::default()
        },
    );
    let r = rx.handle(request("GET", "/stats", None)).await;
    assert_eq!(r.status(), 403);
    let r = rx
        .handle(request("GET", "/stats", Some("192.0.2.1:80")))
        .await;
    assert_eq!(r.status(), 403);
    let r = rx
        .handle(request("GET", "/stats", Some("127.0.0.1:80")))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn without_a_peer_address_the_stats_and_root_limiters_count_under_one_key() {
    let rx = receiver(
        &[],
        HttpSettings {
            stats_rate_limit: 2,
            root_rate_limit: 1,
            ..HttpSettings::default()
        },
    );
    for expected in [200, 200, 429] {
        let r = rx.handle(request("GET", "/stats", None)).await;
        assert_eq!(r.status(), expected);
    }
    assert_eq!(rx.handle(request("GET", "/", None)).await.status(), 200);
    assert_eq!(rx.handle(request("GET", "/", None)).await.status(), 429);
    // A known client has its own window.
    let peer = Some("127.0.0.1:5000");
    assert_eq!(
        rx.handle(request("GET", "/stats", peer)).await.status(),
        200
    );
    assert_eq!(rx.handle(request("GET", "/", peer)).await.status(), 200);
}
