#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cwm_config::WebhookConfig;
use cwm_testkit::Redis;
use serde_json::{Value, json};
use serde_pickle::{HashableValue, Value as Py};

use super::*;
use crate::Registry;
use crate::fake::event_with as event;
use crate::sink::{Payload, SinkError};

fn build(registry: &Registry, webhook: Value) -> Result<Arc<dyn crate::Sink>, BuildError> {
    let config: WebhookConfig = serde_json::from_value(webhook).unwrap();
    registry.build("hook", &config)
}

fn redis_conn(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn function_checks() {
    for ok in [
        "record",
        "tasks.record",
        "pkg.tasks.record",
        "  tasks.record  ",
        "_private.f1",
    ] {
        assert_eq!(validate_function(ok).unwrap(), ok.trim(), "{ok}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("   ", "empty"),
        (&"a".repeat(256), "too long"),
        ("a\0b", "NUL"),
        ("a..b", "'..'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        ("tasks.record()", "'('"),
        ("tasks;rm", "';'"),
        ("tasks.$x", "'$'"),
        ("os.system", "blocked"),
        ("subprocess.run", "blocked"),
        ("__import__", "blocked"),
        ("__main__.x__", "blocked"),
        ("eval", "blocked"),
        ("getattr", "blocked"),
        ("breakpoint", "blocked"),
        ("a.b.c.d", "expected"),
        ("1tasks.record", "expected"),
        ("tasks-x.record", "expected"),
        ("tasks .record", "expected"),
    ] {
        let e = validate_function(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert!(validate_function("os_tools.run").is_ok());
    assert!(
        validate_function("___").is_ok(),
        "'^__.*__$' needs four underscores"
    );
}

#[test]
fn queue_name_checks() {
    for ok in ["default", "high-priority", "a.b:c_d", &"q".repeat(255)] {
        assert!(validate_queue_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a b", "a/b", "ä", &"q".repeat(256)] {
        assert!(validate_queue_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn build_checks_config_and_connection() {
    let r = Registry::for_tests(&[
        (
            "rq",
            json!({"type": "redis-rq", "host": "127.0.0.1", "port": "6390"}),
        ),
        ("plain", json!({"type": "redis", "host": "127.0.0.1"})),
        ("k", json!({"type": "kafka"})),
    ]);
    let ok = |conn: &str| {
        build(
            &r,
            json!({"module": "redis_rq", "connection": conn,
                         "module-config": {"function": "tasks.record", "extra_key": 1}}),
        )
    };
    assert_eq!(ok("rq").unwrap().module(), "redis_rq");
    assert!(ok("plain").is_ok());
    let e = ok("k").err().unwrap().to_string();
    assert!(e.contains("'redis-rq' or 'redis'"), "{e}");
    let e = ok("missing").err().unwrap().to_string();
    assert!(e.contains("not defined"), "{e}");
    let e = build(
        &r,
        json!({"module": "redis_rq", "module-config": {"function": "f"}}),
    )
    .err()
    .unwrap();
    assert!(matches!(e, BuildError::Connection(_)), "{e}");

    for (mc, key) in [
        (json!({}), "function"),
        (json!({"function": ""}), "function"),
        (json!({"function": "os.system"}), "function"),
        (json!({"function": 5}), "function"),
        (json!({"function": "f", "queue_name": "a b"}), "queue_name"),
        (json!({"function": "f", "queue_name": ""}), "queue_name"),
    ] {
        let e = build(
            &r,
            json!({"module": "redis_rq", "connection": "rq", "module-config": mc}),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string().starts_with(&format!("'module-config.{key}'")),
            "{mc}: {e}"
        );
    }
}

fn hash(conn: &mut redis::Connection, key: &str) -> Vec<(String, Vec<u8>)> {
    redis::cmd("HGETALL").arg(key).query(conn).unwrap()
}

fn field<'a>(h: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &h.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn unpickle(data: &[u8]) -> Py {
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut raw)
        .unwrap();
    serde_pickle::value_from_slice(&raw, serde_pickle::DeOptions::new()).unwrap()
}

fn is_rq_timestamp(s: &str) -> bool {
    // 2026-01-02T03:04:05.123456Z
    s.len() == 27
        && s.as_bytes()[10] == b'T'
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && s[20..26].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn a_job_is_written_as_rq_writes_it() {
    let redis = Redis::start();
    let r = Registry::for_tests(&[(
        "rq",
        json!({"type": "redis-rq", "host": "127.0.0.1", "port": redis.port().to_string()}),
    )]);
    let sink = build(
        &r,
        json!({"module": "redis_rq", "connection": "rq",
        "module-config": {"function": " tasks.record ", "queue_name": "orders"}}),
    )
    .unwrap();
    let payload = json!({"b": [1, -2, 1.5, null, true, false], "a": {"s": "x'y"}, "big": 18446744073709551615u64});
    sink.deliver(&event(
        Payload::Json(payload.clone().into()),
        &[("content-type", "application/json"), ("x-id", "7")],
    ))
    .await
    .unwrap();

    let mut conn = redis_conn(&redis);
    let queues: Vec<String> = redis::cmd("SMEMBERS")
        .arg("rq:queues")
        .query(&mut conn)
        .unwrap();
    assert_eq!(queues, ["rq:queue:orders"]);
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:orders")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert!(uuid::Uuid::parse_str(&ids[0]).is_ok(), "{}", ids[0]);
    let h = hash(&mut conn, &format!("rq:job:{}", ids[0]));
    let text = |name: &str| String::from_utf8(field(&h, name).to_vec()).unwrap();
    assert_eq!(text("status"), "queued");
    assert_eq!(text("origin"), "orders");
    assert_eq!(text("timeout"), "180");
    assert!(
        is_rq_timestamp(&text("created_at")),
        "{}",
        text("created_at")
    );
    assert!(
        is_rq_timestamp(&text("enqueued_at")),
        "{}",
        text("enqueued_at")
    );
    assert!(text("created_at") <= text("enqueued_at"));
    for empty in [
        "success_callback_name",
        "failure_callback_name",
        "stopped_callback_name",
        "started_at",
        "ended_at",
        "last_heartbeat",
        "worker_name",
        "group_id",
    ] {
        assert_eq!(text(empty), "", "{empty}");
    }
    assert_eq!(
        text("description"),
        // Each argument's repr is cut at 75 characters, as RQ cuts it.
        r#"tasks.record({'b': [1, -2, 1.5, None, True, False], 'a': {'s': "x'y"}, 'big': 1844674407..., {'content-type': 'application/json', 'x-id': '7'})"#
    );
    assert_eq!(
        h.len(),
        15,
        "{:?}",
        h.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );

    // data: (function, None, (payload, headers), {})
    let s = |v: &str| Py::String(v.to_owned());
    let hs = |v: &str| HashableValue::String(v.to_owned());
    let Py::Tuple(call) = unpickle(field(&h, "data")) else {
        panic!("not a tuple")
    };
    assert_eq!(call.len(), 4);
    assert_eq!(call[0], s("tasks.record"));
    assert_eq!(call[1], Py::None);
    assert_eq!(call[3], Py::Dict(Default::default()));
    let Py::Tuple(args) = &call[2] else {
        panic!("args not a tuple")
    };
    let Py::Dict(p) = &args[0] else {
        panic!("payload not a dict")
    };
    assert_eq!(
        p[&hs("b")],
        Py::List(vec![
            Py::I64(1),
            Py::I64(-2),
            Py::F64(1.5),
            Py::None,
            Py::Bool(true),
            Py::Bool(false)
        ])
    );
    assert_eq!(p[&hs("a")], Py::Dict([(hs("s"), s("x'y"))].into()));
    assert!(
        matches!(&p[&hs("big")], Py::Int(n) if n.to_string() == "18446744073709551615"),
        "{:?}",
        p[&hs("big")]
    );
    assert_eq!(
        args[1],
        Py::Dict(
            [
                (hs("content-type"), s("application/json")),
                (hs("x-id"), s("7"))
            ]
            .into()
        )
    );

    // A blob payload is pickled as bytes.
    let blob = build(
        &r,
        json!({"module": "redis_rq", "connection": "rq", "data_type": "blob",
        "module-config": {"function": "tasks.raw"}}),
    )
    .unwrap();
    blob.deliver(&event(
        Payload::Blob(Bytes::from_static(b"\x00\xffraw")),
        &[],
    ))
    .await
    .unwrap();
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:default")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let h = hash(&mut conn, &format!("rq:job:{}", ids[0]));
    let Py::Tuple(call) = unpickle(field(&h, "data")) else {
        panic!()
    };
    let Py::Tuple(args) = &call[2] else { panic!() };
    assert_eq!(args[0], Py::Bytes(b"\x00\xffraw".to_vec()));
    assert_eq!(field(&h, "description"), br"tasks.raw(b'\x00\xffraw', {})");
}

#[tokio::test]
async fn redis_down_is_retryable_and_the_same_sink_recovers() {
    let mut redis = Redis::start();
    let r = Registry::for_tests(&[(
        "rq",
        json!({"type": "redis", "host": "127.0.0.1", "port": redis.port()}),
    )]);
    let sink = build(
        &r,
        json!({"module": "redis_rq", "connection": "rq",
        "module-config": {"function": "tasks.record"}}),
    )
    .unwrap();
    let ev = event(Payload::Json(json!({"n": 1}).into()), &[]);
    sink.deliver(&ev).await.unwrap();
    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let e = sink.deliver(&ev).await.unwrap_err();
        assert!(e.retryable(), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a refused connection fails fast"
        );
    }
    redis.start_again();
    let mut delivered = false;
    for _ in 0..50 {
        if sink.deliver(&ev).await.is_ok() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "deliveries resume once Redis is back");
    let n: usize = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut redis_conn(&redis))
        .unwrap();
    assert_eq!(
        n, 2,
        "the job before the outage was saved, and the one after it"
    );

    // Never reachable from the start: a first connect that fails is tried again next time.
    let port = cwm_testkit::free_port();
    let r = Registry::for_tests(&[(
        "rq",
        json!({"type": "redis-rq", "host": "127.0.0.1", "port": port}),
    )]);
    let sink = build(
        &r,
        json!({"module": "redis_rq", "connection": "rq",
        "module-config": {"function": "tasks.record"}}),
    )
    .unwrap();
    assert!(matches!(
        sink.deliver(&ev).await,
        Err(SinkError::Unavailable(_))
    ));
}

#[tokio::test]
async fn error_replies_are_rejections_and_credentials_are_used() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let conn = |password: &str| json!({"type": "redis-rq", "host": "127.0.0.1", "port": redis.port(), "password": password});
    let r = Registry::for_tests(&[
        ("good", conn("s3cret")),
        ("bad", conn("wrong")),
        (
            "url",
            json!({"type": "redis", "host": "ignored.example", "port": 1,
                       "url": format!("redis://:s3cret@127.0.0.1:{}/2", redis.port())}),
        ),
    ]);
    let sink = |c: &str| {
        build(
            &r,
            json!({"module": "redis_rq", "connection": c,
            "module-config": {"function": "tasks.record", "queue_name": "q"}}),
        )
        .unwrap()
    };
    let ev = event(Payload::Json(json!({}).into()), &[]);
    sink("good").deliver(&ev).await.unwrap();
    // A wrong password fails the connection. (No password at all is not tried here: redis 1.8
    // panics in debug builds when MULTI itself gets an error reply such as NOAUTH; the
    // publish tests cover NOAUTH.)
    let e = sink("bad").deliver(&ev).await.unwrap_err();
    assert!(matches!(e, SinkError::Rejected(_)), "{e}");
    sink("url").deliver(&ev).await.unwrap();
    let mut admin = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/2", redis.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let n: usize = redis::cmd("LLEN")
        .arg("rq:queue:q")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1, "the url's db (2) was used");

    // WRONGTYPE: the queue's key holds a string.
    let _: () = redis::cmd("SET")
        .arg("rq:queue:q")
        .arg("x")
        .query(&mut admin)
        .unwrap();
    let wrong = build(
        &r,
        json!({"module": "redis_rq", "connection": "url",
        "module-config": {"function": "tasks.record", "queue_name": "q"}}),
    )
    .unwrap();
    let e = wrong.deliver(&ev).await.unwrap_err();
    assert!(
        matches!(&e, SinkError::Rejected(m) if m.contains("WRONGTYPE")),
        "{e}"
    );
}
