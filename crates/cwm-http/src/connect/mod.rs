//! Webhook Connect: the streaming API a connector behind a firewall holds open
//! (`/connect/...`: WebSocket, Server-Sent Events, long-poll, acks, channel status) and the
//! operators' admin API (`/admin/webhook-connect/...`), both over the receiver's
//! [`ChannelManager`](cwm_relay::cloud::ChannelManager).
//!
//! Without a manager ([`Receiver::with_connect`](crate::Receiver::with_connect) not called)
//! every route answers 503 `{"detail":"Webhook Connect not initialized"}` (the admin routes
//! check the admin token first, and without a manager there is none: 403).
//!
//! Errors are `{"detail": ...}`; missing or malformed parameters answer 422 with a list of
//! errors, as the Python gateway's framework does.

// The early answers of the checks travel as `Err(response)`: once per request, on the refusal
// path, where the size of a response does not matter.
#![allow(clippy::result_large_err)]

mod ack;
pub(crate) mod admin;
mod poll;
mod sse;
mod ws;

use std::net::IpAddr;

use cwm_relay::cloud::ChannelManager;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::Inner;
use crate::response::{self, Body};

/// Path prefix of the admin API.
pub(crate) const ADMIN_PREFIX: &str = "/admin/webhook-connect/";

/// The manager, or the 503 every route answers without one.
fn manager(inner: &Inner) -> Result<&ChannelManager, Response<Body>> {
    inner.connect.as_ref().ok_or_else(not_initialized)
}

pub(crate) fn not_initialized() -> Response<Body> {
    response::detail(
        StatusCode::SERVICE_UNAVAILABLE,
        "Webhook Connect not initialized",
    )
}

/// Route `/connect/{rest}`.
pub(crate) async fn handle(
    inner: &Inner,
    parts: &Parts,
    method: &Method,
    rest: &str,
    remote_ip: Option<IpAddr>,
) -> Response<Body> {
    let mut segments = rest.split('/');
    let route = match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("ack"), None, ..) => Route::Ack,
        (Some("status"), Some(ch), None, _) if !ch.is_empty() => Route::Status(ch),
        (Some("stream"), Some(ch), None, _) if !ch.is_empty() => Route::WebSocket(ch),
        (Some("stream"), Some(ch), Some("sse"), None) if !ch.is_empty() => Route::Sse(ch),
        (Some("stream"), Some(ch), Some("poll"), None) if !ch.is_empty() => Route::Poll(ch),
        _ => return response::not_found(),
    };
    let allowed = if matches!(route, Route::Ack) {
        Method::POST
    } else {
        Method::GET
    };
    if *method != allowed {
        return response::method_not_allowed(allow(&allowed));
    }
    let manager = match manager(inner) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match route {
        Route::Ack => ack::ack(manager, parts).await,
        Route::Status(ch) => ack::status(manager, parts, &crate::decode(ch)).await,
        Route::WebSocket(ch) => ws::handshake(manager, parts, crate::decode(ch), remote_ip),
        Route::Sse(ch) => sse::stream(manager, parts, &crate::decode(ch), remote_ip),
        Route::Poll(ch) => poll::poll(manager, parts, &crate::decode(ch), remote_ip).await,
    }
}

enum Route<'a> {
    Ack,
    Status(&'a str),
    WebSocket(&'a str),
    Sse(&'a str),
    Poll(&'a str),
}

/// `allowed` as a static `Allow` value.
fn allow(allowed: &Method) -> &'static str {
    match *allowed {
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "GET",
    }
}

/// The query parameters of a request, percent-decoded (`+` is a space), in order.
fn query(parts: &Parts) -> Vec<(String, String)> {
    let Some(q) = parts.uri.query() else {
        return Vec::new();
    };
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of query parameter `name`.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A header as text (`None` when absent or not visible ASCII).
fn header(parts: &Parts, name: impl http::header::AsHeaderName) -> Option<&str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of an `Authorization` value: `Bearer ` removed, trimmed.
fn bearer(value: &str) -> &str {
    value.strip_prefix("Bearer ").unwrap_or(value).trim()
}

/// `X-Connector-ID`, if sent and not empty.
fn connector_id(parts: &Parts) -> Option<String> {
    header(parts, cwm_relay::protocol::CONNECTOR_ID_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The channel token of an SSE or long-poll request: the `token` query parameter, overridden by
/// the `Authorization` header when that is present. `None` when neither gives one.
fn stream_token(parts: &Parts) -> Option<String> {
    let token = match parts.headers.get(http::header::AUTHORIZATION) {
        Some(v) => bearer(&String::from_utf8_lossy(v.as_bytes())).to_owned(),
        None => param(&query(parts), "token")
            .unwrap_or("")
            .trim()
            .to_owned(),
    };
    (!token.is_empty()).then_some(token)
}

/// The checks SSE and long-poll share before connecting: 401 without a token or with a wrong
/// one (an unknown channel included: the two are not told apart).
fn authenticate(
    manager: &ChannelManager,
    parts: &Parts,
    channel: &str,
) -> Result<(), Response<Body>> {
    let Some(token) = stream_token(parts) else {
        return Err(response::detail(
            StatusCode::UNAUTHORIZED,
            "Missing authorization token",
        ));
    };
    manager
        .authenticate(channel, &token)
        .map_err(|e| response::detail(StatusCode::UNAUTHORIZED, &e.to_string()))
}

/// 422 in the Python gateway's shape: `{"detail": [{"type", "loc", "msg", "input"}]}`.
fn unprocessable(kind: &str, loc: &[&str], msg: &str, input: Option<&str>) -> Response<Body> {
    response::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"detail": [{
            "type": kind,
            "loc": loc,
            "msg": msg,
            "input": input,
        }]}),
    )
}

/// A required parameter is absent.
fn missing(location: &str, name: &str) -> Response<Body> {
    unprocessable("missing", &[location, name], "Field required", None)
}

/// An integer query parameter within `range`, or its 422.
fn int_param(
    query: &[(String, String)],
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, Response<Body>> {
    let Some(raw) = param(query, name) else {
        return Ok(default);
    };
    let Ok(n) = raw.trim().parse::<i64>() else {
        return Err(unprocessable(
            "int_parsing",
            &["query", name],
            "Input should be a valid integer, unable to parse string as an integer",
            Some(raw),
        ));
    };
    if n < *range.start() {
        return Err(unprocessable(
            "greater_than_equal",
            &["query", name],
            &format!("Input should be greater than or equal to {}", range.start()),
            Some(raw),
        ));
    }
    if n > *range.end() {
        return Err(unprocessable(
            "less_than_equal",
            &["query", name],
            &format!("Input should be less than or equal to {}", range.end()),
            Some(raw),
        ));
    }
    Ok(n)
}

/// A boolean query parameter as the Python gateway reads one, or its 422.
fn bool_param(
    query: &[(String, String)],
    name: &str,
    default: bool,
) -> Result<bool, Response<Body>> {
    let Some(raw) = param(query, name) else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
        _ => Err(unprocessable(
            "bool_parsing",
            &["query", name],
            "Input should be a valid boolean, unable to interpret input",
            Some(raw),
        )),
    }
}
