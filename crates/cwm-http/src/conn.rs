//! One client connection as the server sees it: where it is in its request cycle (waiting for a
//! request head, serving, idle between requests), the socket wrapper that notices bytes arriving,
//! and the lingering close that lets a client read an answer sent before its body was read.
//!
//! The request path pays two clock reads and a few relaxed atomic stores per request for this;
//! the timeouts themselves are checked by the connection's own task, which wakes only at deadlines.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Waiting for (the rest of) a request head; a fresh connection starts here.
const HEAD: u8 = 0;
/// At least one request is being served.
const BUSY: u8 = 1;
/// Between requests on a keep-alive connection.
const IDLE: u8 = 2;

/// The answer written when a request head did not arrive in time.
const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 35\r\n\r\n{\"detail\":\"Request header timeout\"}";

/// How long a closing connection keeps reading (and discarding) what the client still sends, so
/// that the close does not reset the connection before the client read the answer.
const LINGER_TOTAL: Duration = Duration::from_secs(10);
/// ... and how long it waits for each chunk of it.
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Shared by a connection's task, its socket wrapper and its requests.
pub(crate) struct ConnState {
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds since `epoch` when the current `HEAD` or `IDLE` phase began.
    since: AtomicU64,
    in_flight: AtomicU32,
    /// Bytes of a request head arrived in the current `HEAD` phase.
    head_bytes: AtomicBool,
    /// The client speaks HTTP/2: no request-head phase, no 408 of our own.
    h2: AtomicBool,
    /// Close with a 408 (a request head timed out).
    timed_out: AtomicBool,
    /// An answer left request bytes unread: close by lingering.
    linger: AtomicBool,
}

/// What a connection's task should do when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing due; wake again at this instant.
    Wait(Instant),
    /// Idle past the keep-alive timeout: close gracefully.
    Idle,
    /// A request head did not arrive in time: answer 408 and close.
    HeadTimeout,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            head_bytes: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            linger: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived from the client.
    fn on_read(&self, first_bytes: &[u8]) {
        match self.phase.load(Ordering::Relaxed) {
            IDLE => {
                self.since.store(self.now_ms(), Ordering::Relaxed);
                self.head_bytes.store(true, Ordering::Relaxed);
                self.phase.store(HEAD, Ordering::Relaxed);
            }
            HEAD if !self.head_bytes.load(Ordering::Relaxed) => {
                if first_bytes.starts_with(b"PRI * HTTP/2.0") {
                    self.h2.store(true, Ordering::Relaxed);
                }
                self.head_bytes.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A request is being served until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Whether closing now loses nothing: no request is being served and no request head has
    /// started to arrive.
    pub fn evictable(&self) -> bool {
        match self.phase.load(Ordering::Relaxed) {
            IDLE => true,
            HEAD => !self.head_bytes.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// Whether a request is being served.
    pub fn busy(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == BUSY
    }

    /// Mark that an answer left request bytes unread.
    pub fn set_linger(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }

    pub fn set_timed_out(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }

    /// Judge the connection at `now` against the header and keep-alive timeouts.
    pub fn check(&self, header: Duration, keep_alive: Duration) -> Verdict {
        let now = Instant::now();
        let elapsed = Duration::from_millis(self.now_ms());
        let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
        let h2 = self.h2.load(Ordering::Relaxed);
        // Phases change without waking the task; look again at least this often so a request
        // head that starts on an idle connection is timed close to its real start.
        let recheck = now + header / 2;
        match self.phase.load(Ordering::Relaxed) {
            HEAD if !h2 => {
                let due = since + header;
                if elapsed >= due {
                    Verdict::HeadTimeout
                } else {
                    Verdict::Wait(self.epoch + due)
                }
            }
            IDLE | HEAD => {
                let due = since + keep_alive;
                if elapsed >= due {
                    Verdict::Idle
                } else {
                    Verdict::Wait((self.epoch + due).min(recheck))
                }
            }
            _ => Verdict::Wait(recheck),
        }
    }
}

/// Marks the end of one request when dropped (also when the request is cancelled).
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            s.since.store(s.now_ms(), Ordering::Relaxed);
            s.head_bytes.store(false, Ordering::Relaxed);
            s.phase.store(IDLE, Ordering::Relaxed);
        }
    }
}

/// The client socket as hyper sees it. Notices arriving bytes, holds the connection's place
/// under the connection limit, and on drop closes the socket by lingering when the client may
/// still be sending (writing the 408 first when a request head timed out).
pub(crate) struct Tracked {
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
    permit: Option<OwnedSemaphorePermit>,
    on_close: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Tracked {
    pub fn new(
        stream: TcpStream,
        state: Arc<ConnState>,
        permit: OwnedSemaphorePermit,
        on_close: Box<dyn FnOnce() + Send + Sync>,
    ) -> Self {
        Self {
            stream: Some(stream),
            state,
            permit: Some(permit),
            on_close: Some(on_close),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let stream = match this.stream() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let r = Pin::new(stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            this.state.on_read(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let (Some(stream), Some(permit), Some(on_close)) =
            (self.stream.take(), self.permit.take(), self.on_close.take())
        else {
            return;
        };
        let s = &self.state;
        let send_408 = s.timed_out.load(Ordering::Relaxed)
            && s.head_bytes.load(Ordering::Relaxed)
            && !s.h2.load(Ordering::Relaxed);
        let linger = send_408 || s.linger.load(Ordering::Relaxed);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if linger => {
                rt.spawn(async move {
                    linger_close(stream, send_408).await;
                    drop(permit);
                    on_close();
                });
            }
            _ => {
                drop(stream);
                drop(permit);
                on_close();
            }
        }
    }
}

/// Send our half-close, then read and discard what the client still sends, for a bounded time,
/// before closing: closing a socket with unread bytes resets the connection, and a client that
/// writes its whole body before reading would lose the answer.
async fn linger_close(mut stream: TcpStream, send_408: bool) {
    if send_408 {
        let _ = tokio::time::timeout(LINGER_IDLE, stream.write_all(TIMEOUT_408)).await;
    }
    let _ = tokio::time::timeout(LINGER_IDLE, stream.shutdown()).await;
    let end = Instant::now() + LINGER_TOTAL;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = (Instant::now() + LINGER_IDLE).min(end);
        match tokio::time::timeout_at(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const KEEP: Duration = Duration::from_secs(75);

    #[tokio::test(start_paused = true)]
    async fn phases_and_deadlines() {
        let s = ConnState::new();
        // A fresh connection waits for its request head, 408 after the header timeout.
        assert!(s.evictable());
        assert!(matches!(s.check(HEADER, KEEP), Verdict::Wait(_)));
        s.on_read(b"POST / HT");
        assert!(!s.evictable(), "a request head has started");
        tokio::time::advance(HEADER).await;
        assert_eq!(s.check(HEADER, KEEP), Verdict::HeadTimeout);

        // Served, then idle: closed after the keep-alive timeout, evictable meanwhile.
        let s = ConnState::new();
        s.on_read(b"POST / HTTP/1.1\r\n\r\n");
        let guard = s.begin();
        assert!(!s.evictable());
        tokio::time::advance(HEADER * 3).await;
        assert!(matches!(s.check(HEADER, KEEP), Verdict::Wait(_)), "busy");
        drop(guard);
        assert!(s.evictable());
        tokio::time::advance(KEEP - Duration::from_secs(1)).await;
        assert!(matches!(s.check(HEADER, KEEP), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.check(HEADER, KEEP), Verdict::Idle);

        // HTTP/2 has no request-head phase of ours.
        let s = ConnState::new();
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        tokio::time::advance(HEADER * 2).await;
        assert!(matches!(s.check(HEADER, KEEP), Verdict::Wait(_)));
    }
}
