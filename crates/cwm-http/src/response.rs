//! Response building: JSON bodies, `{"detail": ...}` errors and the headers every response carries.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{Full, StreamBody};
use serde::Serialize;

/// The body of every response: the whole body in one buffer (every answer but the streaming
/// ones, at no more cost than a `Full<Bytes>`), or a stream (Server-Sent Events).
pub struct Body(Kind);

enum Kind {
    Full(Full<Bytes>),
    Stream(UnsyncBoxBody<Bytes, Infallible>),
}

impl Body {
    /// A body of `data`, whole.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self(Kind::Full(Full::new(data.into())))
    }

    /// A body sent as `chunks` come, ending with the stream.
    pub(crate) fn stream<S>(chunks: S) -> Self
    where
        S: futures_util::Stream<Item = Bytes> + Send + 'static,
    {
        use futures_util::StreamExt as _;
        let frames = chunks.map(|c| Ok::<_, Infallible>(Frame::data(c)));
        Self(Kind::Stream(UnsyncBoxBody::new(StreamBody::new(frames))))
    }

    /// Whether the body is a stream.
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self.0, Kind::Stream(_))
    }

    /// Keep `value` alive as long as the body is (a streaming body only; a whole body drops it).
    pub(crate) fn hold<T: Send + Unpin + 'static>(self, value: T) -> Self {
        match self.0 {
            Kind::Stream(inner) => Self(Kind::Stream(UnsyncBoxBody::new(Holding(inner, value)))),
            full => Self(full),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::new(Bytes::new())
    }
}

impl From<Bytes> for Body {
    fn from(data: Bytes) -> Self {
        Self::new(data)
    }
}

impl From<Full<Bytes>> for Body {
    fn from(full: Full<Bytes>) -> Self {
        Self(Kind::Full(full))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Full(b) => f.debug_tuple("Body").field(b).finish(),
            Kind::Stream(_) => f.write_str("Body(<stream>)"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Kind::Full(b) => Pin::new(b).poll_frame(cx),
            Kind::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_end_stream(),
            Kind::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => b.size_hint(),
            Kind::Stream(b) => b.size_hint(),
        }
    }
}

/// A streaming body with a value that lives as long as it.
struct Holding<T>(UnsyncBoxBody<Bytes, Infallible>, T);

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON response from a pre-serialised body.
pub fn raw_json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::new(body));
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
    let mut r = Response::new(Body::new(Bytes::from_static(
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
