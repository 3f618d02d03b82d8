//! The RabbitMQ buffer: topic exchange, per-webhook queues and dead-letter queues.
//!
//! Layout as the Python gateway declares it: topic exchange `webhook_connect` and dead-letter
//! exchange `webhook_connect.dlx` (both durable); per webhook a durable classic queue
//! `webhook_connect.{channel}.{webhook_id}` (dead-lettering to the DLX, `x-message-ttl` = the
//! queue TTL) bound with routing key `{channel}.{webhook_id}`, and its dead-letter queue
//! `webhook_connect.{channel}.{webhook_id}.dlq` bound to the DLX. Unlike the Python gateway,
//! `.` (and `%`, `*`, `#`) inside a channel or webhook id is percent-escaped in names and keys,
//! so `a.b`+`c` and `a`+`b.c` stay apart.
//!
//! Pushes wait for the publisher confirm. Each consumed queue has its own AMQP channel
//! (prefetch 100) whose deliveries wait locally until [`Buffer::fetch`] takes them; closing it
//! ([`Buffer::release`], a dropped connection) returns every unacknowledged message to the
//! queue. The connection is re-opened lazily after the broker went away.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;

use super::{
    Buffer, BufferError, Delivery, DeliveryTag, Envelope, MessageState, QueueKey, QueueSettings,
    REQUEUE_DELAY,
};

const EXCHANGE: &str = "webhook_connect";
const DLX: &str = "webhook_connect.dlx";
const PREFETCH: u16 = 100;
/// Bound on connecting and on one broker round trip.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Dead letters read per queue when listing (the newest are at the end of the queue).
const DLQ_SCAN: usize = 10_000;

/// A message delivered by the broker, waiting for a fetch.
struct Waiting {
    consumer: u64,
    delivery_tag: u64,
    data: Vec<u8>,
    acker: Acker,
}

/// One queue being consumed.
struct Consuming {
    serial: u64,
    channel: Channel,
    task: tokio::task::AbortHandle,
}

/// One open connection and what hangs on it.
struct Link {
    connection: Connection,
    publish: Channel,
}

#[derive(Default)]
struct State {
    consuming: HashMap<QueueKey, Consuming>,
    waiting: HashMap<QueueKey, VecDeque<Waiting>>,
    /// Handed out by fetch, not yet acked: tag id -> (queue, acker).
    unacked: HashMap<String, (QueueKey, Acker)>,
    declared: HashSet<QueueKey>,
}

/// Queues in RabbitMQ, shared by every receiver process on the same broker.
pub struct RabbitBuffer {
    uri: AMQPUri,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    state: Arc<Mutex<State>>,
    settings: Mutex<HashMap<QueueKey, QueueSettings>>,
    notify: Arc<Notify>,
    serial: AtomicU64,
    expired: Mutex<HashMap<String, u64>>,
}

impl RabbitBuffer {
    /// A buffer on the broker at `url`; connects lazily (a malformed URL is an error now).
    pub fn new(url: &str) -> Result<Self, BufferError> {
        let uri = url
            .parse::<AMQPUri>()
            .map_err(|e| BufferError::Unavailable(format!("invalid AMQP URL: {e}")))?;
        Ok(Self {
            uri,
            link: tokio::sync::Mutex::new(None),
            state: Arc::new(Mutex::new(State::default())),
            settings: Mutex::new(HashMap::new()),
            notify: Arc::new(Notify::new()),
            serial: AtomicU64::new(0),
            expired: Mutex::new(HashMap::new()),
        })
    }

    /// The open connection, (re)connecting when there is none or it broke.
    async fn link(&self) -> Result<Arc<Link>, BufferError> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.connection.status().connected()
            && link.publish.status().connected()
        {
            return Ok(link.clone());
        }
        if let Some(old) = guard.take() {
            // Everything of the old connection is gone: its unacked messages return to their
            // queues on the broker.
            self.forget_all();
            let _ = old.connection.close(200, "reconnecting".into()).await;
        }
        let link = bounded(async {
            let connection =
                Connection::connect_uri(self.uri.clone(), ConnectionProperties::default()).await?;
            let publish = connection.create_channel().await?;
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publish
                .exchange_declare(
                    EXCHANGE.into(),
                    ExchangeKind::Topic,
                    durable_exchange(),
                    FieldTable::default(),
                )
                .await?;
            publish
                .exchange_declare(
                    DLX.into(),
                    ExchangeKind::Topic,
                    durable_exchange(),
                    FieldTable::default(),
                )
                .await?;
            Ok(Link {
                connection,
                publish,
            })
        })
        .await?;
        let link = Arc::new(link);
        *guard = Some(link.clone());
        Ok(link)
    }

    /// Drop all state tied to the current connection.
    fn forget_all(&self) {
        let mut st = lock(&self.state);
        for (_, c) in st.consuming.drain() {
            c.task.abort();
        }
        st.waiting.clear();
        st.unacked.clear();
        st.declared.clear();
    }

    /// A broken publish channel makes the next call reconnect.
    async fn reset_link(&self) {
        let mut guard = self.link.lock().await;
        if let Some(old) = guard.take() {
            self.forget_all();
            let _ = old.connection.close(200, "reset".into()).await;
        }
    }

    async fn declare(
        &self,
        link: &Link,
        key: &QueueKey,
        settings: QueueSettings,
    ) -> Result<(), BufferError> {
        if lock(&self.state).declared.contains(key) {
            return Ok(());
        }
        let queue = queue_name(key);
        let routing = routing_key(key);
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(DLX.into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(routing.as_str().into()),
        );
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(settings.ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        let mut dlq_args = FieldTable::default();
        dlq_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        let ch = &link.publish;
        let res = bounded(async {
            ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
                .await?;
            ch.queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                routing.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let dlq = format!("{queue}.dlq");
            ch.queue_declare(
                dlq.as_str().into(),
                QueueDeclareOptions::durable(),
                dlq_args,
            )
            .await?;
            ch.queue_bind(
                dlq.as_str().into(),
                DLX.into(),
                routing.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            Ok(())
        })
        .await;
        if res.is_err() {
            self.reset_link().await;
        }
        res?;
        lock(&self.state).declared.insert(key.clone());
        Ok(())
    }

    /// Messages of `key` ready on the broker, `None` when the queue does not exist: a passive
    /// declare on a throw-away channel (a missing queue closes the channel it is asked on).
    async fn passive_count(&self, link: &Link, key: &QueueKey) -> Result<Option<u64>, BufferError> {
        let name = queue_name(key);
        bounded(async {
            let ch = link.connection.create_channel().await?;
            let q = ch
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if ch.status().connected() {
                let _ = ch.close(200, "OK".into()).await;
            }
            match q {
                Ok(q) => Ok(Some(u64::from(q.message_count()))),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Messages of `key` ready on the broker (0 for a missing queue).
    async fn ready_count(&self, link: &Link, key: &QueueKey) -> Result<u64, BufferError> {
        Ok(self.passive_count(link, key).await?.unwrap_or(0))
    }

    /// Messages of `key` this process holds unacknowledged (waiting for a fetch or handed out).
    fn held(&self, key: &QueueKey) -> u64 {
        let st = lock(&self.state);
        let waiting = st.waiting.get(key).map_or(0, VecDeque::len);
        let out = st.unacked.values().filter(|(q, _)| q == key).count();
        (waiting + out) as u64
    }

    /// Start consuming `key` unless already.
    async fn consume(&self, link: &Link, key: &QueueKey) -> Result<(), BufferError> {
        if lock(&self.state).consuming.contains_key(key) {
            return Ok(());
        }
        let settings = lock(&self.settings).get(key).copied();
        if let Some(s) = settings {
            self.declare(link, key, s).await?;
        } else if self.passive_count(link, key).await?.is_none() {
            return Ok(());
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let name = queue_name(key);
        let (channel, consumer) = bounded(async {
            let ch = link.connection.create_channel().await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let consumer = ch
                .basic_consume(
                    name.as_str().into(),
                    format!("channel_sub:{}:{serial}", key.channel)
                        .as_str()
                        .into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok((ch, consumer))
        })
        .await?;
        let state = self.state.clone();
        let notify = self.notify.clone();
        let queue = key.clone();
        // Registered under the lock the task takes first: no delivery can arrive before the
        // registration is visible.
        let duplicate = {
            let mut st = lock(&self.state);
            if st.consuming.contains_key(key) {
                Some(channel)
            } else {
                let task = tokio::spawn(async move {
                    let mut consumer = consumer;
                    while let Some(item) = consumer.next().await {
                        let Ok(d) = item else { break };
                        let waiting = Waiting {
                            consumer: serial,
                            delivery_tag: d.delivery_tag,
                            data: d.data,
                            acker: d.acker,
                        };
                        let stale = {
                            let mut st = lock(&state);
                            if st.consuming.get(&queue).is_some_and(|c| c.serial == serial) {
                                st.waiting
                                    .entry(queue.clone())
                                    .or_default()
                                    .push_back(waiting);
                                None
                            } else {
                                Some(waiting.acker)
                            }
                        };
                        match stale {
                            None => notify.notify_waiters(),
                            Some(acker) => {
                                let _ = acker.reject(BasicRejectOptions { requeue: true }).await;
                            }
                        }
                    }
                });
                st.consuming.insert(
                    key.clone(),
                    Consuming {
                        serial,
                        channel,
                        task: task.abort_handle(),
                    },
                );
                None
            }
        };
        if let Some(channel) = duplicate {
            // A concurrent fetch started one first: give ours back.
            let _ = channel.close(200, "duplicate".into()).await;
        }
        Ok(())
    }

    /// Take what waits locally for `queues`, up to `max`, oldest first per queue.
    async fn take(&self, queues: &[QueueKey], max: usize, out: &mut Vec<Delivery>) {
        let now = SystemTime::now();
        let mut drop_list: Vec<(QueueKey, Acker, bool)> = Vec::new();
        {
            let mut st = lock(&self.state);
            for key in queues {
                let serial = st.consuming.get(key).map(|c| c.serial);
                while out.len() < max {
                    let Some(w) = st.waiting.get_mut(key).and_then(VecDeque::pop_front) else {
                        break;
                    };
                    if Some(w.consumer) != serial {
                        continue;
                    }
                    match serde_json::from_slice::<Envelope>(&w.data) {
                        Ok(envelope) if envelope.expired(now) => {
                            drop_list.push((key.clone(), w.acker, true));
                        }
                        Ok(envelope) => {
                            let id = format!("{}:{}", w.consumer, w.delivery_tag);
                            st.unacked.insert(id.clone(), (key.clone(), w.acker));
                            out.push(Delivery {
                                tag: DeliveryTag {
                                    queue: key.clone(),
                                    id,
                                },
                                envelope,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(queue = %queue_name(key), error = %e,
                                "unreadable message moved to the dead letters");
                            drop_list.push((key.clone(), w.acker, false));
                        }
                    }
                }
            }
        }
        for (key, acker, expired) in drop_list {
            // Dead-lettered as the broker does when the TTL passes in the queue.
            let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
            if expired {
                *lock(&self.expired)
                    .entry(key.channel.to_string())
                    .or_default() += 1;
            }
        }
    }
}

impl Drop for RabbitBuffer {
    fn drop(&mut self) {
        self.forget_all();
        if let Some(link) = self.link.get_mut().take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = link.connection.close(200, "OK".into()).await;
            });
        }
    }
}

#[async_trait]
impl Buffer for RabbitBuffer {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn ensure_queue(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
    ) -> Result<(), BufferError> {
        lock(&self.settings).insert(key.clone(), settings);
        let link = self.link().await?;
        self.declare(&link, key, settings).await
    }

    async fn push(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
        envelope: &Envelope,
    ) -> Result<(), BufferError> {
        lock(&self.settings).insert(key.clone(), settings);
        let link = self.link().await?;
        self.declare(&link, key, settings).await?;
        let count = self.ready_count(&link, key).await? + self.held(key);
        if count >= settings.max_queue_size {
            return Err(BufferError::QueueFull {
                channel: key.channel.to_string(),
                webhook_id: key.webhook_id.to_string(),
                limit: settings.max_queue_size,
            });
        }
        let body = serde_json::to_vec(envelope)
            .map_err(|e| BufferError::Unavailable(format!("cannot encode the message: {e}")))?;
        let mut headers = FieldTable::default();
        headers.insert(
            "channel".into(),
            AMQPValue::LongString(key.channel.as_ref().into()),
        );
        headers.insert(
            "webhook_id".into(),
            AMQPValue::LongString(key.webhook_id.as_ref().into()),
        );
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(envelope.message_id.as_str().into())
            .with_timestamp(secs)
            .with_headers(headers);
        let routing = routing_key(key);
        let res = bounded(async {
            let confirm = link
                .publish
                .basic_publish(
                    EXCHANGE.into(),
                    routing.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?
                .await?;
            Ok(confirm)
        })
        .await;
        match res {
            Ok(c) if c.is_ack() => Ok(()),
            Ok(_) => Err(BufferError::Unavailable(
                "rabbitmq: the broker refused the message".into(),
            )),
            Err(e) => {
                self.reset_link().await;
                Err(e)
            }
        }
    }

    async fn depth(&self, key: &QueueKey) -> Result<u64, BufferError> {
        let link = self.link().await?;
        Ok(self.ready_count(&link, key).await? + self.held(key))
    }

    async fn fetch(
        &self,
        queues: &[QueueKey],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BufferError> {
        let deadline = tokio::time::Instant::now() + wait;
        let link = self.link().await?;
        for key in queues {
            self.consume(&link, key).await?;
        }
        let mut out = Vec::new();
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.take(queues, max, &mut out).await;
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, tag: &DeliveryTag) -> Result<(), BufferError> {
        let Some((_, acker)) = lock(&self.state).unacked.remove(&tag.id) else {
            return Err(BufferError::UnknownDelivery);
        };
        match bounded(acker.ack(BasicAckOptions::default())).await? {
            true => Ok(()),
            false => Err(BufferError::UnknownDelivery),
        }
    }

    async fn nack(&self, tag: &DeliveryTag, retry: bool) -> Result<(), BufferError> {
        if retry {
            let Some((_, acker)) = lock(&self.state).unacked.get(&tag.id).cloned() else {
                return Err(BufferError::UnknownDelivery);
            };
            // Requeued after the delay (an immediate requeue would come straight back); it
            // counts as held until then.
            let state = self.state.clone();
            let id = tag.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(REQUEUE_DELAY).await;
                if lock(&state).unacked.remove(&id).is_some() {
                    let _ = acker.reject(BasicRejectOptions { requeue: true }).await;
                }
            });
            return Ok(());
        }
        let Some((_, acker)) = lock(&self.state).unacked.remove(&tag.id) else {
            return Err(BufferError::UnknownDelivery);
        };
        match bounded(acker.reject(BasicRejectOptions { requeue: false })).await? {
            true => Ok(()),
            false => Err(BufferError::UnknownDelivery),
        }
    }

    async fn release(&self, queues: &[QueueKey]) {
        let channels: Vec<Channel> = {
            let mut st = lock(&self.state);
            let mut channels = Vec::new();
            for key in queues {
                if let Some(c) = st.consuming.remove(key) {
                    c.task.abort();
                    channels.push(c.channel);
                }
                st.waiting.remove(key);
                st.unacked.retain(|_, (q, _)| q != key);
            }
            channels
        };
        // Closing the channel returns its unacknowledged messages to the queue.
        for ch in channels {
            let _ = tokio::time::timeout(OP_TIMEOUT, ch.close(200, "released".into())).await;
        }
    }

    async fn dead_letters(
        &self,
        queues: &[QueueKey],
        limit: usize,
    ) -> Result<Vec<Envelope>, BufferError> {
        let link = self.link().await?;
        let mut found: Vec<(u64, usize, Envelope)> = Vec::new();
        for key in queues {
            let dlq = format!("{}.dlq", queue_name(key));
            let got = bounded(async {
                let ch = link.connection.create_channel().await?;
                let mut got = Vec::new();
                while got.len() < DLQ_SCAN {
                    match ch
                        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                        .await
                    {
                        Ok(Some(m)) => {
                            got.push((death_time(&m.delivery.properties), m.delivery.data))
                        }
                        Ok(None) => break,
                        Err(e) if is_not_found(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
                // Closing without acking leaves them all in the queue, in order.
                if ch.status().connected() {
                    let _ = ch.close(200, "OK".into()).await;
                }
                Ok(got)
            })
            .await?;
            for (pos, (time, data)) in got.into_iter().enumerate() {
                if let Ok(mut env) = serde_json::from_slice::<Envelope>(&data) {
                    env.state = MessageState::DeadLettered;
                    found.push((time, pos, env));
                }
            }
        }
        // Newest first: by dead-lettering time, then by position in its queue.
        found.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        Ok(found.into_iter().take(limit).map(|(.., e)| e).collect())
    }

    fn expired_count(&self, channel: &str) -> u64 {
        lock(&self.expired).get(channel).copied().unwrap_or(0)
    }

    async fn health(&self) -> bool {
        self.link().await.is_ok()
    }
}

/// When the message was dead-lettered (the first `x-death` entry's `time`), in seconds.
fn death_time(props: &BasicProperties) -> u64 {
    let Some(headers) = props.headers().as_ref() else {
        return 0;
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return 0;
    };
    deaths
        .as_slice()
        .first()
        .and_then(|d| match d {
            AMQPValue::FieldTable(t) => match t.inner().get("time") {
                Some(AMQPValue::Timestamp(ts)) => Some(*ts),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or(0)
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// One channel or webhook id as a name component: `%`, `.`, `*` and `#` percent-escaped.
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '*' => out.push_str("%2A"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn routing_key(key: &QueueKey) -> String {
    format!("{}.{}", component(&key.channel), component(&key.webhook_id))
}

fn queue_name(key: &QueueKey) -> String {
    format!("{EXCHANGE}.{}", routing_key(key))
}

fn is_not_found(e: &lapin::Error) -> bool {
    e.to_string().contains("NOT_FOUND")
}

/// Run one broker exchange with a time bound; errors become `Unavailable`.
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BufferError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BufferError::Unavailable(format!("rabbitmq: {e}"))),
        Err(_) => Err(BufferError::Unavailable("rabbitmq: timed out".into())),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::conformance;

    #[test]
    fn names_escape_dots_so_they_cannot_collide() {
        let a = QueueKey::new("a.b", "c");
        let b = QueueKey::new("a", "b.c");
        assert_ne!(queue_name(&a), queue_name(&b));
        assert_eq!(queue_name(&a), "webhook_connect.a%2Eb.c");
        assert_eq!(routing_key(&b), "a.b%2Ec");
        assert_eq!(
            queue_name(&QueueKey::new("ch", "w%#*")),
            "webhook_connect.ch.w%25%23%2A"
        );
        assert_eq!(
            queue_name(&QueueKey::new("ch", "wh")),
            "webhook_connect.ch.wh"
        );
    }

    #[test]
    fn an_invalid_url_is_refused_at_once() {
        let err = RabbitBuffer::new("http://x").err();
        assert!(
            matches!(&err, Some(BufferError::Unavailable(m)) if m.contains("invalid AMQP URL")),
            "{err:?}"
        );
        assert!(RabbitBuffer::new("amqp://guest:guest@127.0.0.1:1/%2f").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_and_restart() {
        let mut rabbit = cwm_testkit::RabbitMq::start();
        let url = rabbit.url();
        let make = {
            let url = url.clone();
            move || Arc::new(RabbitBuffer::new(&url).unwrap()) as Arc<dyn Buffer>
        };
        conformance::run_all(&make).await;
        conformance::redelivered_after_drop(&make).await;

        // The layout as the Python gateway declares it.
        let b = RabbitBuffer::new(&url).unwrap();
        let key = QueueKey::new("ch.x", "wh");
        let s = conformance::settings();
        b.ensure_queue(&key, s).await.unwrap();
        b.push(&key, s, &conformance::envelope("ch.x", "wh", 1))
            .await
            .unwrap();
        let listed = rabbit.ctl(&["list_queues", "name", "messages", "durable"]);
        assert!(
            listed.contains("webhook_connect.ch%2Ex.wh\t1\ttrue"),
            "{listed}"
        );
        assert!(
            listed.contains("webhook_connect.ch%2Ex.wh.dlq\t0\ttrue"),
            "{listed}"
        );

        // A broker restart: unavailable meanwhile, then the buffer reconnects by itself.
        rabbit.stop();
        let down = b
            .push(&key, s, &conformance::envelope("ch.x", "wh", 2))
            .await;
        assert!(matches!(down, Err(BufferError::Unavailable(_))), "{down:?}");
        assert!(!b.health().await);
        rabbit.start_again();
        assert!(b.health().await);
        b.push(&key, s, &conformance::envelope("ch.x", "wh", 3))
            .await
            .unwrap();
        // The queue may still be recovering its messages right after the restart.
        let mut depth = 0;
        for _ in 0..50 {
            depth = b.depth(&key).await.unwrap();
            if depth == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(depth, 2, "the persistent message survived");
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(
                b.fetch(std::slice::from_ref(&key), 10, Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
            if got.len() == 2 {
                break;
            }
        }
        let seq: Vec<u64> = got.iter().map(|d| d.envelope.sequence).collect();
        assert_eq!(
            seq,
            vec![1, 3],
            "the message from before the restart comes first"
        );
    }
}
