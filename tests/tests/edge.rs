//! Black-box tests of the hardened HTTP edge: answers that reach clients which write their whole
//! body first, keep-alive after early answers, header/body/idle timeouts, the connection cap under
//! a flood, labels that senders cannot grow, redirects and shutdown within its deadline.
//!
//! Every loop here is bounded in count, and every wait in time; nothing asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cwm_tests::{Receiver, read_reply, try_read_reply};

const WEBHOOKS: &str = r#"{
  "ok":     {"module": "log"},
  "secure": {"module": "log", "authorization": "Bearer s3cret"}
}"#;

fn start(env: &[(&str, &str)]) -> Receiver {
    Receiver::start(
        &[("webhooks.json", WEBHOOKS), ("connections.json", "{}")],
        env,
    )
}

/// A POST head for `len` body bytes.
fn head(path: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Write the head and the whole body before reading anything, as many asyncio clients do; the
/// answer must still be readable (no reset).
fn post_then_read(rx: &Receiver, path: &str, len: usize) -> cwm_tests::Reply {
    let mut s = rx.connect();
    s.write_all(head(path, len).as_bytes()).unwrap();
    let body = vec![b'x'; len];
    s.write_all(&body)
        .unwrap_or_else(|e| panic!("{path} with {len} bytes: the body could not be sent: {e}"));
    try_read_reply(&mut s)
        .unwrap_or_else(|e| panic!("{path} with {len} bytes: no answer read: {e}"))
}

fn connection_close(r: &cwm_tests::Reply) -> bool {
    r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

#[test]
fn early_answers_reach_clients_that_write_the_whole_body_first() {
    let rx = start(&[]);
    let mb = 1 << 20;
    for (path, len, status) in [
        ("/webhook/nope", mb, 404),
        ("/webhook/nope", 11 * mb, 404),
        ("/webhook/secure", mb, 401),
        ("/webhook/secure", 11 * mb, 413),
        ("/webhook/ok", 11 * mb, 413),
    ] {
        let r = post_then_read(&rx, path, len);
        assert_eq!(r.status, status, "{path} with {len} bytes: {}", r.body);
        // Within the payload limit the body is drained and the connection kept; past it, the
        // answer says the connection closes.
        assert_eq!(connection_close(&r), len > 10 * mb, "{path} {len}: {r:?}");
    }
}

#[test]
fn keep_alive_connections_stay_usable_after_early_answers() {
    let rx = start(&[]);
    let mut s = rx.connect();
    // Two small writes per request: without this, Nagle and delayed ACKs cost 40 ms each.
    s.set_nodelay(true).unwrap();
    for i in 0..2_000 {
        // Head and body in two writes, so the body often arrives after the answer is decided.
        s.write_all(head("/webhook/nope", 2).as_bytes()).unwrap();
        s.write_all(b"{}").unwrap();
        let r = try_read_reply(&mut s).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 404, "request {i}");
        assert!(!connection_close(&r), "request {i} closed the connection");
    }
    // A 1 MiB body to an unknown id or without credentials is drained: the next request on the
    // same connection is answered.
    for path in ["/webhook/nope", "/webhook/secure", "/webhook/ok"] {
        s.write_all(head(path, 1 << 20).as_bytes()).unwrap();
        s.write_all(&vec![b'1'; 1 << 20]).unwrap();
        let r = read_reply(&mut s);
        assert!(!connection_close(&r), "{path}: {r:?}");
    }
    s.write_all(head("/webhook/ok", 2).as_bytes()).unwrap();
    s.write_all(b"{}").unwrap();
    assert_eq!(read_reply(&mut s).status, 200);
}

#[test]
fn slow_request_heads_get_408_and_are_closed() {
    let rx = start(&[("HEADER_READ_TIMEOUT_SECONDS", "1")]);
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = rx.connect();
            s.write_all(b"POST /webhook/ok HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile, a normal request is answered.
    assert_eq!(rx.post("/webhook/ok", "{}").status, 200);
    for (i, s) in slow.iter_mut().enumerate() {
        let r = read_reply(s);
        assert_eq!(r.status, 408, "slow connection {i}");
        assert!(connection_close(&r));
        let mut rest = [0u8; 16];
        assert_eq!(s.read(&mut rest).unwrap_or(0), 0, "closed after the 408");
    }
    // A connection that sends nothing is closed without an answer.
    let mut silent = rx.connect();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
    let metrics = rx.get("/metrics").body;
    let timeouts = metric(&metrics, "cwm_http_header_timeouts_total");
    assert!(timeouts >= 101, "{timeouts}\n{metrics}");
}

#[test]
fn a_stalled_body_gets_408_and_an_idle_connection_is_closed() {
    let rx = start(&[
        ("BODY_READ_TIMEOUT_SECONDS", "1"),
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "1"),
    ]);
    let mut s = rx.connect();
    s.write_all(head("/webhook/ok", 100).as_bytes()).unwrap();
    s.write_all(b"{\"partial\":").unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(connection_close(&r));

    let mut s = rx.connect();
    s.write_all(head("/webhook/ok", 2).as_bytes()).unwrap();
    s.write_all(b"{}").unwrap();
    assert_eq!(read_reply(&mut s).status, 200);
    // Idle past the keep-alive timeout: the server closes (a read sees the end).
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
}

#[test]
fn a_connection_flood_stays_under_the_cap_and_normal_requests_are_answered() {
    let cap = 64;
    let rx = start(&[("MAX_CONNECTIONS", "64")]);
    let baseline_fds = rx.open_fds();
    // Twice the cap of idle connections (connected, nothing sent) and a few keep-alive ones.
    let mut flood: Vec<TcpStream> = (0..2 * cap)
        .map(|_| TcpStream::connect(("127.0.0.1", rx.port)).unwrap())
        .collect();
    for _ in 0..8 {
        let mut s = rx.connect();
        s.write_all(head("/webhook/ok", 2).as_bytes()).unwrap();
        s.write_all(b"{}").unwrap();
        assert_eq!(read_reply(&mut s).status, 200);
        flood.push(s);
    }
    // A new sender is still served: idle connections make room for it.
    for i in 0..20 {
        let r = rx.post("/webhook/ok", "{}");
        assert_eq!(r.status, 200, "request {i} during the flood");
    }
    let metrics = rx.get("/metrics").body;
    assert_eq!(metric(&metrics, "cwm_http_connection_limit"), cap as u64);
    assert!(metric(&metrics, "cwm_http_open_connections") <= cap as u64);
    assert!(metric(&metrics, "cwm_http_idle_connections_closed_total") > 0);
    let fds = rx.open_fds();
    assert!(
        fds <= baseline_fds + cap + 4,
        "{fds} descriptors open (baseline {baseline_fds}, cap {cap})"
    );
    drop(flood);
}

#[test]
fn unknown_ids_share_one_label_and_removed_webhooks_lose_theirs() {
    let rx = start(&[("CONFIG_RELOAD_ADMIN_TOKEN", "adm")]);
    assert_eq!(rx.post("/webhook/ok", "{}").status, 200);
    let before = rx.get("/metrics").body;
    for i in 0..500 {
        let r = rx.post(&format!("/webhook/random-{i}"), "{}");
        assert_eq!(r.status, 404);
        let r = rx.post(&format!("/webhook/ns{i}/random-{i}"), "{}");
        assert_eq!(r.status, 404);
    }
    let after = rx.get("/metrics").body;
    assert!(!after.contains("random-"), "{after}");
    assert_eq!(
        metric(
            &after,
            "cwm_http_requests_total{webhook=\"unknown\",status=\"404\"}"
        ),
        1000
    );
    assert!(
        after.len() < before.len() + 200,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    let stats = rx.get("/stats").json();
    assert_eq!(
        stats.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["ok"],
        "{stats}"
    );

    // The webhook leaves the configuration: its series go too.
    std::fs::write(
        rx.dir.path().join("webhooks.json"),
        r#"{"secure": {"module": "log", "authorization": "Bearer s3cret"}}"#,
    )
    .unwrap();
    let r = rx.reload_config("adm");
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = rx.get("/metrics").body;
    assert!(!metrics.contains("webhook=\"ok\""), "{metrics}");
    assert!(rx.get("/stats").json().get("ok").is_none());
}

#[test]
fn a_catch_all_webhook_is_one_series_whatever_ids_are_asked() {
    let rx = Receiver::start(
        &[("webhooks.json", r#"{"default": {"module": "log"}}"#)],
        &[],
    );
    for i in 0..300 {
        assert_eq!(rx.post(&format!("/webhook/any-{i}"), "{}").status, 200);
    }
    let metrics = rx.get("/metrics").body;
    assert!(!metrics.contains("any-"), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "cwm_http_requests_total{webhook=\"default\",status=\"200\"}"
        ),
        300
    );
    let stats = rx.get("/stats").json();
    assert_eq!(stats["default"]["total"], 300, "{stats}");
}

#[test]
fn trailing_slash_redirects_never_leave_the_site() {
    let rx = start(&[]);
    for path in ["//evil.example/", "/\\evil.example/", "///"] {
        let mut s = rx.connect();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_reply(&mut s);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.header("location").is_none(), "{path}: {r:?}");
    }
    let mut s = rx.connect();
    s.write_all(b"GET /health/ HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/health"));
}

#[test]
fn shutdown_ends_within_its_timeout_despite_a_half_sent_request() {
    let mut rx = start(&[("SHUTDOWN_TIMEOUT_SECONDS", "2")]);
    let mut half = rx.connect();
    half.write_all(head("/webhook/ok", 1000).as_bytes())
        .unwrap();
    half.write_all(b"{\"a\":").unwrap();
    // The request has begun on the server before the signal.
    std::thread::sleep(Duration::from_millis(200));
    rx.terminate();
    // Bounded wait: far more than the 2 s deadline, far less than the 30 s body timeout.
    let status = rx.wait(Duration::from_secs(15));
    assert!(status.code().is_some(), "{status}");
    drop(half);
}

#[test]
fn shutdown_ends_within_its_timeout_despite_a_blocked_stdout() {
    let (mut rx, pipe) = Receiver::start_with_stdout_pipe(
        &[("webhooks.json", WEBHOOKS)],
        &[("SHUTDOWN_TIMEOUT_SECONDS", "2")],
    );
    // Fill the pipe (64 KiB) and the log queue behind it; answers may turn to 503 when full.
    let body = format!("{{\"pad\":\"{}\"}}", "p".repeat(4000));
    for _ in 0..200 {
        let r = rx.post("/webhook/ok", &body);
        assert!(matches!(r.status, 200 | 503), "{}", r.body);
    }
    rx.terminate();
    let status = rx.wait(Duration::from_secs(15));
    assert!(status.code().is_some(), "{status}");
    drop(pipe);
}

/// The value of the first sample line that starts with `name` (a metric name, or a name with
/// its labels).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}
