//! Webhook Connect end to end: the real `cwm-receiver` buffering in a real Redis or RabbitMQ,
//! the real `cwm-connector` relaying to a local HTTP target that counts what it receives.
//!
//! The kill tests stream 1,000 events and SIGKILL one side in the middle: every event the
//! receiver answered 200 must reach the target (duplicates are allowed: at-least-once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwm_testkit::Redis;
use cwm_tests::{Receiver, binary, eventually};
use serde_json::{Value, json};

const CHANNEL: &str = "relay";
const TOKEN: &str = "relay_secret_token";
const HOOK: &str = "relay-hook";
const ADMIN: &str = "admin_token_for_tests";

/// The cloud webhook: ack timeout 2 s, so messages left unacknowledged by a killed process come
/// back quickly.
fn cloud_webhooks(max_queue: u64) -> String {
    json!({
        HOOK: {
            "data_type": "json",
            "module": "webhook_connect",
            "module-config": {
                "channel": CHANNEL,
                "channel_token": TOKEN,
                "max_queue_size": max_queue,
                "ack_timeout_seconds": 2
            }
        }
    })
    .to_string()
}

fn start_cloud(buffer_env: &[(&str, &str)], max_queue: u64) -> (Receiver, Vec<(String, String)>) {
    let mut env: Vec<(String, String)> = vec![
        ("WEBHOOK_CONNECT_ENABLED".into(), "true".into()),
        ("WEBHOOK_CONNECT_ADMIN_TOKEN".into(), ADMIN.into()),
    ];
    env.extend(
        buffer_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rx = Receiver::start(&[("webhooks.json", &cloud_webhooks(max_queue))], &pairs);
    wait_healthy(&rx);
    (rx, env)
}

fn wait_healthy(rx: &Receiver) {
    assert!(
        eventually(Duration::from_secs(20), || rx.get("/health").status == 200),
        "receiver not healthy: {}",
        rx.stderr()
    );
}

/// What the local target does with an attempt.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    /// 500 for the first `n` attempts of each event whose number `% m == r`.
    FailFirst {
        n: u32,
        m: u64,
        r: u64,
    },
}

#[derive(Default)]
struct Seen {
    /// Event number -> 2xx deliveries.
    delivered: BTreeMap<u64, u32>,
    /// Event number -> attempts (any answer).
    attempts: BTreeMap<u64, u32>,
}

/// A local HTTP service behind the "firewall": counts the events it receives. 400 for events
/// whose number `% 7 == 3` when `reject_sevens` is set.
struct Target {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

impl Target {
    fn start(answer: Answer, reject_sevens: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let n = serde_json::from_slice::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["n"].as_u64());
                                let status = match n {
                                    None => 400,
                                    Some(n) => {
                                        let mut s = state.lock().unwrap();
                                        let attempt = {
                                            let a = s.attempts.entry(n).or_default();
                                            *a += 1;
                                            *a
                                        };
                                        let fail = match answer {
                                            Answer::Ok => false,
                                            Answer::FailFirst { n: k, m, r } => {
                                                n % m == r && attempt <= k
                                            }
                                        };
                                        if reject_sevens && n % 7 == 3 {
                                            400
                                        } else if fail {
                                            500
                                        } else {
                                            *s.delivered.entry(n).or_default() += 1;
                                            200
                                        }
                                    }
                                };
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"{}"),
                                ));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            port,
            seen,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn delivered(&self) -> BTreeSet<u64> {
        self.seen
            .lock()
            .unwrap()
            .delivered
            .keys()
            .copied()
            .collect()
    }

    fn attempts(&self, n: u64) -> u32 {
        self.seen
            .lock()
            .unwrap()
            .attempts
            .get(&n)
            .copied()
            .unwrap_or(0)
    }
}

/// The connector binary, killed on drop.
struct Connector {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Connector {
    /// A connector on the test channel: HTTP mode to `target`, or with a config file.
    fn start(
        cloud: &Receiver,
        protocol: &str,
        target: Option<&Target>,
        config: Option<Value>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = Vec::new();
        if let Some(config) = config {
            let path: PathBuf = dir.path().join("connector.json");
            std::fs::write(&path, config.to_string()).unwrap();
            args = vec!["--config".to_owned(), path.display().to_string()];
        }
        let mut env = vec![
            ("CONNECTOR_CLOUD_URL".to_owned(), cloud.url("")),
            ("CONNECTOR_CHANNEL".to_owned(), CHANNEL.to_owned()),
            ("CONNECTOR_TOKEN".to_owned(), TOKEN.to_owned()),
            ("CONNECTOR_PROTOCOL".to_owned(), protocol.to_owned()),
            ("CONNECTOR_RECONNECT_DELAY".to_owned(), "0.2".to_owned()),
            ("CONNECTOR_MAX_RECONNECT_DELAY".to_owned(), "1".to_owned()),
            ("CONNECTOR_LOG_LEVEL".to_owned(), "INFO".to_owned()),
        ];
        if let Some(target) = target {
            env.push(("CONNECTOR_TARGET_URL".to_owned(), target.url()));
        }
        let mut c = Self {
            child: None,
            args,
            env,
            dir,
        };
        c.spawn();
        c
    }

    fn with_target(cloud: &Receiver, protocol: &str, target: &Target) -> Self {
        Self::start(cloud, protocol, Some(target), None)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("connector.log"))
            .unwrap();
        let mut cmd = Command::new(binary("cwm-connector"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start cwm-connector"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("connector.log")).unwrap_or_default()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// POST event `n` until the receiver answers 200 (up to ~10 s of retries, as a sender retrying
/// 503s and refused connections would). True when it was accepted.
fn send(port: u16, n: u64) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/webhook/{HOOK}");
    let body = json!({"event": "test_event", "n": n}).to_string();
    for _ in 0..100 {
        if let Ok(r) = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body)
            && r.status() == 200
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Send events `0..count` from a thread; returns the numbers answered 200.
fn send_stream(port: u16, count: u64) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || (0..count).filter(|&n| send(port, n)).collect())
}

fn assert_all_delivered(
    target: &Target,
    accepted: &[u64],
    timeout: Duration,
    logs: impl Fn() -> String,
) {
    let ok = eventually(timeout, || {
        let got = target.delivered();
        accepted.iter().all(|n| got.contains(n))
    });
    if !ok {
        let got = target.delivered();
        let missing: Vec<_> = accepted.iter().filter(|n| !got.contains(n)).collect();
        panic!(
            "{} of {} accepted events never reached the target, e.g. {:?}\n{}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(20)],
            logs()
        );
    }
}

#[test]
fn a_connector_killed_mid_stream_loses_nothing() {
    let redis = Redis::start();
    let (cloud, _) = start_cloud(&[("WEBHOOK_CONNECT_REDIS_URL", &redis.url())], 10_000);
    let target = Target::start(Answer::Ok, false);
    let mut connector = Connector::with_target(&cloud, "websocket", &target);
    let sender = send_stream(cloud.port, 1000);
    assert!(
        eventually(Duration::from_secs(60), || target.delivered().len() >= 300),
        "the connector delivered too little before the kill: {}",
        connector.log()
    );
    connector.kill();
    std::thread::sleep(Duration::from_millis(300));
    connector.spawn();
    let accepted = sender.join().unwrap();
    assert_eq!(
        accepted.len(),
        1000,
        "the Redis buffer was up: every event is accepted"
    );
    assert_all_delivered(&target, &accepted, Duration::from_secs(90), || {
        format!(
            "connector:\n{}\nreceiver:\n{}",
            connector.log(),
            cloud.stderr()
        )
    });
}

#[test]
fn a_receiver_restarted_mid_stream_loses_nothing_it_accepted() {
    let redis = Redis::start();
    let (mut cloud, env) = start_cloud(&[("WEBHOOK_CONNECT_REDIS_URL", &redis.url())], 10_000);
    let target = Target::start(Answer::Ok, false);
    let connector = Connector::with_target(&cloud, "websocket", &target);
    let sender = send_stream(cloud.port, 1000);
    assert!(
        eventually(Duration::from_secs(60), || target.delivered().len() >= 300),
        "too little delivered before the restart: {}",
        connector.log()
    );
    cloud.kill();
    std::thread::sleep(Duration::from_millis(300));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cloud.restart(&pairs);
    wait_healthy(&cloud);
    let accepted = sender.join().unwrap();
    assert!(
        accepted.len() >= 990,
        "the sender retried; nearly every event is accepted in the end ({})",
        accepted.len()
    );
    assert_all_delivered(&target, &accepted, Duration::from_secs(90), || {
        format!(
            "connector:\n{}\nreceiver:\n{}",
            connector.log(),
            cloud.stderr()
        )
    });
}

/// Every transport delivers and acks; an event the target fails twice is nacked for retry and
/// comes back; one the target refuses (4xx) is nacked without retry and lands in the dead
/// letters, listed by the admin API.
fn transport_round(cloud: &Receiver, protocol: &str) {
    let target = Target::start(Answer::FailFirst { n: 2, m: 5, r: 1 }, true);
    let config = json!({
        "default_target": {
            "url": target.url(),
            "retry_max_attempts": 2,
            "retry_delay_seconds": 0.05
        }
    });
    let connector = Connector::start(cloud, protocol, None, Some(config));
    let accepted: Vec<u64> = (0..30).filter(|&n| send(cloud.port, n)).collect();
    assert_eq!(accepted.len(), 30);
    let expected: Vec<u64> = accepted.iter().copied().filter(|n| n % 7 != 3).collect();
    assert_all_delivered(&target, &expected, Duration::from_secs(60), || {
        format!(
            "{protocol} connector:\n{}\nreceiver:\n{}",
            connector.log(),
            cloud.stderr()
        )
    });
    for n in expected.iter().filter(|n| *n % 5 == 1) {
        assert!(
            target.attempts(*n) >= 3,
            "event {n} failed twice, was nacked and came back ({} attempts)",
            target.attempts(*n)
        );
    }
    let refused: BTreeSet<u64> = accepted.iter().copied().filter(|n| n % 7 == 3).collect();
    let dead = || -> BTreeSet<u64> {
        let r = cloud.request(
            "GET",
            &format!("/admin/webhook-connect/channels/{CHANNEL}/dead-letters?limit=100"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["payload"]["n"].as_u64())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || refused.is_subset(&dead())),
        "{protocol}: refused events {refused:?} should be dead letters, got {:?}",
        dead()
    );
    for n in &refused {
        assert!(!target.delivered().contains(n));
    }
}

#[test]
fn every_transport_delivers_acks_and_nacks_through_redis() {
    let redis = Redis::start();
    for protocol in ["websocket", "sse", "long_poll"] {
        redis.command(&["FLUSHALL"]).unwrap();
        let (cloud, _) = start_cloud(&[("WEBHOOK_CONNECT_REDIS_URL", &redis.url())], 10_000);
        transport_round(&cloud, protocol);
    }
}

#[test]
fn the_rabbitmq_buffer_relays_and_dead_letters() {
    let rabbit = cwm_testkit::RabbitMq::start();
    let (cloud, _) = start_cloud(&[("WEBHOOK_CONNECT_RABBITMQ_URL", &rabbit.url())], 10_000);
    transport_round(&cloud, "websocket");
    let queues = rabbit.ctl(&["list_queues", "name"]);
    assert!(
        queues.contains("webhook_connect.relay.relay-hook"),
        "{queues}"
    );
    assert!(
        queues.contains("webhook_connect.relay.relay-hook.dlq"),
        "{queues}"
    );
}

#[test]
fn the_memory_buffer_relays_and_refuses_past_the_queue_limit() {
    let (cloud, _) = start_cloud(&[("WEBHOOK_CONNECT_BUFFER", "memory")], 2);
    let post = |n: u64| cloud.post(&format!("/webhook/{HOOK}"), &json!({"n": n}).to_string());
    assert_eq!(post(1).status, 200);
    assert_eq!(post(2).status, 200);
    let full = post(3);
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.header("retry-after").is_some());
    let wrong = cloud.request(
        "GET",
        &format!("/connect/stream/{CHANNEL}/poll?timeout=1"),
        &[("authorization", "Bearer wrong")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let unknown = cloud.request(
        "GET",
        "/connect/stream/nope/poll?timeout=1",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(
        unknown.status, 401,
        "an unknown channel is an invalid token"
    );
    let target = Target::start(Answer::Ok, false);
    let connector = Connector::with_target(&cloud, "long_poll", &target);
    assert_all_delivered(&target, &[1, 2], Duration::from_secs(30), || {
        connector.log()
    });
    assert!(
        eventually(Duration::from_secs(10), || post(4).status == 200),
        "the queue accepts again once drained"
    );
}

#[test]
fn webhook_connect_webhooks_are_refused_at_load_when_the_feature_is_off() {
    let rx = Receiver::start(
        &[("webhooks.json", &cloud_webhooks(10))],
        &[("CONFIG_RELOAD_ADMIN_TOKEN", "t")],
    );
    wait_healthy(&rx);
    let provider = rx.config_status("t");
    let reason = cwm_tests::rejection_reason(&provider, HOOK);
    assert!(reason.contains("webhook_connect"), "{reason}");
    let r = rx.post(&format!("/webhook/{HOOK}"), "{}");
    assert_eq!(
        r.status, 404,
        "a webhook rejected at load is not served: {}",
        r.body
    );
    let stream = rx.get(&format!("/connect/stream/{CHANNEL}/sse"));
    assert_eq!(stream.status, 503, "{}", stream.body);
}

/// Etcd mode: the connector reads its webhook configs from etcd and follows the watch: a new
/// config applies to the next event (its `{$vault:...}` references fetched from Vault), a deleted
/// one makes events dead letters.
#[test]
fn the_connector_in_etcd_mode_follows_the_watch() {
    let etcd = cwm_testkit::Etcd::start();
    let vault = cwm_testkit::FakeVault::start();
    vault.put("app/disk", "dir", "from-vault");
    let key = format!("/cwm/default/webhooks/{HOOK}");
    let save_to =
        |dir: &str| json!({"module": "save_to_disk", "module-config": {"path": dir}}).to_string();
    etcd.put(&key, &save_to("first"));
    let (cloud, _) = start_cloud(&[("WEBHOOK_CONNECT_BUFFER", "memory")], 1000);
    let mut connector = Connector::start(&cloud, "websocket", None, None);
    connector.kill();
    connector
        .env
        .push(("CONNECTOR_ETCD_HOST".into(), "127.0.0.1".into()));
    connector
        .env
        .push(("CONNECTOR_ETCD_PORT".into(), etcd.port().to_string()));
    for (k, v) in [
        ("SECRETS_BACKEND", "vault".to_owned()),
        ("VAULT_ADDR", vault.addr()),
        ("VAULT_TOKEN", cwm_testkit::FAKE_VAULT_ROOT_TOKEN.to_owned()),
    ] {
        connector.env.push((k.into(), v));
    }
    connector.spawn();
    let files = |dir: &str| {
        std::fs::read_dir(connector.dir.path().join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    for n in 0..3 {
        assert!(send(cloud.port, n));
    }
    assert!(
        eventually(Duration::from_secs(30), || files("first") == 3),
        "events saved by the etcd-configured module: {}",
        connector.log()
    );

    etcd.put(&key, &save_to("second"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(send(cloud.port, 10));
    assert!(
        eventually(Duration::from_secs(30), || files("second") == 1),
        "the changed config applies to the next event: {}",
        connector.log()
    );

    etcd.put(&key, &save_to("{$vault:app/disk#dir}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(send(cloud.port, 15));
    assert!(
        eventually(Duration::from_secs(30), || files("from-vault") == 1),
        "the path comes from Vault: {}",
        connector.log()
    );

    etcd.del(&key);
    std::thread::sleep(Duration::from_millis(500));
    assert!(send(cloud.port, 20));
    let dead = || {
        let r = cloud.request(
            "GET",
            &format!("/admin/webhook-connect/channels/{CHANNEL}/dead-letters"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        );
        r.json()["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["payload"]["n"] == 20))
    };
    assert!(
        eventually(Duration::from_secs(30), dead),
        "an event for a deleted config is a dead letter: {}",
        connector.log()
    );
    assert_eq!(files("first") + files("second"), 4);
}
