//! The cwm webhook receiver as a raw hyper service.
//!
//! [`Receiver`] answers every route of the upstream gateway: the webhook routes,
//! `GET /`, `/health`, `/metrics`, the admin API, `/openapi.json` with its `/docs` and `/redoc`
//! pages (unless [`HttpSettings::openapi_docs`] is off), and with [`Receiver::with_connect`] the
//! Webhook Connect streaming and admin APIs. [`serve`] runs it on a listener with
//! HTTP/1.1 and h2c, and shuts down gracefully. [`Receiver::webhooks`] gives the webhook routes
//! alone, for an application that serves them next to its own routes on its own listener.
//!
//! Invariants: the request path never awaits the config backend (it loads a snapshot); a webhook
//! answers 200 only after its sink accepted the event, unless it opted into `"ack": "receive"`;
//! error bodies are `{"detail": ...}` and never carry internal error text.
//!
//! # Example
//!
//! A receiver over `webhooks.json` with the sinks this build ships, answering one request
//! without a socket ([`serve`] runs it on a `TcpListener` instead):
//!
//! ```rust
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use cwm_config::{ProcessEnv, file::FileProvider};
//! use cwm_http::{HttpSettings, Receiver};
//! use cwm_modules::{ModuleContext, Registry};
//! use http_body_util::Full;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let webhooks = dir.path().join("webhooks.json");
//! std::fs::write(&webhooks, r#"{"orders": {"module": "log"}}"#)?;
//!
//! let modules = ModuleContext::new();
//! let registry = Arc::new(Registry::with_builtin_sinks(modules.clone()));
//! let connections = dir.path().join("connections.json"); // absent: no connections
//! let provider =
//!     FileProvider::start(&webhooks, connections, registry, Arc::new(ProcessEnv), None, None)
//!         .await?;
//! let receiver = Receiver::new(provider, HttpSettings::default()).with_modules(modules);
//!
//! let request = http::Request::post("/webhook/orders")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"order": 42}"#)))?;
//! let response = receiver.handle(request).await;
//! assert_eq!(response.status(), http::StatusCode::OK);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod auth;
mod body;
mod conn;
mod connect;
mod cors;
mod docs;
// Public only for the fuzz targets (fuzz/fuzz_targets/json_body.rs); not part of the API.
mod hooks;
#[doc(hidden)]
pub mod json;
mod metrics;
mod openapi;
mod response;
mod server;
pub mod settings;
mod stats;
mod webhook;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cwm_config::{BackendState, ConfigProvider};
use cwm_modules::{CompiledWebhook, ModuleContext};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use percent_encoding::percent_decode_str;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

pub use response::Body;
pub use server::serve;
pub use settings::HttpSettings;

/// A request body the receiver can read: hyper's `Incoming`, or `Full<Bytes>` in tests.
pub trait RequestBody: HttpBody<Data = Bytes, Error: Into<BoxError>> {}
impl<T: HttpBody<Data = Bytes, Error: Into<BoxError>>> RequestBody for T {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The configuration source the receiver serves from.
pub type Provider = Arc<dyn ConfigProvider<CompiledWebhook>>;

/// The TCP peer of a request, put in its extensions by [`serve`]; an application that serves the
/// receiver itself puts it there. Without it, the checks that need the client address fail
/// closed: `ip_whitelist` and the `/stats` allow-list refuse the request, and the rate limiters
/// count every such request under one key.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The receiver service. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    provider: Provider,
    settings: HttpSettings,
    metrics: metrics::Metrics,
    /// Permits for events accepted with `"ack": "receive"` and not yet delivered.
    queue: Arc<Semaphore>,
    tasks: TaskTracker,
    /// Counts, stats and queue shares per configured webhook.
    hooks: hooks::Hooks,
    connections: Arc<server::ConnCounters>,
    stats_limiter: stats::RateLimiter,
    root_limiter: stats::RateLimiter,
    /// The sinks' shared context, for connection states (see [`Receiver::with_modules`]).
    modules: Option<ModuleContext>,
    /// Webhook Connect's channels (see [`Receiver::with_connect`]).
    connect: Option<cwm_relay::cloud::ChannelManager>,
    /// `/openapi.json`, `/docs` and `/redoc`; `None` when `DISABLE_OPENAPI_DOCS` is set.
    docs: Option<docs::Docs>,
}

impl Receiver {
    /// A receiver answering from the snapshots of `provider`, with `settings`.
    pub fn new(provider: Provider, settings: HttpSettings) -> Self {
        let queue = Arc::new(Semaphore::new(settings.receive_queue_capacity));
        let docs = settings
            .openapi_docs
            .then(|| docs::Docs::start(&provider, &settings.root_path));
        let inner = Arc::new(Inner {
            stats_limiter: stats::RateLimiter::new(settings.stats_rate_limit),
            root_limiter: stats::RateLimiter::new(settings.root_rate_limit),
            provider,
            settings,
            metrics: metrics::Metrics::new(),
            queue,
            tasks: TaskTracker::new(),
            hooks: hooks::Hooks::new(),
            connections: Arc::default(),
            modules: None,
            connect: None,
            docs,
        });
        Self { inner }
    }

    /// Show the connections of `modules` (the context the webhooks' sinks were built with) in
    /// `/health`, `/admin/config-status` and `/metrics`, and measure chain steps in `/metrics`.
    /// Call right after [`Receiver::new`], before the receiver is cloned; later calls do nothing.
    #[must_use]
    pub fn with_modules(mut self, modules: ModuleContext) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            modules.set_observer(inner.metrics.observer());
            inner.modules = Some(modules);
        }
        self
    }

    /// Serve Webhook Connect from `manager`: the streaming API a connector holds open
    /// (`/connect/stream/{channel}` as a WebSocket, `.../sse`, `.../poll`, `POST /connect/ack`,
    /// `GET /connect/status/{channel}`) and its admin API (`/admin/webhook-connect/...`). Without
    /// it those routes answer 503. [`serve`] closes the manager's connections when it shuts down.
    /// Call right after [`Receiver::new`], before the receiver is cloned; later calls do nothing.
    #[must_use]
    pub fn with_connect(mut self, manager: cwm_relay::cloud::ChannelManager) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.connect = Some(manager);
        }
        self
    }

    /// Log every webhook request answered 200 to `analytics` (after its delivery; for
    /// `"ack": "receive"`, after the queued delivery), and show its counters in `/metrics`.
    /// Call right after [`Receiver::new`], before the receiver is cloned; later calls do nothing.
    #[must_use]
    pub fn with_analytics(mut self, analytics: cwm_modules::analytics::Analytics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics.analytics = Some(analytics);
        }
        self
    }

    pub(crate) fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }

    /// Events accepted with `"ack": "receive"` that are still being delivered.
    pub fn queued(&self) -> usize {
        self.inner.settings.receive_queue_capacity - self.inner.queue.available_permits()
    }

    /// Wait (up to `timeout`) for queued `"ack": "receive"` deliveries to finish.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        self.inner.tasks.close();
        tokio::time::timeout(timeout, self.inner.tasks.wait())
            .await
            .is_ok()
    }

    /// Answer one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: RequestBody,
    {
        self.answer(req, Routes::All).await
    }

    /// A service answering only the webhook routes, for an application that mounts them next to
    /// its own; see [`WebhookService`].
    pub fn webhooks(&self) -> WebhookService {
        WebhookService {
            receiver: self.clone(),
        }
    }

    async fn answer<B>(&self, req: Request<B>, routes: Routes) -> Response<Body>
    where
        B: RequestBody,
    {
        // Read the clock only when the request trace below is on.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let method = req.method().clone();
        let hsts = self.inner.settings.force_https
            || req
                .headers()
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        // Cloning a `Uri` shares its bytes (no copy of the path), so the path outlives `req`.
        let uri = req.uri().clone();
        let path = uri.path();
        // CORS (off by default: one branch): a preflight is answered before routing.
        let cors = &self.inner.settings.cors;
        let mut resp = if routes == Routes::Webhooks && !path.starts_with("/webhook/") {
            // Not ours: no CORS preflight answer either.
            self.route(req, &method, path, routes).await
        } else {
            cors.handle(req, |req| self.route(req, &method, path, routes))
                .await
        };
        response::add_security_headers(&mut resp, hsts);
        if let Some(started) = started {
            tracing::debug!(%method, path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
        }
        resp
    }

    /// Route a request; then, when the answer did not need the body, drain it so the client
    /// reads the answer (or close the connection after answering when it cannot be drained).
    async fn route<B>(
        &self,
        req: Request<B>,
        method: &Method,
        path: &str,
        routes: Routes,
    ) -> Response<Body>
    where
        B: RequestBody,
    {
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let mut resp = self.dispatch(&parts, &mut body, method, path, routes).await;
        if let Some(body) = body
            && !body.is_end_stream()
        {
            self.discard_unread(&parts, body, &mut resp).await;
        }
        resp
    }

    /// Read and discard an unread body, up to the payload limit within the body timeout. HTTP/1
    /// only: HTTP/2 resets the stream instead, which leaves the connection usable.
    async fn discard_unread<B: RequestBody>(
        &self,
        parts: &Parts,
        body: B,
        resp: &mut Response<Body>,
    ) {
        if parts.version >= http::Version::HTTP_2 {
            return;
        }
        let settings = &self.inner.settings;
        let max = settings.max_payload_bytes;
        let declared_too_large =
            body::declared_length(&parts.headers).is_some_and(|n| n > max as u64);
        // A client waiting for `100 Continue` sends no body after a final answer.
        let expects_continue = parts.headers.contains_key(http::header::EXPECT);
        if declared_too_large
            || expects_continue
            || !body::drain(body, max, settings.body_idle_timeout).await
        {
            close_after(resp);
        }
    }

    async fn dispatch<B>(
        &self,
        parts: &Parts,
        body: &mut Option<B>,
        method: &Method,
        path: &str,
        routes: Routes,
    ) -> Response<Body>
    where
        B: RequestBody,
    {
        let inner = &self.inner;
        if let Some(rest) = path.strip_prefix("/webhook/") {
            if let Some(trimmed) = rest.strip_suffix('/').filter(|r| !r.is_empty()) {
                return redirect(&format!("/webhook/{trimmed}"));
            }
            let mut segments = rest.split('/');
            let (namespace, id) = match (segments.next(), segments.next(), segments.next()) {
                (Some(id), None, None) if !id.is_empty() => (None, decode(id)),
                (Some(ns), Some(id), None) if !id.is_empty() => (Some(decode(ns)), decode(id)),
                _ => return response::not_found(),
            };
            if method != Method::POST {
                return response::method_not_allowed("POST");
            }
            return webhook::handle(inner, parts, body, namespace, id).await;
        }
        if routes == Routes::Webhooks {
            return response::not_found();
        }
        if let Some(rest) = path.strip_prefix("/connect/") {
            return connect::handle(inner, parts, method, rest, self.client_ip(parts)).await;
        }
        if let Some(r) = inner.docs.as_ref().and_then(|d| d.route(method, path)) {
            return r;
        }
        match path {
            "/" => match *method {
                Method::GET | Method::HEAD => self.root(parts),
                _ => response::method_not_allowed("GET"),
            },
            "/stats" => match *method {
                Method::GET => self.stats(parts),
                _ => response::method_not_allowed("GET"),
            },
            "/health" => match *method {
                Method::GET | Method::HEAD => self.health(),
                _ => response::method_not_allowed("GET"),
            },
            "/metrics" => match *method {
                Method::GET => self.metrics(),
                _ => response::method_not_allowed("GET"),
            },
            "/admin/config-status" => match *method {
                Method::GET => admin::config_status(inner, parts),
                _ => response::method_not_allowed("GET"),
            },
            "/admin/reload-config" => match *method {
                Method::POST => admin::reload(inner, parts, body).await,
                _ => response::method_not_allowed("POST"),
            },
            _ if path.starts_with(connect::ADMIN_PREFIX) => {
                let rest = path.get(connect::ADMIN_PREFIX.len()..).unwrap_or("");
                connect::admin::handle(inner, parts, body, method, rest).await
            }
            // Never redirect to `//host` or `/\host`: browsers read those as another site.
            _ if path.len() > 1 && path.ends_with('/') => {
                let target = path.trim_end_matches('/');
                if target.is_empty() || target.starts_with("//") || target.starts_with("/\\") {
                    response::not_found()
                } else {
                    redirect(target)
                }
            }
            _ => response::not_found(),
        }
    }

    /// `GET /health` in the upstream shape. 503 only before the first configuration load.
    fn health(&self) -> Response<Body> {
        let provider = &self.inner.provider;
        let state = provider.state();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut components = serde_json::Map::new();
        let loaded = state != BackendState::Connecting;
        components.insert(
            "config_manager".into(),
            (if loaded { "healthy" } else { "connecting" }).into(),
        );
        if provider.backend() == "etcd" {
            let etcd = match state {
                BackendState::Healthy => "healthy",
                BackendState::Disconnected => "disconnected",
                BackendState::Connecting => "connecting",
            };
            components.insert("etcd".into(), etcd.into());
        } else {
            components.insert("config_backend".into(), provider.backend().into());
        }
        // Connections do not decide the status: webhooks that do not use one keep working.
        if let Some(modules) = &self.inner.modules {
            let connections: serde_json::Map<String, serde_json::Value> = modules
                .connections()
                .status()
                .into_iter()
                .map(|c| (c.connection_name, serde_json::json!(c.state)))
                .collect();
            if !connections.is_empty() {
                components.insert("connections".into(), connections.into());
            }
        }
        let body = serde_json::json!({
            "status": if loaded { "healthy" } else { "unhealthy" },
            "service": "webhook-service",
            "timestamp": timestamp,
            "components": components,
        });
        let status = if loaded {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        response::json(status, &body)
    }

    /// The client address, as the Python gateway finds it: the peer, or the forwarded address when the peer is
    /// a trusted proxy.
    fn client_ip(&self, parts: &Parts) -> Option<std::net::IpAddr> {
        let peer = parts.extensions.get::<PeerAddr>()?.0.ip();
        if !self.inner.settings.trusted_proxy_ips.contains(&peer) {
            return Some(peer);
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        };
        header("x-forwarded-for")
            .or_else(|| header("x-real-ip"))
            .or(Some(peer))
    }

    fn rate_limited(limiter: &stats::RateLimiter) -> Response<Body> {
        let msg = format!(
            "Rate limit exceeded. Limit: {} requests per minute",
            limiter.limit()
        );
        let mut r = response::detail(StatusCode::TOO_MANY_REQUESTS, &msg);
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(60));
        r
    }

    /// `GET /`, rate limited per client IP.
    fn root(&self, parts: &Parts) -> Response<Body> {
        if !self
            .inner
            .root_limiter
            .allow(limiter_key(self.client_ip(parts)))
        {
            return Self::rate_limited(&self.inner.root_limiter);
        }
        response::ok()
    }

    /// `GET /stats`: optional token, optional IP allow-list, rate limit, then the counts.
    fn stats(&self, parts: &Parts) -> Response<Body> {
        let settings = &self.inner.settings;
        if let Some(expected) = &settings.stats_token {
            let header = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if let Err(auth::AdminDenied::Unauthorized(msg)) =
                auth::check_admin(Some(expected), header)
            {
                return response::detail(StatusCode::UNAUTHORIZED, msg);
            }
        }
        let ip = self.client_ip(parts);
        // No client address (an embedding that gives no `PeerAddr`): the allow-list denies.
        if !settings.stats_allowed_ips.is_empty()
            && !ip.is_some_and(|ip| settings.stats_allowed_ips.contains(&ip))
        {
            return response::detail(StatusCode::FORBIDDEN, "Access denied from this IP address");
        }
        if !self.inner.stats_limiter.allow(limiter_key(ip)) {
            return Self::rate_limited(&self.inner.stats_limiter);
        }
        self.inner.hooks.prune(&self.inner.provider.snapshot());
        response::json(
            StatusCode::OK,
            &self.inner.hooks.render_stats(settings.stats_sanitize_ids),
        )
    }

    fn metrics(&self) -> Response<Body> {
        let inner = &self.inner;
        let provider = &inner.provider;
        inner.hooks.prune(&provider.snapshot());
        let text = inner.metrics.render(
            &provider.status(),
            provider.state(),
            self.queued(),
            &inner.hooks,
            &inner.connections,
            inner.modules.as_ref(),
        );
        let mut r = Response::new(Body::new(text));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        r
    }
}

/// The rate limiters' key for a client: its address, or one key shared by every request whose
/// address is unknown (an embedding that gives no [`PeerAddr`]), so those are limited together
/// rather than not at all. `::` is never the address of a real peer.
fn limiter_key(ip: Option<std::net::IpAddr>) -> std::net::IpAddr {
    ip.unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Which routes a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routes {
    /// Every route of the Python gateway: [`Receiver::handle`].
    All,
    /// Only `POST /webhook/...`: [`WebhookService`].
    Webhooks,
}

/// The webhook routes of a [`Receiver`] alone: `POST /webhook/{id}` and
/// `POST /webhook/{namespace}/{id}`, with the receiver's whole request path (validators, limits,
/// the delivery promise, security headers, metrics and `/stats` counts). Every other path,
/// `/health`, `/metrics`, `/stats` and the admin API included, answers 404, so an application can
/// mount this next to its own routes without exposing the receiver's.
///
/// The address checks (`ip_whitelist`, trusted proxies) need the TCP peer: put a [`PeerAddr`] in
/// each request's extensions. Without one, `ip_whitelist` refuses the request (403).
///
/// Cheap to clone; clones share the receiver's state. Also a `tower_service::Service`.
#[derive(Clone)]
pub struct WebhookService {
    receiver: Receiver,
}

impl WebhookService {
    /// Answer one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: RequestBody,
    {
        self.receiver.answer(req, Routes::Webhooks).await
    }

    /// The receiver these routes belong to.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }
}

impl<B> tower_service::Service<Request<B>> for WebhookService
where
    B: RequestBody + Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// Marks an answer sent before the request body was read whole: the connection closes after it,
/// by lingering (reading and discarding what the client still sends) so the client reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeftUnread;

/// Close the connection after `resp`, lingering.
pub(crate) fn close_after(resp: &mut Response<Body>) {
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp.extensions_mut().insert(LeftUnread);
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = response::detail(StatusCode::TEMPORARY_REDIRECT, "Redirect");
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}
