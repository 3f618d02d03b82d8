#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cwm_config::WebhookConfig;
use cwm_testkit::Redis;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;
use crate::Registry;
use crate::sink::{Event, Payload, SinkError};

fn build(registry: &Registry, webhook: Value) -> Result<Arc<dyn crate::Sink>, BuildError> {
    let config: WebhookConfig = serde_json::from_value(webhook).unwrap();
    registry.build("hook", &config)
}

fn event(payload: Payload) -> Event {
    Event {
        namespace: None,
        webhook_id: "hook".into(),
        payload,
        headers: vec![
            ("x-event".into(), "push".into()),
            ("content-type".into(), "application/json".into()),
        ],
        received_at: SystemTime::now(),
    }
}

#[test]
fn channel_checks() {
    for ok in [
        "webhook_events",
        " events.v1 ",
        "a-b_c.d",
        "getter",
        "settings",
        "pub-x",
    ] {
        assert_eq!(validate_channel(ok).unwrap(), ok.trim(), "{ok}");
    }
    for bad in [
        "", "  ", "a b", "a:b", "a..b", "a--b", "ä", "publish", "GET", "set.x", "config_y",
        "flushall", "keys.all", "script_1",
    ] {
        assert!(validate_channel(bad).is_err(), "{bad:?}");
    }
    assert!(validate_channel(&"c".repeat(256)).is_err());
    assert!(validate_channel(&"c".repeat(255)).is_ok());
}

#[test]
fn build_takes_a_connection_or_the_redis_object() {
    let r = Registry::for_tests(&[
        ("pub", json!({"type": "redis-publish", "host": "127.0.0.1"})),
        (
            "rq",
            json!({"type": "redis-rq", "host": "127.0.0.1", "port": 6379}),
        ),
        ("k", json!({"type": "kafka"})),
    ]);
    for conn in ["pub", "rq"] {
        assert!(
            build(&r, json!({"module": "redis_publish", "connection": conn})).is_ok(),
            "{conn}"
        );
    }
    let e = build(&r, json!({"module": "redis_publish", "connection": "k"}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("'redis-publish'"), "{e}");
    let e = build(
        &r,
        json!({"module": "redis_publish", "connection": "pub",
                             "module-config": {"channel": "publish"}}),
    )
    .err()
    .unwrap();
    assert!(e.to_string().starts_with("'module-config.channel'"), "{e}");
    let e = build(&r, json!({"module": "redis_publish"})).err().unwrap();
    assert!(matches!(e, BuildError::Connection(_)), "{e}");

    let ok = |redis: Value| build(&r, json!({"module": "redis_publish", "redis": redis}));
    assert!(ok(json!({})).is_ok(), "localhost:6379 by default");
    assert!(ok(json!({"host": "10.1.2.3", "port": "6380", "channel": "x"})).is_ok());
    assert!(ok(json!({"host": "Redis.Internal", "allowed_hosts": ["redis.internal"]})).is_ok());
    for (redis, why) in [
        (json!("localhost"), "'redis' must be an object"),
        (json!({"host": "169.254.169.254"}), "'redis.host'"),
        (json!({"host": "metadata.google.internal"}), "'redis.host'"),
        (json!({"host": "a;b"}), "'redis.host'"),
        (json!({"host": ""}), "'redis.host'"),
        (json!({"host": 5}), "'redis.host'"),
        (json!({"port": 0}), "'redis.port'"),
        (json!({"port": "70000"}), "'redis.port'"),
        (json!({"port": "x"}), "'redis.port'"),
        (json!({"channel": "a..b"}), "'redis.channel'"),
        (
            json!({"host": "redis.internal", "allowed_hosts": ["other"]}),
            "'redis.allowed_hosts'",
        ),
        (json!({"allowed_hosts": []}), "'redis.allowed_hosts'"),
    ] {
        let e = ok(redis.clone()).err().unwrap().to_string();
        assert!(e.contains(why), "{redis}: {e}");
    }
}

async fn subscribe(redis: &Redis, channel: &str) -> redis::aio::PubSub {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub
}

async fn next_message(pubsub: &mut redis::aio::PubSub) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .expect("a message within 5 s")
        .expect("the stream is open");
    serde_json::from_slice(msg.get_payload_bytes()).unwrap()
}

#[tokio::test]
async fn both_forms_publish_what_a_subscriber_receives() {
    let redis = Redis::start();
    let r = Registry::for_tests(&[(
        "pub",
        json!({"type": "redis-publish", "host": "127.0.0.1", "port": redis.port().to_string()}),
    )]);
    let mut events = subscribe(&redis, "events").await;
    let mut legacy = subscribe(&redis, "legacy.events").await;

    let via_connection = build(
        &r,
        json!({"module": "redis_publish", "connection": "pub",
        "module-config": {"channel": "events"}}),
    )
    .unwrap();
    // The sender's text is kept: key order and the exact number.
    let text = r#"{"z": 1, "a": [true, null], "n": 123456789012345678901234567890}"#;
    let payload = crate::JsonPayload::from_text(
        text.to_owned(),
        crate::payload::JsonLimits {
            max_depth: 50,
            max_string_chars: 1 << 20,
        },
        &crate::CredentialCleanup::from_config(
            &serde_json::from_value(json!({"module": "redis_publish"})).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    via_connection
        .deliver(&event(Payload::Json(payload)))
        .await
        .unwrap();
    let got = next_message(&mut events).await;
    assert_eq!(got["payload"]["a"], json!([true, null]));
    assert_eq!(
        got["headers"],
        json!({"x-event": "push", "content-type": "application/json"})
    );
    assert!(got.get("encoding").is_none());

    let via_object = build(
        &r,
        json!({"module": "redis_publish", "data_type": "blob",
        "redis": {"host": "127.0.0.1", "port": redis.port(), "channel": "legacy.events",
                  "allowed_hosts": ["127.0.0.1"]}}),
    )
    .unwrap();
    via_object
        .deliver(&event(Payload::Blob(Bytes::from_static(b"\x00\xff bin"))))
        .await
        .unwrap();
    let got = next_message(&mut legacy).await;
    assert_eq!(got["payload"], "AP8gYmlu");
    assert_eq!(got["encoding"], "base64");
    assert_eq!(got["headers"]["x-event"], "push");

    let json_object = build(
        &r,
        json!({"module": "redis_publish",
        "redis": {"host": "127.0.0.1", "port": redis.port(), "channel": "legacy.events"}}),
    )
    .unwrap();
    json_object
        .deliver(&event(Payload::Json(json!({"k": "v"}).into())))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut legacy).await["payload"],
        json!({"k": "v"})
    );
}

#[tokio::test]
async fn publish_to_a_stopped_redis_is_retryable() {
    let mut redis = Redis::start();
    let port = redis.port();
    let r = Registry::for_tests(&[]);
    let sink = build(
        &r,
        json!({"module": "redis_publish",
        "redis": {"host": "127.0.0.1", "port": port, "channel": "c"}}),
    )
    .unwrap();
    let ev = event(Payload::Json(json!({}).into()));
    sink.deliver(&ev).await.unwrap();
    redis.stop();
    let e = sink.deliver(&ev).await.unwrap_err();
    assert!(e.retryable(), "{e}");
    assert!(matches!(e, SinkError::Unavailable(_) | SinkError::Timeout));
    redis.start_again();
    let mut ok = false;
    for _ in 0..50 {
        if sink.deliver(&ev).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "publishing resumes once Redis is back");
}

#[tokio::test]
async fn credentials_are_used_and_noauth_is_a_rejection() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let conn = |extra: Value| {
        let mut c = json!({"type": "redis", "host": "127.0.0.1", "port": redis.port()});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let r = Registry::for_tests(&[
        ("good", conn(json!({"password": "s3cret", "db": "1"}))),
        ("empty", conn(json!({"password": ""}))),
    ]);
    let sink = |c: &str| build(&r, json!({"module": "redis_publish", "connection": c})).unwrap();
    let ev = event(Payload::Json(json!({}).into()));
    sink("good").deliver(&ev).await.unwrap();
    let e = sink("empty").deliver(&ev).await.unwrap_err();
    assert!(
        matches!(&e, SinkError::Rejected(m) if m.contains("NOAUTH")),
        "{e}"
    );
}
