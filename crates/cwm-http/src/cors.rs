//! CORS as the Python gateway's layer does it: `CORS_ALLOWED_ORIGINS` is a
//! comma-separated list of origins, validated once at startup; a preflight on any path is answered
//! here before routing; every other request with an `Origin` gets the CORS headers added to its
//! normal answer.
//!
//! Cost: with CORS off (the default) a request pays one branch. With CORS on, a request without
//! `Origin` pays one header lookup; one with `Origin` adds a binary search over the allowed
//! origins and two or three header inserts. Every header value is built at startup.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};

use crate::response::Body;

/// Methods a preflight may ask for, in the order the Python gateway lists them.
const METHODS: [&str; 3] = ["POST", "GET", "OPTIONS"];
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("POST, GET, OPTIONS");
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
/// The gateway's allowed headers plus the CORS-safelisted ones, sorted, as the Python gateway
/// sends them.
const HEADERS: [&str; 15] = [
    "Accept",
    "Accept-Language",
    "Authorization",
    "Content-Language",
    "Content-Type",
    "X-API-Key",
    "X-Auth-Token",
    "X-Forwarded-For",
    "X-HMAC-Signature",
    "X-HMAC-Signature-256",
    "X-Hub-Signature",
    "X-Hub-Signature-256",
    "X-Real-IP",
    "X-Recaptcha-Token",
    "X-Requested-With",
];
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Accept, Accept-Language, Authorization, Content-Language, Content-Type, X-API-Key, \
     X-Auth-Token, X-Forwarded-For, X-HMAC-Signature, X-HMAC-Signature-256, X-Hub-Signature, \
     X-Hub-Signature-256, X-Real-IP, X-Recaptcha-Token, X-Requested-With",
);
const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, \
     Access-Control-Request-Private-Network",
);
const TRUE: HeaderValue = HeaderValue::from_static("true");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

/// The CORS setting of the receiver (`CORS_ALLOWED_ORIGINS`). Cheap to clone.
///
/// Off by default: no CORS headers are sent and an `OPTIONS` preflight is routed like any other
/// request. On when at least one origin is valid; credentials are then allowed, as the Python
/// gateway allows them whenever one origin is.
#[derive(Clone, Default)]
pub struct Cors(Option<Arc<Policy>>);

impl Cors {
    /// CORS off.
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Parse `CORS_ALLOWED_ORIGINS`. Invalid entries are skipped with a warning, localhost ones
    /// kept with a warning; without any valid entry CORS stays off.
    pub fn parse(list: &str) -> Self {
        let mut origins = Vec::new();
        for entry in list.split(',').map(py_trim).filter(|e| !e.is_empty()) {
            match check_origin(entry) {
                Ok(origin) => {
                    if origin.localhost {
                        tracing::warn!(
                            origin = entry,
                            "CORS origin on localhost allowed: fine for development, not for production"
                        );
                    }
                    origins.push(origin.value);
                }
                Err(reason) => {
                    tracing::warn!(origin = entry, reason, "invalid CORS origin skipped");
                }
            }
        }
        if origins.is_empty() {
            if !py_trim(list).is_empty() {
                tracing::warn!("CORS_ALLOWED_ORIGINS holds no valid origin: CORS is off");
            }
            return Self::disabled();
        }
        let cors = Self::from_valid(origins);
        tracing::info!(origins = ?cors, "CORS on");
        cors
    }

    fn from_valid(mut origins: Vec<HeaderValue>) -> Self {
        origins.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        origins.dedup();
        let mut preflight = HeaderMap::with_capacity(8);
        preflight.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        preflight.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        preflight.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        preflight.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        preflight.insert(VARY, PREFLIGHT_VARY);
        preflight.insert(CONTENT_TYPE, TEXT);
        Self(Some(Arc::new(Policy {
            origins: origins.into_boxed_slice(),
            preflight,
        })))
    }

    /// Whether any origin is allowed (CORS is on).
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The allowed origins, sorted and without duplicates.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .flat_map(|p| p.origins.iter())
            .filter_map(|v| v.to_str().ok())
    }

    /// Answer a request: a preflight here, anything else through `route`, with the CORS headers
    /// added to its answer. With CORS off this is `route(req)`.
    pub(crate) async fn handle<B, F, Fut>(&self, req: Request<B>, route: F) -> Response<Body>
    where
        F: FnOnce(Request<B>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        match &self.0 {
            None => route(req).await,
            Some(policy) => policy.handle(req, route).await,
        }
    }
}

impl std::fmt::Debug for Cors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("disabled"),
            Some(_) => f.debug_list().entries(self.origins()).finish(),
        }
    }
}

pub(crate) struct Policy {
    /// Sorted by bytes, for a binary search.
    origins: Box<[HeaderValue]>,
    /// Every header of a preflight answer except `Access-Control-Allow-Origin`.
    preflight: HeaderMap,
}

impl Policy {
    async fn handle<B, F, Fut>(&self, req: Request<B>, route: F) -> Response<Body>
    where
        F: FnOnce(Request<B>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        // As the Python layer reads headers: the first `Origin`, compared byte for byte.
        let Some(origin) = req.headers().get(ORIGIN) else {
            return route(req).await;
        };
        let allowed = self.allowed(origin.as_bytes());
        if req.method() == Method::OPTIONS
            && let Some(method) = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return self.preflight(allowed, method, req.headers());
        }
        let mut resp = route(req).await;
        let h = resp.headers_mut();
        if let Some(origin) = allowed {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        add_vary_origin(h);
        resp
    }

    /// The prebuilt value of `origin` when it is allowed.
    fn allowed(&self, origin: &[u8]) -> Option<&HeaderValue> {
        self.origins
            .binary_search_by(|o| o.as_bytes().cmp(origin))
            .ok()
            .and_then(|i| self.origins.get(i))
    }

    /// 200 `OK`, or 400 `Disallowed CORS <what>` listing every check that failed, in the Python
    /// layer's order: origin, method, headers, private-network (never allowed).
    fn preflight(
        &self,
        allowed: Option<&HeaderValue>,
        method: &HeaderValue,
        request: &HeaderMap,
    ) -> Response<Body> {
        let mut failures: Vec<&str> = Vec::new();
        if allowed.is_none() {
            failures.push("origin");
        }
        if !METHODS.iter().any(|m| m.as_bytes() == method.as_bytes()) {
            failures.push("method");
        }
        if let Some(asked) = request.get(ACCESS_CONTROL_REQUEST_HEADERS)
            && !asked.as_bytes().split(|&b| b == b',').all(header_allowed)
        {
            failures.push("headers");
        }
        if request.contains_key(REQUEST_PRIVATE_NETWORK) {
            failures.push("private-network");
        }
        let (status, body) = if failures.is_empty() {
            (StatusCode::OK, Bytes::from_static(b"OK"))
        } else {
            let text = format!("Disallowed CORS {}", failures.join(", "));
            (StatusCode::BAD_REQUEST, Bytes::from(text))
        };
        let mut r = Response::new(Body::new(body));
        *r.status_mut() = status;
        let mut headers = self.preflight.clone();
        if let Some(origin) = allowed {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        *r.headers_mut() = headers;
        r
    }
}

/// Whether one item of `Access-Control-Request-Headers` is allowed: trimmed and compared without
/// case, as the Python layer does (an empty item is not allowed).
fn header_allowed(item: &[u8]) -> bool {
    let item = py_trim_bytes(item);
    HEADERS
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(item))
}

/// `Vary: Origin`, appended to a `Vary` the answer already has.
fn add_vary_origin(h: &mut HeaderMap) {
    match h.get(VARY) {
        None => {
            h.insert(VARY, VARY_ORIGIN);
        }
        Some(existing) => {
            let mut v = existing.as_bytes().to_vec();
            v.extend_from_slice(b", Origin");
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                h.insert(VARY, v);
            }
        }
    }
}

/// An entry of `CORS_ALLOWED_ORIGINS` that passed the checks.
#[derive(Debug)]
struct Origin {
    value: HeaderValue,
    localhost: bool,
}

/// The Python gateway's checks on one trimmed entry. One more than the Python gateway: the
/// entry must be visible ASCII (a browser sends a non-ASCII host as punycode, so such an entry
/// could never match, and the answer header is built from it).
fn check_origin(entry: &str) -> Result<Origin, &'static str> {
    if entry == "*" || entry == "null" {
        return Err("wildcard and null origins are not allowed");
    }
    let Some(rest) = entry
        .strip_prefix("http://")
        .or_else(|| entry.strip_prefix("https://"))
    else {
        return Err("must start with http:// or https://");
    };
    if rest.is_empty() {
        return Err("no host after the scheme");
    }
    if rest
        .bytes()
        .any(|b| matches!(b, b' ' | b'/' | b'#' | b'?' | b'@'))
    {
        return Err("must be scheme://host[:port] without path, query, fragment or user");
    }
    if !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be ASCII (write a non-ASCII host as punycode)");
    }
    let value = HeaderValue::from_str(entry).map_err(|_| "not a valid header value")?;
    Ok(Origin {
        value,
        localhost: is_localhost(rest),
    })
}

/// `rest` is `host[:port]`.
fn is_localhost(rest: &str) -> bool {
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.split(':').next().unwrap_or(rest),
    };
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || host.starts_with("127.") || host == "::1"
}

/// Python's `str.strip()`: Unicode whitespace plus the separators U+001C to U+001F.
fn py_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// [`py_trim`] on header bytes as the Python layer decodes them (Latin-1): also NEL and NBSP.
fn py_trim_bytes(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b'\t'..=b'\r' | 0x1c..=0x20 | 0x85 | 0xa0);
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(list: &str) -> Vec<String> {
        Cors::parse(list).origins().map(str::to_owned).collect()
    }

    #[test]
    fn origins_are_trimmed_validated_sorted_and_deduplicated() {
        assert_eq!(
            parsed(" https://b.example.com , http://a.example:8080,,https://b.example.com\t"),
            ["http://a.example:8080", "https://b.example.com"]
        );
        assert!(!Cors::parse("").is_enabled());
        assert!(!Cors::parse(" , ").is_enabled());
        assert!(!Cors::default().is_enabled());
        // Nothing valid: CORS stays off.
        assert!(!Cors::parse("*,null").is_enabled());
        assert_eq!(format!("{:?}", Cors::parse("*")), "disabled");
        assert_eq!(
            format!("{:?}", Cors::parse("https://a.example")),
            r#"["https://a.example"]"#
        );
    }

    #[test]
    fn invalid_entries_are_skipped() {
        for bad in [
            "*",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "HTTPS://app.example.com",
            "https://",
            "https:///app",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?q",
            "https://app.example.com#f",
            "https://user@app.example.com",
            "https://app example.com",
            "https://bücher.example",
            "https://a\u{7f}b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad:?} accepted");
            assert_eq!(
                parsed(&format!("{bad},https://ok.example")),
                ["https://ok.example"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn localhost_is_allowed_and_flagged() {
        for (origin, local) in [
            ("http://localhost", true),
            ("http://localhost:3000", true),
            ("http://LOCALHOST:3000", true),
            ("http://app.localhost", true),
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("https://app.example.com", false),
            ("https://localhost.example.com", false),
            ("http://[2001:db8::1]", false),
        ] {
            let o = check_origin(origin).unwrap();
            assert_eq!(o.localhost, local, "{origin}");
            assert_eq!(o.value, origin);
        }
    }

    #[test]
    fn python_trim() {
        assert_eq!(py_trim("\u{1c} https://a\u{a0}\n"), "https://a");
        assert_eq!(py_trim_bytes(b" \t Content-Type\x85\xa0 "), b"Content-Type");
        assert_eq!(py_trim_bytes(b"  "), b"");
        assert_eq!(py_trim_bytes(b""), b"");
        assert!(header_allowed(b" x-api-key "));
        assert!(header_allowed(b"CONTENT-TYPE"));
        assert!(!header_allowed(b""));
        assert!(!header_allowed(b"x-custom"));
    }

    #[test]
    fn allow_headers_value_matches_the_list() {
        assert_eq!(ALLOW_HEADERS, HEADERS.join(", ").as_str());
        let mut sorted = HEADERS;
        sorted.sort_unstable();
        assert_eq!(sorted, HEADERS);
        assert_eq!(ALLOW_METHODS, METHODS.join(", ").as_str());
    }

    const APP: &str = "https://app.example.com";

    fn cors() -> Cors {
        Cors::parse(&format!("{APP}, http://localhost:3000"))
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/webhook/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// Run `cors` on a request whose route answers 405 with `Allow: POST`; also report whether
    /// the route ran.
    async fn run(cors: &Cors, req: Request<()>) -> (Response<Body>, bool) {
        let mut routed = false;
        let resp = cors
            .handle(req, |_req| {
                routed = true;
                std::future::ready(crate::response::method_not_allowed("POST"))
            })
            .await;
        (resp, routed)
    }

    async fn body(r: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn preflight(origin: &str, extra: &[(&str, &str)]) -> Request<()> {
        let mut h = vec![
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ];
        h.extend_from_slice(extra);
        request(Method::OPTIONS, &h)
    }

    fn names(r: &Response<Body>) -> Vec<&str> {
        let mut n: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[tokio::test]
    async fn preflight_from_an_allowed_origin() {
        let (r, routed) = run(
            &cors(),
            preflight(
                APP,
                &[("access-control-request-headers", "content-type, X-API-Key")],
            ),
        )
        .await;
        assert!(!routed);
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "POST, GET, OPTIONS");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(
            h["access-control-allow-headers"],
            "Accept, Accept-Language, Authorization, Content-Language, Content-Type, X-API-Key, \
             X-Auth-Token, X-Forwarded-For, X-HMAC-Signature, X-HMAC-Signature-256, \
             X-Hub-Signature, X-Hub-Signature-256, X-Real-IP, X-Recaptcha-Token, X-Requested-With"
        );
        assert_eq!(
            h["vary"],
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, \
             Access-Control-Request-Private-Network"
        );
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            names(&r),
            [
                "access-control-allow-credentials",
                "access-control-allow-headers",
                "access-control-allow-methods",
                "access-control-allow-origin",
                "access-control-max-age",
                "content-type",
                "vary",
            ]
        );
        assert_eq!(body(r).await, "OK");
    }

    #[tokio::test]
    async fn preflight_from_another_origin() {
        for other in [
            "https://evil.example.com",
            "https://APP.example.com",
            "https://app.example.com/",
            "",
        ] {
            let (r, routed) = run(&cors(), preflight(other, &[])).await;
            assert!(!routed);
            assert_eq!(r.status(), 400, "{other:?}");
            assert!(!r.headers().contains_key("access-control-allow-origin"));
            assert_eq!(r.headers()["access-control-allow-credentials"], "true");
            assert_eq!(r.headers()["access-control-max-age"], "600");
            assert_eq!(r.headers().len(), 6);
            assert_eq!(body(r).await, "Disallowed CORS origin");
        }
    }

    #[tokio::test]
    async fn preflight_checks_method_headers_and_private_network() {
        /// Origin, requested method, other request headers, expected body.
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 7] = [
            (APP, "PUT", &[], "Disallowed CORS method"),
            (APP, "post", &[], "Disallowed CORS method"),
            (
                APP,
                "GET",
                &[("access-control-request-headers", "content-type,x-custom")],
                "Disallowed CORS headers",
            ),
            (
                APP,
                "GET",
                &[("access-control-request-headers", "content-type,")],
                "Disallowed CORS headers",
            ),
            (
                APP,
                "OPTIONS",
                &[("access-control-request-private-network", "true")],
                "Disallowed CORS private-network",
            ),
            (
                "https://evil.example.com",
                "DELETE",
                &[
                    ("access-control-request-headers", "x-custom"),
                    ("access-control-request-private-network", "true"),
                ],
                "Disallowed CORS origin, method, headers, private-network",
            ),
            ("http://localhost:3000", "GET", &[], "OK"),
        ];
        for (origin, method, extra, expected) in cases {
            let mut h = vec![
                ("origin", origin),
                ("access-control-request-method", method),
            ];
            h.extend_from_slice(extra);
            let (r, routed) = run(&cors(), request(Method::OPTIONS, &h)).await;
            assert!(!routed);
            let ok = expected == "OK";
            assert_eq!(r.status(), if ok { 200 } else { 400 }, "{expected}");
            // The origin is echoed whenever it is allowed, even when another check failed.
            assert_eq!(
                r.headers().get("access-control-allow-origin").is_some(),
                origin != "https://evil.example.com"
            );
            assert_eq!(body(r).await, expected);
        }
    }

    #[tokio::test]
    async fn actual_requests_get_the_simple_headers() {
        let (r, routed) = run(&cors(), request(Method::POST, &[("origin", APP)])).await;
        assert!(routed);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "POST");
        assert_eq!(r.headers()["access-control-allow-origin"], APP);
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        assert_eq!(r.headers()["vary"], "Origin");
        assert_eq!(r.headers().len(), 5);

        let (r, _) = run(
            &cors(),
            request(Method::POST, &[("origin", "https://x.example")]),
        )
        .await;
        assert!(!r.headers().contains_key("access-control-allow-origin"));
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        assert_eq!(r.headers()["vary"], "Origin");
        assert_eq!(r.headers().len(), 4);

        // Without Origin: untouched.
        let (r, _) = run(&cors(), request(Method::POST, &[])).await;
        assert_eq!(r.headers().len(), 2);

        // An OPTIONS that is not a preflight is routed (and decorated).
        let (r, routed) = run(&cors(), request(Method::OPTIONS, &[("origin", APP)])).await;
        assert!(routed);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["access-control-allow-origin"], APP);
        let (r, routed) = run(
            &cors(),
            request(
                Method::OPTIONS,
                &[("access-control-request-method", "POST")],
            ),
        )
        .await;
        assert!(routed);
        assert_eq!(r.headers().len(), 2);
    }

    #[tokio::test]
    async fn disabled_cors_routes_everything_and_adds_nothing() {
        let (r, routed) = run(&Cors::disabled(), preflight(APP, &[])).await;
        assert!(routed);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers().len(), 2);
        let (r, _) = run(&Cors::parse("*"), request(Method::POST, &[("origin", APP)])).await;
        assert_eq!(r.headers().len(), 2);
    }

    #[test]
    fn vary_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_origin(&mut h);
        assert_eq!(h[VARY], "Accept-Encoding, Origin");
    }
}
