#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cwm_config::ConnectionConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use super::config::{producer_config, validate_topic};
use super::sink::classify;
use crate::connection::ConnectionState;
use crate::context::ModuleContext;
use crate::fake::event_with as event;
use crate::sink::{Event, Payload, SinkError};
use crate::{CompiledWebhook, Registry};

/// A registry whose connection registry holds `connections`.
fn registry(connections: Value) -> Registry {
    let ctx = ModuleContext::new();
    let configs: Vec<(String, Arc<ConnectionConfig>)> = connections
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Arc::new(serde_json::from_value(v.clone()).unwrap()),
            )
        })
        .collect();
    ctx.connections().sync(
        configs.iter().map(|(n, c)| (n.as_str(), c)),
        ctx.client_deps(),
    );
    Registry::with_builtin_sinks(ctx)
}

fn compile(r: &Registry, doc: Value) -> Result<CompiledWebhook, String> {
    cwm_config::compile_webhook(r, &|_: &str| None, "hook", doc).map_err(|e| e.to_string())
}

fn json_event(v: Value, headers: &[(&str, &str)]) -> Event {
    event(Payload::Json(v.into()), headers)
}

#[test]
fn topic_names_follow_the_python_gateway_rules() {
    for ok in [
        "ab",
        "events",
        " events.v1 ",
        "Web_Hooks-2",
        "created",
        "lists",
        "x.create",
    ] {
        assert_eq!(validate_topic(ok), Ok(ok.trim().to_owned()), "{ok}");
    }
    assert_eq!(validate_topic(&"a".repeat(249)).map(|t| t.len()), Ok(249));
    for (bad, why) in [
        ("", "empty"),
        ("   ", "empty"),
        ("a", "too short"),
        (&*"a".repeat(250), "too long"),
        ("a b", "only letters"),
        ("topic/x", "only letters"),
        ("tö", "only letters"),
        ("a..b", "'..'"),
        ("a--b", "'--'"),
        ("create", "keyword 'create'"),
        ("DELETE.me", "keyword 'delete'"),
        ("list_x", "keyword 'list'"),
        ("kafka-topics", "keyword 'kafka-topics'"),
        ("console-consumer-1", "keyword 'console-consumer'"),
        ("config-x", "keyword 'config'"),
    ] {
        let e = validate_topic(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn module_config_is_checked_at_load() {
    let r = registry(json!({
        "k": {"type": "kafka", "bootstrap_servers": "127.0.0.1:1"},
        "r": {"type": "redis-rq", "host": "127.0.0.1", "port": 6379}
    }));
    let ok = |doc: Value| compile(&r, doc).map(|w| w.sink.module());
    assert_eq!(
        ok(json!({"module":"kafka","connection":"k","module-config":{"topic":"events"}})),
        Ok("kafka")
    );
    // The top-level `topic` of the Python gateway's documented form.
    assert_eq!(
        ok(json!({"module":"kafka","connection":"k","topic":"events"})),
        Ok("kafka")
    );
    // Numbers as numeric strings, extra keys, Python-style keys.
    assert_eq!(
        ok(json!({"module":"kafka","connection":"k","module-config":{
            "topic":"events","partition":"2","key":7,"forward_headers":"true","note":"x"}})),
        Ok("kafka")
    );
    for (doc, why) in [
        (
            json!({"module":"kafka","connection":"k"}),
            "'module-config.topic': a topic is required",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":"a..b"}}),
            "'module-config.topic'",
        ),
        (
            json!({"module":"kafka","connection":"k","topic":"delete"}),
            "'module-config.topic': topic name contains the forbidden Kafka keyword 'delete'",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":5}}),
            "'module-config.topic': must be a string",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":"ev","partition":-1}}),
            "'module-config.partition': must be a non-negative integer",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":"ev","partition":"one"}}),
            "'module-config.partition'",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":"ev","partition":1.5}}),
            "'module-config.partition'",
        ),
        (
            json!({"module":"kafka","connection":"k","module-config":{"topic":"ev","key":["a"]}}),
            "'module-config.key'",
        ),
        (
            json!({"module":"kafka","module-config":{"topic":"ev"}}),
            "needs a 'connection'",
        ),
        (
            json!({"module":"kafka","connection":"r","module-config":{"topic":"ev"}}),
            "type 'redis-rq'; module 'kafka' needs 'kafka'",
        ),
        (
            json!({"module":"kafka","connection":"nope","module-config":{"topic":"ev"}}),
            "'nope' is not defined",
        ),
    ] {
        let e = compile(&r, doc.clone()).err().unwrap_or_default();
        assert!(e.contains(why), "{doc}: {e}");
    }
}

#[test]
fn keys_are_written_as_python_str_writes_them() {
    use super::KafkaSinkConfig;
    let key = |v: Value| -> Option<String> {
        serde_json::from_value::<KafkaSinkConfig>(json!({ "key": v }))
            .unwrap()
            .key
    };
    assert_eq!(key(json!("k")), Some("k".into()));
    assert_eq!(key(json!("")), Some(String::new()));
    assert_eq!(key(Value::Null), None);
    assert_eq!(key(json!(true)), Some("True".into()));
    assert_eq!(key(json!(false)), Some("False".into()));
    assert_eq!(key(json!(42)), Some("42".into()));
    assert_eq!(key(json!(u64::MAX)), Some(u64::MAX.to_string()));
    assert_eq!(key(json!(1.5)), Some("1.5".into()));
    assert_eq!(key(json!(2.0)), Some("2.0".into()));
    assert_eq!(key(json!(1e20)), Some("1e+20".into()));
    assert_eq!(key(json!(1.5e-7)), Some("1.5e-07".into()));
    assert_eq!(key(json!(0.0001)), Some("0.0001".into()));
}

#[test]
fn connection_settings_become_librdkafka_properties() {
    let conn = |v: Value| -> ConnectionConfig { serde_json::from_value(v).unwrap() };
    let (cc, ignored) = producer_config(&conn(json!({"type":"kafka"}))).unwrap();
    assert_eq!(cc.get("bootstrap.servers"), Some("localhost:9092"));
    assert_eq!(cc.get("acks"), Some("1"));
    assert_eq!(cc.get("message.timeout.ms"), Some("30000"));
    assert_eq!(cc.get("linger.ms"), Some("0"));
    assert!(ignored.is_empty());

    let (cc, ignored) = producer_config(&conn(json!({
        "type": "kafka", "host": "h", "port": 1,
        "bootstrap_servers": ["a:1", " b:2"],
        "acks": "all", "linger.ms": 2, "enable.idempotence": true,
        "security_protocol": "PLAINTEXT", "message.timeout.ms": "1000"
    })))
    .unwrap();
    assert_eq!(cc.get("bootstrap.servers"), Some("a:1,b:2"));
    assert_eq!(cc.get("linger.ms"), Some("2"));
    assert_eq!(cc.get("enable.idempotence"), Some("true"));
    assert_eq!(cc.get("message.timeout.ms"), Some("1000"));
    assert_eq!(cc.get("acks"), Some("all"));
    // Keys without a dot are not librdkafka's (the Python gateway's producer never read them).
    assert_eq!(ignored, ["security_protocol"]);

    for (doc, why) in [
        (json!({"type":"kafka","bootstrap_servers":""}), "empty"),
        (
            json!({"type":"kafka","bootstrap_servers":9092}),
            "'bootstrap_servers'",
        ),
        (json!({"type":"kafka","linger.ms":[1]}), "'linger.ms'"),
    ] {
        let e = producer_config(&conn(doc.clone()))
            .err()
            .unwrap_or_default();
        assert!(e.contains(why), "{doc}: {e}");
    }
}

#[tokio::test]
async fn a_property_librdkafka_does_not_know_fails_the_client() {
    let r = registry(
        json!({"k": {"type": "kafka", "bootstrap_servers": "127.0.0.1:1", "no.such.property": "1"}}),
    );
    let status = r.context().connections().status();
    assert_eq!(status[0].state, ConnectionState::Failed);
    assert!(
        status[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no.such.property")
    );
    // The webhook still loads (the connection may be mended); deliveries fail retryably.
    let hook = compile(
        &r,
        json!({"module":"kafka","connection":"k","topic":"events"}),
    )
    .unwrap();
    let e = hook
        .sink
        .deliver(&json_event(json!({}), &[]))
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e}");
}

#[test]
fn errors_are_retryable_when_the_broker_can_recover() {
    let produce = |code| classify(&KafkaError::MessageProduction(code));
    assert_eq!(
        produce(RDKafkaErrorCode::MessageTimedOut),
        SinkError::Timeout
    );
    for code in [
        RDKafkaErrorCode::QueueFull,
        RDKafkaErrorCode::BrokerTransportFailure,
        RDKafkaErrorCode::AllBrokersDown,
        RDKafkaErrorCode::LeaderNotAvailable,
        RDKafkaErrorCode::NotLeaderForPartition,
        RDKafkaErrorCode::NotEnoughReplicas,
        RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
    ] {
        assert!(
            matches!(produce(code), SinkError::Unavailable(_)),
            "{code:?}"
        );
    }
    for code in [
        RDKafkaErrorCode::MessageSizeTooLarge,
        RDKafkaErrorCode::InvalidTopic,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::SaslAuthenticationFailed,
    ] {
        assert!(matches!(produce(code), SinkError::Rejected(_)), "{code:?}");
    }
    assert!(classify(&KafkaError::Canceled).retryable());
}

/// Every message of `topic` (partitions `0..partitions`), in partition then offset order.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, want: usize) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cwm-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Received {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
    }
    assert_eq!(out.len(), want, "messages read back: {out:?}");
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

#[derive(Debug)]
struct Received {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

#[tokio::test]
async fn events_reach_the_topic_with_key_partition_and_headers() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let r = registry(json!({"k": {"type": "kafka", "bootstrap_servers": bootstrap}}));
    let keyed = compile(
        &r,
        json!({"module":"kafka","connection":"k","data_type":"json",
               "module-config":{"topic":" events ","key":"k1","partition":2,"forward_headers":true}}),
    )
    .unwrap();
    let hook = |mc: Value| {
        compile(
            &r,
            json!({"module":"kafka","connection":"k","topic":"events","module-config":mc}),
        )
        .unwrap()
    };
    let plain = hook(json!({"partition": "1"}));
    let unkeyed = hook(json!({"partition": 0, "key": true}));

    let headers = [
        ("content-type", "application/json"),
        ("x-request-id", "r-7"),
    ];
    let text = r#"{"order": 123456789012345678901234567890, "ok":true}"#;
    let kept = crate::JsonPayload::from_text(
        text.to_owned(),
        crate::payload::JsonLimits {
            max_depth: 50,
            max_string_chars: 1 << 20,
        },
        &crate::CredentialCleanup::from_config(
            &serde_json::from_value(json!({"module": "kafka"})).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    keyed
        .sink
        .deliver(&event(Payload::Json(kept), &headers))
        .await
        .unwrap();
    keyed
        .sink
        .deliver(&json_event(json!({"n": 2}), &headers))
        .await
        .unwrap();
    plain
        .sink
        .deliver(&event(
            Payload::Blob(Bytes::from_static(b"\x00\xffraw")),
            &headers,
        ))
        .await
        .unwrap();
    unkeyed
        .sink
        .deliver(&json_event(json!([1, "two"]), &[]))
        .await
        .unwrap();
    let status = r.context().connections().status();
    assert_eq!(
        (status[0].state, status[0].webhooks),
        (ConnectionState::Healthy, 3)
    );

    let got = read_all(&bootstrap, "events", 3, 4);
    // Partition 0: the boolean key as Python writes it, no headers (not forwarded).
    assert_eq!(
        (got[0].partition, got[0].key.as_deref()),
        (0, Some(&b"True"[..]))
    );
    assert_eq!(got[0].value, br#"[1,"two"]"#);
    assert!(got[0].headers.is_empty());
    // Partition 1: the blob's bytes as sent, no key.
    assert_eq!((got[1].partition, got[1].key.as_deref()), (1, None));
    assert_eq!(got[1].value, b"\x00\xffraw");
    assert!(got[1].headers.is_empty());
    // Partition 2: the request's own JSON text, the static key, the request headers.
    for m in &got[2..] {
        assert_eq!((m.partition, m.key.as_deref()), (2, Some(&b"k1"[..])));
        assert_eq!(
            m.headers,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-request-id".to_owned(), "r-7".to_owned())
            ]
        );
    }
    assert_eq!(got[2].value, text.as_bytes());
    assert_eq!(got[3].value, br#"{"n":2}"#);

    // A partition the topic does not have: refused for good.
    let nowhere = hook(json!({"partition": 9}));
    let e = nowhere
        .sink
        .deliver(&json_event(json!({}), &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Rejected(_)), "{e:?}");

    // Closing flushes and releases the producer; deliveries afterwards fail retryably.
    assert!(r.context().shutdown(Duration::from_secs(10)).await);
    let e = keyed
        .sink
        .deliver(&json_event(json!({}), &[]))
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e}");
}

#[tokio::test]
async fn an_unreachable_broker_fails_the_delivery_retryably() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = registry(json!({"k": {
        "type": "kafka",
        "bootstrap_servers": format!("127.0.0.1:{port}"),
        "message.timeout.ms": 500
    }}));
    let hook = compile(
        &r,
        json!({"module":"kafka","connection":"k","topic":"events"}),
    )
    .unwrap();
    let e = hook
        .sink
        .deliver(&json_event(json!({"a": 1}), &[]))
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e:?}");
    let status = r.context().connections().status();
    assert_eq!(status[0].state, ConnectionState::Unavailable);
    assert!(status[0].last_error.is_some());
}
