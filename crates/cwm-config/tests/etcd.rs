//! The etcd provider against a real etcd (one per test, from cwm-testkit).
//!
//! Outages, stalls and moves between servers go through [`Proxy`], a small TCP proxy between the
//! provider and etcd that can refuse, cut, stall and re-point connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cwm_config::etcd::{EtcdProvider, EtcdSettings, read_all};
use cwm_config::{BackendState, Compiler, ConfigProvider, ReloadRequest, WebhookConfig};
use cwm_testkit::{Etcd, TlsEtcd, make_certs, openssl};
use etcd_client::{Client, Txn, TxnOp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const LOG: &str = r#"{"data_type":"json","module":"log"}"#;

/// Accepts any module except "nope".
struct TestCompiler;

impl Compiler for TestCompiler {
    type Webhook = WebhookConfig;
    fn compile(
        &self,
        _id: &str,
        config: WebhookConfig,
    ) -> Result<WebhookConfig, cwm_config::CompileError> {
        match config.module.as_deref() {
            Some("nope") => Err("unknown module 'nope'".into()),
            _ => Ok(config),
        }
    }
}

type Provider = Arc<EtcdProvider<TestCompiler>>;

fn test_env(name: &str) -> Option<String> {
    (name == "ETCD_TEST_TOKEN").then(|| "token_from_env".to_owned())
}

/// Short delays so that outages resolve within the test budget.
fn settings(endpoint: String) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![endpoint],
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        ..EtcdSettings::default()
    }
}

fn start(settings: EtcdSettings) -> Provider {
    EtcdProvider::start(settings, Arc::new(TestCompiler), Arc::new(test_env), None).unwrap()
}

async fn start_loaded(settings: EtcdSettings) -> Provider {
    let p = start(settings);
    p.wait_loaded(Duration::from_secs(15)).await.unwrap();
    wait_until("watch confirmed", Duration::from_secs(5), || {
        p.state() == BackendState::Healthy
    })
    .await;
    p
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// etcdctl without blocking the runtime's other worker.
fn ctl(etcd: &Etcd, args: &[&str]) -> String {
    tokio::task::block_in_place(|| etcd.ctl_ok(args))
}

fn put(etcd: &Etcd, key: &str, value: &str) {
    ctl(etcd, &["put", key, value]);
}

fn del(etcd: &Etcd, key: &str) {
    ctl(etcd, &["del", key]);
}

fn webhook<'a>(
    snap: &'a cwm_config::Snapshot<WebhookConfig>,
    ns: &str,
    id: &str,
) -> Option<&'a WebhookConfig> {
    snap.webhook_exact(ns, id).map(|w| &**w)
}

fn auth_of(p: &Provider, ns: &str, id: &str) -> Option<String> {
    webhook(&p.snapshot(), ns, id).and_then(|w| w.authorization.clone())
}

fn has(p: &Provider, ns: &str, id: &str) -> bool {
    p.snapshot().webhook_exact(ns, id).is_some()
}

async fn client(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.unwrap()
}

/// Wait until the snapshot holds exactly the webhooks and connections etcd holds under `/cwm/`.
async fn assert_mirrors_etcd(p: &Provider, etcd_endpoint: &str, timeout: Duration) {
    let mut c = client(etcd_endpoint).await;
    let (revision, kvs) = read_all(&mut c, "/cwm/", 500).await.unwrap();
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in kvs {
        let k = String::from_utf8(k).unwrap();
        let v: Value = serde_json::from_slice(&v).unwrap();
        let v = if k.contains("/connections/") {
            serde_json::to_value(cwm_config::ConnectionConfig::from_value(v, &test_env).unwrap())
        } else {
            serde_json::to_value(WebhookConfig::from_value(v, &test_env).unwrap())
        };
        expected.insert(k, v.unwrap());
    }
    let actual = || {
        let snap = p.snapshot();
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        for ns in snap.namespaces() {
            for (id, w) in snap.webhooks_in(&ns) {
                m.insert(
                    format!("/cwm/{ns}/webhooks/{id}"),
                    serde_json::to_value(&*w).unwrap(),
                );
            }
        }
        for (name, c) in snap.connections() {
            m.insert(
                format!("/cwm/global/connections/{name}"),
                serde_json::to_value(&*c).unwrap(),
            );
        }
        (snap.revision(), m)
    };
    let deadline = Instant::now() + timeout;
    loop {
        let (rev, m) = actual();
        if rev >= revision && m == expected {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = expected.keys().filter(|k| !m.contains_key(*k)).collect();
            let extra: Vec<_> = m.keys().filter(|k| !expected.contains_key(*k)).collect();
            let differ: Vec<_> = m
                .iter()
                .filter(|(k, v)| expected.get(*k).is_some_and(|e| e != *v))
                .map(|(k, _)| k)
                .collect();
            panic!(
                "snapshot (revision {rev}, {} keys) != etcd (revision {revision}, {} keys): \
                 missing {missing:?}, extra {extra:?}, different {differ:?}",
                m.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// A TCP proxy that can refuse, cut, stall and re-point connections.
// ------------------------------------------------------------------------------------------------

struct Proxy {
    port: u16,
    inner: Arc<ProxyInner>,
    accept: JoinHandle<()>,
}

struct ProxyInner {
    /// Where connections go; `None` accepts and closes them at once (etcd "down").
    upstream: Mutex<Option<u16>>,
    /// When set, nothing flows from etcd to the client (a stalled stream).
    paused: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    async fn start(upstream: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(ProxyInner {
            upstream: Mutex::new(upstream),
            paused: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let state = inner.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(up) = *state.upstream.lock().unwrap() else {
                    continue;
                };
                let paused = state.clone();
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", up)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, None), pump(sr, cw, Some(paused)));
                });
                state.conns.lock().unwrap().push(conn);
            }
        });
        Self {
            port,
            inner,
            accept,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn set_upstream(&self, port: Option<u16>) {
        *self.inner.upstream.lock().unwrap() = port;
    }

    /// Drop every open connection (the client sees them fail).
    fn cut(&self) {
        for c in self.inner.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Connections still open (both directions not yet finished).
    fn live(&self) -> usize {
        self.inner
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.is_finished())
            .count()
    }

    fn pause(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Option<Arc<ProxyInner>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(p) = &paused {
            while p.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

/// Layout, values, reads, live add/update/delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_reads_and_live_updates() {
    let etcd = Etcd::start();
    put(&etcd, "/cwm/ns1/webhooks/hook1", LOG);
    put(&etcd, "/cwm/staging/webhooks/my-hook", LOG);
    put(&etcd, "/cwm/default/webhooks/fallback_hook", LOG);
    put(
        &etcd,
        "/cwm/global/connections/redis_main",
        r#"{"type":"redis-rq","host":"localhost","port":6379}"#,
    );
    put(&etcd, "/cwm/global/webhooks/x", LOG);
    put(
        &etcd,
        "/cwm/tok/webhooks/env",
        r#"{"module":"log","authorization":"Bearer {$ETCD_TEST_TOKEN}"}"#,
    );
    let ignored = [
        "/cwm/something/else",
        "/cwm/random/unknown",
        "/cwm/bad/ns/webhooks/hook",
        "/cwm/ns/webhooks/a/b",
        "/cwm/ns/hooks/x",
        "/cwm/global/connections",
        "/other/ns/webhooks/x",
        "/cwm2/ns/webhooks/x",
    ];
    for k in ignored {
        put(&etcd, k, LOG);
    }
    let bad_keys = ["/cwm//webhooks/x", "/cwm/bad namespace!/webhooks/hook1"];
    for k in bad_keys {
        put(&etcd, k, LOG);
    }

    let p = start_loaded(settings(etcd.endpoint())).await;
    let snap = p.snapshot();
    assert!(has(&p, "ns1", "hook1"));
    assert!(has(&p, "staging", "my-hook"));
    assert!(has(&p, "global", "x"));
    assert_eq!(
        webhook(&snap, "ns1", "hook1").unwrap().module.as_deref(),
        Some("log")
    );
    assert_eq!(
        auth_of(&p, "tok", "env").as_deref(),
        Some("Bearer token_from_env")
    );
    assert_eq!(
        snap.connection("redis_main").unwrap().host.as_deref(),
        Some("localhost")
    );
    assert_eq!(
        snap.namespaces(),
        vec!["default", "global", "ns1", "staging", "tok"]
    );
    assert_eq!(snap.webhook_count(), 5);
    assert_eq!(snap.connection_count(), 1);
    // The default namespace serves routes without one; other namespaces do not leak into it.
    assert!(snap.webhook(None, "fallback_hook").is_some());
    assert!(snap.webhook(None, "hook1").is_none());
    assert!(snap.webhook(Some("nonexistent"), "hook1").is_none());
    assert!(snap.webhooks_in("nonexistent").is_empty());
    drop(snap);
    // Keys in the layout's shape with an invalid namespace are rejections; other keys are not.
    let mut rejected: Vec<String> = p.status().rejected.into_iter().map(|r| r.key).collect();
    rejected.sort();
    assert_eq!(rejected, bad_keys.map(str::to_owned).to_vec());

    let status = p.status();
    assert_eq!(status.backend, "etcd");
    assert!(status.initialized && status.connected);
    assert_eq!(status.default_namespace, "default");
    assert_eq!((status.namespaces_count, status.total_webhooks), (5, 5));
    assert_eq!(status.connections_count, 1);
    assert!(status.revision > 0);
    assert_eq!(status.details["prefix"], json!("/cwm/"));
    assert_eq!(status.details["endpoints"], json!([etcd.endpoint()]));
    assert_eq!(status.details["port"], json!(etcd.port()));
    assert!(status.resyncs.is_empty());

    // Live add, update, delete: each visible within 1 s.
    let w = Duration::from_secs(1);
    put(&etcd, "/cwm/ns1/webhooks/hook2", LOG);
    wait_until("live add", w, || has(&p, "ns1", "hook2")).await;
    put(
        &etcd,
        "/cwm/ns1/webhooks/hook1",
        r#"{"module":"log","authorization":"Bearer t2"}"#,
    );
    wait_until("live update", w, || {
        auth_of(&p, "ns1", "hook1").as_deref() == Some("Bearer t2")
    })
    .await;
    del(&etcd, "/cwm/ns1/webhooks/hook1");
    wait_until("live delete", w, || !has(&p, "ns1", "hook1")).await;
    assert!(has(&p, "ns1", "hook2"));
    del(&etcd, "/cwm/ns1/webhooks/hook2");
    wait_until("namespace gone", w, || {
        !p.snapshot().namespaces().contains(&"ns1".to_owned())
    })
    .await;
    put(&etcd, "/cwm/ns1/webhooks/hook2", LOG);
    wait_until("namespace back", w, || has(&p, "ns1", "hook2")).await;
    del(&etcd, "/cwm/global/connections/redis_main");
    wait_until("connection delete", w, || {
        p.snapshot().connection("redis_main").is_none()
    })
    .await;
    put(&etcd, "/cwm/global/connections/c1", r#"{"type":"kafka"}"#);
    wait_until("connection put", w, || {
        p.snapshot().connection("c1").is_some()
    })
    .await;
    // Deleting what does not exist changes nothing; the revision still advances.
    let before = p.snapshot().webhook_count();
    let rev = p.snapshot().revision();
    del(&etcd, "/cwm/ns1/webhooks/missing");
    put(&etcd, "/cwm/something/else2", LOG);
    wait_until("revision advances", w, || p.snapshot().revision() > rev).await;
    assert_eq!(p.snapshot().webhook_count(), before);
    // The invalid-namespace key is forgotten once deleted.
    del(&etcd, "/cwm//webhooks/x");
    wait_until("rejection cleared", w, || p.status().rejected.len() == 1).await;

    p.shutdown().await;
    p.shutdown().await;
    assert!(has(&p, "ns1", "hook2"), "the cache is kept after shutdown");
}

/// Bad values are rejected one key at a time; the last good value keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_keep_the_last_good_value() {
    let etcd = Etcd::start();
    let good = r#"{"module":"log","authorization":"Bearer good"}"#;
    put(&etcd, "/cwm/ns1/webhooks/hook1", good);
    put(
        &etcd,
        "/cwm/global/connections/c1",
        r#"{"type":"redis-rq","host":"localhost","port":6379}"#,
    );
    let p = start_loaded(settings(etcd.endpoint())).await;
    let key = "/cwm/ns1/webhooks/hook1";
    let w = Duration::from_secs(1);
    let rejection = |p: &Provider, key: &str| {
        p.status()
            .rejected
            .into_iter()
            .find(|r| r.key == key)
            .map(|r| (r.reason, r.serving_previous))
    };
    for (value, why) in [
        ("not-json", "invalid JSON"),
        (r#""a string""#, "not a JSON object"),
        ("[1,2,3]", "not a JSON object"),
        ("123", "not a JSON object"),
        ("null", "not a JSON object"),
        (r#"{"module":"nope"}"#, "unknown module"),
        (
            r#"{"module":"log","authorization":"{$UNSET_VARIABLE}"}"#,
            "UNSET_VARIABLE",
        ),
        (r#"{"module":"log","data_type":"xml"}"#, "invalid field"),
    ] {
        put(&etcd, key, value);
        wait_until(&format!("rejection of {value}"), w, || {
            rejection(&p, key).is_some_and(|(r, _)| r.contains(why))
        })
        .await;
        let (_, serving_previous) = rejection(&p, key).unwrap();
        assert!(serving_previous, "{value}");
        assert_eq!(
            auth_of(&p, "ns1", "hook1").as_deref(),
            Some("Bearer good"),
            "{value}"
        );
    }
    // A bad new key, a reserved id and an invalid namespace are rejected alone.
    put(&etcd, "/cwm/ns1/webhooks/fresh", "[1]");
    put(&etcd, "/cwm/ns1/webhooks/admin", LOG);
    put(&etcd, "/cwm/bad ns/webhooks/h", LOG);
    put(
        &etcd,
        "/cwm/global/connections/c1",
        r#"{"type":"redis-rq","host":"169.254.169.254","port":6379}"#,
    );
    // A non-UTF-8 key is refused alone; a 1.4 MiB value loads.
    let mut c = client(&etcd.endpoint()).await;
    c.put(b"/cwm/ns1/webhooks/\xff".to_vec(), LOG, None)
        .await
        .unwrap();
    let big = json!({"module":"log","pad":"b".repeat(1_400_000)}).to_string();
    c.put("/cwm/ns2/webhooks/big", big, None).await.unwrap();
    put(&etcd, "/cwm/ns2/webhooks/after", LOG);
    wait_until("a later valid key", w, || has(&p, "ns2", "after")).await;
    assert!(has(&p, "ns2", "big"));
    assert!(
        rejection(&p, "/cwm/ns1/webhooks/\u{fffd}")
            .unwrap()
            .0
            .contains("UTF-8")
    );
    assert!(!has(&p, "ns1", "fresh") && !has(&p, "ns1", "admin"));
    assert!(!rejection(&p, "/cwm/ns1/webhooks/fresh").unwrap().1);
    assert!(
        rejection(&p, "/cwm/ns1/webhooks/admin")
            .unwrap()
            .0
            .contains("reserved")
    );
    assert!(
        rejection(&p, "/cwm/bad ns/webhooks/h")
            .unwrap()
            .0
            .contains("namespace")
    );
    assert!(rejection(&p, "/cwm/global/connections/c1").unwrap().1);
    assert_eq!(
        p.snapshot().connection("c1").unwrap().host.as_deref(),
        Some("localhost")
    );
    assert_eq!(p.state(), BackendState::Healthy);

    // A full re-list keeps the previous good value of a key that is present but invalid.
    let report = p
        .reload(ReloadRequest {
            webhooks: true,
            connections: true,
        })
        .await
        .unwrap();
    let webhooks = report.webhooks.unwrap();
    assert_eq!(webhooks.rejected, 5, "{webhooks:?}");
    assert_eq!(webhooks.total, 3, "{webhooks:?}");
    assert_eq!(
        (webhooks.added, webhooks.modified, webhooks.removed),
        (0, 0, 0)
    );
    assert_eq!(report.connections.unwrap().rejected, 1);
    assert_eq!(auth_of(&p, "ns1", "hook1").as_deref(), Some("Bearer good"));
    assert_eq!(p.status().resyncs.get("admin"), Some(&1));
    assert_eq!(p.status().last_resync.unwrap().reason, "admin");
    assert_eq!(p.status().rejected.len(), 6);

    // Fixing the key serves the new value and clears the rejection.
    put(
        &etcd,
        key,
        r#"{"module":"log","authorization":"Bearer fixed"}"#,
    );
    wait_until("fixed value", w, || {
        auth_of(&p, "ns1", "hook1").as_deref() == Some("Bearer fixed")
    })
    .await;
    assert!(rejection(&p, key).is_none());
    // Deleting a rejected key with no previous value forgets the rejection.
    del(&etcd, "/cwm/ns1/webhooks/fresh");
    wait_until("rejection forgotten", w, || {
        rejection(&p, "/cwm/ns1/webhooks/fresh").is_none()
    })
    .await;
    // Only the connections part was asked for: the report says so.
    let report = p
        .reload(ReloadRequest {
            webhooks: false,
            connections: true,
        })
        .await
        .unwrap();
    assert!(report.webhooks.is_none() && report.connections.is_some());
    p.shutdown().await;
}

/// A writer runs while the provider starts and through forced reconnects; once it
/// stops, the snapshot equals etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_startup_and_reconnects_are_not_lost() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(Some(etcd.port())).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let endpoint = etcd.endpoint();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = client(&endpoint).await;
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("/cwm/ns{}/webhooks/h{}", n % 3, (n * 7) % 40);
                if n.is_multiple_of(5) {
                    c.delete(key, None).await.unwrap();
                } else {
                    let v = json!({"module": "log", "n": n}).to_string();
                    c.put(key, v, None).await.unwrap();
                }
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = start(settings(proxy.endpoint()));
    p.wait_loaded(Duration::from_secs(10)).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        wait_until("reconnected", Duration::from_secs(5), || {
            p.state() == BackendState::Healthy
        })
        .await;
        proxy.cut();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(writes > 100, "only {writes} writes");
    assert_mirrors_etcd(&p, &etcd.endpoint(), Duration::from_secs(5)).await;
    let status = p.status();
    assert!(
        status.resyncs.get("reconnect").copied().unwrap_or(0) >= 1,
        "{:?}",
        status.resyncs
    );
    eprintln!("writer: {writes} writes; resyncs {:?}", status.resyncs);
    p.shutdown().await;
}

/// The watch stalls while etcd moves on and compacts; etcd cancels the watch for
/// compaction and the provider re-lists at once and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_a_stalled_watch_resyncs() {
    let etcd = Etcd::start();
    put(&etcd, "/cwm/a/webhooks/keep", LOG);
    put(&etcd, "/cwm/a/webhooks/gone", LOG);
    let proxy = Proxy::start(Some(etcd.port())).await;
    // Long keepalive: the stall must not look like a dead connection.
    let p = start_loaded(EtcdSettings {
        keepalive_interval: Duration::from_secs(120),
        keepalive_timeout: Duration::from_secs(60),
        ..settings(proxy.endpoint())
    })
    .await;
    proxy.pause(true);
    // More event bytes than the HTTP/2 stream window plus etcd's watch buffer.
    let pad = "x".repeat(2000);
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let endpoint = etcd.endpoint();
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&endpoint).await;
            for i in 0..300u32 {
                let v = json!({"module":"log","i":i,"t":t,"pad":pad}).to_string();
                c.put(
                    format!("/cwm/bulk/webhooks/k{}", (i * 8 + t) % 200),
                    v,
                    None,
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = client(&etcd.endpoint()).await;
    c.delete("/cwm/a/webhooks/gone", None).await.unwrap();
    let rev = c.put("/cwm/a/webhooks/new", LOG, None).await.unwrap();
    let rev = rev.header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    assert_eq!(
        p.state(),
        BackendState::Healthy,
        "the stall alone is not an outage"
    );
    proxy.pause(false);
    wait_until("compaction resync", Duration::from_secs(10), || {
        p.status().resyncs.contains_key("compacted")
    })
    .await;
    assert_mirrors_etcd(&p, &etcd.endpoint(), Duration::from_secs(5)).await;
    assert!(has(&p, "a", "new") && !has(&p, "a", "gone"));
    assert_eq!(p.snapshot().webhooks_in("bulk").len(), 200);
    wait_until("healthy after resync", Duration::from_secs(2), || {
        p.state() == BackendState::Healthy
    })
    .await;
    p.shutdown().await;
}

/// The provider's path to etcd is down; etcd changes and compacts meanwhile; the
/// last snapshot keeps serving; once the path is back, the re-list catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_compaction_during_an_outage_are_picked_up() {
    let etcd = Etcd::start();
    put(&etcd, "/cwm/ns/webhooks/x_stays", LOG);
    put(&etcd, "/cwm/ns/webhooks/y_goes", LOG);
    put(
        &etcd,
        "/cwm/ns/webhooks/z_changes",
        r#"{"module":"log","authorization":"Bearer old"}"#,
    );
    let proxy = Proxy::start(Some(etcd.port())).await;
    let p = start_loaded(settings(proxy.endpoint())).await;

    proxy.set_upstream(None);
    proxy.cut();
    wait_until("disconnected", Duration::from_secs(2), || {
        p.state() == BackendState::Disconnected
    })
    .await;
    let status = p.status();
    assert!(status.initialized && !status.connected && status.last_error.is_some());
    assert!(has(&p, "ns", "y_goes"), "the cache keeps serving");
    assert!(
        p.reload(ReloadRequest {
            webhooks: true,
            connections: true
        })
        .await
        .is_err(),
        "an admin reload while etcd is unreachable fails"
    );

    let mut c = client(&etcd.endpoint()).await;
    c.put("/cwm/ns/webhooks/added", LOG, None).await.unwrap();
    c.delete("/cwm/ns/webhooks/y_goes", None).await.unwrap();
    let mut rev = 0;
    for i in 0..50 {
        let v = format!(r#"{{"module":"log","authorization":"Bearer new{i}"}}"#);
        rev = c
            .put("/cwm/ns/webhooks/z_changes", v, None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    c.compact(rev, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(has(&p, "ns", "y_goes"));
    assert_eq!(p.state(), BackendState::Disconnected);

    proxy.set_upstream(Some(etcd.port()));
    wait_until("healthy again", Duration::from_secs(3), || {
        p.state() == BackendState::Healthy
    })
    .await;
    assert_mirrors_etcd(&p, &etcd.endpoint(), Duration::from_secs(2)).await;
    assert_eq!(
        auth_of(&p, "ns", "z_changes").as_deref(),
        Some("Bearer new49")
    );
    assert!(has(&p, "ns", "added") && !has(&p, "ns", "y_goes"));
    let status = p.status();
    assert!(status.resyncs.get("reconnect").copied().unwrap_or(0) >= 1);
    assert!(status.connected && status.last_error.is_none());
    p.shutdown().await;
}

/// Etcd itself is killed (the cache keeps serving, state Disconnected) and
/// restarted with its data; writes after the restart are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted() {
    let mut etcd = Etcd::start();
    put(&etcd, "/cwm/ns/webhooks/before", LOG);
    let p = start_loaded(settings(etcd.endpoint())).await;
    tokio::task::block_in_place(|| etcd.kill());
    wait_until("disconnected", Duration::from_secs(2), || {
        p.state() == BackendState::Disconnected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(has(&p, "ns", "before"));
    assert_eq!(p.state(), BackendState::Disconnected);
    tokio::task::block_in_place(|| etcd.restart());
    wait_until("healthy after restart", Duration::from_secs(5), || {
        p.state() == BackendState::Healthy
    })
    .await;
    put(&etcd, "/cwm/ns/webhooks/after", LOG);
    wait_until("write after restart", Duration::from_secs(1), || {
        has(&p, "ns", "after")
    })
    .await;
    assert!(has(&p, "ns", "before"));
    p.shutdown().await;
}

/// The provider is moved to an etcd whose revision is lower (restored or wiped): it notices,
/// re-lists and serves the new content, then follows its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_revision_after_reconnect_is_a_resync() {
    let old = Etcd::start();
    let fresh = Etcd::start();
    let mut c = client(&old.endpoint()).await;
    for i in 0..30 {
        c.put(format!("/cwm/old/webhooks/h{i}"), LOG, None)
            .await
            .unwrap();
    }
    put(&fresh, "/cwm/fresh/webhooks/only", LOG);
    let proxy = Proxy::start(Some(old.port())).await;
    let p = start_loaded(settings(proxy.endpoint())).await;
    assert_eq!(p.snapshot().webhook_count(), 30);
    let old_rev = p.snapshot().revision();

    proxy.set_upstream(Some(fresh.port()));
    proxy.cut();
    wait_until("resync for the regression", Duration::from_secs(5), || {
        p.status().resyncs.contains_key("revision_regressed")
    })
    .await;
    assert!(p.snapshot().revision() < old_rev);
    assert_eq!(p.snapshot().namespaces(), vec!["fresh"]);
    put(&fresh, "/cwm/fresh/webhooks/live", LOG);
    wait_until("live put on the new etcd", Duration::from_secs(1), || {
        has(&p, "fresh", "live")
    })
    .await;
    p.shutdown().await;
}

/// Etcd is unreachable at startup: Connecting and not loaded, retrying in the
/// background; once etcd is up, the load happens with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_etcd() {
    let proxy = Proxy::start(None).await;
    let p = start(settings(proxy.endpoint()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(p.state(), BackendState::Connecting);
    let status = p.status();
    assert!(!status.initialized && !status.connected);
    assert!(status.last_error.is_some());
    assert_eq!(p.snapshot().webhook_count(), 0);
    assert!(p.wait_loaded(Duration::from_millis(100)).await.is_err());

    let etcd = Etcd::start();
    put(&etcd, "/cwm/default/webhooks/hook", LOG);
    proxy.set_upstream(Some(etcd.port()));
    p.wait_loaded(Duration::from_secs(5)).await.unwrap();
    assert!(p.snapshot().webhook(None, "hook").is_some());
    wait_until("healthy", Duration::from_secs(2), || {
        p.state() == BackendState::Healthy
    })
    .await;
    assert!(p.status().resyncs.is_empty(), "the first load is no resync");
    p.shutdown().await;
}

/// Shutdown is bounded even in the middle of a long backoff wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_long_backoff() {
    let p = start(EtcdSettings {
        reconnect_initial: Duration::from_secs(60),
        reconnect_max: Duration::from_secs(60),
        ..settings(format!("127.0.0.1:{}", cwm_testkit::free_port()))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    p.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    p.shutdown().await;
    assert_eq!(p.state(), BackendState::Connecting);
    assert!(
        p.reload(ReloadRequest {
            webhooks: true,
            connections: true
        })
        .await
        .is_err()
    );
}

fn enable_auth(etcd: &Etcd) {
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/cwm/",
            "--prefix=true",
        ],
        &["user", "add", "cwm:cwmpw"],
        &["user", "grant-role", "cwm", "reader"],
        &["auth", "enable"],
    ] {
        ctl(etcd, args);
    }
}

fn root_put(etcd: &Etcd, key: &str, value: &str) {
    ctl(etcd, &["--user=root:rootpw", "put", key, value]);
}

/// A read-only user loads and watches; a wrong password or a lone username never
/// loads and never shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    root_put(&etcd, "/cwm/ns/webhooks/h1", LOG);
    let with_user = |user: &str, password: &str| EtcdSettings {
        username: user.into(),
        password: password.into(),
        ..settings(etcd.endpoint())
    };
    let p = start_loaded(with_user("cwm", "cwmpw")).await;
    assert!(has(&p, "ns", "h1"));
    root_put(&etcd, "/cwm/ns/webhooks/h2", LOG);
    wait_until("live put from root", Duration::from_secs(1), || {
        has(&p, "ns", "h2")
    })
    .await;

    let wrong = start(with_user("cwm", "WrongPassword-123"));
    let lone = start(with_user("cwm", ""));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for q in [&wrong, &lone] {
        assert_eq!(q.state(), BackendState::Connecting);
        let status = q.status();
        let error = status.last_error.clone().expect("an error is reported");
        let shown = serde_json::to_string(&status).unwrap();
        let waited = q
            .wait_loaded(Duration::from_millis(10))
            .await
            .unwrap_err()
            .to_string();
        for text in [&error, &shown, &waited, &format!("{:?}", q.settings())] {
            assert!(!text.contains("WrongPassword-123"), "{text}");
        }
        eprintln!("refused: {error}");
    }
    for q in [wrong, lone, p] {
        q.shutdown().await;
    }
}

/// A short-lived simple token expires while idle; the watch keeps delivering and the
/// next request re-authenticates with a new client (resync "auth").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_reauthenticates() {
    let etcd = Etcd::start_with(&["--auth-token=simple", "--auth-token-ttl=1"]);
    enable_auth(&etcd);
    root_put(&etcd, "/cwm/ns/webhooks/h1", LOG);
    let proxy = Proxy::start(Some(etcd.port())).await;
    let p = start_loaded(EtcdSettings {
        username: "cwm".into(),
        password: "cwmpw".into(),
        ..settings(proxy.endpoint())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    root_put(&etcd, "/cwm/ns/webhooks/h2", LOG);
    wait_until(
        "put after the token expired",
        Duration::from_secs(3),
        || has(&p, "ns", "h2"),
    )
    .await;
    let report = p
        .reload(ReloadRequest {
            webhooks: true,
            connections: true,
        })
        .await
        .unwrap();
    assert_eq!(report.webhooks.unwrap().total, 2);
    let resyncs = p.status().resyncs;
    assert_eq!(resyncs.get("auth"), Some(&1), "{resyncs:?}");
    wait_until("watching again", Duration::from_secs(2), || {
        p.state() == BackendState::Healthy
    })
    .await;
    // The client replaced for re-authentication closed its connection.
    wait_until("old connection closed", Duration::from_secs(2), || {
        proxy.live() == 1
    })
    .await;
    p.shutdown().await;
}

/// 5,000 namespaces x 5 webhooks of ~250 bytes load in pages (one range would pass
/// gRPC's 4 MiB limit) and live updates keep flowing. Pages of 3,001 keys, so the listing takes
/// 9 pages built on the background builder and namespaces are split across page boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_thousand_keys() {
    let etcd = Etcd::start();
    let pad = "p".repeat(170);
    let mut tasks = Vec::new();
    for t in 0..4usize {
        let endpoint = etcd.endpoint();
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&endpoint).await;
            let mut ops = Vec::new();
            for ns in (t..5000).step_by(4) {
                for h in 0..5 {
                    let v = json!({"data_type":"json","module":"log","module-config":{"pretty_print":true,"pad":pad}}).to_string();
                    ops.push(TxnOp::put(format!("/cwm/ns{ns:04}/webhooks/hook{h}"), v, None));
                    if ops.len() == 100 {
                        c.txn(Txn::new().and_then(std::mem::take(&mut ops)))
                            .await
                            .unwrap();
                    }
                }
            }
            if !ops.is_empty() {
                c.txn(Txn::new().and_then(ops)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let started = Instant::now();
    let mut s = settings(etcd.endpoint());
    s.page_size = 3_001;
    let p = start(s);
    p.wait_loaded(Duration::from_secs(30)).await.unwrap();
    eprintln!("25,000 keys loaded in {:?}", started.elapsed());
    let snap = p.snapshot();
    assert_eq!(snap.webhook_count(), 25_000);
    assert_eq!(snap.namespace_count(), 5_000);
    drop(snap);
    // Keys 3,000..3,004 (ns0600) straddle the first page boundary; the last page is partial.
    for ns in ["ns0600", "ns1200", "ns4999"] {
        for h in 0..5 {
            assert!(has(&p, ns, &format!("hook{h}")), "{ns}/hook{h}");
        }
    }
    put(&etcd, "/cwm/ns0001/webhooks/hook9", LOG);
    wait_until("live put at scale", Duration::from_secs(1), || {
        has(&p, "ns0001", "hook9")
    })
    .await;
    let report = p
        .reload(ReloadRequest {
            webhooks: true,
            connections: true,
        })
        .await
        .unwrap()
        .webhooks
        .unwrap();
    assert_eq!(
        (report.total, report.added, report.modified, report.removed),
        (25_001, 0, 0, 0)
    );
    p.shutdown().await;
}

/// Optional TLS with a client certificate; without the client certificate etcd refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate() {
    let etcd = tokio::task::block_in_place(|| TlsEtcd::start(true));
    let d = etcd.dir();
    let tls = cwm_config::EtcdTls {
        ca: Some(d.join("ca.pem")),
        cert: Some(d.join("client.pem")),
        key: Some(d.join("client.key")),
    };
    let endpoint = format!("127.0.0.1:{}", etcd.port());
    let options = etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(
                std::fs::read(d.join("ca.pem")).unwrap(),
            ))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(d.join("client.pem")).unwrap(),
                std::fs::read(d.join("client.key")).unwrap(),
            )),
    );
    let mut c = Client::connect([format!("https://{endpoint}")], Some(options))
        .await
        .unwrap();
    // The member needs a moment after opening its port.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.put("/cwm/tls/webhooks/h1", LOG, None).await.is_err() {
        assert!(Instant::now() < deadline, "TLS etcd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = start_loaded(EtcdSettings {
        tls: Some(tls.clone()),
        ..settings(endpoint.clone())
    })
    .await;
    assert!(has(&p, "tls", "h1"));
    c.put("/cwm/tls/webhooks/h2", LOG, None).await.unwrap();
    wait_until("live put over TLS", Duration::from_secs(1), || {
        has(&p, "tls", "h2")
    })
    .await;

    let no_client_cert = start(EtcdSettings {
        tls: Some(cwm_config::EtcdTls {
            cert: None,
            key: None,
            ..tls
        }),
        ..settings(endpoint)
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(no_client_cert.state(), BackendState::Connecting);
    eprintln!(
        "without a client certificate: {:?}",
        no_client_cert.status().last_error
    );
    p.shutdown().await;
    no_client_cert.shutdown().await;
}

/// A plain endpoint that meets a TLS server: the error says that TLS is probably needed and how
/// to turn it on. An https:// endpoint without a CA uses TLS with the built-in roots, which do
/// not hold the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_endpoint_against_tls_etcd_hints_at_tls() {
    let etcd = tokio::task::block_in_place(|| TlsEtcd::start(true));
    let endpoint = format!("127.0.0.1:{}", etcd.port());
    let hint = format!(
        "the server at {endpoint} answered with TLS: set ETCD_CA_CERT or use an https:// endpoint"
    );
    for plain in [endpoint.clone(), format!("http://{endpoint}")] {
        let p = start(settings(plain.clone()));
        let last_error = || p.status().last_error.unwrap_or_default();
        wait_until("the TLS hint", Duration::from_secs(15), || {
            last_error().contains(&hint.replace(&endpoint, &plain))
        })
        .await;
        assert_eq!(p.state(), BackendState::Connecting);
        let error = p
            .wait_loaded(Duration::from_millis(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("answered with TLS"), "{error}");
        p.shutdown().await;
    }

    // cwmctl's path: the listing fails, then `tls_hint` names the server.
    let plain = settings(endpoint.clone()).validated().unwrap();
    let mut c = cwm_config::etcd::connect(&plain).await.unwrap();
    assert!(read_all(&mut c, "/cwm/", 10).await.is_err());
    assert_eq!(cwm_config::etcd::tls_hint(&plain).await, Some(hint));

    // Nothing listens: no hint.
    let closed = settings(format!("127.0.0.1:{}", cwm_testkit::free_port()));
    assert_eq!(cwm_config::etcd::tls_hint(&closed).await, None);
    // A plain etcd: no hint.
    let plain_etcd = tokio::task::block_in_place(Etcd::start);
    assert_eq!(
        cwm_config::etcd::tls_hint(&settings(plain_etcd.endpoint())).await,
        None
    );
    // TLS configured: no hint.
    let https = settings(format!("https://{endpoint}"));
    assert_eq!(cwm_config::etcd::tls_hint(&https).await, None);

    // https:// without ETCD_CA_CERT: TLS, verified against the built-in roots.
    let p = start(https);
    wait_until("a certificate error", Duration::from_secs(15), || {
        p.status()
            .last_error
            .is_some_and(|e| e.contains("UnknownIssuer"))
    })
    .await;
    assert!(!p.status().last_error.unwrap().contains("answered with TLS"));
    p.shutdown().await;
}

/// TLS files that cannot work are refused by `validated()` (so the receiver exits 2 at startup),
/// naming the file and the problem.
#[test]
fn tls_files_that_do_not_parse_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let file = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_text = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let garbage = file("garbage.pem", "this is not a certificate\n");
    let truncated = file("truncated.pem", &ca_text[..ca_text.len() / 2]);
    let bad_base64 = file(
        "bad_base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let bad_der = file(
        "bad_der.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    let csr = d.join("client.csr");
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "client.key",
            "-out",
            "encrypted.key",
            "-passout",
            "pass:secret",
        ],
    );
    let tls = |ca: Option<&std::path::Path>, pair: Option<(&str, &std::path::Path)>| {
        let pair = pair.map(|(cert, key)| (d.join(cert), key.to_owned()));
        EtcdSettings {
            tls: Some(cwm_config::EtcdTls {
                ca: ca.map(std::path::Path::to_owned),
                cert: pair.as_ref().map(|(c, _)| c.clone()),
                key: pair.map(|(_, k)| k),
            }),
            ..settings("127.0.0.1:2379".into())
        }
        .validated()
        .map(|_| ())
    };
    let key = |name: &str| d.join(name);
    let cases: Vec<(
        &str,
        Result<(), cwm_config::ConfigError>,
        std::path::PathBuf,
        &str,
    )> = vec![
        (
            "garbage CA",
            tls(Some(&garbage), None),
            garbage.clone(),
            "CA certificate (ETCD_CA_CERT)",
        ),
        (
            "garbage CA, says what it expected",
            tls(Some(&garbage), None),
            garbage.clone(),
            "no -----BEGIN CERTIFICATE----- block",
        ),
        (
            "truncated CA",
            tls(Some(&truncated), None),
            truncated.clone(),
            "is not valid PEM",
        ),
        (
            "CA not base64",
            tls(Some(&bad_base64), None),
            bad_base64.clone(),
            "not valid base64",
        ),
        (
            "CA not X.509",
            tls(Some(&bad_der), None),
            bad_der.clone(),
            "is not valid X.509",
        ),
        (
            "a key as CA",
            tls(Some(&key("ca.key")), None),
            key("ca.key"),
            "holds a private key, not a certificate",
        ),
        (
            "a CSR as CA",
            tls(Some(&csr), None),
            csr.clone(),
            "holds no certificate",
        ),
        (
            "missing CA",
            tls(Some(&key("missing.pem")), None),
            key("missing.pem"),
            "cannot be read",
        ),
        (
            "garbage certificate",
            tls(None, Some(("garbage.pem", &key("client.key")))),
            garbage.clone(),
            "client certificate (ETCD_CERT)",
        ),
        (
            "key given as the certificate",
            tls(None, Some(("client.key", &key("client.key")))),
            key("client.key"),
            "holds a private key, not a certificate (are ETCD_CERT and ETCD_KEY swapped?)",
        ),
        (
            "certificate given as the key",
            tls(None, Some(("client.pem", &key("client.pem")))),
            key("client.pem"),
            "client key (ETCD_KEY)",
        ),
        (
            "certificate given as the key, swapped?",
            tls(None, Some(("client.pem", &key("client.pem")))),
            key("client.pem"),
            "holds a certificate, not a private key",
        ),
        (
            "garbage key",
            tls(None, Some(("client.pem", &garbage))),
            garbage.clone(),
            "is not a PEM private key",
        ),
        (
            "encrypted key",
            tls(None, Some(("client.pem", &key("encrypted.key")))),
            key("encrypted.key"),
            "encrypted private key",
        ),
        (
            "the key of another certificate",
            tls(None, Some(("client.pem", &key("server.key")))),
            key("server.key"),
            "does not belong to the client certificate",
        ),
    ];
    for (what, result, path, expected) in cases {
        let message = result.expect_err(what).to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(expected),
            "{what}: {message:?} should name {} and say {expected:?}",
            path.display()
        );
    }
    // Good files: with a CA, without one (built-in roots), with or without a client identity.
    tls(
        Some(&d.join("ca.pem")),
        Some(("client.pem", &key("client.key"))),
    )
    .unwrap();
    tls(Some(&d.join("ca.pem")), None).unwrap();
    tls(None, Some(("client.pem", &key("client.key")))).unwrap();
    // A CA bundle holding several certificates.
    let bundle = file(
        "bundle.pem",
        &(ca_text.clone() + &std::fs::read_to_string(d.join("server.pem")).unwrap()),
    );
    tls(Some(&bundle), None).unwrap();
}

/// Rejects a webhook whose `connection` is not among the connections it was last handed, as
/// the receiver's compiler does.
#[derive(Default)]
struct ConnCompiler {
    known: Mutex<Vec<String>>,
}

impl Compiler for ConnCompiler {
    type Webhook = WebhookConfig;
    fn compile(
        &self,
        _id: &str,
        config: WebhookConfig,
    ) -> Result<WebhookConfig, cwm_config::CompileError> {
        match &config.connection {
            Some(name) if !self.known.lock().unwrap().contains(name) => {
                Err(format!("connection '{name}' is not defined").into())
            }
            _ => Ok(config),
        }
    }
    fn sync_connections(&self, connections: &[(Arc<str>, Arc<cwm_config::ConnectionConfig>)]) {
        *self.known.lock().unwrap() = connections.iter().map(|(n, _)| n.to_string()).collect();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_compiled_against_the_connections_they_name() {
    let etcd = Etcd::start();
    let redis = r#"{"type":"redis-rq","host":"localhost","port":6379}"#;
    let uses = |c: &str| format!(r#"{{"module":"redis_rq","connection":"{c}"}}"#);
    // `aaa` lists before `global/connections/`: the connection is still known at compile time.
    put(&etcd, "/cwm/global/connections/main", redis);
    put(&etcd, "/cwm/aaa/webhooks/w1", &uses("main"));
    let p = EtcdProvider::start(
        settings(etcd.endpoint()),
        Arc::new(ConnCompiler::default()),
        Arc::new(test_env),
        None,
    )
    .unwrap();
    p.wait_loaded(Duration::from_secs(15)).await.unwrap();
    assert!(p.snapshot().webhook_exact("aaa", "w1").is_some());

    // A webhook naming a connection that does not exist yet is rejected ...
    put(&etcd, "/cwm/aaa/webhooks/w2", &uses("later"));
    let rejected = || {
        p.status()
            .rejected
            .iter()
            .any(|r| r.key.ends_with("aaa/webhooks/w2"))
    };
    wait_until("w2 rejected", Duration::from_secs(5), rejected).await;
    assert!(p.snapshot().webhook_exact("aaa", "w2").is_none());
    // ... and served once the connection arrives, without being put again.
    put(&etcd, "/cwm/global/connections/later", redis);
    wait_until("w2 served", Duration::from_secs(10), || {
        p.snapshot().webhook_exact("aaa", "w2").is_some()
    })
    .await;
    assert!(!rejected());

    // One transaction with the webhook key first: the connection is applied first.
    let mut c = client(&etcd.endpoint()).await;
    c.txn(Txn::new().and_then([
        TxnOp::put("/cwm/aaa/webhooks/w3", uses("third"), None),
        TxnOp::put("/cwm/global/connections/third", redis, None),
    ]))
    .await
    .unwrap();
    wait_until("w3 served", Duration::from_secs(5), || {
        p.snapshot().webhook_exact("aaa", "w3").is_some()
    })
    .await;
    p.shutdown().await;
}
