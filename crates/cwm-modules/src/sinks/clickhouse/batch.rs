//! Batching with the delivery promise: rows wait in a bounded queue, one task per table sends
//! them in batches, and every row of a batch gets that batch's result.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::Batching;
use crate::sink::SinkError;

/// Queued rows per table at most, in batches: beyond `QUEUE_BATCHES × batch_size` rows a
/// delivery fails at once (retryable).
pub(crate) const QUEUE_BATCHES: usize = 10;
/// Bytes of queued rows per table at most (a single row is always taken when none waits).
pub(crate) const MAX_QUEUE_BYTES: usize = 256 * 1024 * 1024;
/// A batch is sent once it holds this many bytes, even below `batch_size` rows.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Sends one batch: `body` is `rows` newline-terminated rows.
#[async_trait]
pub(crate) trait Writer: Send + Sync + 'static {
    async fn write(&self, body: Bytes, rows: usize) -> Result<(), SinkError>;
}

/// A queued row and the delivery waiting for its batch's result.
struct Pending {
    row: Bytes,
    done: oneshot::Sender<Result<(), SinkError>>,
}

/// The queue and task of one table.
pub(crate) struct Batcher {
    writer: Arc<dyn Writer>,
    batching: Batching,
    queued_bytes: Arc<AtomicUsize>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tx: Option<mpsc::Sender<Pending>>,
    task: Option<JoinHandle<()>>,
}

impl Batcher {
    /// A batcher that sends with `writer`. Starts nothing: the task starts on the first row.
    pub(crate) fn new(writer: Arc<dyn Writer>, batching: Batching) -> Self {
        Self {
            writer,
            batching,
            queued_bytes: Arc::default(),
            state: Mutex::default(),
        }
    }

    /// The batching this batcher was created with.
    pub(crate) fn batching(&self) -> Batching {
        self.batching
    }

    /// Queue `row` (one newline-terminated row) and wait for the result of its batch. Fails at
    /// once, retryably, when the queue is full.
    pub(crate) async fn submit(&self, row: Bytes) -> Result<(), SinkError> {
        let (done, result) = oneshot::channel();
        let size = row.len();
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued > 0 && queued + size > MAX_QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(SinkError::Unavailable(
                "ClickHouse write queue is full (bytes)".into(),
            ));
        }
        if let Err(e) = self.enqueue(Pending { row, done }) {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(e);
        }
        result.await.unwrap_or_else(|_| {
            Err(SinkError::Unavailable(
                "the ClickHouse batch writer stopped".into(),
            ))
        })
    }

    fn enqueue(&self, pending: Pending) -> Result<(), SinkError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = match &state.tx {
            Some(tx) if !tx.is_closed() => tx.clone(),
            // First row, or the task is gone (closed, or it panicked): start one.
            _ => {
                let capacity = self
                    .batching
                    .batch_size
                    .saturating_mul(QUEUE_BATCHES)
                    .max(1);
                let (tx, rx) = mpsc::channel(capacity);
                let task = tokio::spawn(run(
                    self.writer.clone(),
                    self.batching,
                    rx,
                    self.queued_bytes.clone(),
                ));
                if let Some(old) = state.task.replace(task) {
                    old.abort();
                }
                state.tx = Some(tx.clone());
                tx
            }
        };
        drop(state);
        tx.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                SinkError::Unavailable("ClickHouse write queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                SinkError::Unavailable("the ClickHouse batch writer stopped".into())
            }
        })
    }

    /// Send what is queued, then stop the task. A later row starts a new one.
    pub(crate) async fn close(&self) {
        let (tx, task) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (state.tx.take(), state.task.take())
        };
        drop(tx);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The batch task: waits for a first row, gathers more until the batch is full or the flush
/// interval since the first row has passed, sends, answers every row, and starts over. Ends
/// once every sender is gone and the queue is empty.
async fn run(
    writer: Arc<dyn Writer>,
    batching: Batching,
    mut rx: mpsc::Receiver<Pending>,
    queued_bytes: Arc<AtomicUsize>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let deadline = tokio::time::Instant::now() + batching.flush_interval;
        let mut bytes = first.row.len();
        batch.push(first);
        let mut closed = false;
        while batch.len() < batching.batch_size && bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    bytes += p.row.len();
                    batch.push(p);
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        // A delivery that gave up (its caller timed out or went away) before its batch was sent
        // is not written: the caller was not promised anything, and may be trying again.
        batch.retain(|p| !p.done.is_closed());
        if !batch.is_empty() {
            let mut body = BytesMut::with_capacity(batch.iter().map(|p| p.row.len()).sum());
            for p in &batch {
                body.extend_from_slice(&p.row);
            }
            let result = writer.write(body.freeze(), batch.len()).await;
            for p in batch.drain(..) {
                let _ = p.done.send(result.clone());
            }
        }
        if closed {
            return;
        }
    }
}
