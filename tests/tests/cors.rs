//! Black-box tests of CORS (`CORS_ALLOWED_ORIGINS`): the real `cwm-receiver`, raw HTTP/1.1 (the
//! harness's client has no `OPTIONS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use cwm_tests::{Receiver, Reply, read_reply};
use serde_json::json;

const WEBHOOKS: &str = r#"{"logged": {"module": "log"}}"#;
const APP: &str = "https://app.example.com";
const ALLOW_HEADERS: &str = "Accept, Accept-Language, Authorization, Content-Language, \
    Content-Type, X-API-Key, X-Auth-Token, X-Forwarded-For, X-HMAC-Signature, \
    X-HMAC-Signature-256, X-Hub-Signature, X-Hub-Signature-256, X-Real-IP, X-Recaptcha-Token, \
    X-Requested-With";
const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, \
    Access-Control-Request-Headers, Access-Control-Request-Private-Network";

fn start(cors: Option<&str>) -> Receiver {
    let env: Vec<(&str, &str)> = cors
        .map(|c| ("CORS_ALLOWED_ORIGINS", c))
        .into_iter()
        .collect();
    Receiver::start(
        &[("webhooks.json", WEBHOOKS), ("connections.json", "{}")],
        &env,
    )
}

fn with_cors() -> Receiver {
    start(Some(&format!(
        " {APP} , *, null, ftp://files.example.com, https://app.example.com/path, http://localhost:3000"
    )))
}

/// One request on its own connection.
fn send(rx: &Receiver, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = rx.connect();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    read_reply(&mut s)
}

fn preflight(rx: &Receiver, path: &str, origin: &str) -> Reply {
    send(
        rx,
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-hub-signature-256",
            ),
        ],
        "",
    )
}

fn cors_headers(r: &Reply) -> Vec<&str> {
    r.headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| {
            let k = k.to_ascii_lowercase();
            k.starts_with("access-control-") || k == "vary"
        })
        .collect()
}

fn assert_security_headers(r: &Reply) {
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{r:?}");
    assert!(r.header("content-security-policy").is_some(), "{r:?}");
    assert!(r.header("permissions-policy").is_some(), "{r:?}");
}

#[test]
fn preflight_from_an_allowed_origin_is_answered_before_routing() {
    let rx = with_cors();
    // A webhook route, and a path no route serves: the CORS layer answers both.
    for path in ["/webhook/logged", "/no/such/path"] {
        let r = preflight(&rx, path, APP);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.body, "OK");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("POST, GET, OPTIONS")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some(ALLOW_HEADERS)
        );
        assert_eq!(r.header("vary"), Some(PREFLIGHT_VARY));
        assert_eq!(cors_headers(&r).len(), 6, "{r:?}");
        assert_security_headers(&r);
    }
    // The localhost entry is allowed too.
    let r = preflight(&rx, "/webhook/logged", "http://localhost:3000");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

#[test]
fn preflight_from_another_origin_is_refused() {
    let rx = with_cors();
    // The skipped entries allow nothing; comparison is exact.
    for origin in [
        "https://evil.example.com",
        "*",
        "null",
        "ftp://files.example.com",
        "https://app.example.com/path",
        "https://APP.example.com",
    ] {
        let r = preflight(&rx, "/webhook/logged", origin);
        assert_eq!(r.status, 400, "{origin}: {r:?}");
        assert_eq!(r.body, "Disallowed CORS origin");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("POST, GET, OPTIONS")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some(ALLOW_HEADERS)
        );
        assert_eq!(r.header("vary"), Some(PREFLIGHT_VARY));
        assert_eq!(cors_headers(&r).len(), 5, "{r:?}");
        assert_security_headers(&r);
    }
    // A method or header the layer does not allow is refused as well.
    let r = send(
        &rx,
        "OPTIONS",
        "/webhook/logged",
        &[
            ("Origin", APP),
            ("Access-Control-Request-Method", "DELETE"),
            ("Access-Control-Request-Headers", "X-Custom"),
        ],
        "",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "Disallowed CORS method, headers");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
}

#[test]
fn actual_requests_get_the_cors_headers() {
    let rx = with_cors();
    let post = |headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        send(&rx, "POST", "/webhook/logged", &h, r#"{"n":1}"#)
    };

    let r = post(&[("Origin", APP)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"message": "200 OK"}));
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(cors_headers(&r).len(), 3, "{r:?}");
    assert_security_headers(&r);

    let r = post(&[("Origin", "https://evil.example.com")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(cors_headers(&r).len(), 2, "{r:?}");

    let r = post(&[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(cors_headers(&r).is_empty(), "{r:?}");

    // Error answers carry them too; an OPTIONS that is no preflight is routed.
    let r = send(&rx, "OPTIONS", "/webhook/logged", &[("Origin", APP)], "");
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));

    let log = rx.stderr();
    for skipped in ["\"*\"", "\"null\"", "ftp://files.example.com", "/path"] {
        assert!(
            log.lines()
                .any(|l| l.contains("invalid CORS origin skipped") && l.contains(skipped)),
            "no warning for {skipped}: {log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("localhost") && l.contains("http://localhost:3000")),
        "no localhost warning: {log}"
    );
}

#[test]
fn without_cors_a_preflight_is_routed_normally() {
    for cors in [None, Some(""), Some("*, ftp://x.example")] {
        let rx = start(cors);
        let r = preflight(&rx, "/webhook/logged", APP);
        assert_eq!(r.status, 405, "{cors:?}: {r:?}");
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(r.json(), json!({"detail": "Method Not Allowed"}));
        assert!(cors_headers(&r).is_empty(), "{r:?}");
        assert_security_headers(&r);

        let r = preflight(&rx, "/no/such/path", APP);
        assert_eq!(r.status, 404, "{r:?}");
        assert!(cors_headers(&r).is_empty(), "{r:?}");

        let r = send(
            &rx,
            "POST",
            "/webhook/logged",
            &[("Origin", APP), ("Content-Type", "application/json")],
            "{}",
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert!(cors_headers(&r).is_empty(), "{r:?}");
    }
}
