//! Black-box tests of the `kafka` sink: the real receiver produces to librdkafka's mock Kafka
//! cluster, started by the test; a consumer reads the messages back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cwm_tests::{Receiver, free_port, rejection, rejection_reason};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

const ADMIN: &str = "adm1n";

#[derive(Debug)]
struct Received {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// The first `want` messages of partition 0 of `topic`.
fn read(bootstrap: &str, topic: &str, want: usize) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cwm-black-box")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Received {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                                (h.key.to_owned(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
    }
    assert_eq!(out.len(), want, "messages of {topic}: {out:?}");
    out
}

#[test]
fn kafka_webhooks_are_produced_before_the_200() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster.create_topic("events", 1, 1).unwrap();
    cluster.create_topic("raw-bytes", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let connections = json!({
        "kafka_local": {"type": "kafka", "bootstrap_servers": bootstrap},
        "kafka_down": {"type": "kafka", "bootstrap_servers": format!("127.0.0.1:{}", free_port()),
                       "message.timeout.ms": 300},
        "queue": {"type": "redis-rq", "host": "127.0.0.1", "port": 6379}
    });
    let webhooks = json!({
        "orders": {"module": "kafka", "connection": "kafka_local",
                   "module-config": {"topic": "events", "key": "order", "forward_headers": true}},
        "blobs": {"module": "kafka", "connection": "kafka_local", "data_type": "blob",
                  "topic": "raw-bytes"},
        "down": {"module": "kafka", "connection": "kafka_down", "topic": "events"},
        "wrong_type": {"module": "kafka", "connection": "queue", "topic": "events"},
        "bad_topic": {"module": "kafka", "connection": "kafka_local",
                      "module-config": {"topic": "kafka-topics"}},
        "no_topic": {"module": "kafka", "connection": "kafka_local"}
    });
    let rx = Receiver::start(
        &[
            ("webhooks.json", &webhooks.to_string()),
            ("connections.json", &connections.to_string()),
        ],
        &[("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN)],
    );

    let bodies = [r#"{"order": 1, "total": 1.50}"#, r#"{"order":2}"#];
    for body in bodies {
        let r = rx.post_json("/webhook/orders", &[("x-delivery", "d-1")], body);
        assert_eq!(r.status, 200, "{} / {}", r.body, rx.stderr());
    }
    let raw = "\u{1}binary\u{2} not json";
    let r = rx.post_with(
        "/webhook/blobs",
        &[("content-type", "application/octet-stream")],
        raw,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let got = read(&bootstrap, "events", 2);
    for (m, body) in got.iter().zip(bodies) {
        // The sender's text, as sent.
        assert_eq!(m.value, body.as_bytes());
        assert_eq!(m.key.as_deref(), Some(&b"order"[..]));
        let header = |name: &str| {
            m.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-delivery"), Some("d-1"), "{:?}", m.headers);
        assert_eq!(header("content-type"), Some("application/json"));
    }
    let got = read(&bootstrap, "raw-bytes", 1);
    assert_eq!(
        (got[0].value.as_slice(), got[0].key.as_deref()),
        (raw.as_bytes(), None)
    );
    assert!(
        got[0].headers.is_empty(),
        "headers are forwarded only when asked"
    );

    // A broker nobody answers for: the sender is told to try again later.
    let r = rx.post("/webhook/down", "{}");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());

    // Webhooks that cannot work are rejected at load.
    let provider = rx.config_status(ADMIN);
    assert!(
        rejection_reason(&provider, "wrong_type").contains("type 'redis-rq'"),
        "{provider}"
    );
    assert!(
        rejection_reason(&provider, "bad_topic")
            .contains("'module-config.topic': topic name contains the forbidden Kafka keyword"),
        "{provider}"
    );
    assert!(rejection_reason(&provider, "no_topic").contains("'module-config.topic'"));
    assert!(rejection(&provider, "webhooks/orders").is_none());
    for id in ["wrong_type", "bad_topic", "no_topic"] {
        assert_eq!(rx.post(&format!("/webhook/{id}"), "{}").status, 404, "{id}");
    }
}
