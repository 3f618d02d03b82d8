//! The Redis buffer: streams, one consumer group, XAUTOCLAIM redelivery.
//!
//! Keys as the Python gateway lays them out (prefix `webhook_connect`):
//!
//! - `webhook_connect:stream:{channel}:{webhook_id}`: a stream per queue, entries with the
//!   fields `message_id`, `data` (the JSON envelope) and `expires_at`; consumer group
//!   `webhook_connect_consumers`, created from id `0`.
//! - `webhook_connect:meta:{channel}:{webhook_id}`: hash `{ttl_seconds, created_at}`.
//! - `webhook_connect:dlq:{channel}`: sorted set of dead letters (score = failure time), members
//!   `{stream_id, data: {message_id, data, expires_at}, error, failed_at}`.
//!
//! Differences from the Python gateway: the queue limit is checked before the XADD (no silent
//! trimming of undelivered messages); acknowledged, dead-lettered and expired entries are
//! deleted from the stream; nack with retry and [`Buffer::release`] make entries deliverable
//! again; entries left pending longer than the queue's `ack_timeout` (a consumer died) are
//! claimed with XAUTOCLAIM.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};

use super::{
    Buffer, BufferError, Delivery, DeliveryTag, Envelope, MessageState, QueueKey, QueueSettings,
    REQUEUE_DELAY,
};
use crate::protocol;

const PREFIX: &str = "webhook_connect";
const GROUP: &str = "webhook_connect_consumers";
/// Longest a blocking read waits, so a fetch notices retried entries and new queues soon.
const MAX_BLOCK: Duration = Duration::from_secs(1);
/// Bound on one round trip (a down broker answers `Unavailable`, not a hang).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often one queue is scanned for entries whose consumer died.
const AUTOCLAIM_EVERY: Duration = Duration::from_secs(1);
/// Used for XAUTOCLAIM when this process never saw the queue's settings.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// XLEN, refuse when full, create the group with a new stream, XADD, write the meta hash.
/// KEYS: stream, meta. ARGV: limit, message_id, data, expires_at, ttl_seconds, created_at.
const PUSH_SCRIPT: &str = r"
local len = redis.call('XLEN', KEYS[1])
if len >= tonumber(ARGV[1]) then return -1 end
if len == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'webhook_connect_consumers', '0', 'MKSTREAM')
end
redis.call('XADD', KEYS[1], '*', 'message_id', ARGV[2], 'data', ARGV[3], 'expires_at', ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'ttl_seconds', ARGV[5], 'created_at', ARGV[6])
end
return len + 1
";

/// XACK then XDEL, only if the entry was pending. KEYS: stream. ARGV: group, id.
const ACK_SCRIPT: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// Copy a pending entry to the channel's dead letters, XACK and XDEL it.
/// KEYS: stream, dlq. ARGV: group, id, error, failed_at (ISO), score (unix seconds).
const DEAD_LETTER_SCRIPT: &str = r"
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then return 0 end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local f = e[1][2]
local t = {}
for i = 1, #f, 2 do t[f[i]] = f[i + 1] end
local member = cjson.encode({stream_id = ARGV[2], data = {message_id = t['message_id'] or '',
  data = t['data'] or '', expires_at = t['expires_at'] or ''}, error = ARGV[3], failed_at = ARGV[4]})
redis.call('ZADD', KEYS[2], ARGV[5], member)
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// An entry this process made deliverable again (nack with retry, release): still in the
/// group's pending list under this consumer, handed out again once `ready_at` has passed.
struct Retry {
    tag: DeliveryTag,
    ready_at: Instant,
    queued_at: Instant,
}

/// Queues in Redis streams, shared by every receiver process on the same Redis.
pub struct RedisBuffer {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    /// Connections for blocking reads, one per concurrent fetch.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    consumer: String,
    settings: Mutex<HashMap<QueueKey, QueueSettings>>,
    retries: Mutex<VecDeque<Retry>>,
    last_autoclaim: Mutex<HashMap<QueueKey, Instant>>,
    expired: Mutex<HashMap<String, u64>>,
}

impl RedisBuffer {
    /// A buffer on the broker at `url`; connects lazily (a malformed URL is an error now).
    pub fn new(url: &str) -> Result<Self, BufferError> {
        let client = redis::Client::open(url)
            .map_err(|e| BufferError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            client,
            manager: tokio::sync::OnceCell::new(),
            blocking: Mutex::new(Vec::new()),
            consumer: format!(
                "consumer_{:016x}_{}",
                rand::random::<u64>(),
                unix_seconds(SystemTime::now()) as u64
            ),
            settings: Mutex::new(HashMap::new()),
            retries: Mutex::new(VecDeque::new()),
            last_autoclaim: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashMap::new()),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, BufferError> {
        let client = self.client.clone();
        let manager = self
            .manager
            .get_or_try_init(|| async move {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500))
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(OP_TIMEOUT));
                tokio::time::timeout(
                    OP_TIMEOUT,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| unavailable("connect timed out"))?
                .map_err(redis_err)
            })
            .await?;
        Ok(manager.clone())
    }

    /// Run one command (or script, or pipeline) on the shared connection.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BufferError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|_| unavailable("command timed out"))?
            .map_err(redis_err)
    }

    async fn blocking_conn(&self) -> Result<MultiplexedConnection, BufferError> {
        if let Some(c) = lock(&self.blocking).pop() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(MAX_BLOCK + OP_TIMEOUT));
        tokio::time::timeout(
            OP_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| unavailable("connect timed out"))?
        .map_err(redis_err)
    }

    async fn create_group(&self, key: &QueueKey) -> Result<(), BufferError> {
        let res = self
            .run::<Value>(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream_key(key))
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match res {
            Err(BufferError::Unavailable(e)) if e.contains("BUSYGROUP") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn ack_timeout(&self, key: &QueueKey) -> Duration {
        lock(&self.settings)
            .get(key)
            .map_or(DEFAULT_ACK_TIMEOUT, |s| s.ack_timeout)
    }

    /// Turn stream entries into deliveries; expired and unreadable ones are removed.
    async fn deliveries(
        &self,
        key: &QueueKey,
        entries: Vec<StreamId>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BufferError> {
        let now = SystemTime::now();
        for entry in entries {
            let tag = DeliveryTag {
                queue: key.clone(),
                id: entry.id.clone(),
            };
            let data: Option<String> = entry.get("data");
            match data.and_then(|d| serde_json::from_str::<Envelope>(&d).ok()) {
                Some(envelope) if envelope.expired(now) => {
                    self.remove(&tag).await?;
                    *lock(&self.expired)
                        .entry(key.channel.to_string())
                        .or_default() += 1;
                }
                Some(envelope) => out.push(Delivery { tag, envelope }),
                None => {
                    tracing::warn!(stream = %stream_key(key), id = %entry.id,
                        "unreadable entry moved to the dead letters");
                    self.dead_letter(&tag, "unreadable entry").await?;
                }
            }
        }
        Ok(())
    }

    /// XACK + XDEL; whether the entry was pending.
    async fn remove(&self, tag: &DeliveryTag) -> Result<bool, BufferError> {
        let n: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(ACK_SCRIPT)
                    .arg(1)
                    .arg(stream_key(&tag.queue))
                    .arg(GROUP)
                    .arg(&tag.id),
            )
            .await?;
        Ok(n == 1)
    }

    async fn dead_letter(&self, tag: &DeliveryTag, error: &str) -> Result<bool, BufferError> {
        let now = SystemTime::now();
        let n: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(DEAD_LETTER_SCRIPT)
                    .arg(2)
                    .arg(stream_key(&tag.queue))
                    .arg(dlq_key(&tag.queue.channel))
                    .arg(GROUP)
                    .arg(&tag.id)
                    .arg(error)
                    .arg(protocol::timestamp(now))
                    .arg(unix_seconds(now)),
            )
            .await?;
        Ok(n == 1)
    }

    /// Retried entries of `queues` whose delay passed, claimed back (unless another consumer
    /// took them meanwhile).
    async fn take_retries(
        &self,
        queues: &[QueueKey],
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BufferError> {
        let now = Instant::now();
        let due: Vec<Retry> = {
            let mut retries = lock(&self.retries);
            let mut due = Vec::new();
            let mut keep = VecDeque::with_capacity(retries.len());
            for r in retries.drain(..) {
                if due.len() + out.len() < max && r.ready_at <= now && queues.contains(&r.tag.queue)
                {
                    due.push(r);
                } else {
                    keep.push_back(r);
                }
            }
            *retries = keep;
            due
        };
        for r in due {
            // Idle at least since we gave it back: another consumer that claimed it since then
            // has reset its idle time, and keeps it.
            let min_idle = now.saturating_duration_since(r.queued_at).as_millis() as u64;
            let claimed: StreamClaimReply = self
                .run(
                    redis::cmd("XCLAIM")
                        .arg(stream_key(&r.tag.queue))
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(min_idle)
                        .arg(&r.tag.id),
                )
                .await?;
            self.deliveries(&r.tag.queue, claimed.ids, out).await?;
        }
        Ok(())
    }

    /// Entries pending longer than the queue's ack timeout (their consumer died), claimed.
    async fn autoclaim(
        &self,
        queues: &[QueueKey],
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BufferError> {
        for key in queues {
            if out.len() >= max {
                return Ok(());
            }
            {
                let mut last = lock(&self.last_autoclaim);
                let now = Instant::now();
                if last
                    .get(key)
                    .is_some_and(|t| now.saturating_duration_since(*t) < AUTOCLAIM_EVERY)
                {
                    continue;
                }
                last.insert(key.clone(), now);
            }
            let reply: Result<StreamAutoClaimReply, _> = self
                .run(
                    redis::cmd("XAUTOCLAIM")
                        .arg(stream_key(key))
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(self.ack_timeout(key).as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(max - out.len()),
                )
                .await;
            match reply {
                Ok(reply) => self.deliveries(key, reply.claimed, out).await?,
                Err(BufferError::Unavailable(e)) if e.contains("NOGROUP") => {
                    self.create_group(key).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// New entries (`>`), waiting up to `block`.
    async fn read_new(
        &self,
        queues: &[QueueKey],
        max: usize,
        block: Duration,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BufferError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for key in queues {
            cmd.arg(stream_key(key));
        }
        for _ in queues {
            cmd.arg(">");
        }
        let mut conn = self.blocking_conn().await?;
        let reply = tokio::time::timeout(
            block + OP_TIMEOUT,
            cmd.query_async::<Option<StreamReadReply>>(&mut conn),
        )
        .await
        .map_err(|_| unavailable("read timed out"))?;
        let reply = match reply {
            Ok(r) => {
                lock(&self.blocking).push(conn);
                r
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                lock(&self.blocking).push(conn);
                for key in queues {
                    self.create_group(key).await?;
                }
                return Ok(());
            }
            Err(e) => return Err(redis_err(e)),
        };
        let by_name: HashMap<String, &QueueKey> =
            queues.iter().map(|k| (stream_key(k), k)).collect();
        let mut got = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if let Some(key) = by_name.get(&stream.key) {
                self.deliveries(key, stream.ids, &mut got).await?;
            }
        }
        // COUNT applies per stream: what exceeds `max` waits in the retry list.
        let room = max.saturating_sub(out.len());
        if got.len() > room {
            let now = Instant::now();
            let mut retries = lock(&self.retries);
            for d in got.drain(room..) {
                retries.push_back(Retry {
                    tag: d.tag,
                    ready_at: now,
                    queued_at: now,
                });
            }
        }
        out.extend(got);
        Ok(())
    }
}

#[async_trait]
impl Buffer for RedisBuffer {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ensure_queue(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
    ) -> Result<(), BufferError> {
        lock(&self.settings).insert(key.clone(), settings);
        self.create_group(key).await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(meta_key(key))
            .arg("ttl_seconds")
            .arg(settings.ttl.as_secs())
            .ignore()
            .cmd("HSETNX")
            .arg(meta_key(key))
            .arg("created_at")
            .arg(protocol::now())
            .ignore();
        let mut conn = self.conn().await?;
        tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| unavailable("command timed out"))?
            .map_err(redis_err)
    }

    async fn push(
        &self,
        key: &QueueKey,
        settings: QueueSettings,
        envelope: &Envelope,
    ) -> Result<(), BufferError> {
        lock(&self.settings).insert(key.clone(), settings);
        let data = serde_json::to_string(envelope)
            .map_err(|e| unavailable(&format!("cannot encode the message: {e}")))?;
        let n: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(PUSH_SCRIPT)
                    .arg(2)
                    .arg(stream_key(key))
                    .arg(meta_key(key))
                    .arg(settings.max_queue_size)
                    .arg(&envelope.message_id)
                    .arg(data)
                    .arg(envelope.expires_at.as_deref().unwrap_or(""))
                    .arg(settings.ttl.as_secs())
                    .arg(protocol::now()),
            )
            .await?;
        if n < 0 {
            return Err(BufferError::QueueFull {
                channel: key.channel.to_string(),
                webhook_id: key.webhook_id.to_string(),
                limit: settings.max_queue_size,
            });
        }
        Ok(())
    }

    async fn depth(&self, key: &QueueKey) -> Result<u64, BufferError> {
        self.run(redis::cmd("XLEN").arg(stream_key(key))).await
    }

    async fn fetch(
        &self,
        queues: &[QueueKey],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BufferError> {
        let mut out = Vec::new();
        if queues.is_empty() || max == 0 {
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(MAX_BLOCK)).await;
            }
            return Ok(out);
        }
        let deadline = Instant::now() + wait;
        loop {
            self.take_retries(queues, max, &mut out).await?;
            if out.len() < max {
                self.autoclaim(queues, max, &mut out).await?;
            }
            if out.len() < max {
                let block = if out.is_empty() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let next_retry = lock(&self.retries)
                        .iter()
                        .filter(|r| queues.contains(&r.tag.queue))
                        .map(|r| r.ready_at.saturating_duration_since(Instant::now()))
                        .min();
                    let mut b = left.min(MAX_BLOCK);
                    if let Some(n) = next_retry {
                        b = b.min(n.max(Duration::from_millis(1)));
                    }
                    b
                } else {
                    Duration::ZERO
                };
                self.read_new(queues, max - out.len(), block, &mut out)
                    .await?;
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, tag: &DeliveryTag) -> Result<(), BufferError> {
        lock(&self.retries).retain(|r| r.tag != *tag);
        if self.remove(tag).await? {
            Ok(())
        } else {
            Err(BufferError::UnknownDelivery)
        }
    }

    async fn nack(&self, tag: &DeliveryTag, retry: bool) -> Result<(), BufferError> {
        lock(&self.retries).retain(|r| r.tag != *tag);
        if retry {
            let now = Instant::now();
            lock(&self.retries).push_back(Retry {
                tag: tag.clone(),
                ready_at: now + REQUEUE_DELAY,
                queued_at: now,
            });
            return Ok(());
        }
        if self.dead_letter(tag, "rejected by the connector").await? {
            Ok(())
        } else {
            Err(BufferError::UnknownDelivery)
        }
    }

    async fn release(&self, queues: &[QueueKey]) {
        for key in queues {
            // This consumer's pending entries of the queue (COUNT bounds one call; the rest
            // are claimed after the ack timeout).
            let pending: Result<Vec<(String, String, u64, u64)>, _> = self
                .run(
                    redis::cmd("XPENDING")
                        .arg(stream_key(key))
                        .arg(GROUP)
                        .arg("-")
                        .arg("+")
                        .arg(10_000)
                        .arg(&self.consumer),
                )
                .await;
            let pending = match pending {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(stream = %stream_key(key), error = %e,
                        "cannot release pending entries; they are redelivered after the ack timeout");
                    continue;
                }
            };
            let now = Instant::now();
            let mut retries = lock(&self.retries);
            let known: HashSet<String> = retries
                .iter()
                .filter(|r| r.tag.queue == *key)
                .map(|r| r.tag.id.clone())
                .collect();
            for (id, ..) in pending {
                if !known.contains(&id) {
                    retries.push_back(Retry {
                        tag: DeliveryTag {
                            queue: key.clone(),
                            id,
                        },
                        ready_at: now,
                        queued_at: now,
                    });
                }
            }
            let mut v: Vec<Retry> = retries.drain(..).collect();
            v.sort_by_key(|r| stream_id_order(&r.tag.id));
            retries.extend(v);
        }
    }

    async fn dead_letters(
        &self,
        queues: &[QueueKey],
        limit: usize,
    ) -> Result<Vec<Envelope>, BufferError> {
        const PAGE: isize = 500;
        let mut by_channel: HashMap<&str, HashSet<&str>> = HashMap::new();
        for q in queues {
            by_channel
                .entry(&q.channel)
                .or_default()
                .insert(&q.webhook_id);
        }
        let mut found: Vec<(f64, Envelope)> = Vec::new();
        for (channel, ids) in by_channel {
            let mut start: isize = 0;
            let mut taken = 0usize;
            loop {
                let page: Vec<(String, f64)> = self
                    .run(
                        redis::cmd("ZREVRANGE")
                            .arg(dlq_key(channel))
                            .arg(start)
                            .arg(start + PAGE - 1)
                            .arg("WITHSCORES"),
                    )
                    .await?;
                let n = page.len();
                for (member, score) in page {
                    let Some(mut env) = dead_letter_envelope(&member) else {
                        continue;
                    };
                    if ids.contains(env.webhook_id.as_str()) {
                        env.state = MessageState::DeadLettered;
                        found.push((score, env));
                        taken += 1;
                    }
                }
                if (n as isize) < PAGE || taken >= limit {
                    break;
                }
                start += PAGE;
            }
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(found.into_iter().take(limit).map(|(_, e)| e).collect())
    }

    fn expired_count(&self, channel: &str) -> u64 {
        lock(&self.expired).get(channel).copied().unwrap_or(0)
    }

    async fn health(&self) -> bool {
        self.run::<String>(&redis::cmd("PING"))
            .await
            .is_ok_and(|r| r == "PONG")
    }
}

/// The envelope inside a dead-letter member.
fn dead_letter_envelope(member: &str) -> Option<Envelope> {
    let v: serde_json::Value = serde_json::from_str(member).ok()?;
    let data = v.get("data")?.get("data")?.as_str()?;
    serde_json::from_str(data).ok()
}

fn stream_key(key: &QueueKey) -> String {
    format!("{PREFIX}:stream:{}:{}", key.channel, key.webhook_id)
}

fn meta_key(key: &QueueKey) -> String {
    format!("{PREFIX}:meta:{}:{}", key.channel, key.webhook_id)
}

fn dlq_key(channel: &str) -> String {
    format!("{PREFIX}:dlq:{channel}")
}

/// A stream id (`ms-seq`) as a sortable pair.
fn stream_id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn unavailable(what: &str) -> BufferError {
    BufferError::Unavailable(format!("redis: {what}"))
}

fn redis_err(e: redis::RedisError) -> BufferError {
    BufferError::Unavailable(format!("redis: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_invalid_url_is_refused_at_once() {
        let err = RedisBuffer::new("http://nope").err();
        assert!(
            matches!(&err, Some(BufferError::Unavailable(m)) if m.contains("invalid Redis URL")),
            "{err:?}"
        );
        assert!(RedisBuffer::new("redis://127.0.0.1:1").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let redis = cwm_testkit::Redis::start();
        let url = redis.url();
        let make = move || Arc::new(RedisBuffer::new(&url).unwrap()) as Arc<dyn Buffer>;
        super::super::conformance::run_all(&make).await;
        super::super::conformance::redelivered_after_ack_timeout(&make).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn layout_matches_the_python_gateway() {
        let redis = cwm_testkit::Redis::start();
        let b = RedisBuffer::new(&redis.url()).unwrap();
        let key = QueueKey::new("ch", "wh");
        let s = super::super::conformance::settings();
        b.ensure_queue(&key, s).await.unwrap();
        b.push(&key, s, &super::super::conformance::envelope("ch", "wh", 1))
            .await
            .unwrap();
        assert_eq!(
            redis
                .command(&["XLEN", "webhook_connect:stream:ch:wh"])
                .unwrap(),
            ":1"
        );
        assert_eq!(
            redis
                .command(&["HEXISTS", "webhook_connect:meta:ch:wh", "ttl_seconds"])
                .unwrap(),
            ":1"
        );
        let d = b
            .fetch(std::slice::from_ref(&key), 10, Duration::ZERO)
            .await
            .unwrap();
        b.nack(&d[0].tag, false).await.unwrap();
        assert_eq!(
            redis.command(&["ZCARD", "webhook_connect:dlq:ch"]).unwrap(),
            ":1"
        );
        assert_eq!(
            redis
                .command(&["XLEN", "webhook_connect:stream:ch:wh"])
                .unwrap(),
            ":0"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_answers_unavailable_promptly_and_recovers() {
        let mut redis = cwm_testkit::Redis::start();
        let b = RedisBuffer::new(&redis.url()).unwrap();
        let key = QueueKey::new("ch", "wh");
        let s = super::super::conformance::settings();
        let env = super::super::conformance::envelope("ch", "wh", 1);
        b.push(&key, s, &env).await.unwrap();
        assert!(b.health().await);
        redis.stop();
        let res = tokio::time::timeout(Duration::from_secs(30), b.push(&key, s, &env))
            .await
            .expect("push must not hang while Redis is down");
        assert!(matches!(res, Err(BufferError::Unavailable(_))), "{res:?}");
        assert!(!b.health().await);
        redis.start_again();
        let mut ok = false;
        for _ in 0..50 {
            if b.push(&key, s, &env).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ok, "push works again once Redis is back");
        assert!(b.health().await);
        assert_eq!(b.depth(&key).await.unwrap(), 2);
    }
}
