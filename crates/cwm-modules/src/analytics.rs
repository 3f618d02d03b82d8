//! Analytics logging: one row per accepted webhook request in the `webhook_logs` table of a
//! ClickHouse connection, written in batches off the request path.
//!
//! # Turning it on
//!
//! Only when the operator names a connection ([`Analytics::start`]; the receiver's
//! `ANALYTICS_CONNECTION`). The Python gateway turned it on whenever any `clickhouse`
//! connection existed and used the first one; here a `clickhouse` connection used by webhooks
//! starts no logging of its own. The named connection is followed live: while it is missing or
//! not of type `clickhouse`, logging is off (with a warning each time it turns off) and turns on
//! by itself once such a connection appears (a config that arrives later through etcd).
//!
//! # Rows
//!
//! One row per request answered 200: `id` a random UUID, `webhook_id` the URL id (`ns/id` on
//! the namespaced route), `timestamp` when the request was accepted (UTC), `payload` the JSON
//! text of the body, `headers` the request headers as a JSON object. Payload and headers are
//! always cleaned with the default credential rules in mask mode, whatever the webhook's
//! `credential_cleanup` says; the cleaning is applied to what the webhook's own cleanup left,
//! so a webhook with extra fields or `remove` mode logs those fields masked or absent. A `blob`
//! body is stored base64-encoded.
//!
//! # Cost and losses
//!
//! The request path only hands the event it already has to a bounded queue
//! ([`Analytics::record`]: one atomic load when logging is off, a non-blocking send when on).
//! Cleaning and serialization happen in one background task, which sends a batch with one
//! `INSERT ... FORMAT JSONEachRow` when it holds 1000 rows or 2 s after its first row.
//! Nothing is retried: a row that finds the queue full is dropped, and a batch whose INSERT
//! fails (ClickHouse down, the connection removed) is logged and dropped; both are counted
//! ([`Analytics::counters`]). [`Analytics::shutdown`] writes what is queued.
//!
//! Before its first INSERT through a client (again after the connection's config changed), the
//! task creates both of the Python gateway's tables if they do not exist, in the connection's
//! database: `webhook_logs` and `webhook_stats`. The receiver does not fill `webhook_stats`
//! (several replicas would each add rows): [`refresh_stats`] does, run by one process (`cwmctl
//! analytics-stats`), as the Python gateway's separate analytics processor did.
#![cfg_attr(
    not(feature = "clickhouse"),
    allow(
        dead_code,
        reason = "without ClickHouse support only the handle's API remains"
    )
)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cleanup::CredentialCleanup;
use crate::context::ModuleContext;
use crate::payload::{JsonLimits, JsonPayload, JsonRef};
use crate::sink::{Event, Payload};

/// The table rows go to.
pub const LOGS_TABLE: &str = "webhook_logs";
/// The statistics table created next to it, filled by [`refresh_stats`].
pub const STATS_TABLE: &str = "webhook_stats";

/// Why analytics logging cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    /// The connection name is empty.
    #[error("the analytics connection name is empty")]
    EmptyName,
    /// This build has no ClickHouse client (the `clickhouse` feature is off).
    #[error("this build has no ClickHouse support")]
    Unsupported,
    /// The statistics could not be written (the connection is missing, not `clickhouse`, or
    /// ClickHouse refused or failed).
    #[error("webhook_stats: {0}")]
    Stats(String),
}

/// Fill `webhook_stats` once from `webhook_logs` through the `clickhouse` connection named
/// `connection` of `modules`' registry, as the Python gateway's analytics processor did every
/// 300 s: one row per webhook id with its total and its counts over the last 1, 5, 15 and 30
/// minutes, hour, day, 7 and 30 days, every row with the same timestamp. Both tables are created
/// when missing. One `INSERT ... SELECT`: ClickHouse does the counting, nothing is read back.
pub async fn refresh_stats(
    modules: &ModuleContext,
    connection: &str,
) -> Result<(), AnalyticsError> {
    let connection = connection.trim();
    if connection.is_empty() {
        return Err(AnalyticsError::EmptyName);
    }
    #[cfg(feature = "clickhouse")]
    {
        crate::sinks::clickhouse::analytics::refresh_stats(modules, connection)
            .await
            .map_err(AnalyticsError::Stats)
    }
    #[cfg(not(feature = "clickhouse"))]
    {
        let _ = modules;
        Err(AnalyticsError::Unsupported)
    }
}

/// How rows are batched and how much may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// A batch is sent once it holds this many rows.
    pub batch_rows: usize,
    /// ... or this long after its first row, whichever comes first.
    pub flush_interval: Duration,
    /// Events waiting for the task at most; beyond that rows are dropped.
    pub queue_rows: usize,
    /// Approximate bytes of waiting events at most (a single event is always taken).
    pub queue_bytes: usize,
    /// How often the named connection is looked at, to turn logging on or off.
    pub check_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_rows: 1000,
            flush_interval: Duration::from_secs(2),
            queue_rows: 10_000,
            queue_bytes: 64 * 1024 * 1024,
            check_interval: Duration::from_secs(1),
        }
    }
}

/// What analytics logging has done so far, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Whether rows are being logged now (the named connection is a `clickhouse` one).
    pub enabled: bool,
    /// Rows ClickHouse accepted.
    pub written: u64,
    /// Rows given up: the queue was full, their batch failed, or they could not be encoded.
    pub dropped: u64,
    /// INSERTs (or table creations) that failed; their rows count as dropped.
    pub failed_flushes: u64,
}

/// Where batches go: the named ClickHouse connection in a running process, a fake in tests.
#[async_trait]
pub(crate) trait Destination: Send + Sync + 'static {
    /// Whether rows can be written now: a description of the destination, or why not.
    fn check(&self) -> Result<String, String>;
    /// One newline-terminated row for a cleaned event.
    fn encode(&self, event: &Event) -> Result<Bytes, String>;
    /// Write `rows` rows in one request.
    async fn write(&self, body: Bytes, rows: usize) -> Result<(), String>;
}

/// The analytics handle: cheap to clone, clones share the queue and task.
#[derive(Clone)]
pub struct Analytics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("connection", &self.shared.connection)
            .finish_non_exhaustive()
    }
}

struct Shared {
    connection: String,
    active: AtomicBool,
    tx: mpsc::Sender<Queued>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    written: AtomicU64,
    dropped: AtomicU64,
    failed_flushes: AtomicU64,
    /// A "queue full" warning was logged since the last successful flush.
    full_warned: AtomicBool,
    stop: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// An event waiting for the task, with the size it was counted at.
struct Queued {
    event: Event,
    size: usize,
}

/// Counted for each queued event on top of its body (headers are at most 8 KiB).
const EVENT_OVERHEAD: usize = 1024;
/// Counted for a body held as a parsed document (its text is gone).
const VALUE_ESTIMATE: usize = 4096;

impl Analytics {
    /// Log to the `clickhouse` connection named `connection` of `modules`' registry. Starts the
    /// background task (call inside a Tokio runtime). The connection need not exist yet: a
    /// warning says logging is off until it does.
    pub fn start(modules: &ModuleContext, connection: &str) -> Result<Self, AnalyticsError> {
        let connection = connection.trim();
        if connection.is_empty() {
            return Err(AnalyticsError::EmptyName);
        }
        #[cfg(feature = "clickhouse")]
        {
            let dest = crate::sinks::clickhouse::analytics::destination(modules, connection);
            Ok(Self::with_destination(
                connection,
                dest,
                Settings::default(),
            ))
        }
        #[cfg(not(feature = "clickhouse"))]
        {
            let _ = modules;
            Err(AnalyticsError::Unsupported)
        }
    }

    /// Log to `dest` with `settings`.
    pub(crate) fn with_destination(
        connection: &str,
        dest: Arc<dyn Destination>,
        settings: Settings,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue_rows.max(1));
        let shared = Arc::new(Shared {
            connection: connection.to_owned(),
            active: AtomicBool::new(false),
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: settings.queue_bytes,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed_flushes: AtomicU64::new(0),
            full_warned: AtomicBool::new(false),
            stop: Notify::new(),
            task: Mutex::new(None),
        });
        update_state(&shared, &*dest, true);
        let task = tokio::spawn(run(shared.clone(), dest, rx, settings));
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Self { shared }
    }

    /// Log `event` (a request answered 200). Never waits: when logging is off this is one
    /// atomic load; when the queue is full the row is dropped and counted.
    pub fn record(&self, event: Event) {
        let s = &*self.shared;
        if !s.active.load(Ordering::Relaxed) {
            return;
        }
        let body = match &event.payload {
            Payload::Blob(b) => b.len(),
            Payload::Json(j) => match j.view() {
                JsonRef::Text(t) => t.len(),
                JsonRef::Value(_) => VALUE_ESTIMATE,
            },
        };
        let size = body + EVENT_OVERHEAD;
        let before = s.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before > 0 && before + size > s.max_bytes {
            s.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            s.drop_row();
            return;
        }
        if s.tx.try_send(Queued { event, size }).is_err() {
            s.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            s.drop_row();
        }
    }

    /// What logging has done so far.
    pub fn counters(&self) -> Counters {
        let s = &*self.shared;
        Counters {
            enabled: s.active.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            failed_flushes: s.failed_flushes.load(Ordering::Relaxed),
        }
    }

    /// Stop logging, write what is queued and stop the task, waiting at most `timeout`. True
    /// once everything queued was handled (written or dropped), false when time ran out. Call
    /// before the connection clients are closed; later calls return at once.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.shared.active.store(false, Ordering::Relaxed);
        let task = self
            .shared
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else {
            return true;
        };
        self.shared.stop.notify_one();
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                tracing::warn!(
                    connection = %self.shared.connection,
                    "analytics rows still queued at the shutdown deadline are dropped"
                );
                false
            }
        }
    }
}

impl Shared {
    fn drop_row(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.full_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                connection = %self.connection,
                "analytics queue is full; rows are dropped until it drains"
            );
        }
    }
}

/// Look at the destination; log when logging turns on or off (and at `start`).
fn update_state(shared: &Shared, dest: &dyn Destination, start: bool) {
    match dest.check() {
        Ok(what) => {
            if !shared.active.swap(true, Ordering::Relaxed) {
                tracing::info!(connection = %shared.connection, destination = %what, "analytics logging on");
            }
        }
        Err(why) => {
            if shared.active.swap(false, Ordering::Relaxed) || start {
                tracing::warn!(connection = %shared.connection, reason = %why, "analytics logging off until the connection is a clickhouse connection");
            }
        }
    }
}

/// The rows gathered for the next INSERT.
#[derive(Default)]
struct Batch {
    body: BytesMut,
    rows: usize,
    since: Option<Instant>,
}

/// The background task: take events, clean and encode them, send batches; on stop, drain.
async fn run(
    shared: Arc<Shared>,
    dest: Arc<dyn Destination>,
    mut rx: mpsc::Receiver<Queued>,
    settings: Settings,
) {
    let cleanup = CredentialCleanup::default();
    let mut batch = Batch::default();
    let mut check = tokio::time::interval_at(
        Instant::now() + settings.check_interval,
        settings.check_interval,
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = batch.since.map(|t| t + settings.flush_interval);
        tokio::select! {
            biased;
            () = shared.stop.notified() => break,
            () = sleep_until(deadline), if deadline.is_some() => {
                flush(&shared, &*dest, &mut batch).await;
            }
            queued = rx.recv() => {
                let Some(queued) = queued else { break };
                take(&shared, &*dest, &cleanup, &mut batch, queued);
                if batch.rows >= settings.batch_rows {
                    flush(&shared, &*dest, &mut batch).await;
                }
            }
            _ = check.tick() => update_state(&shared, &*dest, false),
        }
    }
    shared.active.store(false, Ordering::Relaxed);
    rx.close();
    while let Some(queued) = rx.recv().await {
        take(&shared, &*dest, &cleanup, &mut batch, queued);
        if batch.rows >= settings.batch_rows {
            flush(&shared, &*dest, &mut batch).await;
        }
    }
    flush(&shared, &*dest, &mut batch).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// Clean and encode one event into the batch.
fn take(
    shared: &Shared,
    dest: &dyn Destination,
    cleanup: &CredentialCleanup,
    batch: &mut Batch,
    queued: Queued,
) {
    shared
        .queued_bytes
        .fetch_sub(queued.size, Ordering::Relaxed);
    let mut event = queued.event;
    clean(&mut event, cleanup);
    match dest.encode(&event) {
        Ok(row) => {
            if batch.rows == 0 {
                batch.since = Some(Instant::now());
            }
            batch.body.extend_from_slice(&row);
            batch.rows += 1;
        }
        Err(e) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(webhook = %event.webhook_id, error = %e, "analytics row not encoded");
        }
    }
}

/// Send the batch (if any) and count the outcome; a failed batch is dropped.
async fn flush(shared: &Shared, dest: &dyn Destination, batch: &mut Batch) {
    if batch.rows == 0 {
        return;
    }
    let rows = std::mem::take(&mut batch.rows);
    batch.since = None;
    let body = batch.body.split().freeze();
    match dest.write(body, rows).await {
        Ok(()) => {
            shared.written.fetch_add(rows as u64, Ordering::Relaxed);
            shared.full_warned.store(false, Ordering::Relaxed);
        }
        Err(e) => {
            shared.failed_flushes.fetch_add(1, Ordering::Relaxed);
            shared.dropped.fetch_add(rows as u64, Ordering::Relaxed);
            tracing::warn!(connection = %shared.connection, rows, error = %e, "analytics batch not written; its rows are dropped");
        }
    }
}

/// Mask credentials with the default rules, whatever the webhook's own cleanup did.
fn clean(event: &mut Event, cleanup: &CredentialCleanup) {
    cleanup.clean_headers(&mut event.headers);
    if let Payload::Json(p) = &mut event.payload {
        let cleaned = match p.view() {
            // Checked already against the receiver's limits; only credentials matter here.
            JsonRef::Text(t) => JsonPayload::from_text(
                t.to_owned(),
                JsonLimits {
                    max_depth: 127,
                    max_string_chars: usize::MAX,
                },
                cleanup,
            )
            .ok(),
            JsonRef::Value(v) => {
                let mut v = v.clone();
                cleanup.clean_payload(&mut v);
                Some(v.into())
            }
        };
        *p = cleaned
            .unwrap_or_else(|| serde_json::json!({"error": "Payload could not be cleaned"}).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::SystemTime;

    use serde_json::{Value, json};

    /// Records batches; fails while `down`; off while `missing`.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<Vec<Value>>>,
        down: AtomicBool,
        missing: AtomicBool,
    }

    #[async_trait]
    impl Destination for Fake {
        fn check(&self) -> Result<String, String> {
            if self.missing.load(Ordering::SeqCst) {
                Err("connection 'ch' is not configured".into())
            } else {
                Ok("fake".into())
            }
        }
        fn encode(&self, event: &Event) -> Result<Bytes, String> {
            let payload = match &event.payload {
                Payload::Json(j) => j.value().clone(),
                Payload::Blob(_) => Value::Null,
            };
            let headers: serde_json::Map<String, Value> = event
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            let mut line = serde_json::to_vec(&json!({"payload": payload, "headers": headers}))
                .map_err(|e| e.to_string())?;
            line.push(b'\n');
            Ok(line.into())
        }
        async fn write(&self, body: Bytes, rows: usize) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            let lines: Vec<Value> = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert_eq!(lines.len(), rows);
            self.batches.lock().unwrap().push(lines);
            Ok(())
        }
    }

    fn event(payload: Value) -> Event {
        Event {
            namespace: None,
            webhook_id: "w".into(),
            payload: Payload::Json(payload.into()),
            headers: vec![
                ("authorization".into(), "Bearer s3cret".into()),
                ("x-trace".into(), "t".into()),
            ],
            received_at: SystemTime::now(),
        }
    }

    fn settings() -> Settings {
        Settings {
            batch_rows: 3,
            queue_rows: 5,
            ..Settings::default()
        }
    }

    /// Let the task run (paused time: nothing advances the clock but sleeps and `advance`).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_then_by_time_with_credentials_masked() {
        let fake = Arc::new(Fake::default());
        let a = Analytics::with_destination("ch", fake.clone(), settings());
        for i in 0..4 {
            a.record(event(json!({"n": i, "password": "p"})));
        }
        settle().await;
        // Three rows make a batch at once; the fourth waits for the interval.
        assert_eq!(fake.batches.lock().unwrap().len(), 1);
        let first = fake.batches.lock().unwrap()[0][0].clone();
        assert_eq!(
            first["payload"],
            json!({"n": 0, "password": "***REDACTED***"})
        );
        assert_eq!(first["headers"]["authorization"], "***REDACTED***");
        assert_eq!(first["headers"]["x-trace"], "t");
        tokio::time::advance(Duration::from_millis(1900)).await;
        settle().await;
        assert_eq!(fake.batches.lock().unwrap().len(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        settle().await;
        assert_eq!(fake.batches.lock().unwrap().len(), 2);
        assert_eq!(
            a.counters(),
            Counters {
                enabled: true,
                written: 4,
                dropped: 0,
                failed_flushes: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_and_failed_flushes_drop_and_count() {
        let fake = Arc::new(Fake::default());
        fake.down.store(true, Ordering::SeqCst);
        let a = Analytics::with_destination(
            "ch",
            fake.clone(),
            Settings {
                batch_rows: 100,
                ..settings()
            },
        );
        // The task has not run yet: five fit in the queue, the other two are dropped at once.
        for i in 0..7 {
            a.record(event(json!({"n": i})));
        }
        assert_eq!(a.counters().dropped, 2);
        settle().await;
        tokio::time::advance(Duration::from_secs(3)).await;
        settle().await;
        let c = a.counters();
        assert_eq!((c.written, c.dropped, c.failed_flushes), (0, 7, 1));
        // Back up: later rows are written.
        fake.down.store(false, Ordering::SeqCst);
        a.record(event(json!({"n": 8})));
        assert!(a.shutdown(Duration::from_secs(5)).await);
        assert_eq!(a.counters().written, 1);
        // After shutdown logging is off: a record is neither queued nor counted as dropped.
        let before = a.counters();
        assert!(!before.enabled);
        a.record(event(json!({"n": 9})));
        assert_eq!(a.counters(), before);
        assert!(a.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_connection_and_writes_the_queue_at_shutdown() {
        let fake = Arc::new(Fake::default());
        fake.missing.store(true, Ordering::SeqCst);
        let a = Analytics::with_destination("ch", fake.clone(), settings());
        assert!(!a.counters().enabled);
        a.record(event(json!({"off": true})));
        // The connection appears: logging turns on at the next check.
        fake.missing.store(false, Ordering::SeqCst);
        settle().await;
        tokio::time::advance(Duration::from_millis(1100)).await;
        settle().await;
        assert!(a.counters().enabled);
        a.record(event(json!({"on": true})));
        a.record(event(json!({"on": 2})));
        assert!(a.shutdown(Duration::from_secs(5)).await);
        let batches = fake.batches.lock().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 2);
        assert_eq!(a.counters().dropped, 0);
    }

    #[test]
    fn cleaning_masks_by_default_rules_whatever_the_payload_form() {
        let c = CredentialCleanup::default();
        // Text kept by a webhook whose cleanup was off.
        let text = JsonPayload::from_text(
            r#"{"user":"u","nested":{"api_key":"k"}}"#.into(),
            JsonLimits {
                max_depth: 50,
                max_string_chars: 100,
            },
            &crate::cleanup::CredentialCleanup::from_config(
                &cwm_config::WebhookConfig::from_value(
                    json!({"credential_cleanup": {"enabled": false}}),
                    &|_: &str| None,
                )
                .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut e = event(Value::Null);
        e.payload = Payload::Json(text);
        clean(&mut e, &c);
        let Payload::Json(p) = &e.payload else {
            unreachable!()
        };
        assert_eq!(
            p.value(),
            &json!({"user":"u","nested":{"api_key":"***REDACTED***"}})
        );
        // A document without credentials stays as it was sent.
        let mut e = event(Value::Null);
        e.payload = Payload::Json(
            JsonPayload::from_text(
                r#"{"a": 1}"#.into(),
                JsonLimits {
                    max_depth: 50,
                    max_string_chars: 100,
                },
                &c,
            )
            .unwrap(),
        );
        clean(&mut e, &c);
        let Payload::Json(p) = &e.payload else {
            unreachable!()
        };
        assert_eq!(&p.to_json_bytes().unwrap()[..], br#"{"a": 1}"#);
    }
}
