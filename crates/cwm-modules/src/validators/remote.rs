//! What `oauth1`, `oauth2` and `recaptcha` share: reading their config fields (with the forms
//! `{$VAR}` substitution produces: booleans and numbers as strings), and the outbound calls of
//! the checks that ask a server (token introspection, reCAPTCHA verification).
//!
//! Outbound calls go through the process's HTTP client ([`ModuleContext::http_client`]), which
//! refuses cloud metadata, link-local and multicast addresses at connect time, whatever a name
//! resolves to. The endpoint URL is checked once, at load ([`Endpoint::parse`]): `http` or
//! `https`, a host, no credentials, no NUL, not a cloud metadata name. Loopback and private
//! hosts are allowed: an introspection server is often a sidecar or an internal service, and the
//! URL is operator configuration (as connection hosts, DECISIONS C12).
//!
//! A call that cannot be made (refused, unreachable, timed out, a 5xx, a reply that is not what
//! the protocol says) is [`Denial::Unavailable`] (503 with `Retry-After`), so the sender
//! retries: the request is neither accepted unchecked nor refused for good. Messages never carry
//! the token, the secret or the server's own error text; the details are logged.
//!
//! [`ModuleContext::http_client`]: crate::context::ModuleContext

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use cwm_config::model::is_metadata_host;

use super::{Denial, ValidatorError};
use crate::http::{ConnectGuardError, HttpClient};

/// How long one outbound check may take in total (connect, send, reply), as upstream (5 s).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply body read; a bigger one is an invalid reply.
const MAX_REPLY_BYTES: usize = 64 * 1024;
const MAX_URL_LEN: usize = 8192;
const USER_AGENT_VALUE: &str = concat!("cwm/", env!("CARGO_PKG_VERSION"));

/// RFC 3986 unreserved characters stay, everything else is percent-encoded (upper-case hex).
pub(super) const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode `s` (UTF-8) per RFC 3986.
pub(super) fn pct(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The config object of check `key`: `Ok(None)` for an absent key or `null` when
/// `null_is_off`, an error for anything that is not an object.
pub(super) fn object<'a>(
    extra: &'a Map<String, Value>,
    key: &'static str,
    null_is_off: bool,
) -> Result<Option<&'a Map<String, Value>>, ValidatorError> {
    match extra.get(key) {
        None => Ok(None),
        Some(Value::Null) if null_is_off => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ValidatorError::new(key, "must be an object")),
    }
}

/// A string field; `null` counts as absent.
pub(super) fn string<'a>(
    m: &'a Map<String, Value>,
    key: &'static str,
    field: &str,
) -> Result<Option<&'a str>, ValidatorError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ValidatorError::new(
            key,
            format!("'{field}' must be a string"),
        )),
    }
}

/// A boolean field, also written as a string (`"true"`, `"false"`, `"1"`, `"0"`, `"yes"`,
/// `"no"`, `"on"`, `"off"`); `null` counts as absent.
pub(super) fn boolean(
    m: &Map<String, Value>,
    key: &'static str,
    field: &str,
    default: bool,
) -> Result<bool, ValidatorError> {
    let bad = || ValidatorError::new(key, format!("'{field}' must be true or false"));
    match m.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// A finite number field, also written as a numeric string; `null` counts as absent.
pub(super) fn number(
    m: &Map<String, Value>,
    key: &'static str,
    field: &str,
) -> Result<Option<f64>, ValidatorError> {
    let bad = || ValidatorError::new(key, format!("'{field}' must be a number"));
    let n = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    if n.is_finite() {
        Ok(Some(n))
    } else {
        Err(bad())
    }
}

/// A list of strings, or one string of space-separated items; `null` counts as absent.
pub(super) fn words(
    m: &Map<String, Value>,
    key: &'static str,
    field: &str,
) -> Result<Option<Vec<String>>, ValidatorError> {
    let bad = || ValidatorError::new(key, format!("'{field}' must be a list of strings"));
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_owned).collect())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Host names that reach a cloud metadata service, besides [`is_metadata_host`]'s list
/// (pipeline.md 5.4, the introspection URL rules).
const METADATA_NAMES: &[&str] = &["instance-data.ecs", "ecs-metadata"];

/// A checked outbound endpoint.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// Without fragment.
    uri: Uri,
    /// `scheme://host[:port]`, the only form of the URL that logs show (the path or query may
    /// hold an API key).
    label: String,
}

impl Endpoint {
    /// Check the URL of config field `field` of check `key`.
    pub(super) fn parse(key: &'static str, field: &str, raw: &str) -> Result<Self, ValidatorError> {
        let bad = |why: &str| ValidatorError::new(key, format!("'{field}' {why}"));
        let url = raw.trim();
        if url.is_empty() || url.len() > MAX_URL_LEN {
            return Err(bad("is empty or too long"));
        }
        if url.contains(|c: char| c.is_control() || c.is_whitespace())
            || url.to_ascii_lowercase().contains("%00")
        {
            return Err(bad("contains a control character or a space"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("must start with http:// or https://"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("must not contain credentials"));
        }
        let (host, port) = split_host_port(authority).map_err(bad)?;
        let host = host.to_ascii_lowercase();
        if is_metadata_host(&host)
            || METADATA_NAMES
                .iter()
                .any(|n| host.trim_end_matches('.') == *n)
        {
            return Err(bad("names a cloud metadata endpoint"));
        }
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                return Err(bad("names an address that cannot be a server"));
            }
            Ok(_) => {}
            Err(_) => {
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    || host.starts_with(['.', '-'])
                {
                    return Err(bad("has an invalid host name"));
                }
            }
        }
        let tail = tail.split('#').next().unwrap_or_default();
        let path_and_query = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        let host_part = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = match port {
            Some(p) => format!("{host_part}:{p}"),
            None => host_part,
        };
        let uri = Uri::builder()
            .scheme(scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|_| bad("is not a valid URL"))?;
        let sent_to = uri.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
        if sent_to.as_deref() != Some(host.as_str()) {
            return Err(bad("is ambiguous"));
        }
        Ok(Self {
            uri,
            label: format!("{scheme}://{authority}"),
        })
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// POST `form` (`application/x-www-form-urlencoded`) and read the JSON object answered,
    /// within [`CALL_TIMEOUT`]. `what` names the check in logs and messages.
    pub(super) async fn post_form(
        &self,
        client: &HttpClient,
        form: String,
        basic_auth: Option<&HeaderValue>,
        what: &'static str,
    ) -> Result<Map<String, Value>, Denial> {
        let mut req = Request::new(Full::new(Bytes::from(form)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(auth) = basic_auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let unavailable =
            || Denial::Unavailable(format!("{what} unavailable, please retry later").into());
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| {
                if refused_in(&e) {
                    tracing::error!(endpoint = %self.label, check = what, "refused to connect: {}", ConnectGuardError::Refused);
                } else {
                    tracing::warn!(endpoint = %self.label, check = what, error = %error_chain(&e), "outbound check failed");
                }
                unavailable()
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    tracing::warn!(endpoint = %self.label, check = what, error = %e, "reading the reply failed");
                    unavailable()
                })?
                .to_bytes();
            Ok::<_, Denial>((status, body))
        };
        let (status, body) = match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::warn!(endpoint = %self.label, check = what, timeout = ?CALL_TIMEOUT, "outbound check timed out");
                return Err(unavailable());
            }
        };
        if !status.is_success() {
            tracing::warn!(endpoint = %self.label, check = what, %status, "outbound check answered an error");
            return Err(unavailable());
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => {
                tracing::warn!(endpoint = %self.label, check = what, "outbound check answered something that is not a JSON object");
                Err(unavailable())
            }
        }
    }
}

/// Host and optional port of `host[:port]` or `[v6][:port]`.
fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), &'static str> {
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

/// Whether the client's connect-time check refused the connection somewhere in `e`'s causes.
fn refused_in(e: &(dyn std::error::Error + 'static)) -> bool {
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

/// The error and its causes, for logs.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An `Authorization: Basic` value for `user:password`, marked sensitive.
pub(super) fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn endpoint_rules() {
        let ok = [
            ("http://127.0.0.1:8080/introspect", "http://127.0.0.1:8080"),
            (
                "https://auth.example.com/oauth/introspect?x=1#f",
                "https://auth.example.com",
            ),
            (
                "HTTPS://Auth.Example.com:8443",
                "https://auth.example.com:8443",
            ),
            ("http://localhost:9000/i", "http://localhost:9000"),
            ("http://10.1.2.3/i", "http://10.1.2.3"),
            ("http://[::1]:81/i", "http://[::1]:81"),
        ];
        for (url, label) in ok {
            let e = Endpoint::parse("oauth2", "introspection_endpoint", url)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(e.label(), label);
        }
        let e = Endpoint::parse("k", "f", "https://a.example.com/x?y=1#frag").unwrap();
        assert_eq!(e.uri.to_string(), "https://a.example.com/x?y=1");
        let e = Endpoint::parse("k", "f", "http://a.example.com").unwrap();
        assert_eq!(e.uri.to_string(), "http://a.example.com/");

        let bad = [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com/introspect",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://169.254.169.254/latest",
            "http://metadata.google.internal/",
            "http://metadata/",
            "http://instance-data/",
            "http://instance-data.ecs/",
            "http://ecs-metadata/",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http:///nohost",
            "http://exa mple.com/",
            "http://example.com/%00",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://[notanip]/",
            "http://under_score.example.com/",
            "http://evil.com\\@127.0.0.1/",
        ];
        for url in bad {
            assert!(
                Endpoint::parse("oauth2", "introspection_endpoint", url).is_err(),
                "{url} should be rejected"
            );
        }
        let e = Endpoint::parse("oauth2", "introspection_endpoint", "http://u:s3cret@x.com/")
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(
            e.to_string()
                .starts_with("'oauth2': 'introspection_endpoint'"),
            "{e}"
        );
    }

    #[test]
    fn fields() {
        let m = match serde_json::json!({
            "b": "off", "c": true, "n": "2.5", "s": "x", "l": ["a", "b"], "w": "a  b",
            "bad": [1], "nan": "nan"
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert!(!boolean(&m, "k", "b", true).unwrap());
        assert!(boolean(&m, "k", "c", false).unwrap());
        assert!(boolean(&m, "k", "missing", true).unwrap());
        assert!(boolean(&m, "k", "s", true).is_err());
        assert_eq!(number(&m, "k", "n").unwrap(), Some(2.5));
        assert!(number(&m, "k", "nan").is_err());
        assert_eq!(string(&m, "k", "s").unwrap(), Some("x"));
        assert!(string(&m, "k", "l").is_err());
        assert_eq!(words(&m, "k", "l").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(words(&m, "k", "w").unwrap().unwrap(), ["a", "b"]);
        assert!(words(&m, "k", "bad").is_err());
        assert_eq!(pct("a b&c=d~é"), "a%20b%26c%3Dd~%C3%A9");
    }

    /// Names resolve to the addresses given.
    struct Fixed(Vec<(String, std::net::IpAddr)>);

    impl crate::http::Lookup for Fixed {
        fn lookup(
            &self,
            host: String,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send,
            >,
        > {
            let found: Vec<std::net::SocketAddr> = self
                .0
                .iter()
                .filter(|(n, _)| *n == host)
                .map(|(_, ip)| (*ip, 0).into())
                .collect();
            Box::pin(std::future::ready(Ok(found)))
        }
    }

    /// A server answering every connection with `status` and `body`, then closing.
    async fn answering(status: u16, body: String) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn outbound_outcomes() {
        let ctx = crate::context::ModuleContext::with_http_lookup(Arc::new(Fixed(vec![
            ("idp.test".into(), "127.0.0.1".parse().unwrap()),
            ("evil.test".into(), "169.254.169.254".parse().unwrap()),
        ])));
        let client = ctx.http_client().unwrap();
        let call = |url: String| {
            let client = client.clone();
            async move {
                Endpoint::parse("k", "f", &url)
                    .unwrap()
                    .post_form(&client, "a=b".into(), None, "test check")
                    .await
            }
        };
        let ok = answering(200, r#"{"active": true}"#.into()).await;
        let got = call(format!("http://idp.test:{ok}/i")).await.unwrap();
        assert_eq!(got.get("active"), Some(&Value::Bool(true)));
        let unavailable = Err(Denial::Unavailable(
            "test check unavailable, please retry later".into(),
        ));
        for (status, body) in [
            (500, "{}".to_owned()),
            (401, "{}".to_owned()),
            (200, "[1]".to_owned()),
            (200, "not json".to_owned()),
            (
                200,
                format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_REPLY_BYTES)),
            ),
        ] {
            let port = answering(status, body).await;
            assert_eq!(
                call(format!("http://idp.test:{port}/i")).await,
                unavailable,
                "{status}"
            );
        }
        // A name resolving to a cloud metadata address is never connected to: the client's
        // connect-time guard refuses it, and the check answers 503.
        assert_eq!(call(format!("http://evil.test:{ok}/i")).await, unavailable);
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = format!("http://evil.test:{ok}/i").parse().unwrap();
        let err = client.request(req).await.unwrap_err();
        assert!(refused_in(&err), "{}", error_chain(&err));
    }
}
