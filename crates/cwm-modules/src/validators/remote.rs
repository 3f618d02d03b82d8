//! What `oauth2` and `recaptcha` share (and `oauth1` its percent-encoding): the outbound calls
//! of the checks that ask a server (token introspection, reCAPTCHA verification).
//!
//! Outbound calls go through the process's HTTP client ([`ModuleContext::http_client`]), which
//! refuses cloud metadata, link-local and multicast addresses at connect time, whatever a name
//! resolves to. The endpoint URL is checked once, at load ([`Endpoint::parse`]): `http` or
//! `https`, a host, no credentials, no NUL, not a cloud metadata name. Loopback and private
//! hosts are allowed: an introspection server is often a sidecar or an internal service, and the
//! URL is operator configuration (as the hosts of connections are). The URL is taken apart, and
//! the request URI built, by the same code as `http_webhook`'s ([`crate::outbound`]).
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

use super::validator::{BuildContext, Denial, ValidatorError};
use crate::outbound::{
    ConnectGuardError, HttpClient, MAX_URL_LEN, USER_AGENT_VALUE, error_chain, refused_in,
    request_uri, split_host_port, split_url,
};

/// How long one outbound check may take in total (connect, send, reply), as upstream (5 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply body read; a bigger one is an invalid reply.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// RFC 3986 unreserved characters stay, everything else is percent-encoded (upper-case hex).
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode `s` (UTF-8) per RFC 3986.
pub(super) fn pct(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The process's HTTP client, for check `key`.
pub(super) fn client(
    ctx: &BuildContext<'_>,
    key: &'static str,
) -> Result<HttpClient, ValidatorError> {
    ctx.modules
        .http_client()
        .map_err(|e| ValidatorError::new(key, format!("no HTTP client: {e}")))
}

/// Host names that reach a cloud metadata service, besides [`is_metadata_host`]'s list (the
/// Python gateway's introspection URL rules).
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
        let (scheme, authority, tail) = split_url(url).map_err(bad)?;
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
        let (uri, authority) = request_uri(&scheme, &host, port, tail).map_err(bad)?;
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
    fn percent_encoding() {
        assert_eq!(pct("a b&c=d~é"), "a%20b%26c%3Dd~%C3%A9");
    }

    /// Names resolve to the addresses given.
    struct Fixed(Vec<(String, std::net::IpAddr)>);

    impl crate::outbound::Lookup for Fixed {
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
