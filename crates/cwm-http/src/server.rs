//! Accept loop: HTTP/1.1 and h2c on one listener, graceful shutdown (DECISIONS H5).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::{PeerAddr, Receiver};

/// Serve `receiver` on `listener` until `shutdown` resolves; then stop accepting, let in-flight
/// requests finish and queued deliveries drain (each bounded by the shutdown timeout).
pub async fn serve(listener: TcpListener, receiver: Receiver, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let rx = receiver.clone();
                let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                    let rx = rx.clone();
                    req.extensions_mut().insert(PeerAddr(peer));
                    async move { Ok::<_, Infallible>(rx.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let timeout = receiver.settings().shutdown_timeout;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?timeout,
            "in-flight requests still running at the shutdown deadline"
        );
    }
    if !receiver.drain(timeout).await {
        tracing::warn!(
            queued = receiver.queued(),
            "queued deliveries still running at the shutdown deadline"
        );
    }
}
