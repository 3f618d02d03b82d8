//! Black-box tests of the `clickhouse` sink: the real `cwm-receiver` binary and a real
//! ClickHouse server. A 200 means the row is in ClickHouse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cwm_testkit::ClickHouse;
use cwm_tests::Receiver;
use serde_json::{Value, json};

const ADMIN: &str = "adm1n";

fn rows(ch: &ClickHouse, table: &str) -> Vec<Value> {
    ch.query(&format!(
        "SELECT webhook_id, payload, headers FROM default.{table} ORDER BY timestamp, payload \
         FORMAT JSONEachRow"
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn start(ch: &ClickHouse) -> Receiver {
    let connections = json!({
        // As the Python gateway's configs have it: the native port. `http_port` says where
        // the HTTP interface listens (8123 would be used otherwise).
        "ch_native": {
            "type": "clickhouse", "host": "127.0.0.1", "port": 9000,
            "http_port": ch.http_port(), "database": "default", "user": "default", "password": ""
        },
        // The HTTP port given as `port`.
        "ch_http": {"type": "clickhouse", "host": "127.0.0.1", "port": ch.http_port().to_string()}
    });
    let webhooks = json!({
        "events": {
            "module": "clickhouse", "connection": "ch_native",
            "module-config": {"table": "events", "flush_interval_ms": 20}
        },
        "plain": {
            "module": "clickhouse", "connection": "ch_http",
            "module-config": {"include_headers": false, "include_timestamp": true}
        },
        "blob": {
            "module": "clickhouse", "connection": "ch_http", "data_type": "blob",
            "module-config": {"table": "blobs", "batch_size": "10"}
        },
        "bad_table": {
            "module": "clickhouse", "connection": "ch_http",
            "module-config": {"table": "drop"}
        }
    });
    Receiver::start(
        &[
            ("webhooks.json", &webhooks.to_string()),
            ("connections.json", &connections.to_string()),
        ],
        &[("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN)],
    )
}

#[test]
fn posted_events_are_rows_when_the_answer_arrives() {
    let ch = ClickHouse::start();
    let rx = start(&ch);

    let r = rx.post_json("/webhook/events", &[("x-trace", "t-1")], r#"{"order": 42}"#);
    assert_eq!(r.status, 200, "{} {}", r.body, rx.stderr());
    // No waiting: the row is there when the 200 arrives.
    let got = rows(&ch, "events");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["webhook_id"], "events");
    assert_eq!(got[0]["payload"], r#"{"order": 42}"#);
    let headers: Value = serde_json::from_str(got[0]["headers"].as_str().unwrap()).unwrap();
    assert_eq!(headers["x-trace"], "t-1");

    // Concurrent senders share INSERTs; each gets its 200 once its row is in.
    std::thread::scope(|s| {
        for i in 0..10 {
            let rx = &rx;
            let ch = &ch;
            s.spawn(move || {
                let body = format!(r#"{{"n": {i}}}"#);
                let r = rx.post("/webhook/events", &body);
                assert_eq!(r.status, 200, "{}", r.body);
                let n = ch.query(&format!(
                    "SELECT count() FROM default.events WHERE payload = '{body}'"
                ));
                assert_eq!(n.trim(), "1", "{body}");
            });
        }
    });
    assert_eq!(rows(&ch, "events").len(), 11);

    // The default table, through a connection whose `port` is the HTTP port.
    let r = rx.post_json(
        "/webhook/plain",
        &[("x-trace", "t-2")],
        r#"{"plain": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = rows(&ch, "webhook_logs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["headers"], "{}");

    // Blob bodies are stored base64-encoded.
    let r = rx.post_with(
        "/webhook/blob",
        &[("content-type", "application/octet-stream")],
        "\u{1}raw\u{2}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(rows(&ch, "blobs")[0]["payload"], "AXJhdwI=");

    // A reserved word as table name is refused at load, naming the key.
    let status = rx.config_status(ADMIN);
    let reason = cwm_tests::rejection_reason(&status, "bad_table");
    assert!(reason.contains("module-config.table"), "{reason}");
}

#[test]
fn a_stopped_server_answers_503_and_rows_flow_again_when_it_is_back() {
    let mut ch = ClickHouse::start();
    let rx = start(&ch);
    assert_eq!(rx.post("/webhook/events", r#"{"before": 1}"#).status, 200);

    ch.kill();
    let r = rx.post("/webhook/events", r#"{"while_down": 1}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);

    ch.restart();
    let r = rx.post("/webhook/events", r#"{"after": 1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let payloads: Vec<Value> = rows(&ch, "events")
        .into_iter()
        .map(|r| r["payload"].clone())
        .collect();
    assert!(payloads.contains(&json!(r#"{"after": 1}"#)), "{payloads:?}");
    assert!(
        !payloads.contains(&json!(r#"{"while_down": 1}"#)),
        "{payloads:?}"
    );

    // The receiver exits cleanly, writing what it holds.
    rx.terminate();
    let mut rx = rx;
    assert!(
        rx.wait(Duration::from_secs(30)).success(),
        "{}",
        rx.stderr()
    );
}
