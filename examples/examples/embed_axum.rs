//! The webhook routes mounted in an existing axum application, next to its own routes, on the
//! application's listener.
//!
//! Shows: `Receiver::webhooks()`, the webhook routes alone (`POST /webhook/{id}` and
//! `POST /webhook/{namespace}/{id}`; the receiver's `/health`, `/stats`, `/metrics` and admin
//! routes are not exposed), mounted with `Router::route_service`; the TCP peer handed to cwm as a
//! `cwm_http::PeerAddr` so address checks (`ip_whitelist` here) work. The example serves on
//! 127.0.0.1 (a free port), sends itself a webhook, a `/hello` request and a `/health` request,
//! prints the answers and exits.
//!
//! Run: `cargo run -p cwm-examples --example embed_axum`

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use bytes::Bytes;
use cwm_config::ProcessEnv;
use cwm_config::file::FileProvider;
use cwm_http::{HttpSettings, PeerAddr, Receiver};
use cwm_modules::{ModuleContext, Registry};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Hand the TCP peer axum knows to cwm, for `ip_whitelist` and trusted proxies. Without it
/// those checks refuse the request.
async fn peer_addr(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request) -> Request {
    req.extensions_mut().insert(PeerAddr(peer));
    req
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // The webhooks: a file, and the sinks this build ships (`log` prints each event on stdout).
    let dir = tempfile::tempdir()?;
    let webhooks = dir.path().join("webhooks.json");
    std::fs::write(
        &webhooks,
        r#"{"orders": {"module": "log", "ip_whitelist": ["127.0.0.1"]}}"#,
    )?;
    let registry = Registry::with_builtin_sinks(ModuleContext::new());
    let provider = Arc::new(FileProvider::new(
        &webhooks,
        dir.path().join("connections.json"),
        Arc::new(registry),
        Arc::new(ProcessEnv),
    ));
    provider.load().await?;
    let receiver = Receiver::new(provider, HttpSettings::default());

    // The application: its own route, and cwm's webhook routes.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the application\n" }))
        .route_service("/webhook/{*rest}", receiver.webhooks())
        .layer(axum::middleware::map_request(peer_addr));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let requests = [
        ("GET", "/hello", ""),
        ("POST", "/webhook/orders", r#"{"order": 42}"#),
        ("GET", "/health", ""),
    ];
    let mut statuses = Vec::new();
    for (method, path, body) in requests {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = client.request(req).await?;
        let status = resp.status();
        let text = resp.into_body().collect().await?.to_bytes();
        println!(
            "{method} {path} -> {status} {}",
            String::from_utf8_lossy(&text).trim_end()
        );
        statuses.push(status.as_u16());
    }

    drop(client);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    // The application's route, the webhook, and 404 for the receiver's own routes.
    if statuses != [200, 200, 404] {
        return Err(format!("unexpected answers: {statuses:?}").into());
    }
    Ok(())
}
