//! The process's single stdout writer: one thread owns the output and writes queued lines in
//! batches; the queue is bounded in lines and in bytes, so a blocked stdout fails deliveries fast
//! instead of growing memory.
//!
//! It knows lines and a byte budget, not events, formats or the context: the shared
//! [`ModuleContext`](crate::ModuleContext) owns the one instance (and imports this file alone),
//! and the `log` sink's builder takes it from there, so no import cycle runs through here.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Messages to the writer thread.
enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written and flushed.
    Flush(oneshot::Sender<()>),
}

/// Queue depth of the writer in lines: enough to absorb bursts (the byte budget bounds memory).
const QUEUE_LINES: usize = 16 * 1024;
/// Default byte budget of the queue (`ModuleContext::DEFAULT_LOG_QUEUE_MAX_BYTES`).
pub(crate) const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Write out at least this often while draining a long queue.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// After writing a batch the thread waits this long before looking at the queue again, so under
/// load lines accumulate and are written together instead of each send waking the thread (a futex
/// wake per event cost the receiver a sixth of its CPU). Lines reach stdout at most this much
/// later; the HTTP answer never waits for it, since `Ok` means queued.
const COALESCE: Duration = Duration::from_micros(500);

/// The process's single stdout writer: one thread owning the output, fed by a bounded channel.
/// Clones share the thread, which ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<Msg>,
    budget: Arc<Budget>,
}

/// Bytes queued and not yet written: added by `send`, subtracted by the writer once written.
struct Budget {
    queued: AtomicUsize,
    max: usize,
}

/// Why a line was not queued. Both are passing conditions: the caller may try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The queue is full in lines or in bytes (stdout is blocked or slow).
    #[error("log queue full: stdout is not keeping up")]
    Full,
    /// The writer thread is gone.
    #[error("log writer stopped")]
    Stopped,
}

impl LogWriter {
    /// The writer for the real stdout, queueing at most `max_bytes`.
    pub(crate) fn stdout(max_bytes: usize) -> io::Result<Self> {
        Self::spawn(Box::new(StdoutTarget), max_bytes)
    }

    pub(crate) fn spawn(target: Box<dyn Write + Send>, max_bytes: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            max: max_bytes,
        });
        let shared = budget.clone();
        std::thread::Builder::new()
            .name("cwm-log-writer".into())
            .spawn(move || write_loop(rx, target, &shared))?;
        Ok(Self { tx, budget })
    }

    /// Queue `line`, or fail at once when the queue is full in lines or bytes. A line larger
    /// than the whole budget is still taken when nothing else is queued.
    pub(crate) fn send(&self, line: Vec<u8>) -> Result<(), SendError> {
        let size = line.capacity();
        let before = self.budget.queued.fetch_add(size, Ordering::Relaxed);
        if before != 0 && before.saturating_add(size) > self.budget.max {
            self.budget.queued.fetch_sub(size, Ordering::Relaxed);
            return Err(SendError::Full);
        }
        self.tx.try_send(Msg::Line(line)).map_err(|e| {
            self.budget.queued.fetch_sub(size, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
            }
        })
    }

    /// Wait until everything queued so far is on stdout, at most `timeout`. True if it is; false
    /// when the time ran out first (the writer is blocked on its output) or the writer stopped.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let flushed = async { self.tx.send(Msg::Flush(done)).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(timeout, flushed)
            .await
            .unwrap_or(false)
    }
}

fn write_loop(mut rx: mpsc::Receiver<Msg>, mut out: Box<dyn Write + Send>, budget: &Budget) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    let mut reported = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Budget bytes of the lines in `batch`, given back once they are written.
        let mut taken = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    batch.extend_from_slice(&line);
                    taken += line.capacity();
                }
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
                // stdout is gone (closed pipe): say so once, keep draining so senders never hang.
                if !reported {
                    eprintln!("cwm: log sink cannot write to stdout: {e}");
                    reported = true;
                }
            }
            batch.clear();
            if batch.capacity() > 2 * MAX_BATCH_BYTES {
                batch.shrink_to(64 * 1024);
            }
        }
        budget.queued.fetch_sub(taken, Ordering::Relaxed);
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        // The writer's own thread, not a runtime worker: the pause lets lines coalesce.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(COALESCE);
    }
}

/// Stdout, locked once per batch so other writers (a tracing layer) interleave only between
/// batches and never wait on this thread for long.
struct StdoutTarget;

impl Write for StdoutTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}
