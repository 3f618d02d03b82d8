//! Response building: JSON bodies, `{"detail": ...}` errors and the headers every response carries.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The body of every response: the whole body in one buffer.
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

/// Built at compile time (no validation at run time); copied into each response via the template
/// in [`add_security_headers`].
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 6] = [
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    ),
    (
        HeaderName::from_static("x-xss-protection"),
        HeaderValue::from_static("1; mode=block"),
    ),
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
    (
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(
            "geolocation=(), microphone=(), camera=(), payment=(), usb=(), magnetometer=(), gyroscope=(), accelerometer=()",
        ),
    ),
    (
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        ),
    ),
];
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");

/// Add the headers every upstream response carries. The response's own headers
/// are moved into a copy of a map that already holds the security headers: cloning it costs less
/// than hashing and inserting six header names per response.
pub fn add_security_headers(r: &mut Response<Body>, hsts: bool) {
    static TEMPLATE: LazyLock<HeaderMap> = LazyLock::new(|| {
        let mut h = HeaderMap::with_capacity(SECURITY_HEADERS.len() + 4);
        for (name, value) in SECURITY_HEADERS {
            h.insert(name, value);
        }
        h
    });
    let own = std::mem::replace(r.headers_mut(), TEMPLATE.clone());
    let h = r.headers_mut();
    h.extend(own);
    if hsts {
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_headers_join_the_response_own_headers() {
        for hsts in [false, true] {
            let mut r = unavailable("busy", 7);
            add_security_headers(&mut r, hsts);
            let h = r.headers();
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(h["retry-after"], "7");
            assert_eq!(h["x-frame-options"], "DENY");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("frame-ancestors")
            );
            assert_eq!(h.contains_key("strict-transport-security"), hsts);
            assert_eq!(h.len(), 2 + SECURITY_HEADERS.len() + usize::from(hsts));
        }
    }
}
