//! Response building: JSON bodies, `{"detail": ...}` errors and the headers every response carries.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

pub type Body = Full<Bytes>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON response from a pre-serialised body.
pub fn raw_json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => raw_json(status, body),
        Err(_) => internal_error(),
    }
}

/// `{"detail": msg}`.
pub fn detail(status: StatusCode, msg: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "detail": msg }))
}

/// 500 with the generic body: internal error text never reaches the client.
pub fn internal_error() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"detail":"An error occurred while processing the request"}"#,
    )));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

/// `{"message":"200 OK"}`.
pub fn ok() -> Response<Body> {
    raw_json(
        StatusCode::OK,
        Bytes::from_static(br#"{"message":"200 OK"}"#),
    )
}

/// 503 with `Retry-After`.
pub fn unavailable(msg: &str, retry_after: u32) -> Response<Body> {
    let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// 405 with `Allow`.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

pub fn not_found() -> Response<Body> {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "1; mode=block"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "geolocation=(), microphone=(), camera=(), payment=(), usb=(), magnetometer=(), gyroscope=(), accelerometer=()",
    ),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    ),
];

/// Add the headers every upstream response carries (pipeline.md 1.9).
pub fn add_security_headers(r: &mut Response<Body>, hsts: bool) {
    let h = r.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if hsts {
        h.insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}
