//! `http_webhook` sink, with the upstream's SSRF rules: forwards each event to an HTTP(S) URL.
//!
//! `module-config`: `url` (required), `method` (`POST` default, `PUT`, `PATCH`), `headers` (custom
//! headers, they win over forwarded ones), `forward_headers` (default `false`), `allowed_headers`
//! (whitelist for forwarded *and* custom headers; `[]` sends none), `allowed_hosts` (host
//! whitelist that replaces the SSRF checks; tests use `["127.0.0.1"]`), `timeout` (seconds, default
//! 30, for the whole exchange: connect, send, response headers).
//!
//! The URL is checked once, when the webhook loads (V-URL; an unsafe URL rejects the webhook).
//! Beyond upstream, every non-canonical numeric host (`0x7f.1`, `017700000001`, `127.1`) is
//! refused, as are `*.localhost` names, and the host the request goes to is built from the checked
//! host, so parser differences cannot reach another one. Credentials in the URL become a Basic
//! `Authorization` header; they and the query string never appear in error messages, which only
//! name `scheme://host:port`.
//!
//! Body: a JSON payload is sent as the body the sender wrote (compact JSON when credential cleanup
//! changed it) with `Content-Type: application/json`; a blob payload
//! as its raw bytes with `application/octet-stream` (upstream crashed on blobs). A forwarded or custom
//! `content-type` wins. Redirects are not followed: a 3xx is a rejection.
//!
//! Outcomes: 2xx is `Ok`; 5xx, 429 and connection failures are [`SinkError::Unavailable`];
//! the timeout is [`SinkError::Timeout`]; any other status is [`SinkError::Rejected`]; a
//! destination address the connect-time check refuses is [`SinkError::Config`].
//!
//! One client serves the whole process ([`ModuleContext`]): connection pooling, HTTP/1.1 and
//! HTTP/2 (ALPN), TLS by rustls with the `ring` provider and the Mozilla roots (webpki-roots).
//!
//! Connect-time address check (beyond upstream, which had no DNS check): the load-time rules
//! judge the URL's host as written, so a name could still resolve to a cloud metadata endpoint,
//! or resolve to a public address at load and to the metadata address later (DNS rebinding).
//! The client therefore resolves every new connection's host itself ([`GuardedResolver`], tokio's
//! `lookup_host`, which runs `getaddrinfo` off the runtime) and drops each address that is a
//! cloud metadata address (`is_metadata_host`: 169.254.169.254, fd00:ec2::254, 100.100.100.200,
//! 192.0.0.192), link-local (169.254.0.0/16, fe80::/10) or multicast, also when written as
//! IPv4-mapped, 6to4 or NAT64 IPv6; only the remaining addresses are connected to, and a host
//! left with none is refused. An IP literal (allowed by `allowed_hosts`) is judged the same way
//! before connecting ([`GuardedConnector`]). Loopback and private addresses stay allowed
//! (they are operator configuration): reaching them is the load-time rules' business. Pooled connections were
//! checked when they were opened.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;

use cwm_config::WebhookConfig;
use cwm_config::model::is_metadata_host;

use crate::context::ModuleContext;
use crate::opts;
use crate::sink::{Event, Payload, Sink, SinkError};

/// The process-wide client type.
pub(crate) type HttpClient = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// Longest URL accepted, here and for the validators' outbound endpoints.
pub(crate) const MAX_URL_LEN: usize = 8192;
const MAX_HEADER_NAME: usize = 200;
const MAX_HEADER_VALUE: usize = 8192;
const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// Response bodies are read (to keep the connection reusable) up to this size, then dropped.
const MAX_DRAIN: usize = 64 * 1024;
/// The `User-Agent` of every outbound request.
pub(crate) const USER_AGENT_VALUE: &str = concat!("cwm/", env!("CARGO_PKG_VERSION"));

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "content-length",
];

/// The upstream's localhost names plus names that resolve to loopback on common systems.
const LOCALHOST_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "127.1",
    "127.0.1",
    "127.000.000.001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "2130706433",
    "0x7f000001",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
];

/// Build the shared client. Called once per process, on the first `http_webhook` load.
pub(crate) fn build_client() -> Result<HttpClient, String> {
    build_client_with(Arc::new(SystemLookup))
}

/// The shared client, resolving names with `lookup` (tests inject a table).
pub(crate) fn build_client_with(lookup: Arc<dyn Lookup>) -> Result<HttpClient, String> {
    // An explicit provider: never depends on which rustls backends other crates switch on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { lookup });
    http.enforce_http(false);
    http.set_nodelay(true);
    let http = GuardedConnector { inner: http };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Why the client did not connect, as its resolver and connector report it. Found again in the
/// client's error chain by [`refused_in`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectGuardError {
    /// Every address of the host is one the connect-time check refuses. Names no address, so
    /// messages never tell more about the network than the URL already does.
    #[error("the host resolves only to cloud metadata, link-local or multicast addresses")]
    Refused,
    /// The name did not resolve.
    #[error("name resolution failed: {0}")]
    Lookup(#[source] io::Error),
}

/// A boxed, sendable future (resolver and connector futures).
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How host names become addresses. The ports of the answer are ignored.
pub(crate) trait Lookup: Send + Sync {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

/// The system resolver through tokio (`getaddrinfo` on the blocking pool, never on a worker).
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, 0)).await?.collect()) })
    }
}

/// The client's resolver: resolves with [`Lookup`] and keeps only the addresses
/// [`connect_refused`] allows. It runs for every new connection, so a host that changes its
/// answer (DNS rebinding) is judged again each time.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ConnectGuardError;
    type Future = BoxFuture<Result<Self::Response, ConnectGuardError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectGuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.lookup.lookup(name.as_str().to_owned());
        Box::pin(async move {
            let mut addrs = lookup.await.map_err(ConnectGuardError::Lookup)?;
            if addrs.is_empty() {
                return Err(ConnectGuardError::Lookup(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no addresses",
                )));
            }
            addrs.retain(|a| !connect_refused(a.ip()));
            if addrs.is_empty() {
                return Err(ConnectGuardError::Refused);
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The client's TCP connector: `HttpConnector` with the [`GuardedResolver`], plus the same check
/// for an IP-literal host, which `HttpConnector` connects to without asking the resolver.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let literal = dst
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if literal.is_some_and(connect_refused) {
            return Box::pin(std::future::ready(Err(ConnectGuardError::Refused.into())));
        }
        let connecting = self.inner.call(dst);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Whether the client refuses to connect to `ip`: a cloud metadata address (by the same list as
/// connection hosts), link-local or multicast, also inside IPv4-mapped, IPv4-compatible, 6to4
/// and NAT64 (64:ff9b::/96) IPv6 addresses. Loopback and private addresses are allowed.
fn connect_refused(ip: IpAddr) -> bool {
    let refused = |ip: IpAddr| {
        is_metadata_host(&ip.to_string())
            || ip.is_multicast()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            }
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => refused(IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            refused(IpAddr::V6(v6)) || embedded_v4(v6).is_some_and(|v4| refused(v4.into()))
        }
    }
}

/// The IPv4 address an IPv6 address carries to an IPv4 host: IPv4-compatible (`::a.b.c.d`, not
/// `::` or `::1`), 6to4 (`2002:AABB:CCDD::/48`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        Some(tail)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(tail)
    } else {
        None
    }
}

/// Whether the connect-time check refused the connection somewhere in `e`'s causes.
pub(crate) fn refused_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<ConnectGuardError>(),
            Some(ConnectGuardError::Refused)
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

pub fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    let mc = &config.module_config;
    let url = opts::string(mc, "url")?.ok_or("'module-config.url' is required")?;
    let allowed_hosts = opts::string_list(mc, "allowed_hosts")?;
    let target = Target::parse(url, allowed_hosts.as_deref())?;
    let method = match opts::string(mc, "method")?
        .map(|m| m.trim().to_ascii_uppercase())
        .as_deref()
    {
        None | Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("PATCH") => Method::PATCH,
        Some(_) => return Err("'module-config.method' must be POST, PUT or PATCH".into()),
    };
    let allowed_headers = opts::string_list(mc, "allowed_headers")?.map(|list| {
        list.iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    });
    let timeout = match opts::number(mc, "timeout")? {
        None => Duration::from_secs(30),
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => Duration::from_secs_f64(t),
        Some(_) => return Err("'module-config.timeout' must be between 0 and 3600 seconds".into()),
    };
    let custom = custom_headers(mc.get("headers"), allowed_headers.as_deref())?;
    Ok(Arc::new(HttpSink {
        client: ctx.http_client()?,
        target,
        method,
        custom,
        forward: opts::truthy(mc, "forward_headers", false),
        allowed_headers,
        timeout,
    }))
}

/// Custom headers, filtered once at load. A header the filter drops is skipped (as upstream).
fn custom_headers(
    v: Option<&serde_json::Value>,
    allowed: Option<&[String]>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    use serde_json::Value;
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("'module-config.headers' must be an object".into()),
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(format!("'module-config.headers.{name}' must be a string")),
        };
        match filter_header(name, &text, allowed) {
            Some(h) => out.push(h),
            None => {
                tracing::warn!(header = %name, "http_webhook: custom header skipped by the header rules")
            }
        }
    }
    Ok(out)
}

/// The upstream's header rules: hop-by-hop names, RFC 7230 token names of at most 200
/// characters, the optional whitelist, no line breaks or NUL in values, trimmed values of at most
/// 8192 characters.
fn filter_header(
    name: &str,
    value: &str,
    allowed: Option<&[String]>,
) -> Option<(HeaderName, HeaderValue)> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_token_byte) {
        return None;
    }
    if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return None;
    }
    if let Some(list) = allowed
        && !list.iter().any(|a| a.eq_ignore_ascii_case(name))
    {
        return None;
    }
    if value.contains(['\r', '\n', '\0', '\u{2028}', '\u{2029}', '\u{0b}', '\u{0c}']) {
        return None;
    }
    let value = value.trim();
    if value.len() > MAX_HEADER_VALUE && value.chars().count() > MAX_HEADER_VALUE {
        return None;
    }
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value)
            .or_else(|_| HeaderValue::from_bytes(value.as_bytes()))
            .ok()?,
    ))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct HttpSink {
    client: HttpClient,
    target: Target,
    method: Method,
    custom: Vec<(HeaderName, HeaderValue)>,
    forward: bool,
    allowed_headers: Option<Vec<String>>,
    timeout: Duration,
}

#[async_trait]
impl Sink for HttpSink {
    fn module(&self) -> &'static str {
        "http_webhook"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let (body, default_type) = match &event.payload {
            Payload::Json(v) => (
                v.to_json_bytes()
                    .map_err(|e| SinkError::Rejected(e.to_string()))?,
                "application/json",
            ),
            Payload::Blob(b) => (b.clone(), "application/octet-stream"),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.target.uri.clone();
        let headers = req.headers_mut();
        if self.forward {
            for (name, value) in &event.headers {
                if let Some((n, v)) = filter_header(name, value, self.allowed_headers.as_deref()) {
                    headers.insert(n, v);
                }
            }
        }
        if let Some(auth) = &self.target.basic_auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        for (n, v) in &self.custom {
            headers.insert(n.clone(), v.clone());
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(default_type));
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        }
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Timeout),
        }
    }
}

impl HttpSink {
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<(), SinkError> {
        let resp = self.client.request(req).await.map_err(|e| {
            if refused_in(&e) {
                // Not retryable: the next resolution will most likely say the same.
                return SinkError::Config(format!(
                    "{}: refused to connect: {}",
                    self.target.label,
                    ConnectGuardError::Refused
                ));
            }
            SinkError::Unavailable(format!(
                "{}: {}",
                self.target.label,
                self.target.scrub(&error_chain(&e))
            ))
        })?;
        let status = resp.status();
        let body = resp.into_body();
        if !body.is_end_stream() {
            // The verdict is in the status; read the body off the request's clock so the
            // connection returns to the pool.
            let limit = self.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(limit, Limited::new(body, MAX_DRAIN).collect()).await;
            });
        }
        classify(status, &self.target.label)
    }
}

fn classify(status: StatusCode, label: &str) -> Result<(), SinkError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(SinkError::Unavailable(format!("{label} answered {status}")))
    } else {
        Err(SinkError::Rejected(format!("{label} answered {status}")))
    }
}

/// The error and its causes ("client error (Connect): tcp connect error: Connection refused").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A checked destination.
#[derive(Debug)]
struct Target {
    /// Without user info and fragment.
    uri: Uri,
    /// `scheme://host[:port]`, the only form of the URL that error messages show.
    label: String,
    basic_auth: Option<HeaderValue>,
    /// Parts of the URL that must never be shown (user info, query).
    secrets: Vec<String>,
}

impl Target {
    /// The upstream's URL rules and the request URI.
    fn parse(raw: &str, allowed_hosts: Option<&[String]>) -> Result<Self, String> {
        let bad = |why: &str| format!("'module-config.url' {why}");
        let url = raw.trim();
        if url.is_empty() || url.len() > MAX_URL_LEN {
            return Err(bad("is empty or too long"));
        }
        if url.contains('\0') || url.to_ascii_lowercase().contains("%00") {
            return Err(bad("contains NUL"));
        }
        let (scheme, netloc, tail) = split_url(url).map_err(bad)?;
        if netloc.is_empty() {
            return Err(bad("has no host"));
        }
        let (userinfo, hostport) = match netloc.rfind('@') {
            Some(i) => (Some(&netloc[..i]), &netloc[i + 1..]),
            None => (None, netloc),
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let host = host.to_ascii_lowercase();
        check_host(&host, allowed_hosts)?;
        let (uri, authority) = request_uri(&scheme, &host, port, tail).map_err(bad)?;

        let mut secrets = Vec::new();
        let basic_auth = match userinfo {
            Some(info) if !info.is_empty() => {
                secrets.push(info.to_owned());
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user = percent_decode_str(user).decode_utf8_lossy();
                let pass = percent_decode_str(pass).decode_utf8_lossy();
                secrets.push(user.clone().into_owned());
                if !pass.is_empty() {
                    secrets.push(pass.clone().into_owned());
                }
                Some(
                    basic_auth(&user, &pass)
                        .ok_or("'module-config.url' has invalid credentials")?,
                )
            }
            _ => None,
        };
        if let Some(query) = uri.query()
            && !query.is_empty()
        {
            secrets.push(query.to_owned());
        }
        secrets.retain(|s| s.len() >= 3);
        Ok(Self {
            uri,
            label: format!("{scheme}://{authority}"),
            basic_auth,
            secrets,
        })
    }

    /// Remove URL secrets from a message (defence in depth: error texts should not hold them).
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "***");
        }
        text
    }
}

/// The lower-case scheme, the authority (`[user@]host[:port]`) and the rest (path, query,
/// fragment) of an `http` or `https` URL. Errors are reasons, for the caller to prefix.
pub(crate) fn split_url(url: &str) -> Result<(String, &str, &str), &'static str> {
    const NOT_HTTP: &str = "must start with http:// or https://";
    let (scheme, rest) = url.split_once("://").ok_or(NOT_HTTP)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(NOT_HTTP);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    Ok((scheme, authority, tail))
}

/// Host and optional port of `host[:port]` or `[v6][:port]`. Errors are reasons, for the caller
/// to prefix.
pub(crate) fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unclosed '['")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has brackets around something that is not IPv6");
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("has junk after ']'")?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err("has an invalid port"),
            }
        }
        Some(_) => return Err("has an invalid port"),
    };
    Ok((host, port))
}

/// The request URI for a checked `host` (lower-case, without brackets), built from the checked
/// parts so that parser differences cannot send the request elsewhere, and its authority
/// (`host[:port]`, IPv6 in brackets). `tail` is what follows the authority; its fragment is
/// dropped. Errors are reasons, for the caller to prefix.
pub(crate) fn request_uri(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    tail: &str,
) -> Result<(Uri, String), &'static str> {
    let tail = tail.split('#').next().unwrap_or_default();
    let path_and_query = if tail.starts_with('/') {
        Cow::Borrowed(tail)
    } else {
        Cow::Owned(format!("/{tail}"))
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = match port {
        Some(p) => format!("{host_part}:{p}"),
        None => host_part,
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(path_and_query.as_ref())
        .build()
        .map_err(|_| "is not a valid URL")?;
    // The request must go to the host that was checked, whatever the URI parser thinks.
    let sent_to = uri.host().map(|h| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    });
    if sent_to.as_deref() != Some(host) {
        return Err("is ambiguous");
    }
    Ok((uri, authority))
}

/// An `Authorization: Basic` value for `user:password`, marked sensitive; `None` when it cannot
/// be a header value.
pub(crate) fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    let token = STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The host rules of V-URL. `host` is lower-case, without brackets.
fn check_host(host: &str, allowed_hosts: Option<&[String]>) -> Result<(), String> {
    if let Some(list) = allowed_hosts.filter(|l| !l.is_empty()) {
        let listed = list.iter().any(|entry| {
            let e = entry.trim();
            let e = e
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(e);
            e.eq_ignore_ascii_case(host)
        });
        return if listed {
            Ok(())
        } else {
            Err("URL host is not in 'allowed_hosts'".into())
        };
    }
    let reject = |why: &str| Err(format!("URL host rejected: {why}"));
    if LOCALHOST_NAMES.contains(&host) || host.ends_with(".localhost") {
        return reject("localhost");
    }
    if is_metadata_host(host) {
        return reject("cloud metadata endpoint");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if ip_blocked(ip) {
            reject("private, loopback, link-local, multicast or reserved address")
        } else {
            Ok(())
        };
    }
    if inet_aton(host).is_some() || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Octal, hex, short and integer forms: resolvers read them as addresses. No real
        // destination is written that way, so all are refused, not only the private ones.
        return reject("numeric host that is not a dotted-quad address");
    }
    if host.len() > 253 || !is_dns_name(host) {
        return reject("not a valid host name");
    }
    Ok(())
}

/// Python `ipaddress` predicates (CPython 3.11): link-local, loopback, multicast, reserved or
/// private. 100.64/10 is not private there, so it passes.
fn ip_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_blocked(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Outside 2000::/3 everything is loopback, unspecified, IPv4-mapped, ULA, link-local,
            // multicast or IETF-reserved.
            if s[0] & 0xe000 != 0x2000 {
                return true;
            }
            // 2001::/23 (IETF protocol assignments, Teredo included) and 2001:db8::/32.
            if s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8) {
                return true;
            }
            // 6to4 carries an IPv4 address that the relay will reach.
            if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                return v4_blocked(Ipv4Addr::new(a, b, c, d));
            }
            false
        }
    }
}

fn v4_blocked(ip: Ipv4Addr) -> bool {
    const PRIVATE: &[(u32, u8)] = &[
        (0x0000_0000, 8),  // 0/8
        (0x0a00_0000, 8),  // 10/8
        (0x7f00_0000, 8),  // 127/8
        (0xa9fe_0000, 16), // 169.254/16
        (0xac10_0000, 12), // 172.16/12
        (0xc000_0000, 29), // 192.0.0.0/29
        (0xc000_00aa, 31), // 192.0.0.170/31
        (0xc000_0200, 24), // 192.0.2/24
        (0xc0a8_0000, 16), // 192.168/16
        (0xc612_0000, 15), // 198.18/15
        (0xc633_6400, 24), // 198.51.100/24
        (0xcb00_7100, 24), // 203.0.113/24
        (0xe000_0000, 4),  // 224/4 multicast
        (0xf000_0000, 4),  // 240/4 reserved, broadcast included
    ];
    let n = u32::from(ip);
    PRIVATE
        .iter()
        .any(|&(net, len)| n >> (32 - u32::from(len)) == net >> (32 - u32::from(len)))
}

/// What `inet_aton` (and so `getaddrinfo`) reads as an IPv4 address: one to four parts, each
/// decimal, octal (leading 0) or hex (0x).
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let mut parts = Vec::with_capacity(4);
    for p in s.split('.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(inet_number(p)?);
    }
    let (&last, init) = parts.split_last()?;
    if init.iter().any(|&n| n > 255) || last > (u64::from(u32::MAX) >> (8 * init.len())) {
        return None;
    }
    let mut v = last;
    for (i, &n) in init.iter().enumerate() {
        v |= n << (24 - 8 * i);
    }
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

fn inet_number(p: &str) -> Option<u64> {
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        return hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten();
    }
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match p.strip_prefix('0') {
        Some(oct) if !oct.is_empty() => u64::from_str_radix(oct, 8).ok(),
        _ => p.parse().ok(),
    }
}

/// The upstream's host name rule: dot-separated labels of letters, digits and inner hyphens, 1..63 long.
fn is_dns_name(host: &str) -> bool {
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::SystemTime;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    #[derive(Debug)]
    struct Seen {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// A local server that records each request and answers `status` after `delay`.
    async fn server(status: u16, delay: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let _ = tx.send(Seen {
                                method: parts.method,
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            tokio::time::sleep(delay).await;
                            let mut resp =
                                hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            if status == 302 {
                                resp.headers_mut()
                                    .insert("location", HeaderValue::from_static("/elsewhere"));
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, rx)
    }

    fn config(mc: Value) -> WebhookConfig {
        WebhookConfig::from_value(
            json!({"module":"http_webhook","module-config":mc}),
            &|_: &str| None,
        )
        .unwrap()
    }

    fn sink(mc: Value) -> Arc<dyn Sink> {
        factory(&config(mc), &ModuleContext::new()).unwrap()
    }

    fn event(payload: Payload, headers: &[(&str, &str)]) -> Event {
        Event {
            namespace: None,
            webhook_id: "w".into(),
            payload,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            received_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn posts_json_with_forwarded_and_custom_headers() {
        let (addr, mut rx) = server(200, Duration::ZERO).await;
        let s = sink(json!({
            "url": format!("http://{addr}/hook?x=1#frag"),
            "allowed_hosts": ["127.0.0.1"],
            "forward_headers": true,
            "headers": {"X-Custom": " set ", "x-over": "custom", "Connection": "close", "bad name": "v"}
        }));
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        let doc = json!({"a": 1, "b": "é"});
        s.deliver(&event(
            Payload::Json(doc.clone().into()),
            &[
                ("x-forwarded-thing", "yes"),
                ("x-over", "forwarded"),
                ("host", "evil.example"),
                ("keep-alive", "1"),
                ("te", "trailers"),
                ("content-length", "999"),
                ("x-sep", "a\u{2028}b"),
                ("x-vt", "a\u{0b}b"),
                ("x-long", long.as_str()),
                ("bad(name)", "v"),
            ],
        ))
        .await
        .unwrap();
        let seen = rx.recv().await.unwrap();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, "/hook?x=1");
        assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), doc);
        let h = &seen.headers;
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-forwarded-thing"], "yes");
        assert_eq!(h["x-over"], "custom");
        assert_eq!(h["x-custom"], "set");
        assert_eq!(h["host"], addr.to_string());
        assert_eq!(h["content-length"], seen.body.len().to_string());
        for absent in [
            "keep-alive",
            "te",
            "x-sep",
            "x-vt",
            "x-long",
            "bad name",
            "bad(name)",
        ] {
            assert!(!h.contains_key(absent), "{absent}");
        }
        assert_ne!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }

    #[tokio::test]
    async fn allowed_headers_filter_forwarded_and_custom() {
        let (addr, mut rx) = server(201, Duration::ZERO).await;
        let s = sink(json!({
            "url": format!("http://{addr}/"),
            "allowed_hosts": ["127.0.0.1"],
            "method": "put",
            "forward_headers": "true",
            "allowed_headers": ["X-A", "content-type"],
            "headers": {"x-a": "custom-a", "x-b": "custom-b"}
        }));
        s.deliver(&event(
            Payload::Json(json!([1]).into()),
            &[
                ("x-a", "fwd-a"),
                ("x-c", "fwd-c"),
                ("content-type", "application/vnd+json"),
            ],
        ))
        .await
        .unwrap();
        let seen = rx.recv().await.unwrap();
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.headers["x-a"], "custom-a");
        assert_eq!(seen.headers["content-type"], "application/vnd+json");
        assert!(!seen.headers.contains_key("x-b"));
        assert!(!seen.headers.contains_key("x-c"));

        // Forwarding is off by default; `[]` allows nothing.
        let s = sink(json!({
            "url": format!("http://{addr}/"),
            "allowed_hosts": ["127.0.0.1"],
            "allowed_headers": [],
            "headers": {"x-a": "custom-a"}
        }));
        s.deliver(&event(
            Payload::Json(json!(null).into()),
            &[("x-c", "fwd-c")],
        ))
        .await
        .unwrap();
        let seen = rx.recv().await.unwrap();
        assert!(!seen.headers.contains_key("x-a"));
        assert!(!seen.headers.contains_key("x-c"));
        assert_eq!(seen.body, Bytes::from_static(b"null"));
    }

    #[tokio::test]
    async fn blob_is_sent_raw_with_patch() {
        let (addr, mut rx) = server(204, Duration::ZERO).await;
        let s = sink(
            json!({"url": format!("http://{addr}/b"), "allowed_hosts": ["127.0.0.1"], "method": "PATCH"}),
        );
        let raw = Bytes::from_static(b"\x00\xffbinary");
        s.deliver(&event(Payload::Blob(raw.clone()), &[]))
            .await
            .unwrap();
        let seen = rx.recv().await.unwrap();
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.body, raw);
        assert_eq!(seen.headers["content-type"], "application/octet-stream");
    }

    #[tokio::test]
    async fn status_mapping() {
        for (status, want) in [
            (500, "unavailable"),
            (503, "unavailable"),
            (429, "unavailable"),
            (404, "rejected"),
            (400, "rejected"),
            (302, "rejected"),
            (200, "ok"),
        ] {
            let (addr, mut rx) = server(status, Duration::ZERO).await;
            let s = sink(json!({"url": format!("http://{addr}/"), "allowed_hosts": ["127.0.0.1"]}));
            let got = s
                .deliver(&event(Payload::Json(json!({}).into()), &[]))
                .await;
            let kind = match &got {
                Ok(()) => "ok",
                Err(SinkError::Unavailable(_)) => "unavailable",
                Err(SinkError::Rejected(_)) => "rejected",
                Err(e) => panic!("{e:?}"),
            };
            assert_eq!(kind, want, "{status}: {got:?}");
            // Exactly one request: the 302 is not followed.
            rx.recv().await.unwrap();
            assert!(rx.try_recv().is_err());
        }
    }

    #[tokio::test]
    async fn timeout_is_reported() {
        let (addr, _rx) = server(200, Duration::from_secs(5)).await;
        let s = sink(
            json!({"url": format!("http://{addr}/"), "allowed_hosts": ["127.0.0.1"], "timeout": "0.2"}),
        );
        let started = std::time::Instant::now();
        let err = s
            .deliver(&event(Payload::Json(json!({}).into()), &[]))
            .await
            .unwrap_err();
        assert_eq!(err, SinkError::Timeout);
        assert!(err.retryable());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn url_credentials_become_basic_auth_and_stay_out_of_errors() {
        let (addr, mut rx) = server(200, Duration::ZERO).await;
        let s = sink(
            json!({"url": format!("http://us%40er:s3cretpw@{addr}/p"), "allowed_hosts": ["127.0.0.1"]}),
        );
        s.deliver(&event(
            Payload::Json(json!(1).into()),
            &[("authorization", "***REDACTED***")],
        ))
        .await
        .unwrap();
        let seen = rx.recv().await.unwrap();
        assert_eq!(
            seen.headers["authorization"],
            format!("Basic {}", STANDARD.encode("us@er:s3cretpw"))
        );

        // Nothing listens on a port that was just freed: connection refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s = sink(json!({
            "url": format!("http://user:s3cretpw@127.0.0.1:{port}/path?token=abcdef"),
            "allowed_hosts": ["127.0.0.1"]
        }));
        let err = s
            .deliver(&event(Payload::Json(json!(1).into()), &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Unavailable(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
        for secret in ["s3cretpw", "user", "token", "abcdef", "/path"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[tokio::test]
    async fn https_goes_through_tls() {
        // A plain-HTTP server cannot complete a TLS handshake: proof the https path uses TLS.
        let (addr, mut rx) = server(200, Duration::ZERO).await;
        let s = sink(
            json!({"url": format!("https://{addr}/"), "allowed_hosts": ["127.0.0.1"], "timeout": 5}),
        );
        let err = s
            .deliver(&event(Payload::Json(json!({}).into()), &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Unavailable(_)), "{err:?}");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn factory_rejects_bad_settings() {
        let ctx = ModuleContext::new();
        for mc in [
            json!({}),
            json!({"url": 5}),
            json!({"url": "https://example.com", "method": "GET"}),
            json!({"url": "https://example.com", "timeout": 0}),
            json!({"url": "https://example.com", "timeout": "soon"}),
            json!({"url": "https://example.com", "headers": ["x"]}),
            json!({"url": "https://example.com", "allowed_hosts": "example.com"}),
            json!({"url": "https://example.com", "allowed_hosts": ["other.com"]}),
        ] {
            assert!(factory(&config(mc.clone()), &ctx).is_err(), "{mc}");
        }
        assert!(
            factory(
                &config(json!({"url": "https://example.com/x", "method": "patch", "timeout": 5})),
                &ctx
            )
            .is_ok()
        );
    }

    #[test]
    fn ssrf_table() {
        let rejected = [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://127.0.0.1/",
            "http://127.0.0.2/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd00:ec2::254]/",
            "http://[2001:db8::1]/",
            "http://[2002:7f00:1::]/",
            "http://[ff02::1]/",
            "http://127.1/",
            "http://127.0.1/",
            "http://127.000.000.001/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://010.0.0.1/",
            "http://00.00.00.00/",
            "http://12345/",
            "http://1.2.3.4.5/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200/",
            "http://192.0.0.192/",
            "http://224.0.0.1/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://metadata/",
            "http://metadata.google.internal/",
            "http://METADATA.azure.com/",
            "http://my-metadata.internal.corp/",
            "http://foo.localhost/",
            "http://ip6-localhost/",
            "http://under_score.example.com/",
            "http://-bad.example.com/",
            "http://exa mple.com/",
            "http://example.com./",
            "http://[notanip]/",
            "http://evil.com\\@127.0.0.1/",
            "http://user@127.0.0.1/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http:///nohost",
            "example.com",
            "http://example.com/%00",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://example.com:8a/",
            "",
        ];
        for url in rejected {
            assert!(
                Target::parse(url, None).is_err(),
                "{url} should be rejected"
            );
        }
        assert!(
            Target::parse(
                &format!("http://example.com/{}", "a".repeat(MAX_URL_LEN)),
                None
            )
            .is_err()
        );

        let accepted = [
            "http://example.com/",
            "https://EXAMPLE.com:8443/path?q=1",
            "https://hooks.example.co.uk",
            "http://8.8.8.8/",
            "http://100.64.0.1/",
            "http://[2606:4700::1111]/",
            "http://user:pw@example.com/",
            "http://1e100.net/",
        ];
        for url in accepted {
            assert!(Target::parse(url, None).is_ok(), "{url} should be accepted");
        }

        // allowed_hosts replaces every other host check, and only admits what it lists.
        let local = ["127.0.0.1".to_owned()];
        assert!(Target::parse("http://127.0.0.1:9/", Some(&local)).is_ok());
        assert!(Target::parse("http://localhost:9/", Some(&local)).is_err());
        assert!(Target::parse("http://example.com/", Some(&local)).is_err());
        let v6 = ["[::1]".to_owned()];
        assert!(Target::parse("http://[::1]:9/", Some(&v6)).is_ok());
        // An empty list means no whitelist.
        assert!(Target::parse("http://127.0.0.1/", Some(&[])).is_err());
    }

    #[test]
    fn target_parts() {
        let t = Target::parse("HTTPS://u:p@Example.COM:8443/a/b?k=v#f", None).unwrap();
        assert_eq!(t.uri.to_string(), "https://example.com:8443/a/b?k=v");
        assert_eq!(t.label, "https://example.com:8443");
        assert!(t.basic_auth.is_some());
        let t = Target::parse("http://example.com?q", None).unwrap();
        assert_eq!(t.uri.to_string(), "http://example.com/?q");
    }

    /// Names resolve from a table; each answer list is used in turn (the last one repeats), so a
    /// name can change its answer between resolutions as a rebinding attacker's would.
    struct Table(std::sync::Mutex<std::collections::HashMap<String, Vec<Vec<IpAddr>>>>);

    impl Table {
        fn new(entries: &[(&str, &[&[&str]])]) -> Arc<Self> {
            let map = entries
                .iter()
                .map(|(name, answers)| {
                    let answers = answers
                        .iter()
                        .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                        .collect();
                    ((*name).to_owned(), answers)
                })
                .collect();
            Arc::new(Self(std::sync::Mutex::new(map)))
        }
    }

    impl Lookup for Table {
        fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
            let mut map = self.0.lock().unwrap();
            let answer = match map.get_mut(&host) {
                Some(answers) if answers.len() > 1 => Ok(answers.remove(0)),
                Some(answers) => Ok(answers[0].clone()),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "unknown name")),
            };
            let answer = answer.map(|ips| ips.into_iter().map(|ip| (ip, 0).into()).collect());
            Box::pin(std::future::ready(answer))
        }
    }

    async fn resolve(
        r: &mut GuardedResolver,
        name: &str,
    ) -> Result<Vec<IpAddr>, ConnectGuardError> {
        use tower_service::Service as _;
        let addrs = r.call(name.parse::<Name>().unwrap()).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }

    #[test]
    fn connect_time_address_rules() {
        let refused = [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.255.255",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::ffff:100.100.100.200",
        ];
        for ip in refused {
            assert!(
                connect_refused(ip.parse().unwrap()),
                "{ip} should be refused"
            );
        }
        let allowed = [
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "::",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "100.100.100.201",
            "169.253.255.255",
            "169.255.0.1",
            "fd00::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "2002:0808:0808::1",
        ];
        for ip in allowed {
            assert!(
                !connect_refused(ip.parse().unwrap()),
                "{ip} should be allowed"
            );
        }
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let table = Table::new(&[
            ("meta.test", &[&["169.254.169.254"]]),
            ("meta6.test", &[&["fd00:ec2::254", "fe80::1"]]),
            ("local.test", &[&["127.0.0.1", "::1"]]),
            ("private.test", &[&["10.1.2.3"]]),
            ("mixed.test", &[&["169.254.169.254", "192.168.0.7"]]),
            ("empty.test", &[&[]]),
            // Public at first, the metadata address at the next resolution.
            ("rebind.test", &[&["93.184.216.34"], &["169.254.169.254"]]),
        ]);
        let mut r = GuardedResolver { lookup: table };
        for name in ["meta.test", "meta6.test"] {
            let got = resolve(&mut r, name).await;
            assert!(
                matches!(got, Err(ConnectGuardError::Refused)),
                "{name}: {got:?}"
            );
        }
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            resolve(&mut r, "local.test").await.unwrap(),
            [ip("127.0.0.1"), ip("::1")]
        );
        assert_eq!(
            resolve(&mut r, "private.test").await.unwrap(),
            [ip("10.1.2.3")]
        );
        assert_eq!(
            resolve(&mut r, "mixed.test").await.unwrap(),
            [ip("192.168.0.7")]
        );
        for name in ["empty.test", "unknown.test"] {
            let got = resolve(&mut r, name).await;
            assert!(
                matches!(got, Err(ConnectGuardError::Lookup(_))),
                "{name}: {got:?}"
            );
        }
        assert_eq!(
            resolve(&mut r, "rebind.test").await.unwrap(),
            [ip("93.184.216.34")]
        );
        let got = resolve(&mut r, "rebind.test").await;
        assert!(matches!(got, Err(ConnectGuardError::Refused)), "{got:?}");
    }

    #[tokio::test]
    async fn client_refuses_metadata_addresses_and_reaches_loopback() {
        let (addr, mut rx) = server(200, Duration::ZERO).await;
        let port = addr.port();
        let ctx = ModuleContext::with_http_lookup(Table::new(&[
            ("hooks.test", &[&["127.0.0.1"]]),
            ("evil.test", &[&["169.254.169.254"]]),
            ("evil6.test", &[&["::ffff:169.254.169.254"]]),
        ]));
        let sink = |mc: Value| factory(&config(mc), &ctx).unwrap();

        // A name the load-time rules accept, resolving to loopback: delivered.
        let s = sink(json!({"url": format!("http://hooks.test:{port}/in")}));
        s.deliver(&event(Payload::Json(json!({"a": 1}).into()), &[]))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().path, "/in");

        // Names resolving to a metadata address, and the address itself through
        // `allowed_hosts`: refused before any connection, not retryable, no address named.
        // (A broken check would reach 169.254.169.254 on the test server's port: an error of
        // another kind, not a request to a real metadata service.)
        for (url, hosts) in [
            (format!("http://evil.test:{port}/x?token=abcdef"), None),
            (format!("https://evil6.test:{port}/"), None),
            (
                format!("http://169.254.169.254:{port}/latest/meta-data"),
                Some(json!(["169.254.169.254"])),
            ),
        ] {
            let mut mc = json!({"url": url, "timeout": 5});
            if let Some(hosts) = hosts {
                mc["allowed_hosts"] = hosts;
            }
            let err = sink(mc)
                .deliver(&event(Payload::Json(json!({}).into()), &[]))
                .await
                .unwrap_err();
            assert!(matches!(err, SinkError::Config(_)), "{url}: {err:?}");
            assert!(!err.retryable());
            let text = err.to_string();
            assert!(text.contains("refused to connect"), "{text}");
            assert!(text.contains("metadata"), "{text}");
            for hidden in ["abcdef", "/x", "/latest"] {
                assert!(!text.contains(hidden), "{text}");
            }
            if !url.contains("//169.254") {
                assert!(!text.contains("169.254"), "{text}");
            }
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn localhost_name_still_delivers() {
        // The real client and the system resolver: `localhost` resolves to loopback, which the
        // connect-time check allows (the load-time rules need `allowed_hosts` for it).
        let (addr, mut rx) = server(200, Duration::ZERO).await;
        let s = sink(json!({
            "url": format!("http://localhost:{}/local", addr.port()),
            "allowed_hosts": ["localhost"],
            "timeout": 30
        }));
        s.deliver(&event(Payload::Json(json!({"via": "name"}).into()), &[]))
            .await
            .unwrap();
        let seen = rx.recv().await.unwrap();
        assert_eq!(seen.path, "/local");
        assert_eq!(seen.headers["host"], format!("localhost:{}", addr.port()));
    }

    #[test]
    fn numeric_forms() {
        assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0x7f.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0177.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("10.1.258"), Some(Ipv4Addr::new(10, 1, 1, 2)));
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("256.1.1.1"), None);
        assert_eq!(inet_aton("08.1.1.1"), None);
        assert_eq!(inet_aton("1e100"), None);
        assert_eq!(inet_aton("4294967296"), None);
    }
}
