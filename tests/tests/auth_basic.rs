//! Black-box tests of the request checks without I/O or body: `rate_limit`, `basic_auth`,
//! `digest_auth`, `ip_whitelist`, `query_auth` and `header_auth`, through the real `cwm-receiver`
//! and real HTTP. The test client is 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cwm_tests::{Receiver, Reply, rejection_reason};
use serde_json::{Value, json};

const ADMIN: &str = "adm1n";

fn webhooks() -> Value {
    json!({
        "limited": {"module": "log", "rate_limit": {"max_requests": 2, "window_seconds": 3600}},
        "closed": {"module": "log", "rate_limit": {"max_requests": 0, "window_seconds": 30}},
        "unlimited": {"module": "log", "rate_limit": {}},
        "basic": {"module": "log", "basic_auth": {"username": "alice", "password": "{$BASIC_PASSWORD}"}},
        "digest": {"module": "log", "digest_auth": {
            "username": "hook-user", "password": "d1gest-pw", "realm": "Hooks"
        }},
        "header": {"module": "log", "header_auth": {"api_key": "K3y-{$API_KEY}", "header_name": "X-Hook-Key"}},
        "query": {"module": "log", "query_auth": {"api_key": "K3y-{$API_KEY}"}},
        "ip_local": {"module": "log", "ip_whitelist": ["192.0.2.1", "127.0.0.0/8"]},
        "ip_private": {"module": "log", "ip_whitelist": ["10.0.0.0/8"]},
        "ip_proxied": {"module": "log", "ip_whitelist": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.1"]},
        "ip_proxied_cidr": {"module": "log", "ip_whitelist": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.0/8"]},
        "combined": {
            "module": "log",
            "ip_whitelist": ["127.0.0.1"],
            "basic_auth": {"username": "alice", "password": "{$BASIC_PASSWORD}"},
            "header_auth": {"api_key": "K3y-{$API_KEY}"}
        },
        // `null` is no check, as in the Python gateway.
        "nulls": {
            "module": "log", "rate_limit": null, "basic_auth": null, "digest_auth": null,
            "ip_whitelist": null, "query_auth": null, "header_auth": null
        },
        // Configs that cannot check anything: rejected at load, never served.
        "bad_basic": {"module": "log", "basic_auth": {}},
        "bad_basic_half": {"module": "log", "basic_auth": {"username": "alice"}},
        "bad_digest": {"module": "log", "digest_auth": {"username": "u"}},
        "bad_digest_alg": {"module": "log", "digest_auth": {"username": "u", "password": "p", "algorithm": "MD5-sess"}},
        "bad_header": {"module": "log", "header_auth": {}},
        "bad_header_name": {"module": "log", "header_auth": {"api_key": "k", "header_name": "X Bad"}},
        "bad_query": {"module": "log", "query_auth": {"api_key": ""}},
        "bad_query_name": {"module": "log", "query_auth": {"api_key": "k", "parameter_name": "a b"}},
        "bad_ip_empty": {"module": "log", "ip_whitelist": []},
        "bad_ip_entry": {"module": "log", "ip_whitelist": ["127.0.0.1", "localhost"]},
        "bad_proxy": {"module": "log", "ip_whitelist": ["127.0.0.1"], "trusted_proxies": ["lb.internal"]},
        "bad_rate": {"module": "log", "rate_limit": {"max_requests": -1}},
        "bad_rate_window": {"module": "log", "rate_limit": {"window_seconds": 0}},
    })
}

fn start() -> Receiver {
    Receiver::start(
        &[("webhooks.json", &webhooks().to_string())],
        &[
            ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN),
            ("BASIC_PASSWORD", "s3cr3t"),
            ("API_KEY", "abc"),
        ],
    )
}

fn post(rx: &Receiver, path: &str, headers: &[(&str, &str)]) -> Reply {
    rx.post_json(path, headers, r#"{"event": "ping"}"#)
}

/// Status and `detail` of a refusal (`"ok"` for a 200).
fn answer(r: &Reply) -> (u16, String) {
    if r.status == 200 {
        return (200, "ok".into());
    }
    (r.status, r.detail())
}

fn denied(status: u16, detail: &str) -> (u16, String) {
    (status, detail.to_owned())
}

fn ok() -> (u16, String) {
    (200, "ok".to_owned())
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let rx = start();
    assert_eq!(answer(&post(&rx, "/webhook/limited", &[])), ok());
    assert_eq!(answer(&post(&rx, "/webhook/limited", &[])), ok());
    let r = post(&rx, "/webhook/limited", &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(
        r.json(),
        json!({"detail": format!("Rate limit exceeded. Retry after {retry} seconds")})
    );
    // Per webhook: another webhook is not limited by this one.
    assert_eq!(answer(&post(&rx, "/webhook/nulls", &[])), ok());

    let r = post(&rx, "/webhook/closed", &[]);
    assert_eq!(
        answer(&r),
        denied(429, "Rate limit exceeded. No requests allowed")
    );
    assert_eq!(r.header("retry-after"), Some("30"));

    for _ in 0..5 {
        assert_eq!(answer(&post(&rx, "/webhook/unlimited", &[])), ok());
    }
}

#[test]
fn basic_auth() {
    let rx = start();
    let hook = "/webhook/basic";
    // alice:s3cr3t, alice:wrong, bob:s3cr3t
    assert_eq!(
        answer(&post(
            &rx,
            hook,
            &[("authorization", "Basic YWxpY2U6czNjcjN0")]
        )),
        ok()
    );
    for creds in ["Basic YWxpY2U6d3Jvbmc=", "Basic Ym9iOnMzY3IzdA=="] {
        let r = post(&rx, hook, &[("authorization", creds)]);
        assert_eq!(answer(&r), denied(401, "Invalid credentials"), "{creds}");
        assert!(!r.body.contains("s3cr3t"));
    }
    assert_eq!(
        answer(&post(&rx, hook, &[])),
        denied(401, "Missing Authorization header")
    );
    assert_eq!(
        answer(&post(&rx, hook, &[("authorization", "Bearer x")])),
        denied(401, "Basic authentication required")
    );
    assert_eq!(
        answer(&post(&rx, hook, &[("authorization", "Basic !!!")])),
        denied(401, "Invalid base64 encoding format")
    );
    assert_eq!(
        answer(&post(&rx, hook, &[("authorization", "Basic YWxpY2U")])),
        denied(401, "Invalid base64 encoding in Authorization header")
    );
}

#[test]
fn digest_auth() {
    let rx = start();
    let hook = "/webhook/digest";
    // MD5(MD5("hook-user:Hooks:d1gest-pw"):abc123:MD5("POST:/webhook/digest"))
    let legacy = r#"Digest username="hook-user", realm="Hooks", nonce="abc123", uri="/webhook/digest", response="0463bdca19af8047d6722ec2105da42f""#;
    assert_eq!(answer(&post(&rx, hook, &[("authorization", legacy)])), ok());
    // The qop=auth form: ...:abc123:00000002:c0ffee:auth:...
    let qop = r#"Digest username="hook-user", realm="Hooks", nonce="abc123", uri="/webhook/digest", qop=auth, nc=00000002, cnonce="c0ffee", response="e472d507538a2a32c05b6533cf077898", algorithm=MD5"#;
    assert_eq!(answer(&post(&rx, hook, &[("authorization", qop)])), ok());
    let wrong_response = legacy.replace("0463bdca", "0463bdcb");
    let wrong_user = legacy.replace("hook-user", "other-user");
    for header in [&wrong_response, &wrong_user] {
        assert_eq!(
            answer(&post(&rx, hook, &[("authorization", header)])),
            denied(401, "Invalid digest auth credentials"),
            "{header}"
        );
    }
    assert_eq!(
        answer(&post(
            &rx,
            hook,
            &[("authorization", &legacy.replace("Hooks", "Other"))]
        )),
        denied(401, "Invalid digest auth realm")
    );
    assert_eq!(
        answer(&post(
            &rx,
            hook,
            &[("authorization", &legacy.replace("nonce=", "n="))]
        )),
        denied(401, "Missing required Digest parameter: nonce")
    );
    assert_eq!(
        answer(&post(
            &rx,
            hook,
            &[("authorization", "Basic YWxpY2U6czNjcjN0")]
        )),
        denied(401, "Digest authentication required")
    );
    assert_eq!(
        answer(&post(&rx, hook, &[])),
        denied(401, "Missing Authorization header")
    );
}

#[test]
fn header_and_query_auth() {
    let rx = start();
    let header = "/webhook/header";
    assert_eq!(
        answer(&post(&rx, header, &[("x-hook-key", "K3y-abc")])),
        ok()
    );
    // Case-insensitive by default.
    assert_eq!(
        answer(&post(&rx, header, &[("X-HOOK-KEY", "k3y-ABC")])),
        ok()
    );
    assert_eq!(
        answer(&post(&rx, header, &[("x-hook-key", "K3y-abd")])),
        denied(401, "Invalid API key in header: X-Hook-Key")
    );
    assert_eq!(
        answer(&post(&rx, header, &[("x-api-key", "K3y-abc")])),
        denied(401, "Missing required header: X-Hook-Key")
    );

    assert_eq!(
        answer(&post(&rx, "/webhook/query?api_key=K3y-abc", &[])),
        ok()
    );
    assert_eq!(
        answer(&post(&rx, "/webhook/query?x=1&api_key=k3y%2DABC", &[])),
        ok()
    );
    assert_eq!(
        answer(&post(
            &rx,
            "/webhook/query?api_key=K3y-abc&api_key=nope",
            &[]
        )),
        denied(401, "Invalid API key in query parameter: api_key")
    );
    assert_eq!(
        answer(&post(&rx, "/webhook/query?token=K3y-abc", &[])),
        denied(401, "Missing required query parameter: api_key")
    );
    assert_eq!(
        answer(&post(&rx, "/webhook/query", &[("x-api-key", "K3y-abc")])),
        denied(401, "Missing required query parameter: api_key")
    );
}

#[test]
fn ip_whitelist_with_ranges_and_trusted_proxies() {
    let rx = start();
    assert_eq!(answer(&post(&rx, "/webhook/ip_local", &[])), ok());
    assert_eq!(
        answer(&post(&rx, "/webhook/ip_private", &[])),
        denied(403, "IP 127.0.0.1 not in whitelist")
    );
    // The client is not a trusted proxy there: its X-Forwarded-For is ignored.
    for h in [("x-forwarded-for", "10.1.2.3"), ("x-real-ip", "10.1.2.3")] {
        assert_eq!(
            answer(&post(&rx, "/webhook/ip_private", &[h])),
            denied(403, "IP 127.0.0.1 not in whitelist")
        );
    }
    // 127.0.0.1 is a trusted proxy (by address, by range): the forwarded address counts.
    for hook in ["/webhook/ip_proxied", "/webhook/ip_proxied_cidr"] {
        assert_eq!(
            answer(&post(&rx, hook, &[("x-forwarded-for", "10.1.2.3")])),
            ok(),
            "{hook}"
        );
        assert_eq!(
            answer(&post(&rx, hook, &[("x-real-ip", "10.1.2.3")])),
            ok(),
            "{hook}"
        );
        assert_eq!(
            answer(&post(&rx, hook, &[("x-forwarded-for", "192.0.2.9")])),
            denied(403, "IP 192.0.2.9 not in whitelist")
        );
        // Read from the right: an address the client put in front does not count.
        assert_eq!(
            answer(&post(
                &rx,
                hook,
                &[("x-forwarded-for", "10.1.2.3, 192.0.2.9")]
            )),
            denied(403, "IP 192.0.2.9 not in whitelist")
        );
        assert_eq!(
            answer(&post(&rx, hook, &[("x-forwarded-for", "nonsense")])),
            denied(403, "Invalid IP address format: nonsense")
        );
        // No forwarding header: the proxy itself, which is not allowed.
        assert_eq!(
            answer(&post(&rx, hook, &[])),
            denied(403, "IP 127.0.0.1 not in whitelist")
        );
    }
}

#[test]
fn every_configured_check_must_pass() {
    let rx = start();
    let hook = "/webhook/combined";
    let basic = ("authorization", "Basic YWxpY2U6czNjcjN0");
    let key = ("x-api-key", "K3y-abc");
    assert_eq!(answer(&post(&rx, hook, &[basic, key])), ok());
    assert_eq!(
        answer(&post(&rx, hook, &[basic])),
        denied(401, "Missing required header: X-API-Key")
    );
    assert_eq!(
        answer(&post(&rx, hook, &[key])),
        denied(401, "Missing Authorization header")
    );
    assert_eq!(
        answer(&post(
            &rx,
            hook,
            &[("authorization", "Basic YWxpY2U6d3Jvbmc="), key]
        )),
        denied(401, "Invalid credentials")
    );
    // `null` is no check.
    assert_eq!(answer(&post(&rx, "/webhook/nulls", &[])), ok());
}

#[test]
fn configs_that_cannot_check_are_rejected_at_load() {
    let rx = start();
    let provider = rx.config_status(ADMIN);
    for (id, why) in [
        (
            "bad_basic",
            "'basic_auth': Basic auth credentials not configured",
        ),
        (
            "bad_basic_half",
            "'basic_auth': Basic auth credentials not configured",
        ),
        (
            "bad_digest",
            "'digest_auth': Digest auth credentials not configured",
        ),
        (
            "bad_digest_alg",
            "'digest_auth': algorithm 'MD5-sess' is not supported",
        ),
        (
            "bad_header",
            "'header_auth': Header auth API key not configured",
        ),
        (
            "bad_header_name",
            "'header_auth': header_name 'X Bad' is not a valid HTTP header name",
        ),
        (
            "bad_query",
            "'query_auth': Query auth API key not configured",
        ),
        (
            "bad_query_name",
            "'query_auth': Invalid parameter name configuration",
        ),
        ("bad_ip_empty", "'ip_whitelist': the list is empty"),
        (
            "bad_ip_entry",
            "'ip_whitelist': 'localhost' is neither an IP address nor a CIDR range",
        ),
        (
            "bad_proxy",
            "'trusted_proxies': 'lb.internal' is neither an IP address nor a CIDR range",
        ),
        (
            "bad_rate",
            "'rate_limit': 'max_requests' must be a non-negative integer",
        ),
        (
            "bad_rate_window",
            "'rate_limit': 'window_seconds' must be a positive number",
        ),
    ] {
        let r = rejection_reason(&provider, id);
        assert!(r.starts_with(why), "{id}: {r}");
        let served = post(&rx, &format!("/webhook/{id}"), &[]);
        assert_eq!(
            served.status, 404,
            "{id} must not be served: {}",
            served.body
        );
    }
    let good = [
        "limited",
        "closed",
        "unlimited",
        "basic",
        "digest",
        "header",
        "query",
        "ip_local",
        "ip_private",
        "ip_proxied",
        "ip_proxied_cidr",
        "combined",
        "nulls",
    ];
    assert_eq!(provider["total_webhooks"], good.len(), "{provider}");
    // No secret in the status page.
    assert!(!provider.to_string().contains("s3cr3t"));
}
