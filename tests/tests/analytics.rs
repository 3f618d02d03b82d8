//! Black-box tests of analytics logging (`ANALYTICS_CONNECTION`): the real `cwm-receiver`
//! binary and a real ClickHouse server. Rows are written in batches (every 2 s), so the tests
//! wait for them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cwm_testkit::ClickHouse;
use cwm_tests::{Receiver, eventually};
use serde_json::{Value, json};

const MASK: &str = "***REDACTED***";

fn connections(ch: &ClickHouse) -> Value {
    json!({
        // As the Python gateway's configs have it: the native port, plus where HTTP listens.
        "analytics_ch": {
            "type": "clickhouse", "host": "127.0.0.1", "port": 9000,
            "http_port": ch.http_port(), "database": "default"
        }
    })
}

fn webhooks() -> Value {
    json!({
        "events": {"module": "log"},
        // Analytics masks credentials even where the webhook's own cleanup is off.
        "raw": {"module": "log", "credential_cleanup": {"enabled": false}},
        "queued": {"module": "log", "ack": "receive"}
    })
}

fn count(ch: &ClickHouse, table: &str) -> u64 {
    let r = ch.try_query(&format!("SELECT count() FROM default.{table}"));
    if r.status != 200 {
        return 0;
    }
    r.body.trim().parse().unwrap()
}

fn table_exists(ch: &ClickHouse, table: &str) -> bool {
    ch.query(&format!(
        "SELECT count() FROM system.tables WHERE database = 'default' AND name = '{table}'"
    ))
    .trim()
        == "1"
}

fn rows(ch: &ClickHouse) -> Vec<Value> {
    ch.query(
        "SELECT id, webhook_id, toString(timestamp) AS ts, payload, headers \
         FROM default.webhook_logs ORDER BY payload FORMAT JSONEachRow",
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The value of a sample line `name value` in `/metrics`.
fn metric(rx: &Receiver, name: &str) -> Option<u64> {
    let body = rx.get("/metrics").body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn answered_requests_become_rows_with_credentials_masked() {
    let ch = ClickHouse::start();
    let rx = Receiver::start(
        &[
            ("webhooks.json", &webhooks().to_string()),
            ("connections.json", &connections(&ch).to_string()),
        ],
        &[("ANALYTICS_CONNECTION", "analytics_ch")],
    );
    // Not answered 200: no row.
    assert_eq!(rx.post("/webhook/nowhere", "{}").status, 404);
    let n = 5;
    for i in 0..n {
        let body = format!(r#"{{"n": {i}, "password": "hunter2", "user": "u{i}"}}"#);
        let r = rx.post_json(
            "/webhook/events",
            &[("authorization", "Bearer s3cret"), ("x-trace", "t")],
            &body,
        );
        assert_eq!(r.status, 200, "{} {}", r.body, rx.stderr());
    }
    let r = rx.post_json(
        "/webhook/raw",
        &[("x-api-key", "k3y")],
        r#"{"raw": true, "nested": {"api_key": "k3y", "ok": 1}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(rx.post("/webhook/queued", r#"{"queued": 1}"#).status, 200);

    let total = n + 2;
    assert!(
        eventually(Duration::from_secs(20), || count(&ch, "webhook_logs")
            == total),
        "rows: {} / {total}; {}",
        count(&ch, "webhook_logs"),
        rx.stderr()
    );
    let got = rows(&ch);
    let text = serde_json::to_string(&got).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("s3cret") && !text.contains("k3y"));

    let events: Vec<&Value> = got.iter().filter(|r| r["webhook_id"] == "events").collect();
    assert_eq!(events.len(), n as usize);
    for r in &events {
        let payload: Value = serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["password"], MASK, "{r}");
        assert!(payload["user"].as_str().unwrap().starts_with('u'));
        let headers: Value = serde_json::from_str(r["headers"].as_str().unwrap()).unwrap();
        assert_eq!(headers["authorization"], MASK, "{r}");
        assert_eq!(headers["x-trace"], "t");
        // A UUID v4 and a `YYYY-MM-DD hh:mm:ss` timestamp.
        let id = r["id"].as_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
        assert_eq!(r["ts"].as_str().unwrap().len(), 19);
    }
    let raw = got.iter().find(|r| r["webhook_id"] == "raw").unwrap();
    let payload: Value = serde_json::from_str(raw["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        payload,
        json!({"raw": true, "nested": {"api_key": MASK, "ok": 1}})
    );
    let headers: Value = serde_json::from_str(raw["headers"].as_str().unwrap()).unwrap();
    assert_eq!(headers["x-api-key"], MASK);
    assert!(got.iter().any(|r| r["webhook_id"] == "queued"));

    // Both tables of the Python gateway exist; the statistics table stays empty.
    assert!(table_exists(&ch, "webhook_stats"));
    assert_eq!(count(&ch, "webhook_stats"), 0);

    assert_eq!(metric(&rx, "cwm_analytics_enabled"), Some(1));
    assert_eq!(metric(&rx, "cwm_analytics_rows_written_total"), Some(total));
    assert_eq!(metric(&rx, "cwm_analytics_rows_dropped_total"), Some(0));
    assert_eq!(metric(&rx, "cwm_analytics_flush_failures_total"), Some(0));
}

#[test]
fn a_clickhouse_connection_alone_turns_nothing_on_and_a_named_one_is_followed_live() {
    let ch = ClickHouse::start();
    let files = [
        ("webhooks.json", webhooks().to_string()),
        ("connections.json", connections(&ch).to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();

    // No ANALYTICS_CONNECTION: a clickhouse connection exists, but nothing is logged.
    let rx = Receiver::start(&files, &[]);
    for i in 0..3 {
        assert_eq!(
            rx.post("/webhook/events", &format!(r#"{{"n": {i}}}"#))
                .status,
            200
        );
    }
    std::thread::sleep(Duration::from_millis(3000));
    assert!(!table_exists(&ch, "webhook_logs"));
    assert!(!rx.get("/metrics").body.contains("cwm_analytics"));
    drop(rx);

    // Named but not configured: a warning, 200s, no rows; then the connection appears in
    // connections.json and logging turns on by itself.
    let rx = Receiver::start(&files, &[("ANALYTICS_CONNECTION", "later")]);
    assert!(
        eventually(Duration::from_secs(5), || rx
            .stderr()
            .contains("connection 'later' is not configured")),
        "{}",
        rx.stderr()
    );
    assert_eq!(metric(&rx, "cwm_analytics_enabled"), Some(0));
    assert_eq!(rx.post("/webhook/events", r#"{"before": 1}"#).status, 200);

    let mut conns = connections(&ch);
    conns["later"] = conns["analytics_ch"].clone();
    std::fs::write(rx.dir.path().join("connections.json"), conns.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &rx,
            "cwm_analytics_enabled"
        ) == Some(1)),
        "{}",
        rx.stderr()
    );
    assert_eq!(rx.post("/webhook/events", r#"{"after": 1}"#).status, 200);
    assert!(
        eventually(Duration::from_secs(10), || count(&ch, "webhook_logs") == 1),
        "{}",
        rx.stderr()
    );
    assert_eq!(rows(&ch)[0]["payload"], r#"{"after": 1}"#);

    // A connection of another type: off, with the reason.
    conns["later"] = json!({"type": "redis", "host": "127.0.0.1", "port": 1});
    std::fs::write(rx.dir.path().join("connections.json"), conns.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || rx
            .stderr()
            .contains("has type 'redis', not 'clickhouse'")),
        "{}",
        rx.stderr()
    );
    assert_eq!(metric(&rx, "cwm_analytics_enabled"), Some(0));
}

#[test]
fn a_stopped_clickhouse_loses_rows_not_webhooks() {
    let mut ch = ClickHouse::start();
    let rx = Receiver::start(
        &[
            ("webhooks.json", &webhooks().to_string()),
            ("connections.json", &connections(&ch).to_string()),
        ],
        &[
            ("ANALYTICS_CONNECTION", "analytics_ch"),
            ("SHUTDOWN_TIMEOUT_SECONDS", "10"),
        ],
    );
    assert_eq!(rx.post("/webhook/events", r#"{"first": 1}"#).status, 200);
    assert!(
        eventually(Duration::from_secs(10), || count(&ch, "webhook_logs") == 1),
        "{}",
        rx.stderr()
    );

    ch.kill();
    let m = 20;
    for i in 0..m {
        let r = rx.post("/webhook/events", &format!(r#"{{"down": {i}}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        eventually(Duration::from_secs(15), || {
            metric(&rx, "cwm_analytics_rows_dropped_total") == Some(m)
        }),
        "{}\n{}",
        rx.get("/metrics").body,
        rx.stderr()
    );
    assert!(metric(&rx, "cwm_analytics_flush_failures_total").unwrap() >= 1);
    assert_eq!(metric(&rx, "cwm_analytics_rows_written_total"), Some(1));
    assert!(rx.stderr().contains("analytics batch not written"));

    // Rows queued at exit are flushed (and fail here) within the deadline: a clean exit.
    assert_eq!(rx.post("/webhook/events", r#"{"last": 1}"#).status, 200);
    rx.terminate();
    let mut rx = rx;
    assert!(
        rx.wait(Duration::from_secs(20)).success(),
        "{}",
        rx.stderr()
    );
    ch.restart();
    assert_eq!(count(&ch, "webhook_logs"), 1);
}

/// `cwmctl analytics-stats --once` fills `webhook_stats` from `webhook_logs` as the Python
/// analytics processor did: per webhook id (namespaced ones included) the total and the counts
/// per window, all rows with one timestamp. A connection that is missing or of another type
/// fails with exit 1.
#[test]
fn cwmctl_analytics_stats_fills_webhook_stats() {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let mut conns = connections(&ch);
    conns["cache"] = json!({"type": "redis", "host": "127.0.0.1"});
    std::fs::write(dir.path().join("connections.json"), conns.to_string()).unwrap();
    let ctl = |connection: &str| {
        let out = std::process::Command::new(cwm_tests::binary("cwmctl"))
            .current_dir(dir.path())
            .env_clear()
            .args(["analytics-stats", "--once", "--connection", connection])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // No logs yet: both tables are created, no statistics.
    let (code, text) = ctl("analytics_ch");
    assert_eq!(code, Some(0), "{text}");
    assert!(table_exists(&ch, "webhook_logs") && table_exists(&ch, "webhook_stats"));
    assert_eq!(count(&ch, "webhook_stats"), 0);

    ch.query(
        "INSERT INTO default.webhook_logs (id, webhook_id, timestamp, payload, headers) VALUES \
         ('1', 'events', now(), '{}', '{}'), \
         ('2', 'events', now() - INTERVAL 2 HOUR, '{}', '{}'), \
         ('3', 'prod/orders', now() - INTERVAL 10 DAY, '{}', '{}')",
    );
    let (code, text) = ctl("analytics_ch");
    assert_eq!(code, Some(0), "{text}");
    let stats: Vec<Value> = ch
        .query(
            "SELECT webhook_id, toString(timestamp) AS ts, total, minute, minute_5, minute_15, \
             minute_30, hour, day, week, month, length(id) AS id_len \
             FROM default.webhook_stats ORDER BY webhook_id FORMAT JSONEachRow",
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stats.len(), 2, "{stats:?}");
    // 64-bit integers come back quoted.
    let counts = |r: &Value| -> Vec<String> {
        [
            "total",
            "minute",
            "minute_5",
            "minute_15",
            "minute_30",
            "hour",
            "day",
            "week",
            "month",
        ]
        .iter()
        .map(|k| r[*k].as_str().unwrap().to_owned())
        .collect()
    };
    assert_eq!(stats[0]["webhook_id"], "events");
    assert_eq!(
        counts(&stats[0]),
        ["2", "1", "1", "1", "1", "1", "2", "2", "2"]
    );
    assert_eq!(stats[1]["webhook_id"], "prod/orders");
    assert_eq!(
        counts(&stats[1]),
        ["1", "0", "0", "0", "0", "0", "0", "0", "1"]
    );
    assert_eq!(stats[0]["ts"], stats[1]["ts"]);
    assert_eq!(stats[0]["id_len"], "36");

    let (code, text) = ctl("nowhere");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("connection \"nowhere\" is not defined"),
        "{text}"
    );
    let (code, text) = ctl("cache");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not 'clickhouse'"), "{text}");
}
