//! The behaviour every [`Buffer`] shares, run against each backend.
//!
//! `run_all` takes a factory of fresh buffers on one broker; every check uses its own
//! channel name so they can share a broker. Backends that share state between instances add
//! `redelivered_after_ack_timeout` (Redis) or `redelivered_after_drop` (RabbitMQ).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Buffer, BufferError, Delivery, Envelope, MessageState, QueueKey, QueueSettings};
use crate::protocol;

/// Settings used by the checks: long TTL, 3 messages, 30 s ack timeout.
pub(crate) fn settings() -> QueueSettings {
    QueueSettings {
        ttl: Duration::from_secs(3600),
        max_queue_size: 3,
        ack_timeout: Duration::from_secs(30),
    }
}

/// [`settings`] with a 1 s ack timeout.
fn short_ack_timeout() -> QueueSettings {
    QueueSettings {
        ack_timeout: Duration::from_secs(1),
        ..settings()
    }
}

/// A message for `channel`/`webhook_id` with sequence `n`.
pub(crate) fn envelope(channel: &str, webhook_id: &str, n: u64) -> Envelope {
    let now = SystemTime::now();
    Envelope {
        message_id: protocol::new_message_id(),
        channel: channel.into(),
        webhook_id: webhook_id.into(),
        timestamp: protocol::timestamp(now),
        expires_at: Some(protocol::timestamp(now + Duration::from_secs(3600))),
        metadata: serde_json::Map::new(),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        payload: serde_json::json!({ "n": n }),
        payload_encoding: None,
        sequence: n,
        delivery_count: 0,
        state: MessageState::Pending,
    }
}

/// A channel name of its own for one check.
fn channel(check: &str) -> String {
    format!("conf-{check}-{:08x}", rand::random::<u32>())
}

async fn queue(b: &dyn Buffer, check: &str, webhook_id: &str) -> QueueKey {
    let key = QueueKey::new(&channel(check), webhook_id);
    b.ensure_queue(&key, settings()).await.unwrap();
    key
}

async fn push_n(b: &dyn Buffer, key: &QueueKey, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = envelope(&key.channel, &key.webhook_id, i);
        b.push(key, settings(), &e).await.unwrap();
        ids.push(e.message_id);
    }
    ids
}

/// Fetch until `want` messages came or `within` passed.
async fn fetch_n(
    b: &dyn Buffer,
    queues: &[QueueKey],
    want: usize,
    within: Duration,
) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(
            b.fetch(queues, want - got.len(), left.min(Duration::from_secs(1)))
                .await
                .unwrap(),
        );
    }
    got
}

fn ids(d: &[Delivery]) -> Vec<String> {
    d.iter().map(|d| d.envelope.message_id.clone()).collect()
}

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(1500);

/// Every shared check, each on fresh buffers from `make` (all on the same broker).
pub(crate) async fn run_all(make: impl Fn() -> Arc<dyn Buffer>) {
    fifo_and_depth(make().as_ref()).await;
    queue_full_until_an_ack(make().as_ref()).await;
    ack_removes(make().as_ref()).await;
    nack_retry_comes_back(make().as_ref()).await;
    nack_without_retry_is_dead_lettered(make().as_ref()).await;
    release_makes_unacked_fetchable(make().as_ref()).await;
    expired_messages_are_not_delivered(make().as_ref()).await;
    assert!(make().health().await);
}

async fn fifo_and_depth(b: &dyn Buffer) {
    let q1 = queue(b, "fifo", "wh-1").await;
    let q2 = QueueKey::new(&q1.channel, "wh-2");
    b.ensure_queue(&q2, settings()).await.unwrap();
    assert_eq!(b.depth(&q1).await.unwrap(), 0);
    let sent1 = push_n(b, &q1, 3).await;
    let sent2 = push_n(b, &q2, 2).await;
    assert_eq!(b.depth(&q1).await.unwrap(), 3);
    assert_eq!(b.depth(&q2).await.unwrap(), 2);
    let got = fetch_n(b, std::slice::from_ref(&q1), 3, LONG).await;
    assert_eq!(ids(&got), sent1, "FIFO per queue");
    assert!(got.iter().all(|d| d.tag.queue == q1));
    assert_eq!(got[0].envelope.payload, serde_json::json!({ "n": 0 }));
    assert_eq!(got[0].envelope.channel, *q1.channel);
    // Nothing more in q1 (all in flight); q2 untouched.
    assert!(
        b.fetch(std::slice::from_ref(&q1), 10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    let got2 = fetch_n(b, &[q1.clone(), q2.clone()], 2, LONG).await;
    assert_eq!(ids(&got2), sent2);
    // `max` is honoured.
    let q3 = QueueKey::new(&q1.channel, "wh-3");
    b.ensure_queue(&q3, settings()).await.unwrap();
    push_n(b, &q3, 3).await;
    let one = fetch_n(b, std::slice::from_ref(&q3), 1, LONG).await;
    assert_eq!(one.len(), 1);
    let rest = fetch_n(b, std::slice::from_ref(&q3), 2, LONG).await;
    assert_eq!(rest.len(), 2);
    for d in got.iter().chain(&got2).chain(&one).chain(&rest) {
        b.ack(&d.tag).await.unwrap();
    }
    assert_eq!(b.depth(&q1).await.unwrap(), 0);
}

async fn queue_full_until_an_ack(b: &dyn Buffer) {
    let q = queue(b, "full", "wh").await;
    push_n(b, &q, 3).await;
    let e = envelope(&q.channel, &q.webhook_id, 9);
    let err = b.push(&q, settings(), &e).await.unwrap_err();
    assert_eq!(
        err,
        BufferError::QueueFull {
            channel: q.channel.to_string(),
            webhook_id: q.webhook_id.to_string(),
            limit: 3
        }
    );
    // Fetched but unacknowledged messages still count.
    let got = fetch_n(b, std::slice::from_ref(&q), 1, LONG).await;
    assert!(matches!(
        b.push(&q, settings(), &e).await,
        Err(BufferError::QueueFull { .. })
    ));
    b.ack(&got[0].tag).await.unwrap();
    b.push(&q, settings(), &e).await.unwrap();
}

async fn ack_removes(b: &dyn Buffer) {
    let q = queue(b, "ack", "wh").await;
    let sent = push_n(b, &q, 2).await;
    let got = fetch_n(b, std::slice::from_ref(&q), 2, LONG).await;
    assert_eq!(ids(&got), sent);
    b.ack(&got[0].tag).await.unwrap();
    assert_eq!(
        b.depth(&q).await.unwrap(),
        1,
        "the unacked one still counts"
    );
    assert_eq!(
        b.ack(&got[0].tag).await,
        Err(BufferError::UnknownDelivery),
        "a second ack of the same delivery"
    );
    b.nack(&got[1].tag, true).await.unwrap();
    let again = fetch_n(
        b,
        std::slice::from_ref(&q),
        2,
        SHORT + Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        ids(&again),
        vec![sent[1].clone()],
        "an acked message never comes back"
    );
    b.ack(&again[0].tag).await.unwrap();
    assert_eq!(b.depth(&q).await.unwrap(), 0);
}

async fn nack_retry_comes_back(b: &dyn Buffer) {
    let q = queue(b, "retry", "wh").await;
    let sent = push_n(b, &q, 1).await;
    let got = fetch_n(b, std::slice::from_ref(&q), 1, LONG).await;
    b.nack(&got[0].tag, true).await.unwrap();
    let again = fetch_n(b, std::slice::from_ref(&q), 1, LONG).await;
    assert_eq!(ids(&again), sent);
    assert_eq!(b.depth(&q).await.unwrap(), 1);
    b.ack(&again[0].tag).await.unwrap();
    assert_eq!(b.depth(&q).await.unwrap(), 0);
}

async fn nack_without_retry_is_dead_lettered(b: &dyn Buffer) {
    let q = queue(b, "dlq", "wh").await;
    let other = QueueKey::new(&q.channel, "other");
    b.ensure_queue(&other, settings()).await.unwrap();
    let sent = push_n(b, &q, 2).await;
    let got = fetch_n(b, std::slice::from_ref(&q), 2, LONG).await;
    b.nack(&got[0].tag, false).await.unwrap();
    // Let the clock move so the two failures are ordered even at one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.nack(&got[1].tag, false).await.unwrap();
    assert_eq!(b.depth(&q).await.unwrap(), 0);
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = b.dead_letters(std::slice::from_ref(&q), 10).await.unwrap();
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed_ids: Vec<String> = listed.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(
        listed_ids,
        vec![sent[1].clone(), sent[0].clone()],
        "newest first"
    );
    assert!(listed.iter().all(|e| e.state == MessageState::DeadLettered));
    assert_eq!(listed[0].webhook_id, "wh");
    // Listing does not consume.
    let twice = b.dead_letters(std::slice::from_ref(&q), 10).await.unwrap();
    assert_eq!(twice.len(), 2);
    assert_eq!(
        b.dead_letters(std::slice::from_ref(&q), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        b.dead_letters(std::slice::from_ref(&other), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Never delivered again.
    assert!(
        b.fetch(std::slice::from_ref(&q), 10, Duration::from_millis(700))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn release_makes_unacked_fetchable(b: &dyn Buffer) {
    let q = queue(b, "release", "wh").await;
    let sent = push_n(b, &q, 2).await;
    let got = fetch_n(b, std::slice::from_ref(&q), 2, LONG).await;
    assert_eq!(ids(&got), sent);
    b.release(std::slice::from_ref(&q)).await;
    let again = fetch_n(b, std::slice::from_ref(&q), 2, LONG).await;
    assert_eq!(ids(&again), sent, "released messages come back in order");
    for d in &again {
        b.ack(&d.tag).await.unwrap();
    }
    assert_eq!(b.depth(&q).await.unwrap(), 0);
}

async fn expired_messages_are_not_delivered(b: &dyn Buffer) {
    let q = queue(b, "expired", "wh").await;
    let mut old = envelope(&q.channel, &q.webhook_id, 0);
    old.expires_at = Some(protocol::timestamp(
        SystemTime::now() - Duration::from_secs(5),
    ));
    b.push(&q, settings(), &old).await.unwrap();
    let fresh = push_n(b, &q, 1).await;
    let got = fetch_n(b, std::slice::from_ref(&q), 2, SHORT).await;
    assert_eq!(ids(&got), fresh, "the expired message is skipped");
    assert_eq!(b.expired_count(&q.channel), 1);
    assert_eq!(b.expired_count("some-other-channel"), 0);
    b.ack(&got[0].tag).await.unwrap();
}

/// An unacknowledged message is fetched again by another instance once the ack timeout passed
/// (a receiver restarted without releasing).
pub(crate) async fn redelivered_after_ack_timeout(make: impl Fn() -> Arc<dyn Buffer>) {
    let first = make();
    let q = QueueKey::new(&channel("timeout"), "wh");
    first.ensure_queue(&q, short_ack_timeout()).await.unwrap();
    let e = envelope(&q.channel, &q.webhook_id, 0);
    first.push(&q, short_ack_timeout(), &e).await.unwrap();
    let sent = vec![e.message_id];
    let got = fetch_n(first.as_ref(), std::slice::from_ref(&q), 1, LONG).await;
    assert_eq!(ids(&got), sent);
    let second = make();
    second.ensure_queue(&q, short_ack_timeout()).await.unwrap();
    let again = fetch_n(second.as_ref(), std::slice::from_ref(&q), 1, LONG).await;
    assert_eq!(ids(&again), sent, "redelivered after the ack timeout");
    second.ack(&again[0].tag).await.unwrap();
    assert_eq!(second.depth(&q).await.unwrap(), 0);
}

/// Unacknowledged messages of a dropped instance go to a new instance.
pub(crate) async fn redelivered_after_drop(make: impl Fn() -> Arc<dyn Buffer>) {
    let first = make();
    let q = queue(first.as_ref(), "dropped", "wh").await;
    let sent = push_n(first.as_ref(), &q, 2).await;
    let got = fetch_n(first.as_ref(), std::slice::from_ref(&q), 2, LONG).await;
    assert_eq!(ids(&got), sent);
    drop(first);
    let second = make();
    second.ensure_queue(&q, settings()).await.unwrap();
    let again = fetch_n(second.as_ref(), std::slice::from_ref(&q), 2, LONG).await;
    assert_eq!(
        ids(&again),
        sent,
        "redelivered once the first instance is gone"
    );
    for d in &again {
        second.ack(&d.tag).await.unwrap();
    }
}
