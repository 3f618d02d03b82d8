//! Black-box tests of the Redis sinks: the real `cwm-receiver`, a real `redis-server`, a stock
//! Python RQ worker (from the test virtualenv `make deps-test` builds) and a real subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use cwm_testkit::Redis;
use cwm_tests::Receiver;
use serde_json::{Value, json};

const CONNECTIONS: &str =
    r#"{"redis_main": {"type": "redis-rq", "host": "127.0.0.1", "port": "{$REDIS_PORT}"}}"#;

fn webhooks(redis_port: u16) -> String {
    json!({
        "jobs": {"module": "redis_rq", "connection": "redis_main",
                 "module-config": {"function": "rq_target.record", "queue_name": "cwm_jobs"}},
        "raw": {"module": "redis_rq", "connection": "redis_main", "data_type": "blob",
                "module-config": {"function": "rq_target.record", "queue_name": "cwm_jobs"}},
        "outage": {"module": "redis_rq", "connection": "redis_main",
                   "module-config": {"function": "rq_target.record", "queue_name": "outage"}},
        "events": {"module": "redis_publish", "connection": "redis_main",
                   "module-config": {"channel": "events"}},
        "legacy": {"module": "redis_publish", "data_type": "blob",
                   "redis": {"host": "127.0.0.1", "port": redis_port.to_string(),
                             "channel": "legacy.events"}}
    })
    .to_string()
}

fn start(redis: &Redis) -> Receiver {
    Receiver::start(
        &[
            ("webhooks.json", &webhooks(redis.port())),
            ("connections.json", CONNECTIONS),
        ],
        &[
            ("REDIS_PORT", &redis.port().to_string()),
            ("DELIVERY_TIMEOUT_SECONDS", "2"),
        ],
    )
}

/// The Python virtualenv with `rq` (`CWM_TEST_VENV`, default `<workspace>/target/venv`).
fn venv() -> PathBuf {
    let venv = std::env::var_os("CWM_TEST_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv"),
        PathBuf::from,
    );
    assert!(
        venv.join("bin/rq").is_file(),
        "{} has no `rq`: this test runs a real Python RQ worker. Run `make deps-test` (it builds \
         the virtualenv), or point CWM_TEST_VENV at a virtualenv with `pip install rq`.",
        venv.display()
    );
    venv
}

fn redis_conn(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn job_ids(redis: &Redis, queue: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("rq:queue:{queue}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis_conn(redis))
        .unwrap()
}

#[test]
fn a_stock_rq_worker_runs_the_jobs_the_receiver_enqueued() {
    let venv = venv();
    let redis = Redis::start();
    let rx = start(&redis);

    let body = r#"{"order": 42, "price": 9.5, "tags": ["a", "b"], "gift": false, "note": null, "nested": {"k": "it's"}}"#;
    let r = rx.post_json("/webhook/jobs", &[("x-delivery", "d-1")], body);
    assert_eq!(r.status, 200, "{}", r.body);
    let raw: &[u8] = b"\x00\x01binary\xff";
    let r = rx.request(
        "POST",
        "/webhook/raw",
        &[
            ("content-type", "application/octet-stream"),
            ("x-delivery", "d-2"),
        ],
        Some(raw),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The 200 means the job is in Redis.
    assert_eq!(job_ids(&redis, "cwm_jobs").len(), 2);

    let out = tempfile::NamedTempFile::new().unwrap();
    let worker = Command::new(venv.join("bin/rq"))
        .args(["worker", "--url", &redis.url(), "--burst"])
        .args(["-w", "rq.worker.SimpleWorker", "cwm_jobs"])
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"),
        )
        .env("CWM_RQ_OUT", out.path())
        .output()
        .expect("run the rq worker");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&worker.stdout),
        String::from_utf8_lossy(&worker.stderr)
    );
    assert!(worker.status.success(), "rq worker failed: {log}");
    let lines: Vec<Value> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "both jobs ran: {log}");
    assert_eq!(lines[0]["type"], "dict");
    assert_eq!(
        lines[0]["payload"],
        serde_json::from_str::<Value>(body).unwrap()
    );
    // Integers stay ints and floats floats on the Python side.
    assert!(lines[0]["payload"]["order"].is_u64());
    assert!(lines[0]["payload"]["price"].is_f64());
    assert_eq!(lines[0]["headers"]["x-delivery"], "d-1");
    assert_eq!(lines[0]["headers"]["content-type"], "application/json");
    assert_eq!(lines[1]["type"], "bytes");
    assert_eq!(
        lines[1]["payload_base64"],
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    assert_eq!(lines[1]["headers"]["x-delivery"], "d-2");
    assert!(
        job_ids(&redis, "cwm_jobs").is_empty(),
        "the worker took both jobs"
    );
}

#[test]
fn a_subscriber_receives_what_both_publish_forms_sent() {
    let redis = Redis::start();
    let rx = start(&redis);
    let mut conn = redis_conn(&redis);
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(&["events", "legacy.events"]).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let body = r#"{"event": "push", "n": 123456789012345678901234567890}"#;
    let r = rx.post_json("/webhook/events", &[("x-github-event", "push")], body);
    assert_eq!(r.status, 200, "{}", r.body);
    let msg = pubsub.get_message().expect("a message on 'events'");
    assert_eq!(msg.get_channel_name(), "events");
    let text: String = msg.get_payload().unwrap();
    // The sender's JSON is published as sent: the big integer is not rounded.
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["payload"]["event"], "push");
    assert_eq!(got["headers"]["x-github-event"], "push");

    let r = rx.request(
        "POST",
        "/webhook/legacy",
        &[("content-type", "application/octet-stream")],
        Some(b"\x00bin"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let msg = pubsub.get_message().expect("a message on 'legacy.events'");
    assert_eq!(msg.get_channel_name(), "legacy.events");
    let got: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(got["payload"], "AGJpbg==");
    assert_eq!(got["encoding"], "base64");
    assert_eq!(got["headers"]["content-type"], "application/octet-stream");
}

/// One request of the outage test.
#[derive(Debug, Clone)]
struct Sample {
    seq: u64,
    sent: Instant,
    done: Instant,
    status: u16,
    retry_after: bool,
}

/// The `seq` of a job, from its description `rq_target.record({'seq': N}, {...})`.
fn job_seq(conn: &mut redis::Connection, id: &str) -> u64 {
    let description: String = redis::cmd("HGET")
        .arg(format!("rq:job:{id}"))
        .arg("description")
        .query(conn)
        .unwrap();
    let rest = description
        .split_once("{'seq': ")
        .unwrap_or_else(|| panic!("unexpected description {description}"))
        .1;
    rest[..rest.find('}').unwrap()].parse().unwrap()
}

#[test]
fn no_200_without_redis_and_every_200_is_in_redis() {
    let mut redis = Redis::start();
    let rx = start(&redis);
    let stop = AtomicBool::new(false);
    let samples = Mutex::new(Vec::<Sample>::new());

    let (stop_begin, stop_end, start_begin, start_end) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let r = rx.post("/webhook/outage", &format!(r#"{{"seq": {seq}}}"#));
                samples.lock().unwrap().push(Sample {
                    seq,
                    sent,
                    done: Instant::now(),
                    status: r.status,
                    retry_after: r.header("retry-after").is_some(),
                });
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        let stop_begin = Instant::now();
        redis.stop();
        let stop_end = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let start_begin = Instant::now();
        redis.start_again();
        let start_end = Instant::now();
        // 200s resume without restarting the receiver.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline
            && !samples
                .lock()
                .unwrap()
                .iter()
                .any(|x| x.sent > start_end && x.status == 200)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (stop_begin, stop_end, start_begin, start_end)
    });
    let samples = samples.into_inner().unwrap();

    let before: Vec<&Sample> = samples.iter().filter(|x| x.done < stop_begin).collect();
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.sent > stop_end && x.done < start_begin)
        .collect();
    let after_ok = samples
        .iter()
        .filter(|x| x.sent > start_end && x.status == 200)
        .count();
    let summary = format!(
        "{} requests: {} before the stop, {} during the outage, {} answered 200 after the restart",
        samples.len(),
        before.len(),
        during.len(),
        after_ok
    );
    assert!(
        before.len() >= 10 && before.iter().all(|x| x.status == 200),
        "{summary}"
    );
    assert!(
        during.len() >= 10,
        "too few requests in the outage: {summary}"
    );
    for x in &during {
        assert!(
            x.status == 503 && x.retry_after,
            "request {} during the outage answered {} (Retry-After: {}): {summary}",
            x.seq,
            x.status,
            x.retry_after
        );
    }
    assert!(after_ok > 0, "no 200 after Redis came back: {summary}");
    for x in &samples {
        assert!(
            x.status == 200 || (x.status == 503 && x.retry_after),
            "request {} answered {}",
            x.seq,
            x.status
        );
    }

    // Every 200 is in Redis. A job in Redis without a 200 can only be the request in flight when
    // Redis shut down (its EXEC ran, the reply was lost): the sender retries it (at least once).
    let mut conn = redis_conn(&redis);
    let ids = job_ids(&redis, "outage");
    let in_redis: BTreeSet<u64> = ids.iter().map(|id| job_seq(&mut conn, id)).collect();
    assert_eq!(in_redis.len(), ids.len(), "one job per request");
    let ok: BTreeSet<u64> = samples
        .iter()
        .filter(|x| x.status == 200)
        .map(|x| x.seq)
        .collect();
    let missing: Vec<_> = ok.difference(&in_redis).collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in Redis: {missing:?}"
    );
    let in_flight_at_stop: BTreeSet<u64> = samples
        .iter()
        .filter(|x| x.sent < stop_end && x.done > stop_begin)
        .map(|x| x.seq)
        .collect();
    let extra: BTreeSet<u64> = in_redis.difference(&ok).copied().collect();
    assert!(
        extra.is_subset(&in_flight_at_stop),
        "jobs in Redis that were answered 503: {extra:?} (in flight at the stop: \
         {in_flight_at_stop:?})"
    );
    assert_eq!(ids.len(), ok.len() + extra.len());
    eprintln!("{summary}; jobs in Redis: {}", ids.len());
}
