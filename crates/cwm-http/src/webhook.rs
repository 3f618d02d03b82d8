//! The webhook request path: `POST /webhook/{id}` and `POST /webhook/{namespace}/{id}`.
//!
//! Order (the upstream's, with its status codes and delivery promise amended): namespace, config loaded, id, lookup,
//! declared size, the checks that need only the request head (validators), header limits,
//! streamed body with its limit and idle timeout, the checks that need the body, decoding,
//! credential cleanup, delivery. Nothing here awaits the config backend: the lookup is a
//! snapshot load. An answer given before the body was read leaves the body to the caller, which
//! drains it so the client reads the answer.

use std::sync::Arc;
use std::time::SystemTime;

use cwm_config::names::{is_valid_namespace, validate_webhook_id};
use cwm_config::{Ack, BackendState, DataType};
use cwm_modules::{CompiledWebhook, Denial, Event, Payload, RequestHead, SinkError, Validators};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};

use crate::body;
use crate::hooks::HookState;
use crate::response::{self, Body};
use crate::{Inner, PeerAddr, RequestBody, json};

const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 8192;

pub(crate) async fn handle<B>(
    inner: &Arc<Inner>,
    parts: &Parts,
    body: &mut Option<B>,
    namespace: Option<String>,
    id: String,
) -> Response<Body>
where
    B: RequestBody,
{
    let (response, state) = answer(inner, parts, body, namespace, id).await;
    state
        .as_ref()
        .unwrap_or_else(|| inner.hooks.unknown())
        .answered(response.status().as_u16());
    response
}

/// The answer, and the state of the configured webhook that answered (none when no webhook
/// matched: such requests are counted under one label).
async fn answer<B>(
    inner: &Arc<Inner>,
    parts: &Parts,
    body: &mut Option<B>,
    namespace: Option<String>,
    id: String,
) -> (Response<Body>, Option<Arc<HookState>>)
where
    B: RequestBody,
{
    if let Some(ns) = &namespace
        && !is_valid_namespace(ns)
    {
        return (
            response::detail(StatusCode::BAD_REQUEST, "Invalid namespace format"),
            None,
        );
    }
    if inner.provider.state() == BackendState::Connecting {
        let r = response::unavailable(
            "configuration not loaded",
            inner.settings.retry_after_seconds,
        );
        return (r, None);
    }
    if let Err(e) = validate_webhook_id(&id) {
        return (
            response::detail(StatusCode::BAD_REQUEST, &e.to_string()),
            None,
        );
    }
    let (hook, state) = {
        let snap = inner.provider.snapshot();
        match snap.lookup(namespace.as_deref(), &id) {
            Some(found) => (
                found.webhook.clone(),
                inner.hooks.get(found.namespace, found.id, &snap),
            ),
            None => {
                let r = response::detail(StatusCode::NOT_FOUND, "Webhook ID not found");
                return (r, None);
            }
        }
    };
    let response = deliver_request(inner, parts, body, hook, &state, namespace, id).await;
    (response, Some(state))
}

async fn deliver_request<B>(
    inner: &Arc<Inner>,
    parts: &Parts,
    body: &mut Option<B>,
    hook: Arc<CompiledWebhook>,
    state: &Arc<HookState>,
    namespace: Option<String>,
    id: String,
) -> Response<Body>
where
    B: RequestBody,
{
    let settings = &inner.settings;
    let max = settings.max_payload_bytes;
    if let Some(len) = body::declared_length(&parts.headers)
        && len > max as u64
    {
        return too_large(Some(len), max);
    }
    let head = RequestHead {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        peer: parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()),
    };
    if !hook.validators.head().is_empty()
        && let Err(d) = Validators::run(hook.validators.head(), &head, &[]).await
    {
        return denied(d, settings.retry_after_seconds);
    }
    let mut headers = match collect_headers(&parts.headers) {
        Ok(h) => h,
        Err(msg) => return response::detail(StatusCode::BAD_REQUEST, &msg),
    };
    let Some(body) = body.take() else {
        return response::internal_error();
    };
    let bytes = match body::read(body, max, settings.body_idle_timeout).await {
        Ok(b) => b,
        Err(e) => return e.answer(too_large(None, max)),
    };
    if !hook.validators.body().is_empty()
        && let Err(d) = Validators::run(hook.validators.body(), &head, &bytes).await
    {
        return denied(d, settings.retry_after_seconds);
    }
    let payload = match hook.config.data_type {
        DataType::Blob => Payload::Blob(bytes),
        DataType::Json => {
            let ct = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match json::parse(bytes, ct, &hook.cleanup) {
                Ok(json) => Payload::Json(json),
                Err(e) => return response::detail(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
    };
    hook.cleanup.clean_headers(&mut headers);
    let event = Event {
        namespace: namespace.map(Into::into),
        webhook_id: id.into(),
        payload,
        headers,
        received_at: SystemTime::now(),
    };
    match hook.config.ack {
        Ack::Delivery => {
            let deadline = tokio::time::Instant::now() + inner.settings.delivery_timeout;
            match deliver(inner, &hook, &event, deadline).await {
                Ok(()) => {
                    if let Some(analytics) = &inner.metrics.analytics {
                        analytics.record(event);
                    }
                    response::ok()
                }
                Err(e) => {
                    tracing::warn!(webhook = %event.webhook_id, module = hook.sink.module(), error = %e, "delivery failed; sender asked to retry");
                    response::unavailable(
                        "Delivery failed, please retry later",
                        inner.settings.retry_after_seconds,
                    )
                }
            }
        }
        Ack::Receive => enqueue(inner, hook, state, event),
    }
}

/// `"ack": "receive"`: answer now, deliver in the background, 503 when the queue or this
/// webhook's share of it is full (one slow sink cannot take the queue of every other webhook).
fn enqueue(
    inner: &Arc<Inner>,
    hook: Arc<CompiledWebhook>,
    state: &Arc<HookState>,
    event: Event,
) -> Response<Body> {
    let full = || {
        response::unavailable(
            "Queue full, please retry later",
            inner.settings.retry_after_seconds,
        )
    };
    if !state.try_enqueue(inner.settings.receive_queue_per_webhook) {
        return full();
    }
    let Ok(permit) = inner.queue.clone().try_acquire_owned() else {
        state.dequeued();
        return full();
    };
    let this = inner.clone();
    let state = state.clone();
    inner.tasks.spawn(async move {
        let deadline = tokio::time::Instant::now() + this.settings.delivery_timeout;
        if let Err(e) = deliver(&this, &hook, &event, deadline).await {
            tracing::error!(webhook = %event.webhook_id, module = hook.sink.module(), error = %e, "queued event could not be delivered and is dropped");
        }
        // The sender got 200 when the event was queued: it is logged whatever the delivery did.
        if let Some(analytics) = &this.metrics.analytics {
            analytics.record(event);
        }
        state.dequeued();
        drop(permit);
    });
    response::ok()
}

/// Deliver with the webhook's retry policy, inside `deadline`; every attempt is measured.
async fn deliver(
    inner: &Inner,
    hook: &CompiledWebhook,
    event: &Event,
    deadline: tokio::time::Instant,
) -> Result<(), SinkError> {
    let observe = |module: &'static str, ok: bool, took: std::time::Duration| {
        inner.metrics.delivery(module, ok, took);
    };
    cwm_modules::retry::deliver(&*hook.sink, event, hook.retry.as_ref(), deadline, &observe).await
}

/// The answer to a refused request: 401, 403, 429 with `Retry-After`, 400 or 503.
fn denied(d: Denial, retry_after: u32) -> Response<Body> {
    match d {
        Denial::Unauthorized(m) => response::detail(StatusCode::UNAUTHORIZED, &m),
        Denial::Forbidden(m) => response::detail(StatusCode::FORBIDDEN, &m),
        Denial::Invalid(m) => response::detail(StatusCode::BAD_REQUEST, &m),
        Denial::Unavailable(m) => response::unavailable(&m, retry_after),
        Denial::RateLimited {
            message,
            retry_after,
        } => {
            let mut r = response::detail(StatusCode::TOO_MANY_REQUESTS, &message);
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after),
            );
            r
        }
    }
}

fn too_large(len: Option<u64>, max: usize) -> Response<Body> {
    let msg = match len {
        Some(n) => format!("Payload too large: {n} bytes (max: {max})"),
        None => format!("Payload too large (max: {max} bytes)"),
    };
    response::detail(StatusCode::PAYLOAD_TOO_LARGE, &msg)
}

/// Lower-case names (hyper already lower-cases), last occurrence wins, with the upstream limits.
fn collect_headers(map: &HeaderMap) -> Result<Vec<(String, String)>, String> {
    let n = map.keys_len();
    if n > MAX_HEADERS {
        return Err(format!("Too many headers: {n} (max: {MAX_HEADERS})"));
    }
    let mut out = Vec::with_capacity(n);
    let mut total = 0;
    for name in map.keys() {
        let Some(value) = map.get_all(name).iter().next_back() else {
            continue;
        };
        let v = value.as_bytes();
        if v.contains(&0) || contains_line_separator(v) {
            return Err("Invalid header value: contains forbidden character".into());
        }
        total += name.as_str().len() + v.len();
        out.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    if total > MAX_HEADER_BYTES {
        return Err(format!(
            "Headers too large: {total} bytes (max: {MAX_HEADER_BYTES})"
        ));
    }
    Ok(out)
}

/// U+2028 / U+2029 in UTF-8.
fn contains_line_separator(v: &[u8]) -> bool {
    v.windows(3)
        .any(|w| w[0] == 0xE2 && w[1] == 0x80 && (w[2] == 0xA8 || w[2] == 0xA9))
}
