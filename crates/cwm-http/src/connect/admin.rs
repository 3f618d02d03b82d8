//! The Webhook Connect admin API, `/admin/webhook-connect/...`: health (no auth), channels,
//! channel detail, token rotation, disconnecting a connection, per-webhook depths, statistics,
//! dead letters and an overview. Every route but `health` needs the admin token
//! (`Authorization: Bearer <token>`, compared in constant time); an empty admin token disables
//! them (403).

use std::time::Duration;

use cwm_relay::cloud::{ChannelManager, DisconnectError};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{int_param, query, unprocessable};
use crate::auth::{AdminDenied, check_admin};
use crate::response::{self, Body};
use crate::{Inner, RequestBody};

/// The rotation grace period when the body names none.
const DEFAULT_GRACE: u64 = 3600;
/// The most dead letters one request lists.
const MAX_DEAD_LETTERS: i64 = 10_000;

enum Route<'a> {
    Health,
    Channels,
    Overview,
    Channel(&'a str),
    Rotate(&'a str),
    Disconnect(&'a str, &'a str),
    WebhookStats(&'a str),
    Stats(&'a str),
    DeadLetters(&'a str),
}

/// Route `/admin/webhook-connect/{rest}`.
pub(crate) async fn handle<B: RequestBody>(
    inner: &Inner,
    parts: &Parts,
    body: &mut Option<B>,
    method: &Method,
    rest: &str,
) -> Response<Body> {
    let segments: Vec<&str> = rest.split('/').collect();
    let (route, allowed) = match segments.as_slice() {
        ["health"] => (Route::Health, Method::GET),
        ["channels"] => (Route::Channels, Method::GET),
        ["overview"] => (Route::Overview, Method::GET),
        ["channels", ch] if !ch.is_empty() => (Route::Channel(ch), Method::GET),
        ["channels", ch, "rotate-token"] if !ch.is_empty() => (Route::Rotate(ch), Method::POST),
        ["channels", ch, "webhook-stats"] if !ch.is_empty() => {
            (Route::WebhookStats(ch), Method::GET)
        }
        ["channels", ch, "stats"] if !ch.is_empty() => (Route::Stats(ch), Method::GET),
        ["channels", ch, "dead-letters"] if !ch.is_empty() => (Route::DeadLetters(ch), Method::GET),
        ["channels", ch, "connections", id] if !ch.is_empty() && !id.is_empty() => {
            (Route::Disconnect(ch, id), Method::DELETE)
        }
        _ => return response::not_found(),
    };
    if *method != allowed {
        return response::method_not_allowed(super::allow(&allowed));
    }
    if !matches!(route, Route::Health)
        && let Err(r) = authorize(inner.connect.as_ref(), parts)
    {
        return r;
    }
    let Some(manager) = inner.connect.as_ref() else {
        return super::not_initialized();
    };
    let decode = crate::decode;
    let not_found = || response::detail(StatusCode::NOT_FOUND, "Channel not found");
    match route {
        Route::Health => response::json(StatusCode::OK, &manager.health().await),
        Route::Channels => response::json(StatusCode::OK, &manager.channels()),
        Route::Overview => response::json(StatusCode::OK, &manager.overview().await),
        Route::Channel(ch) => match manager.channel_detail(&decode(ch)).await {
            Some(v) => response::json(StatusCode::OK, &v),
            None => not_found(),
        },
        Route::Stats(ch) => match manager.stats(&decode(ch)).await {
            Some(v) => response::json(StatusCode::OK, &v),
            None => not_found(),
        },
        Route::WebhookStats(ch) => {
            let ch = decode(ch);
            match manager.webhook_stats(&ch).await {
                Some(depths) => {
                    let webhooks: serde_json::Map<String, Value> = depths
                        .into_iter()
                        .map(|(id, pending)| (id, json!({ "pending": pending })))
                        .collect();
                    response::json(
                        StatusCode::OK,
                        &json!({"channel": ch, "webhooks": webhooks}),
                    )
                }
                None => not_found(),
            }
        }
        Route::DeadLetters(ch) => dead_letters(manager, parts, &decode(ch)).await,
        Route::Rotate(ch) => rotate(inner, manager, body, &decode(ch)).await,
        Route::Disconnect(ch, id) => {
            let id = decode(id);
            match manager.disconnect(&decode(ch), &id) {
                Ok(()) => response::json(
                    StatusCode::OK,
                    &json!({"status": "disconnected", "connection_id": id}),
                ),
                Err(e @ DisconnectError::NotFound) => {
                    response::detail(StatusCode::NOT_FOUND, &e.to_string())
                }
                Err(e @ DisconnectError::WrongChannel) => {
                    response::detail(StatusCode::BAD_REQUEST, &e.to_string())
                }
            }
        }
    }
}

/// The admin token check (the receiver's own, [`check_admin`]), answered with the Python
/// gateway's messages: 403 when there is no admin token, 401 without or with a wrong one.
fn authorize(manager: Option<&ChannelManager>, parts: &Parts) -> Result<(), Response<Body>> {
    let configured = manager.map(|m| m.settings().admin_token.as_str());
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes);
    check_admin(configured, header).map_err(|denied| match denied {
        AdminDenied::Disabled => response::detail(
            StatusCode::FORBIDDEN,
            "Admin API disabled. Set WEBHOOK_CONNECT_ADMIN_TOKEN environment variable.",
        ),
        AdminDenied::Unauthorized(_) if header.is_none_or(<[u8]>::is_empty) => {
            response::detail(StatusCode::UNAUTHORIZED, "Missing authorization header")
        }
        AdminDenied::Unauthorized(_) => {
            response::detail(StatusCode::UNAUTHORIZED, "Invalid admin token")
        }
    })
}

/// `POST .../channels/{ch}/rotate-token` with `{"grace_period_seconds": int}` (default 3600).
async fn rotate<B: RequestBody>(
    inner: &Inner,
    manager: &ChannelManager,
    body: &mut Option<B>,
    channel: &str,
) -> Response<Body> {
    let bytes = match crate::admin::read_admin_body(inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let doc = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return unprocessable(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object",
                None,
            );
        }
        Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => {
            return unprocessable("missing", &["body"], "Field required", None);
        }
        Err(_) => {
            return unprocessable("json_invalid", &["body"], "JSON decode error", None);
        }
    };
    let grace = match doc.get("grace_period_seconds") {
        None => DEFAULT_GRACE,
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => {
                return unprocessable(
                    "int_type",
                    &["body", "grace_period_seconds"],
                    "Input should be a non-negative integer",
                    None,
                );
            }
        },
    };
    match manager.rotate_token(channel, Duration::from_secs(grace)) {
        Some(rotation) => response::json(StatusCode::OK, &rotation),
        None => response::detail(StatusCode::NOT_FOUND, "Channel not found"),
    }
}

/// `GET .../channels/{ch}/dead-letters?limit=100`, newest first, not consumed.
async fn dead_letters(manager: &ChannelManager, parts: &Parts, channel: &str) -> Response<Body> {
    let limit = match int_param(&query(parts), "limit", 100, 0..=i64::MAX) {
        Ok(n) => usize::try_from(n.min(MAX_DEAD_LETTERS)).unwrap_or(0),
        Err(r) => return r,
    };
    match manager.dead_letters(channel, limit).await {
        Ok(Some(messages)) => response::json(
            StatusCode::OK,
            &json!({"channel": channel, "count": messages.len(), "messages": messages}),
        ),
        Ok(None) => response::detail(StatusCode::NOT_FOUND, "Channel not found"),
        Err(e) => {
            tracing::error!(channel, error = %e, "reading dead letters failed");
            response::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to read dead letters",
            )
        }
    }
}
