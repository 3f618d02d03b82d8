//! Black-box tests of `oauth1`, `oauth2` and `recaptcha` through the real `cwm-receiver` and real
//! HTTP. Token introspection and reCAPTCHA verification talk to a small HTTP server this test
//! starts on a free loopback port (canned JSON answers), never to the internet.
//!
//! Every loop is bounded and every wait has a deadline; nothing asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use cwm_tests::{Receiver, Reply, rejection_reason, unix_now};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const ADMIN: &str = "adm1n";

// ---------------------------------------------------------------------------------------------
// A canned JSON server: one request per connection, answers from a function of the request.

/// A request as the canned server saw it: the head lower-cased, the body as sent.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

impl Seen {
    /// A field of the form body (the tests use values that need no decoding).
    fn field(&self, name: &str) -> Option<&str> {
        self.body
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    }
}

struct Canned {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Canned {
    fn start(answer: fn(&Seen) -> (u16, String)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                seen2.lock().unwrap().push(req.clone());
                let (status, body) = answer(&req);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} Canned\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            // The listener is dropped here: the port refuses connections from now on.
        });
        Self {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stop answering: the listening socket is closed when this returns.
    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            t.join().unwrap();
        }
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return Some(Seen { head, body });
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn start(hooks: &Value) -> Receiver {
    Receiver::start(
        &[("webhooks.json", &hooks.to_string())],
        &[
            ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN),
            ("O1_SECRET", "c0nsumer-secret"),
        ],
    )
}

/// No secret, token or signature of these tests may appear in an answer or in the logs.
fn assert_nothing_leaks(rx: &Receiver, r: &Reply, secrets: &[&str]) {
    for s in secrets {
        assert!(!r.body.contains(s), "{s} in the answer: {}", r.body);
        assert!(!rx.stderr().contains(s), "{s} in the receiver's log");
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth 1.0

/// RFC 3986 percent-encoding.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac_sha1_b64(key: &str, text: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `Authorization` header of an OAuth 1.0 request signed over `base_uri` with `extra`
/// parameters (query or form fields) signed too: the Python gateway's base string when
/// `base_uri` is a path (the header's `realm` is signed), RFC 5849's when it is a full URL.
fn oauth1_header(
    base_uri: &str,
    ts: u64,
    nonce: &str,
    consumer_secret: &str,
    extra: &[(&str, &str)],
) -> String {
    let ts = ts.to_string();
    let oauth = [
        ("oauth_consumer_key", "hook-consumer"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", ts.as_str()),
        ("oauth_nonce", nonce),
        ("oauth_version", "1.0"),
    ];
    let mut signed: Vec<(String, String)> = oauth
        .iter()
        .chain(extra)
        .map(|(k, v)| (pct(k), pct(v)))
        .collect();
    if base_uri.starts_with('/') {
        signed.push(("realm".into(), "hooks".into()));
    }
    signed.sort();
    let normalized = signed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!("POST&{}&{}", pct(base_uri), pct(&normalized));
    let key = format!("{}&{}", pct(consumer_secret), pct("t0ken-secret"));
    let sig = hmac_sha1_b64(&key, &base);
    let mut header = String::from("OAuth realm=\"hooks\"");
    for (k, v) in oauth {
        header.push_str(&format!(", {k}=\"{}\"", pct(v)));
    }
    header.push_str(&format!(", oauth_signature=\"{}\"", pct(&sig)));
    header
}

#[test]
fn oauth1_signed_requests() {
    let hooks = json!({
        "o1": {"module": "log", "data_type": "blob", "oauth1": {
            "consumer_key": "hook-consumer", "consumer_secret": "{$O1_SECRET}",
            "token_secret": "t0ken-secret", "timestamp_window": 300
        }},
        "o1_null": {"module": "log", "oauth1": null},
    });
    let rx = start(&hooks);
    let secret = "c0nsumer-secret";
    let ts = unix_now();
    let send = |auth: &str, ct: &str, body: &str| {
        rx.post_with(
            "/webhook/o1",
            &[("authorization", auth), ("content-type", ct)],
            body,
        )
    };

    // Signed as the Python gateway expects: the path alone.
    let ok = oauth1_header("/webhook/o1", ts, "nonce-1", secret, &[]);
    let r = send(&ok, "application/json", "{}");
    assert_eq!(r.status, 200, "{}", r.body);

    // The same request again: a replayed nonce.
    let r = send(&ok, "application/json", "{}");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.detail(),
        "OAuth 1.0 nonce has already been used (replay attack detected)"
    );

    // A wrong secret, or a wrong consumer key: one message, no hint which.
    let bad = oauth1_header("/webhook/o1", ts, "nonce-2", "wrong-secret", &[]);
    let r = send(&bad, "application/json", "{}");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "Invalid OAuth 1.0 signature")
    );
    let other_key = ok
        .replace("hook-consumer", "someone-else")
        .replace("nonce-1", "nonce-3");
    let r = send(&other_key, "application/json", "{}");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "Invalid OAuth 1.0 signature")
    );
    // A refused request does not use up its nonce.
    let retry = oauth1_header("/webhook/o1", ts, "nonce-2", secret, &[]);
    assert_eq!(send(&retry, "application/json", "{}").status, 200);

    // An old timestamp.
    let old = oauth1_header("/webhook/o1", ts - 3600, "nonce-4", secret, &[]);
    let r = send(&old, "application/json", "{}");
    assert_eq!(r.status, 401);
    assert!(
        r.detail()
            .starts_with("OAuth 1.0 timestamp out of window (diff: "),
        "{}",
        r.body
    );
    assert!(r.detail().ends_with("s, max: 300s)"), "{}", r.body);

    // Form fields in the body are signed: changing one breaks the signature.
    let form = "amount=10&currency=EUR";
    let signed_form = oauth1_header(
        "/webhook/o1",
        ts,
        "nonce-5",
        secret,
        &[("amount", "10"), ("currency", "EUR")],
    );
    let ct = "application/x-www-form-urlencoded";
    let r = send(&signed_form, ct, "amount=99&currency=EUR");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = send(&signed_form, ct, form);
    assert_eq!(r.status, 200, "{}", r.body);

    // A standard RFC 5849 client signs the full URL and the query.
    let host = format!("127.0.0.1:{}", rx.port);
    let rfc = oauth1_header(
        &format!("http://{host}/webhook/o1"),
        ts,
        "nonce-6",
        secret,
        &[("source", "crm")],
    );
    let r = rx.post_with(
        "/webhook/o1?source=crm",
        &[
            ("authorization", &rfc),
            ("content-type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The query is part of that signature.
    let rfc = oauth1_header(
        &format!("http://{host}/webhook/o1"),
        ts,
        "nonce-7",
        secret,
        &[("source", "crm")],
    );
    let r = rx.post_with(
        "/webhook/o1?source=other",
        &[
            ("authorization", &rfc),
            ("content-type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // No credentials at all.
    let r = rx.post("/webhook/o1", "{}");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "Missing Authorization header")
    );
    assert_nothing_leaks(&rx, &r, &[secret, "t0ken-secret"]);

    // `null` is no check, as upstream.
    assert_eq!(rx.post("/webhook/o1_null", "{}").status, 200);
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0

fn introspection(req: &Seen) -> (u16, String) {
    let basic = base64::engine::general_purpose::STANDARD.encode("cwm:intr0spect-secret");
    // The head is lower-cased.
    let auth = format!("authorization: basic {}", basic.to_ascii_lowercase());
    if !req.head.contains(&auth) || req.field("token_type_hint") != Some("access_token") {
        return (401, r#"{"error": "invalid_client"}"#.into());
    }
    let reply = match req.field("token") {
        Some("good-token") => json!({"active": true, "scope": "read write", "client_id": "crm"}),
        Some("read-only") => json!({"active": true, "scope": "read"}),
        Some("garbage") => return (200, "this is not JSON".into()),
        Some("boom") => return (500, "{}".into()),
        _ => json!({"active": false}),
    };
    (200, reply.to_string())
}

fn hs256(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn oauth2_introspection_and_jwt() {
    let mut server = Canned::start(introspection);
    let hooks = json!({
        "o2": {"module": "log", "oauth2": {
            "introspection_endpoint": server.url("/oauth/introspect"),
            "client_id": "cwm", "client_secret": "intr0spect-secret",
            "required_scope": ["write"]
        }},
        "o2_jwt": {"module": "log", "oauth2": {
            "jwt_secret": "jwt-s3cret", "audience": "hooks", "required_scope": "write"
        }},
        "o2_null": {"module": "log", "oauth2": null},
    });
    let rx = start(&hooks);
    let bearer = |t: &str| format!("Bearer {t}");
    let call = |id: &str, token: &str| {
        rx.post_json(
            &format!("/webhook/{id}"),
            &[("authorization", &bearer(token))],
            "{}",
        )
    };

    // Introspection: active with the scope, inactive, missing scope.
    let r = call("o2", "good-token");
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.starts_with("post /oauth/introspect http/1.1"),
        "{:?}",
        seen[0]
    );
    assert!(
        seen[0]
            .head
            .contains("content-type: application/x-www-form-urlencoded")
    );
    assert_eq!(seen[0].field("token"), Some("good-token"));

    let r = call("o2", "expired-token");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 token is not active")
    );
    let r = call("o2", "read-only");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 token missing required scopes")
    );
    let r = rx.post_json("/webhook/o2", &[], "{}");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "Missing Authorization header")
    );
    let r = rx.post_json(
        "/webhook/o2",
        &[("authorization", "Basic Zm9vOmJhcg==")],
        "{}",
    );
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 Bearer token required")
    );

    // A server that answers nonsense or fails: 503 with Retry-After, the sender retries.
    for token in ["garbage", "boom"] {
        let r = call("o2", token);
        assert_eq!(r.status, 503, "{token}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{token}");
    }
    // The introspection server stops: the webhook that worked now answers 503.
    let before = server.seen().len();
    server.stop();
    let r = call("o2", "good-token");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.detail(),
        "OAuth 2.0 token introspection unavailable, please retry later"
    );
    assert_eq!(server.seen().len(), before);
    assert_nothing_leaks(&rx, &r, &["intr0spect-secret", "good-token", "read-only"]);

    // JWT mode: valid, expired, wrong audience, wrong secret, missing scope.
    let exp = unix_now() + 600;
    let good = hs256(
        json!({"aud": "hooks", "exp": exp, "scope": "read write"}),
        "jwt-s3cret",
    );
    let r = call("o2_jwt", &good);
    assert_eq!(r.status, 200, "{}", r.body);
    let expired = hs256(
        json!({"aud": "hooks", "exp": unix_now() - 60, "scope": "write"}),
        "jwt-s3cret",
    );
    let r = call("o2_jwt", &expired);
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 token expired")
    );
    let other_aud = hs256(
        json!({"aud": "else", "exp": exp, "scope": "write"}),
        "jwt-s3cret",
    );
    let r = call("o2_jwt", &other_aud);
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 token audience mismatch")
    );
    let forged = hs256(
        json!({"aud": "hooks", "exp": exp, "scope": "write"}),
        "guess",
    );
    let r = call("o2_jwt", &forged);
    assert_eq!(r.status, 401);
    assert!(
        r.detail().starts_with("Invalid OAuth 2.0 JWT token"),
        "{}",
        r.body
    );
    let no_scope = hs256(json!({"aud": "hooks", "exp": exp}), "jwt-s3cret");
    let r = call("o2_jwt", &no_scope);
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "OAuth 2.0 token missing required scopes")
    );
    assert_nothing_leaks(&rx, &r, &["jwt-s3cret", &good, &forged]);

    assert_eq!(rx.post("/webhook/o2_null", "{}").status, 200);
}

// ---------------------------------------------------------------------------------------------
// reCAPTCHA

fn siteverify(req: &Seen) -> (u16, String) {
    if req.field("secret") != Some("rc-s3cret") {
        return (
            200,
            json!({"success": false, "error-codes": ["invalid-input-secret"]}).to_string(),
        );
    }
    let reply = match req.field("response") {
        Some("v2-ok") => json!({"success": true, "hostname": "shop.example"}),
        Some("v3-high") => json!({"success": true, "score": 0.9, "action": "submit"}),
        Some("v3-low") => json!({"success": true, "score": 0.1, "action": "submit"}),
        Some("v3-login") => json!({"success": true, "score": 0.9, "action": "login"}),
        _ => json!({"success": false, "error-codes": ["invalid-input-response"]}),
    };
    (200, reply.to_string())
}

#[test]
fn recaptcha_v2_and_v3() {
    let mut server = Canned::start(siteverify);
    let verify = server.url("/recaptcha/api/siteverify");
    let hooks = json!({
        "rc_v2": {"module": "log", "recaptcha": {
            "secret_key": "rc-s3cret", "version": "v2", "verify_url": verify
        }},
        "rc_v3": {"module": "log", "recaptcha": {
            "secret_key": "rc-s3cret", "verify_url": verify, "action": "submit",
            "token_field": "X-Captcha"
        }},
        "rc_body": {"module": "log", "recaptcha": {
            "secret_key": "rc-s3cret", "version": "v2", "token_source": "body",
            "verify_url": verify
        }},
        "rc_wrong_secret": {"module": "log", "recaptcha": {
            "secret_key": "not-the-secret", "version": "v2", "verify_url": verify
        }},
    });
    let rx = start(&hooks);
    let v2 = |token: &str| rx.post_json("/webhook/rc_v2", &[("x-recaptcha-token", token)], "{}");
    let v3 = |token: &str| {
        rx.post_json(
            "/webhook/rc_v3",
            &[
                ("x-captcha", token),
                ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ],
            "{}",
        )
    };

    // v2: success and failure.
    let r = v2("v2-ok");
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.starts_with("post /recaptcha/api/siteverify"),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[0].field("response"), Some("v2-ok"));
    assert_eq!(
        seen[0].field("remoteip"),
        None,
        "v2 sends no remoteip, as upstream"
    );
    let r = v2("v2-forged");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "reCAPTCHA verification failed: invalid-input-response")
    );
    let r = rx.post_json("/webhook/rc_v2", &[], "{}");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (
            401,
            "Missing reCAPTCHA token (expected in header: X-Recaptcha-Token)"
        )
    );

    // v3: the score threshold (0.5 by default) and the action.
    let r = v3("v3-high");
    assert_eq!(r.status, 200, "{}", r.body);
    let last = server.seen().pop().unwrap();
    assert_eq!(last.field("remoteip"), Some("203.0.113.9"));
    let r = v3("v3-low");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "reCAPTCHA score 0.10 below threshold 0.5")
    );
    let r = v3("v3-login");
    assert_eq!(
        (r.status, r.detail().as_str()),
        (401, "reCAPTCHA action mismatch")
    );

    // The token in a JSON body.
    let r = rx.post_json(
        "/webhook/rc_body",
        &[],
        r#"{"g-recaptcha-response": "v2-ok", "order": 7}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = rx.post_json("/webhook/rc_body", &[], r#"{"order": 7}"#);
    assert_eq!(r.status, 401, "{}", r.body);

    // The service rejects our secret: the operator's to fix, so 503 and the sender retries.
    let r = rx.post_json(
        "/webhook/rc_wrong_secret",
        &[("x-recaptcha-token", "v2-ok")],
        "{}",
    );
    assert_eq!(r.status, 503, "{}", r.body);

    // The verification server stops: 503 with Retry-After.
    server.stop();
    let r = v2("v2-ok");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.detail(),
        "reCAPTCHA verification unavailable, please retry later"
    );
    assert_nothing_leaks(&rx, &r, &["rc-s3cret", "not-the-secret", "v3-high"]);
}

// ---------------------------------------------------------------------------------------------
// Configs that cannot work

#[test]
fn bad_configs_are_rejected_at_load_and_listed() {
    let hooks = json!({
        "fine": {"module": "log"},
        "bad_o1_empty": {"module": "log", "oauth1": {}},
        "bad_o1_no_secret": {"module": "log", "oauth1": {"consumer_key": "k"}},
        "bad_o1_rsa": {"module": "log", "oauth1": {
            "consumer_key": "k", "consumer_secret": "s", "signature_method": "RSA-SHA1"
        }},
        "bad_o2_empty": {"module": "log", "oauth2": {}},
        "bad_o2_metadata": {"module": "log", "oauth2": {
            "introspection_endpoint": "http://169.254.169.254/latest/introspect"
        }},
        "bad_o2_credentials_in_url": {"module": "log", "oauth2": {
            "introspection_endpoint": "https://cwm:s3cret@auth.example.com/introspect"
        }},
        "bad_o2_alg": {"module": "log", "oauth2": {"jwt_secret": "s", "jwt_algorithms": ["none"]}},
        "bad_rc_null": {"module": "log", "recaptcha": null},
        "bad_rc_empty": {"module": "log", "recaptcha": {}},
        "bad_rc_url": {"module": "log", "recaptcha": {
            "secret_key": "k", "verify_url": "ftp://example.com/siteverify"
        }},
        "bad_rc_score": {"module": "log", "recaptcha": {"secret_key": "k", "min_score": 5}},
    });
    let rx = start(&hooks);
    assert_eq!(rx.post("/webhook/fine", "{}").status, 200);
    let provider = rx.config_status(ADMIN);
    for (id, key, why) in [
        (
            "bad_o1_empty",
            "oauth1",
            "consumer credentials not configured",
        ),
        (
            "bad_o1_no_secret",
            "oauth1",
            "consumer credentials not configured",
        ),
        ("bad_o1_rsa", "oauth1", "RSA-SHA1 is not supported"),
        ("bad_o2_empty", "oauth2", "not properly configured"),
        ("bad_o2_metadata", "oauth2", "cloud metadata"),
        (
            "bad_o2_credentials_in_url",
            "oauth2",
            "must not contain credentials",
        ),
        ("bad_o2_alg", "oauth2", "explicitly blocked"),
        ("bad_rc_null", "recaptcha", "null is not a configuration"),
        ("bad_rc_empty", "recaptcha", "secret key not configured"),
        ("bad_rc_url", "recaptcha", "'verify_url'"),
        ("bad_rc_score", "recaptcha", "'min_score'"),
    ] {
        let r = rx.post(&format!("/webhook/{id}"), "{}");
        assert_eq!(r.status, 404, "{id} must not be served: {}", r.body);
        let text = rejection_reason(&provider, id);
        assert!(text.starts_with(&format!("'{key}': ")), "{id}: {text}");
        assert!(text.contains(why), "{id}: {text}");
        assert!(!text.contains("s3cret"), "{id}: {text}");
    }
    assert_eq!(provider["total_webhooks"], 1, "{provider}");
}
