//! Webhook Connect benchmark (run by tests/bench/connect.sh): a release `cwm-receiver` buffering
//! in a throwaway Redis, one release `cwm-connector` on a WebSocket, and a local HTTP target in
//! this process. Senders POST events; the target stamps each arrival. Prints events per second
//! delivered end to end and the latency from the sender's 200 to the target (p50/p99; 0 when
//! the event arrived before the 200 did), at a fixed rate and at full speed. Asserts nothing.
//!
//! Environment: RATE (events/s of the fixed-rate phase, default 1000), SECONDS (per phase,
//! default 10), CONCURRENCY (senders of the full-speed phase, default 16). The queue limit is
//! raised out of the way: at full speed the senders may outrun the connector, and the figure is
//! then how fast the backlog drains (delivered events over the time until the last arrived).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Stamps = Arc<Mutex<HashMap<u64, Instant>>>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn release_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/connect_bench -> target/release/<name>
    let bin = exe.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release first",
        bin.display()
    );
    bin
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The local target: records the first arrival of each event number.
async fn target(arrivals: Stamps) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let arrivals = arrivals.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let at = Instant::now();
                            if let Some(n) = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["n"].as_u64())
                            {
                                arrivals.lock().unwrap().entry(n).or_insert(at);
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

struct Phase {
    name: String,
    sent: Vec<(u64, Instant)>,
    started: Instant,
}

fn report(phase: &Phase, arrivals: &Stamps) {
    let arrivals = arrivals.lock().unwrap();
    let mut lat: Vec<f64> = Vec::new();
    let mut last = phase.started;
    for (n, ok_at) in &phase.sent {
        if let Some(at) = arrivals.get(n) {
            lat.push(at.saturating_duration_since(*ok_at).as_secs_f64() * 1000.0);
            last = last.max(*at);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let secs = last.duration_since(phase.started).as_secs_f64().max(1e-9);
    println!(
        "{:<22}{:>9}{:>11}{:>12.0}{:>10.2}{:>10.2}{:>10.2}",
        phase.name,
        phase.sent.len(),
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    n: u64,
) -> bool {
    let body = format!(
        r#"{{"event":"bench","n":{n},"data":{{"padding":"0123456789abcdef0123456789abcdef"}}}}"#
    );
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

#[tokio::main]
async fn main() {
    let rate = env_num("RATE", 1000);
    let seconds = env_num("SECONDS", 10);
    let concurrency = env_num("CONCURRENCY", 16);

    let redis = cwm_testkit::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("webhooks.json"),
        r#"{"bench": {"data_type": "json", "module": "webhook_connect",
            "module-config": {"channel": "bench", "channel_token": "bench-token",
                              "max_in_flight": 200, "max_queue_size": 10000000}}}"#,
    )
    .unwrap();
    let rx_port = cwm_testkit::free_port();
    let _receiver = Kill(
        Command::new(release_bin("cwm-receiver"))
            .current_dir(dir.path())
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", rx_port.to_string())
            .env("LOG_LEVEL", "error")
            .env("WEBHOOK_CONNECT_ENABLED", "true")
            .env("WEBHOOK_CONNECT_REDIS_URL", redis.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(cwm_testkit::wait_for_port(rx_port, Duration::from_secs(20)));

    let arrivals: Stamps = Arc::default();
    let target_port = target(arrivals.clone()).await;
    let _connector = Kill(
        Command::new(release_bin("cwm-connector"))
            .env_clear()
            .env("CONNECTOR_CLOUD_URL", format!("http://127.0.0.1:{rx_port}"))
            .env("CONNECTOR_CHANNEL", "bench")
            .env("CONNECTOR_TOKEN", "bench-token")
            .env("CONNECTOR_PROTOCOL", "websocket")
            .env("CONNECTOR_MAX_CONCURRENT_REQUESTS", "100")
            .env("CONNECTOR_LOG_LEVEL", "ERROR")
            .env(
                "CONNECTOR_TARGET_URL",
                format!("http://127.0.0.1:{target_port}/hook"),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let url = format!("http://127.0.0.1:{rx_port}/webhook/bench");
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let take = || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // Warm-up: the connector connects, the pools fill.
    for _ in 0..300 {
        post(&client, &url, take()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!(
        "== Webhook Connect: Redis buffer, one WebSocket connector, local HTTP target; latency = target arrival - sender's 200 =="
    );
    println!(
        "{:<22}{:>9}{:>11}{:>12}{:>10}{:>10}{:>10}",
        "phase", "sent 200", "delivered", "events/s", "p50 ms", "p99 ms", "max ms"
    );

    // Fixed rate.
    let sent = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..rate * seconds {
        tick.tick().await;
        let (client, url, sent, n) = (client.clone(), url.clone(), sent.clone(), take());
        tasks.spawn(async move {
            if post(&client, &url, n).await {
                sent.lock().unwrap().push((n, Instant::now()));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let phase = Phase {
        name: format!("fixed {rate}/s"),
        sent: std::mem::take(&mut *sent.lock().unwrap()),
        started,
    };
    report(&phase, &arrivals);

    // Full speed.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, sent, next) = (client.clone(), url.clone(), sent.clone(), next.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if post(&client, &url, n).await {
                    sent.lock().unwrap().push((n, Instant::now()));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // Wait for the backlog to drain (or 120 s).
    let total = sent.lock().unwrap().len();
    let drain = Instant::now() + Duration::from_secs(120);
    while Instant::now() < drain {
        let got = {
            let a = arrivals.lock().unwrap();
            sent.lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| a.contains_key(n))
                .count()
        };
        if got >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let phase = Phase {
        name: format!("full speed, {concurrency} senders"),
        sent: std::mem::take(&mut *sent.lock().unwrap()),
        started,
    };
    report(&phase, &arrivals);
    println!("(targets: >= 5000 events/s at full speed; p99 < 20 ms at 1000/s)");
}
