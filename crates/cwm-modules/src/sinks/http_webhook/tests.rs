#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use cwm_config::WebhookConfig;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::HttpWebhookBuilder;
use super::config::{MAX_HEADER_VALUE, Target};
use crate::context::ModuleContext;
use crate::fake::event_with as event;
use crate::outbound::MAX_URL_LEN;
use crate::outbound::testing::Table;
use crate::sink::{BuildError, Payload, Sink, SinkBuilder, SinkContext, SinkError};

/// The builder's answer for `config`, as the registry would build it.
fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, BuildError> {
    HttpWebhookBuilder.build(&SinkContext {
        webhook_id: "w",
        config,
        connection: None,
        modules: ctx,
    })
}

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
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
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
    for (mc, key) in [
        (json!({}), "url"),
        (json!({"url": 5}), "url"),
        (
            json!({"url": "https://example.com", "method": "GET"}),
            "method",
        ),
        (
            json!({"url": "https://example.com", "timeout": 0}),
            "timeout",
        ),
        (
            json!({"url": "https://example.com", "timeout": "soon"}),
            "timeout",
        ),
        (
            json!({"url": "https://example.com", "headers": ["x"]}),
            "headers",
        ),
        (
            json!({"url": "https://example.com", "headers": {"x": []}}),
            "headers.x",
        ),
        (
            json!({"url": "https://example.com", "allowed_hosts": "example.com"}),
            "allowed_hosts",
        ),
        (
            json!({"url": "https://example.com", "allowed_hosts": ["other.com"]}),
            "url",
        ),
        (json!({"url": "http://localhost/"}), "url"),
    ] {
        match factory(&config(mc.clone()), &ctx) {
            Err(BuildError::Option { key: got, .. }) => assert_eq!(got, key, "{mc}"),
            Err(e) => panic!("{mc}: {e}"),
            Ok(_) => panic!("{mc} should be rejected"),
        }
    }
    let err = factory(&config(json!({"url": "http://localhost/"})), &ctx)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "'module-config.url': URL host rejected: localhost"
    );
    let err = factory(&config(json!({"url": 5})), &ctx).err().unwrap();
    assert_eq!(err.to_string(), "'module-config.url': must be a string");
    // Keys the sink does not know are ignored (the Python gateway's configs carry extra keys).
    assert!(
        factory(
            &config(json!({"url": "https://example.com", "retries": 3})),
            &ctx
        )
        .is_ok()
    );
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
