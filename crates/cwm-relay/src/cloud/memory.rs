//! The in-process buffer: one instance only, lost on restart.
//!
//! One FIFO per queue key, ordered by arrival: an entry that comes back (nack with retry,
//! release, ack timeout) goes back to its arrival place, so a queue is delivered in the order
//! it was pushed however many of its entries return together. A fetched entry moves to an in-flight map under a fresh delivery id
//! (so a stale tag of an earlier delivery of the same message is refused) until it is acked,
//! nacked, released, or its queue's `ack_timeout` passes. Dead letters are kept per queue.
//! Expired entries are dropped when a fetch meets them and counted per channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Buffer, BufferError, Delivery, DeliveryTag, Envelope, MessageState, QueueKey, QueueSettings,
};

/// Queues in this process's memory. For a single receiver and for `make run`; everything
/// buffered is lost when the process stops.
#[derive(Default)]
pub struct MemoryBuffer {
    state: Mutex<State>,
    /// Woken on every push, nack, release and reclaim: fetches waiting for messages look again.
    arrived: Notify,
}

#[derive(Default)]
struct State {
    queues: HashMap<QueueKey, Queue>,
    /// Fetched, unacknowledged entries by delivery id.
    in_flight: HashMap<u64, Fetched>,
    next_delivery: u64,
    /// Arrival number of the next push.
    next_arrival: u64,
    /// Expired messages dropped so far, per channel.
    expired: HashMap<String, u64>,
}

struct Queue {
    settings: QueueSettings,
    /// Oldest arrival first.
    waiting: VecDeque<Waiting>,
    /// Entries of this queue in `State::in_flight`.
    fetched: u64,
    /// Oldest first.
    dead: Vec<Envelope>,
}

impl Queue {
    fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            waiting: VecDeque::new(),
            fetched: 0,
            dead: Vec::new(),
        }
    }

    /// Put a returned entry back at its arrival place (usually at or near the front).
    fn put_back(&mut self, arrival: u64, envelope: Envelope) {
        let at = self.waiting.partition_point(|w| w.arrival < arrival);
        self.waiting.insert(at, Waiting { arrival, envelope });
    }
}

struct Waiting {
    /// Order of the push that stored it.
    arrival: u64,
    envelope: Envelope,
}

struct Fetched {
    queue: QueueKey,
    arrival: u64,
    envelope: Envelope,
    /// When it becomes deliverable again unless acked.
    reclaim_at: Instant,
}

/// Settings of a queue pushed to before `ensure_queue` (never with the manager): generous.
const FALLBACK: QueueSettings = QueueSettings {
    ttl: Duration::from_secs(86_400),
    max_queue_size: 10_000,
    ack_timeout: Duration::from_secs(30),
};

impl MemoryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Return every fetched entry whose ack timeout passed to the front of its queue. Returns
    /// whether any came back.
    fn reclaim(&mut self, now: Instant) -> bool {
        let due: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.reclaim_at <= now)
            .map(|(id, _)| *id)
            .collect();
        self.requeue(&due);
        !due.is_empty()
    }

    /// Put these in-flight entries back in their queues at their arrival places.
    fn requeue(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(f) = self.in_flight.remove(id) {
                let q = self
                    .queues
                    .entry(f.queue)
                    .or_insert_with(|| Queue::new(FALLBACK));
                q.fetched = q.fetched.saturating_sub(1);
                q.put_back(f.arrival, f.envelope);
            }
        }
    }

    /// The earliest reclaim deadline of the entries of `queues`.
    fn next_reclaim(&self, queues: &[QueueKey]) -> Option<Instant> {
        self.in_flight
            .values()
            .filter(|f| queues.contains(&f.queue))
            .map(|f| f.reclaim_at)
            .min()
    }

    /// Up to `max` messages, taken one per queue in turn.
    fn take(&mut self, queues: &[QueueKey], max: usize, now: Instant) -> Vec<Delivery> {
        let wall = SystemTime::now();
        let mut out = Vec::new();
        let mut progress = true;
        while out.len() < max && progress {
            progress = false;
            for key in queues {
                if out.len() >= max {
                    break;
                }
                let Some(q) = self.queues.get_mut(key) else {
                    continue;
                };
                while let Some(Waiting { arrival, envelope }) = q.waiting.pop_front() {
                    if envelope.expired(wall) {
                        *self.expired.entry(key.channel.to_string()).or_default() += 1;
                        continue;
                    }
                    self.next_delivery += 1;
                    let id = self.next_delivery;
                    q.fetched += 1;
                    let reclaim_at = now + q.settings.ack_timeout;
                    out.push(Delivery {
                        tag: DeliveryTag {
                            queue: key.clone(),
                            id: id.to_string(),
                        },
                        envelope: envelope.clone(),
                    });
                    self.in_flight.insert(
                        id,
                        Fetched {
                            queue: key.clone(),
                            arrival,
                            envelope,
                            reclaim_at,
                        },
                    );
                    progress = true;
                    break;
                }
            }
        }
        out
    }

    /// The in-flight entry `tag` names, removed.
    fn settle(&mut self, tag: &DeliveryTag) -> Result<Fetched, BufferError> {
        let id: u64 = tag.id.parse().map_err(|_| BufferError::UnknownDelivery)?;
        match self.in_flight.get(&id) {
            Some(f) if f.queue == tag.queue => {}
            _ => return Err(BufferError::UnknownDelivery),
        }
        let f = self
            .in_flight
            .remove(&id)
            .ok_or(BufferError::UnknownDelivery)?;
        if let Some(q) = self.queues.get_mut(&f.queue) {
            q.fetched = q.fetched.saturating_sub(1);
        }
        Ok(f)
    }
}

#[async_trait]
impl Buffer for MemoryBuffer {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ensure_queue(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
    ) -> Result<(), BufferError> {
        let mut st = self.lock();
        st.queues
            .entry(key.clone())
            .and_modify(|q| q.settings = settings)
            .or_insert_with(|| Queue::new(settings));
        Ok(())
    }

    async fn push(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
        envelope: &Envelope,
    ) -> Result<(), BufferError> {
        {
            let mut st = self.lock();
            let arrival = st.next_arrival;
            st.next_arrival += 1;
            let q = st
                .queues
                .entry(key.clone())
                .or_insert_with(|| Queue::new(settings));
            q.settings = settings;
            if q.waiting.len() as u64 + q.fetched >= settings.max_queue_size {
                return Err(BufferError::QueueFull {
                    channel: key.channel.to_string(),
                    webhook_id: key.webhook_id.to_string(),
                    limit: settings.max_queue_size,
                });
            }
            q.waiting.push_back(Waiting {
                arrival,
                envelope: envelope.clone(),
            });
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn depth(&self, key: &QueueKey) -> Result<u64, BufferError> {
        let st = self.lock();
        Ok(st
            .queues
            .get(key)
            .map_or(0, |q| q.waiting.len() as u64 + q.fetched))
    }

    async fn fetch(
        &self,
        queues: &[QueueKey],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BufferError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = Instant::now();
            let wake_at = {
                let mut st = self.lock();
                st.reclaim(now);
                let out = st.take(queues, max, now);
                if !out.is_empty() || now >= deadline {
                    return Ok(out);
                }
                st.next_reclaim(queues)
                    .map_or(deadline, |at| at.min(deadline))
            };
            let _ = tokio::time::timeout_at(wake_at, arrived).await;
        }
    }

    async fn ack(&self, tag: &DeliveryTag) -> Result<(), BufferError> {
        self.lock().settle(tag).map(drop)
    }

    async fn nack(&self, tag: &DeliveryTag, retry: bool) -> Result<(), BufferError> {
        {
            let mut st = self.lock();
            let f = st.settle(tag)?;
            let q = st
                .queues
                .entry(f.queue)
                .or_insert_with(|| Queue::new(FALLBACK));
            if retry {
                q.put_back(f.arrival, f.envelope);
            } else {
                let mut envelope = f.envelope;
                envelope.state = MessageState::DeadLettered;
                q.dead.push(envelope);
            }
        }
        if retry {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn release(&self, queues: &[QueueKey]) {
        {
            let mut st = self.lock();
            let ids: Vec<u64> = st
                .in_flight
                .iter()
                .filter(|(_, f)| queues.contains(&f.queue))
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                return;
            }
            st.requeue(&ids);
        }
        self.arrived.notify_waiters();
    }

    async fn dead_letters(
        &self,
        queues: &[QueueKey],
        limit: usize,
    ) -> Result<Vec<Envelope>, BufferError> {
        let st = self.lock();
        // Every memory dead letter carries its failure order implicitly; merge by timestamp of
        // acceptance across queues, newest first.
        let mut all: Vec<&Envelope> = queues
            .iter()
            .filter_map(|k| st.queues.get(k))
            .flat_map(|q| q.dead.iter().rev())
            .collect();
        if queues.len() > 1 {
            all.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        }
        Ok(all.into_iter().take(limit).cloned().collect())
    }

    fn expired_count(&self, channel: &str) -> u64 {
        self.lock().expired.get(channel).copied().unwrap_or(0)
    }

    async fn health(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn settings(max: u64) -> QueueSettings {
        QueueSettings {
            ttl: Duration::from_secs(60),
            max_queue_size: max,
            ack_timeout: Duration::from_secs(30),
        }
    }

    fn envelope(id: &str, expires_at: Option<SystemTime>) -> Envelope {
        Envelope {
            message_id: id.into(),
            channel: "c".into(),
            webhook_id: "w".into(),
            timestamp: crate::protocol::now(),
            expires_at: expires_at.map(crate::protocol::timestamp),
            metadata: serde_json::Map::new(),
            headers: Default::default(),
            payload: serde_json::Value::Null,
            payload_encoding: None,
            sequence: 0,
            delivery_count: 0,
            state: MessageState::Pending,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn conformance() {
        // One shared instance: memory queues live in the instance, as in one process.
        let shared: std::sync::Arc<dyn Buffer> = std::sync::Arc::new(MemoryBuffer::new());
        let make = || shared.clone();
        crate::cloud::conformance::run_all(&make).await;
        crate::cloud::conformance::redelivered_after_ack_timeout(&make).await;
        crate::cloud::conformance::run_all(|| {
            std::sync::Arc::new(MemoryBuffer::new()) as std::sync::Arc<dyn Buffer>
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_ack_nack_release_and_dead_letters() {
        let b = MemoryBuffer::new();
        let k = QueueKey::new("c", "w");
        b.ensure_queue(&k, settings(10)).await.unwrap();
        for id in ["a", "b", "c"] {
            b.push(&k, settings(10), &envelope(id, None)).await.unwrap();
        }
        let got = b
            .fetch(std::slice::from_ref(&k), 2, Duration::ZERO)
            .await
            .unwrap();
        let ids: Vec<_> = got.iter().map(|d| d.envelope.message_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(b.depth(&k).await.unwrap(), 3);
        b.ack(&got[0].tag).await.unwrap();
        assert_eq!(b.ack(&got[0].tag).await, Err(BufferError::UnknownDelivery));
        b.nack(&got[1].tag, true).await.unwrap();
        let got = b
            .fetch(std::slice::from_ref(&k), 10, Duration::ZERO)
            .await
            .unwrap();
        let ids: Vec<_> = got.iter().map(|d| d.envelope.message_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        b.nack(&got[0].tag, false).await.unwrap();
        b.release(std::slice::from_ref(&k)).await;
        let got = b
            .fetch(std::slice::from_ref(&k), 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].envelope.message_id, "c");
        let dead = b.dead_letters(std::slice::from_ref(&k), 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, "b");
        assert_eq!(dead[0].state, MessageState::DeadLettered);
    }

    #[tokio::test(start_paused = true)]
    async fn returned_entries_keep_arrival_order() {
        let b = MemoryBuffer::new();
        let k = QueueKey::new("c", "w");
        for id in ["a", "b", "c", "d"] {
            b.push(&k, settings(10), &envelope(id, None)).await.unwrap();
        }
        let ids = |got: &[Delivery]| -> Vec<String> {
            got.iter().map(|d| d.envelope.message_id.clone()).collect()
        };
        let got = b
            .fetch(std::slice::from_ref(&k), 3, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(ids(&got), ["a", "b", "c"]);
        // Nacked one by one, oldest first (as a dispatch that found no connection does).
        for d in &got {
            b.nack(&d.tag, true).await.unwrap();
        }
        let got = b
            .fetch(std::slice::from_ref(&k), 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(ids(&got), ["a", "b", "c", "d"]);
        // Returned in any order, by release and by nack, they still come back in arrival order.
        b.nack(&got[2].tag, true).await.unwrap();
        b.nack(&got[0].tag, true).await.unwrap();
        b.release(std::slice::from_ref(&k)).await;
        let got = b
            .fetch(std::slice::from_ref(&k), 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(ids(&got), ["a", "b", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_expiry_reclaim_and_waiting_fetch() {
        let b = std::sync::Arc::new(MemoryBuffer::new());
        let k = QueueKey::new("c", "w");
        b.push(&k, settings(2), &envelope("a", None)).await.unwrap();
        let past = SystemTime::now() - Duration::from_secs(5);
        b.push(&k, settings(2), &envelope("old", Some(past)))
            .await
            .unwrap();
        assert!(matches!(
            b.push(&k, settings(2), &envelope("x", None)).await,
            Err(BufferError::QueueFull { limit: 2, .. })
        ));
        let got = b
            .fetch(std::slice::from_ref(&k), 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(b.expired_count("c"), 1);
        // Not acked within the ack timeout: handed out again.
        let again = b
            .fetch(std::slice::from_ref(&k), 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(again[0].envelope.message_id, "a");
        assert_eq!(b.ack(&got[0].tag).await, Err(BufferError::UnknownDelivery));
        b.ack(&again[0].tag).await.unwrap();
        // A waiting fetch sees a later push.
        let b2 = b.clone();
        let k2 = k.clone();
        let waiter = tokio::spawn(async move { b2.fetch(&[k2], 1, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.push(&k, settings(2), &envelope("late", None))
            .await
            .unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].envelope.message_id, "late");
    }
}
