//! Accept loop: HTTP/1.1 and h2c on one listener, a bounded number of connections with header,
//! keep-alive and lingering-close timeouts, and graceful shutdown.
//!
//! Past the connection limit the loop stops accepting, so new connections wait in the listen
//! backlog, and asks idle connections (keep-alive between requests, or opened without sending
//! anything) to close to make room. The process never runs out of file descriptors because of
//! clients.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::conn::{ConnState, Tracked, Verdict};
use crate::{LeftUnread, PeerAddr, Receiver};

/// Connection counts shown on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    pub open: AtomicUsize,
    pub limit: AtomicUsize,
    pub at_limit: AtomicU64,
    pub evicted: AtomicU64,
    pub header_timeouts: AtomicU64,
}

/// What every connection task shares.
struct Shared {
    receiver: Receiver,
    builder: auto::Builder<TokioExecutor>,
    /// Notified when the connection limit is reached: idle connections close.
    pressure: Notify,
    stop: watch::Receiver<bool>,
}

/// Serve `receiver` on `listener` until `shutdown` resolves; then stop accepting, let in-flight
/// requests finish and queued deliveries drain, all within the shutdown timeout in total.
pub async fn serve(listener: TcpListener, receiver: Receiver, shutdown: impl Future<Output = ()>) {
    let settings = receiver.settings().clone();
    let counters = receiver.inner.connections.clone();
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    counters
        .limit
        .store(settings.max_connections, Ordering::Relaxed);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        receiver: receiver.clone(),
        builder: auto::Builder::new(TokioExecutor::new()),
        pressure: Notify::new(),
        stop,
    });
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = admit(&limit, &shared, &counters) => permit,
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let probation = limit.available_permits() < pressure_margin(settings.max_connections);
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(stream, peer, permit, shared.clone(), probation));
    }
    drop(listener);
    let deadline = Instant::now() + settings.shutdown_timeout;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    // Webhook Connect streams never end by themselves: close them (their in-flight messages are
    // requeued) so their connections can finish.
    if let Some(manager) = &receiver.inner.connect {
        let _ = tokio::time::timeout_at(deadline, manager.shutdown()).await;
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?settings.shutdown_timeout,
            "connections still open at the shutdown deadline are closed"
        );
    }
    if !receiver
        .drain(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        tracing::warn!(
            queued = receiver.queued(),
            "queued deliveries still running at the shutdown deadline"
        );
    }
}

/// A place under the connection limit. When none is free, ask idle connections to close and
/// wait (new connections meanwhile wait in the listen backlog).
async fn admit(
    limit: &Arc<Semaphore>,
    shared: &Shared,
    counters: &ConnCounters,
) -> OwnedSemaphorePermit {
    if let Ok(p) = limit.clone().try_acquire_owned() {
        return p;
    }
    counters.at_limit.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("connection limit reached: closing idle connections");
    loop {
        shared.pressure.notify_waiters();
        // Closed connections free their place; connections that were busy may become idle.
        if let Ok(Ok(p)) =
            tokio::time::timeout(Duration::from_millis(20), limit.clone().acquire_owned()).await
        {
            return p;
        }
    }
}

/// Free places under which the server is at the limit for admission purposes.
fn pressure_margin(max_connections: usize) -> usize {
    (max_connections / 64).max(1)
}

/// Whether the client already sent something (without reading it).
fn has_bytes(stream: &TcpStream) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    matches!(stream.poll_peek(&mut cx, &mut buf), std::task::Poll::Ready(Ok(n)) if n > 0)
}

/// How long a connection accepted at the limit may take to send its first byte.
const PROBATION: Duration = Duration::from_millis(50);

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    probation: bool,
) {
    let settings = shared.receiver.settings();
    let (header_timeout, keep_alive) = (settings.header_read_timeout, settings.keep_alive_timeout);
    let counters = shared.receiver.inner.connections.clone();
    // At the limit, a connection with nothing to read yet is most likely an idle one in waiting:
    // a sender's request head follows its handshake, so it is there by the time a backlog
    // reaches it, or very soon after. One that stays silent is closed at once instead of
    // waiting for an eviction round, so a flood of idle connections queued ahead of senders
    // drains fast.
    if probation
        && !has_bytes(&stream)
        && !matches!(
            tokio::time::timeout(PROBATION, stream.readable()).await,
            Ok(Ok(()))
        )
    {
        counters.evicted.fetch_add(1, Ordering::Relaxed);
        drop(permit);
        return;
    }
    counters.open.fetch_add(1, Ordering::Relaxed);
    let state = ConnState::new();
    let io = Tracked::new(
        stream,
        state.clone(),
        permit,
        Box::new(move || {
            counters.open.fetch_sub(1, Ordering::Relaxed);
        }),
    );
    let rx = shared.receiver.clone();
    let req_state = state.clone();
    let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
        let rx = rx.clone();
        let guard = req_state.begin();
        let state = req_state.clone();
        req.extensions_mut().insert(PeerAddr(peer));
        async move {
            let resp = rx.handle(req).await;
            if resp.extensions().get::<LeftUnread>().is_some() {
                state.set_linger();
            }
            // A streamed answer (Server-Sent Events) is served until its body ends: the
            // connection is busy, not idle, meanwhile.
            let resp = if resp.body().is_stream() {
                resp.map(|body| body.hold(guard))
            } else {
                drop(guard);
                resp
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    tokio::pin!(conn);
    let mut stop = shared.stop.clone();
    let mut closing: Option<Instant> = None;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep.as_mut() => {
                if let Some(since) = closing
                    && since.elapsed() >= header_timeout
                    && !state.busy()
                {
                    // Asked to close, no request being served, still not done (a client that
                    // does not read its answer): drop it. A request that arrived just before
                    // the close is served to its end (the shutdown deadline bounds it).
                    return;
                }
                match state.check(header_timeout, keep_alive) {
                    Verdict::Wait(at) => sleep.as_mut().reset(at),
                    Verdict::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing.get_or_insert_with(Instant::now);
                        sleep.as_mut().reset(Instant::now() + header_timeout);
                    }
                    Verdict::HeadTimeout => {
                        shared.receiver.inner.connections.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        // Dropping the connection hands the socket to the 408-and-linger close.
                        state.set_timed_out();
                        return;
                    }
                }
            }
            () = shared.pressure.notified(), if closing.is_none() => {
                if state.evictable() {
                    shared.receiver.inner.connections.evicted.fetch_add(1, Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                    sleep.as_mut().reset(Instant::now() + header_timeout);
                }
            }
            _ = stop.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
                // In-flight requests may take until the shutdown deadline; `serve` enforces it.
                sleep.as_mut().reset(Instant::now() + settings.shutdown_timeout);
            }
        }
    }
}
