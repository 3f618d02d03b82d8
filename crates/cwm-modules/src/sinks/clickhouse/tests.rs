#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use cwm_config::{ConnectionConfig, WebhookConfig};
use cwm_testkit::ClickHouse;
use http::StatusCode;
use serde_json::{Value, json};

use super::batch::{Batcher, Writer};
use super::config::{Batching, ClickHouseConfig, Endpoint, check_table, http_port};
use super::sink::{classify, create_table_sql, format_timestamp, insert_sql, quote_ident, row};
use super::*;
use crate::payload::JsonPayload;
use crate::sink::{Event, Payload, SinkError};
use crate::{ModuleContext, Registry};

// ---------------------------------------------------------------------------------------------
// Configuration

fn module_config(mc: Value) -> Result<config::Settings, BuildError> {
    let cfg: ClickHouseConfig = serde_path_to_error::deserialize(mc)
        .map_err(|e| BuildError::option(&e.path().to_string(), e.into_inner().to_string()))?;
    cfg.settings()
}

#[test]
fn module_config_defaults_and_string_forms() {
    let s = module_config(json!({})).unwrap();
    assert_eq!(s.table, "webhook_logs");
    assert!(s.include_headers);
    assert_eq!(s.batching, Batching::default());
    assert_eq!(s.batching.batch_size, 1000);
    assert_eq!(s.batching.flush_interval, Duration::from_millis(200));

    let s = module_config(json!({
        "table": "  events_2024 ",
        "include_headers": "false",
        "include_timestamp": true,
        "batch_size": "50",
        "flush_interval_ms": 10,
        "unknown_key": [1, 2]
    }))
    .unwrap();
    assert_eq!(s.table, "events_2024");
    assert!(!s.include_headers);
    assert_eq!(s.batching.batch_size, 50);
    assert_eq!(s.batching.flush_interval, Duration::from_millis(10));
    assert!(
        !module_config(json!({"include_headers": 0}))
            .unwrap()
            .include_headers
    );
    assert!(
        module_config(json!({"include_headers": null}))
            .unwrap()
            .include_headers
    );
    assert_eq!(
        module_config(json!({"table": null})).unwrap().table,
        "webhook_logs"
    );
}

#[test]
fn module_config_bounds() {
    for (mc, key) in [
        (json!({"batch_size": 0}), "batch_size"),
        (json!({"batch_size": 100_001}), "batch_size"),
        (json!({"batch_size": -1}), "batch_size"),
        (json!({"batch_size": "many"}), "batch_size"),
        (json!({"batch_size": 1.5}), "batch_size"),
        (json!({"flush_interval_ms": 0}), "flush_interval_ms"),
        (json!({"flush_interval_ms": 10_001}), "flush_interval_ms"),
        (json!({"table": 5}), "table"),
    ] {
        match module_config(mc.clone()) {
            Err(BuildError::Option { key: k, .. }) => assert_eq!(k, key, "{mc}"),
            other => panic!("{mc}: {other:?}"),
        }
    }
    assert_eq!(
        module_config(json!({"batch_size": 100_000, "flush_interval_ms": "10000"}))
            .unwrap()
            .batching,
        Batching {
            batch_size: 100_000,
            flush_interval: Duration::from_millis(10_000)
        }
    );
    assert_eq!(
        module_config(json!({"batch_size": 1}))
            .unwrap()
            .batching
            .batch_size,
        1
    );
}

#[test]
fn table_names() {
    for ok in [
        "webhook_logs",
        "A1_b2",
        "created_events",
        "selected",
        "my_updates",
        "dropbox",
        "_",
        &"t".repeat(255),
    ] {
        assert_eq!(check_table(ok).as_deref(), Ok(ok), "{ok}");
    }
    assert_eq!(check_table("\t logs \n").as_deref(), Ok("logs"));
    for bad in [
        "",
        "   ",
        "a.b",
        "a..b",
        "a--b",
        "a-b",
        "a b",
        "t;drop",
        "`t`",
        "xp_cmdshell",
        "my_sp_table",
        "XP_x",
        "select",
        "DROP",
        "Union",
        "script",
        "execute",
        "täble",
        &"t".repeat(256),
    ] {
        assert!(check_table(bad).is_err(), "{bad:?} should be refused");
    }
    // The builder names the key.
    let err = module_config(json!({"table": "drop"})).unwrap_err();
    assert!(err.to_string().contains("'module-config.table'"), "{err}");
    let err = module_config(json!({"table": "a;b"})).unwrap_err();
    assert!(err.to_string().contains("'module-config.table'"), "{err}");
}

fn connection(v: Value) -> ConnectionConfig {
    ConnectionConfig::from_value(v, &|_: &str| None).unwrap()
}

#[test]
fn http_port_mapping() {
    assert_eq!(http_port(None, None, false), 8123);
    assert_eq!(http_port(None, None, true), 8443);
    assert_eq!(http_port(Some(9000), None, false), 8123);
    assert_eq!(http_port(Some(9000), None, true), 8443);
    assert_eq!(http_port(Some(9440), None, false), 8123);
    assert_eq!(http_port(Some(9440), None, true), 8443);
    assert_eq!(http_port(Some(8123), None, false), 8123);
    assert_eq!(http_port(Some(18123), None, true), 18123);
    assert_eq!(http_port(Some(9000), Some(7000), false), 7000);
    assert_eq!(http_port(None, Some(7000), true), 7000);

    // From connection documents as the Python gateway wrote them.
    let e = Endpoint::from_config(&connection(json!({
        "type": "clickhouse", "host": "CH.example.com", "port": 9000,
        "database": "analytics", "user": "writer", "password": "s3cret"
    })))
    .unwrap();
    assert_eq!(
        (e.scheme, e.host.as_str(), e.port),
        ("http", "ch.example.com", 8123)
    );
    assert_eq!(
        (e.database.as_str(), e.user.as_str(), e.password.as_str()),
        ("analytics", "writer", "s3cret")
    );
    assert!(!format!("{e:?}").contains("s3cret"));

    let e = Endpoint::from_config(&connection(json!({
        "type": "clickhouse", "host": "10.0.0.5", "port": "9440", "secure": "true"
    })))
    .unwrap();
    assert_eq!((e.scheme, e.port), ("https", 8443));
    assert_eq!(
        (e.database.as_str(), e.user.as_str(), e.password.as_str()),
        ("default", "default", "")
    );

    let e = Endpoint::from_config(&connection(json!({
        "type": "clickhouse", "host": "[::1]", "port": 9000, "http_port": "18123", "https": false
    })))
    .unwrap();
    assert_eq!((e.scheme, e.host.as_str(), e.port), ("http", "::1", 18123));

    let bad = Endpoint::from_config(&connection(json!({
        "type": "clickhouse", "host": "h", "port": 9000, "http_port": 0
    })));
    assert!(bad.unwrap_err().contains("http_port"));
    let bad = Endpoint::from_config(&connection(json!({
        "type": "clickhouse", "host": "h", "port": 9000, "database": ["x"]
    })));
    assert!(bad.unwrap_err().contains("database"));
}

#[test]
fn client_factory_does_no_io_and_checks_the_account() {
    let ctx = ModuleContext::new();
    let cfg = connection(json!({"type": "clickhouse", "host": "127.0.0.1", "port": 1}));
    assert!(client("ch", &cfg, ctx.client_deps()).is_ok());
    let cfg = connection(json!({
        "type": "clickhouse", "host": "127.0.0.1", "port": 1, "password": "a\nb"
    }));
    let err = client("ch", &cfg, ctx.client_deps()).err().unwrap();
    assert!(err.contains("password") && !err.contains("a\nb"), "{err}");
}

#[test]
fn sql_statements() {
    assert_eq!(quote_ident("a`b\\c"), "`a\\`b\\\\c`");
    assert_eq!(
        create_table_sql("default", "webhook_logs"),
        "CREATE TABLE IF NOT EXISTS `default`.`webhook_logs` (id String, webhook_id String, \
         timestamp DateTime, payload String, headers String, created_at DateTime DEFAULT now()) \
         ENGINE = MergeTree() PARTITION BY toYYYYMM(timestamp) ORDER BY (webhook_id, timestamp)"
    );
    assert_eq!(
        insert_sql("db", "t"),
        "INSERT INTO `db`.`t` (id, webhook_id, timestamp, payload, headers) FORMAT JSONEachRow"
    );
}

// ---------------------------------------------------------------------------------------------
// Rows and errors

fn event(ns: Option<&str>, id: &str, payload: Payload, headers: &[(&str, &str)]) -> Event {
    Event {
        namespace: ns.map(Into::into),
        webhook_id: id.into(),
        payload,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        received_at: SystemTime::now(),
    }
}

fn json_payload(text: &str) -> Payload {
    Payload::Json(
        JsonPayload::from_text(
            text.to_owned(),
            crate::payload::JsonLimits {
                max_depth: 50,
                max_string_chars: 1 << 20,
            },
            &crate::CredentialCleanup::from_config(
                &WebhookConfig::from_value(json!({"module": "clickhouse"}), &|_: &str| None)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap(),
    )
}

fn parse_row(line: &Bytes) -> Value {
    assert_eq!(line.last(), Some(&b'\n'));
    serde_json::from_slice(line).unwrap()
}

#[test]
fn rows() {
    let t = UNIX_EPOCH + Duration::from_secs(1_704_164_645); // 2024-01-02 03:04:05 UTC
    assert_eq!(format_timestamp(t), "2024-01-02 03:04:05");

    let body = "{ \"n\": 123456789012345678901234567890, \"s\": \"caf\u{e9}\" }";
    let e = event(
        None,
        "orders",
        json_payload(body),
        &[("x-a", "1"), ("user-agent", "t")],
    );
    let r = parse_row(&row(&e, true, t).unwrap());
    assert_eq!(r["webhook_id"], "orders");
    assert_eq!(r["timestamp"], "2024-01-02 03:04:05");
    assert_eq!(r["payload"], body, "the JSON text as received");
    let headers: Value = serde_json::from_str(r["headers"].as_str().unwrap()).unwrap();
    assert_eq!(headers, json!({"x-a": "1", "user-agent": "t"}));
    let id = r["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(
        r.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "webhook_id", "timestamp", "payload", "headers"]
    );

    let e = event(
        Some("shop"),
        "orders",
        Payload::Blob(Bytes::from_static(b"\x00\xffbin")),
        &[("x-a", "1")],
    );
    let r = parse_row(&row(&e, false, t).unwrap());
    assert_eq!(r["webhook_id"], "shop/orders");
    assert_eq!(r["payload"], "AP9iaW4=");
    assert_eq!(r["headers"], "{}");
    assert_ne!(parse_row(&row(&e, false, t).unwrap())["id"], r["id"]);
}

#[test]
fn error_classes() {
    let label = "http://h:8123";
    let cases = [
        // 18.16: no code header, the code in the body, 500 for a wrong column.
        (
            500,
            None,
            "Code: 16, e.displayText() = DB::Exception: No such column id in table bad, e.what() = DB::Exception",
            false,
        ),
        (
            500,
            None,
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input",
            false,
        ),
        (
            404,
            None,
            "Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist.",
            false,
        ),
        (
            401,
            None,
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user default",
            false,
        ),
        (
            500,
            None,
            "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded",
            true,
        ),
        (
            500,
            None,
            "Code: 252, e.displayText() = DB::Exception: Too many parts",
            true,
        ),
        // Current servers: the code header.
        (
            500,
            Some(16),
            "Code: 16. DB::Exception: No such column",
            false,
        ),
        (
            503,
            Some(202),
            "Code: 202. DB::Exception: Too many simultaneous queries",
            true,
        ),
        // No code (a proxy in front).
        (502, None, "<html>bad gateway</html>", true),
        (503, None, "", true),
        (429, None, "slow down", true),
        (400, None, "bad", false),
        (403, None, "", false),
    ];
    for (status, header, body, retryable) in cases {
        let e = classify(StatusCode::from_u16(status).unwrap(), header, body, label);
        assert_eq!(e.retryable(), retryable, "{status} {body}: {e:?}");
        match &e {
            SinkError::Unavailable(m) | SinkError::Rejected(m) => {
                assert!(m.starts_with(label), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    let long = format!("Code: 27, {}\nsecond line", "x".repeat(1000));
    let e = classify(StatusCode::INTERNAL_SERVER_ERROR, None, &long, label).to_string();
    assert!(e.len() < 500 && !e.contains("second line"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Batching, with a writer that records batches

#[derive(Default)]
struct Recorder {
    batches: StdMutex<Vec<Vec<String>>>,
    /// Results to give, in order; `Ok` once they run out.
    script: StdMutex<Vec<Result<(), SinkError>>>,
    /// While set, writes wait for it.
    gate: StdMutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Writes started.
    entered: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Writer for Arc<Recorder> {
    async fn write(&self, body: Bytes, rows: usize) -> Result<(), SinkError> {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _ = gate.acquire().await.unwrap();
        }
        let lines: Vec<String> = std::str::from_utf8(&body)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), rows);
        self.batches.lock().unwrap().push(lines);
        let mut script = self.script.lock().unwrap();
        if script.is_empty() {
            Ok(())
        } else {
            script.remove(0)
        }
    }
}

fn batcher(rec: &Arc<Recorder>, batch_size: usize, flush_ms: u64) -> Arc<Batcher> {
    Arc::new(Batcher::new(
        Arc::new(rec.clone()),
        Batching {
            batch_size,
            flush_interval: Duration::from_millis(flush_ms),
        },
    ))
}

fn line(s: &str) -> Bytes {
    Bytes::from(format!("{s}\n"))
}

#[tokio::test]
async fn a_full_batch_is_sent_without_waiting_for_the_interval() {
    let rec = Arc::new(Recorder::default());
    // An interval no test run reaches: only the size can send these batches.
    let b = batcher(&rec, 4, 3_600_000);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.submit(line(&format!("r{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let batches = rec.batches();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert!(batches.iter().all(|b| b.len() == 4));
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_sent_after_the_interval() {
    let rec = Arc::new(Recorder::default());
    let b = batcher(&rec, 1000, 200);
    let started = tokio::time::Instant::now();
    let (a, c) = tokio::join!(b.submit(line("a")), b.submit(line("c")));
    a.unwrap();
    c.unwrap();
    assert_eq!(rec.batches(), vec![vec!["a".to_owned(), "c".to_owned()]]);
    // Paused clock: exactly the interval passed, no more.
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test]
async fn every_row_of_a_batch_gets_its_result() {
    let rec = Arc::new(Recorder::default());
    rec.script
        .lock()
        .unwrap()
        .push(Err(SinkError::Rejected("bad row".into())));
    let b = batcher(&rec, 3, 3_600_000);
    let results =
        futures_util::future::join_all((0..3).map(|i| b.submit(line(&i.to_string())))).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(SinkError::Rejected(_)))),
        "{results:?}"
    );
    // The next batch is written again.
    let results =
        futures_util::future::join_all((0..3).map(|i| b.submit(line(&i.to_string())))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(rec.batches().len(), 2);
}

#[tokio::test]
async fn a_full_queue_fails_at_once() {
    let rec = Arc::new(Recorder::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *rec.gate.lock().unwrap() = Some(gate.clone());
    // Batches of one; the queue holds 10.
    let b = batcher(&rec, 1, 1);
    let first = tokio::spawn({
        let b = b.clone();
        async move { b.submit(line("first")).await }
    });
    // Wait until the first row is out of the queue and held at the gate.
    while rec.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Fill the queue: each delivery is polled once, which queues its row.
    let mut queued: Vec<_> = (0..super::batch::QUEUE_BATCHES)
        .map(|i| Box::pin(b.submit(line(&format!("q{i}")))))
        .collect();
    for q in &mut queued {
        // A zero timeout still polls the future once.
        assert!(
            tokio::time::timeout(Duration::ZERO, q.as_mut())
                .await
                .is_err()
        );
    }
    let refused = b.submit(line("one too many")).await;
    assert!(
        matches!(refused, Err(SinkError::Unavailable(ref m)) if m.contains("full")),
        "{refused:?}"
    );
    gate.add_permits(1000);
    first.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap();
    }
    assert_eq!(rec.batches().len(), 1 + super::batch::QUEUE_BATCHES);
}

#[tokio::test(flavor = "current_thread")]
async fn close_writes_what_is_queued_and_skips_abandoned_rows() {
    let rec = Arc::new(Recorder::default());
    let b = batcher(&rec, 1000, 3_600_000);
    let kept = tokio::spawn({
        let b = b.clone();
        async move { b.submit(line("kept")).await }
    });
    let abandoned = tokio::spawn({
        let b = b.clone();
        async move { b.submit(line("abandoned")).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    abandoned.abort();
    let _ = abandoned.await;
    b.close().await;
    // `close` returned after the batch was written.
    assert_eq!(rec.batches(), vec![vec!["kept".to_owned()]]);
    kept.await.unwrap().unwrap();
    // A row after `close` starts a new task.
    let later = tokio::spawn({
        let b = b.clone();
        async move { b.submit(line("later")).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    b.close().await;
    later.await.unwrap().unwrap();
    assert_eq!(rec.batches().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Against a real ClickHouse server

struct Setup {
    ctx: ModuleContext,
    registry: Registry,
}

impl Setup {
    fn new(connection_doc: Value) -> Self {
        let ctx = ModuleContext::new();
        let cfg = Arc::new(connection(connection_doc));
        ctx.connections().sync([("ch", &cfg)], ctx.client_deps());
        let registry = Registry::with_builtin_sinks(ctx.clone());
        Self { ctx, registry }
    }

    fn for_server(ch: &ClickHouse) -> Self {
        // `port` as the Python gateway's configs have it; `http_port` where the server listens.
        Self::new(json!({
            "type": "clickhouse", "host": "127.0.0.1", "port": 9000,
            "http_port": ch.http_port()
        }))
    }

    fn sink(&self, id: &str, mc: Value) -> Arc<dyn Sink> {
        let config = WebhookConfig::from_value(
            json!({"module": "clickhouse", "connection": "ch", "module-config": mc}),
            &|_: &str| None,
        )
        .unwrap();
        self.registry.build(id, &config).unwrap()
    }
}

fn rows_of(ch: &ClickHouse, table: &str, filter: &str) -> Vec<Value> {
    ch.query(&format!(
        "SELECT id, webhook_id, toString(timestamp) AS ts, payload, headers FROM default.{table} \
         {filter} ORDER BY ts, id FORMAT JSONEachRow"
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_rows_into_a_table_it_creates() {
    let ch = Arc::new(blocking(ClickHouse::start).await);
    let setup = Setup::for_server(&ch);
    let sink = setup.sink("orders", json!({"flush_interval_ms": 5}));

    let body = "{\"order\": 42, \"note\": \"caf\u{e9} \u{1F600} \\u0001\"}";
    sink.deliver(&event(
        None,
        "orders",
        json_payload(body),
        &[("content-type", "application/json"), ("x-trace", "t-1")],
    ))
    .await
    .unwrap();
    // No waiting: the row is there when `deliver` returns.
    let rows = blocking({
        let ch = ch.clone();
        move || rows_of(&ch, "webhook_logs", "")
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["webhook_id"], "orders");
    assert_eq!(r["payload"], body);
    let headers: Value = serde_json::from_str(r["headers"].as_str().unwrap()).unwrap();
    assert_eq!(
        headers,
        json!({"content-type": "application/json", "x-trace": "t-1"})
    );
    assert!(uuid::Uuid::parse_str(r["id"].as_str().unwrap()).is_ok());

    // The schema is the documented one.
    let columns = blocking({
        let ch = ch.clone();
        move || {
            ch.query(
                "SELECT name, type, default_kind FROM system.columns \
                 WHERE database = 'default' AND table = 'webhook_logs' FORMAT TSV",
            )
        }
    })
    .await;
    assert_eq!(
        columns,
        "id\tString\t\nwebhook_id\tString\t\ntimestamp\tDateTime\t\npayload\tString\t\n\
         headers\tString\t\ncreated_at\tDateTime\tDEFAULT\n"
    );

    // Namespaced, blob, without headers, into another table.
    let raw = setup.sink(
        "raw",
        json!({"table": "raw_events", "include_headers": false, "flush_interval_ms": 5}),
    );
    raw.deliver(&event(
        Some("shop"),
        "raw",
        Payload::Blob(Bytes::from_static(b"\x00\x01bin\xff")),
        &[("x-trace", "t-2")],
    ))
    .await
    .unwrap();
    let rows = blocking({
        let ch = ch.clone();
        move || rows_of(&ch, "raw_events", "")
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["webhook_id"], "shop/raw");
    assert_eq!(rows[0]["payload"], "AAFiaW7/");
    assert_eq!(rows[0]["headers"], "{}");

    let lease = setup.ctx.connections().get("ch");
    let client = lease.client::<ClickHouseClient>().unwrap();
    assert_eq!(client.endpoint().port, ch.http_port());
    drop(client);
    setup.ctx.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_share_inserts() {
    let ch = Arc::new(blocking(ClickHouse::start).await);
    let setup = Setup::for_server(&ch);
    const N: usize = 40;
    // Batches of 20 and an interval no run reaches: only full batches are sent.
    let sink = setup.sink(
        "bulk",
        json!({"table": "bulk", "batch_size": 20, "flush_interval_ms": 10_000}),
    );
    let mut tasks = Vec::new();
    for i in 0..N {
        let sink = sink.clone();
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("{{\"n\": {i}}}");
            sink.deliver(&event(None, "bulk", json_payload(&body), &[]))
                .await
                .unwrap();
            // Queryable as soon as this delivery returned.
            let found = blocking(move || {
                ch.query(&format!(
                    "SELECT count() FROM default.bulk WHERE payload = '{body}'"
                ))
            })
            .await;
            assert_eq!(found.trim(), "1", "row {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (rows, inserts) = blocking({
        let ch = ch.clone();
        move || {
            ch.flush_logs();
            (
                ch.query("SELECT count() FROM default.bulk"),
                ch.query(
                    "SELECT count() FROM system.query_log WHERE type = 2 \
                     AND query LIKE 'INSERT INTO `default`.`bulk`%'",
                ),
            )
        }
    })
    .await;
    assert_eq!(rows.trim(), N.to_string());
    assert_eq!(inserts.trim(), "2", "{N} rows in batches of 20");
    setup.ctx.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_retryable_and_the_table_is_created_when_it_is_back() {
    let mut ch = blocking(ClickHouse::start).await;
    let setup = Setup::for_server(&ch);
    let sink = setup.sink("w", json!({"table": "later", "flush_interval_ms": 1}));
    ch.kill();
    let err = sink
        .deliver(&event(None, "w", json_payload("{\"a\": 1}"), &[]))
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err:?}");
    assert!(matches!(err, SinkError::Unavailable(_)), "{err:?}");
    let status = setup.ctx.connections().status();
    assert_eq!(
        status[0].state,
        crate::connection::ConnectionState::Unavailable
    );

    let ch = blocking(move || {
        ch.restart();
        ch
    })
    .await;
    sink.deliver(&event(None, "w", json_payload("{\"a\": 2}"), &[]))
        .await
        .unwrap();
    assert_eq!(rows_of(&ch, "later", "").len(), 1);
    assert_eq!(
        setup.ctx.connections().status()[0].state,
        crate::connection::ConnectionState::Healthy
    );
    setup.ctx.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_another_shape_or_bad_credentials_reject_the_event() {
    let ch = blocking(ClickHouse::start).await;
    ch.query("CREATE TABLE default.other (x UInt8) ENGINE = Memory");
    let setup = Setup::for_server(&ch);
    let sink = setup.sink("w", json!({"table": "other", "flush_interval_ms": 1}));
    let err = sink
        .deliver(&event(None, "w", json_payload("{}"), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Rejected(_)), "{err:?}");
    assert!(!err.retryable());

    // A wrong password: rejected (trying again will not help), the password never shown.
    let setup = Setup::new(json!({
        "type": "clickhouse", "host": "127.0.0.1", "port": ch.http_port(),
        "password": "not-the-password"
    }));
    let sink = setup.sink("w", json!({"flush_interval_ms": 1}));
    let err = sink
        .deliver(&event(None, "w", json_payload("{}"), &[]))
        .await
        .unwrap_err();
    // The CREATE TABLE fails first: reported retryably, as every failed CREATE is.
    assert!(err.to_string().contains("193"), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    setup.ctx.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_writes_queued_rows() {
    let ch = Arc::new(blocking(ClickHouse::start).await);
    let setup = Setup::for_server(&ch);
    // Neither the size nor the interval would send this row during the test.
    let sink = setup.sink(
        "w",
        json!({"table": "closing", "batch_size": 1000, "flush_interval_ms": 10_000}),
    );
    let pending = tokio::spawn({
        let sink = sink.clone();
        async move {
            sink.deliver(&event(None, "w", json_payload("{\"last\": true}"), &[]))
                .await
        }
    });
    let conn = setup.ctx.connections().get("ch");
    while conn
        .client::<ClickHouseClient>()
        .unwrap()
        .batching_of("closing")
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished());
    setup.ctx.shutdown(Duration::from_secs(20)).await;
    pending.await.unwrap().unwrap();
    let rows = blocking({
        let ch = ch.clone();
        move || rows_of(&ch, "closing", "")
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["payload"], "{\"last\": true}");
}

#[tokio::test]
async fn an_unconfigured_connection_is_retryable() {
    let setup = Setup::new(json!({"type": "clickhouse", "host": "127.0.0.1", "port": 9000}));
    let sink = setup.sink("w", json!({}));
    setup
        .ctx
        .connections()
        .sync(std::iter::empty(), setup.ctx.client_deps());
    let err = sink
        .deliver(&event(None, "w", json_payload("{}"), &[]))
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err:?}");
}
