//! Black-box tests of `cwm-receiver` with the file backend: the real binary, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use cwm_tests::{Receiver, eventually, read_reply, rejection, rejection_reason, write_lossy};
use serde_json::{Value, json};

const ADMIN: &str = "adm1n";

const WEBHOOKS: &str = r#"{
  "archive":   {"module": "save_to_disk", "module-config": {"path": "out"}},
  "logged":    {"module": "log"},
  "secure":    {"module": "log", "authorization": "Bearer {$HOOK_TOKEN}"},
  "raw":       {"module": "save_to_disk", "data_type": "blob", "module-config": {"path": "raw"}},
  "queued":    {"module": "log", "ack": "receive"}
}"#;

fn start() -> Receiver {
    Receiver::start(
        &[("webhooks.json", WEBHOOKS), ("connections.json", "{}")],
        &[
            ("HOOK_TOKEN", "t0ken"),
            ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN),
        ],
    )
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn known_webhook_is_written_to_disk_before_the_200() {
    let rx = start();
    let r = rx.post("/webhook/archive", r#"{"order":42,"items":["a","b"]}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"message": "200 OK"}));
    // No waiting: the file must exist, complete, when the 200 arrives.
    let files = files_in(&rx.dir.path().join("out"));
    assert_eq!(files.len(), 1, "exactly one event file");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(saved, json!({"order":42,"items":["a","b"]}));
    // The sender's JSON text is kept: an integer beyond 64 bits is not rounded to a float.
    let exact = "{ \"order\": 123456789012345678901234567890,\n  \"total\": 1.50 }";
    assert_eq!(rx.post("/webhook/archive", exact).status, 200);
    let files = files_in(&rx.dir.path().join("out"));
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .any(|f| std::fs::read_to_string(f).unwrap() == exact),
        "the second file holds the body as sent"
    );

    let r = rx.post_with(
        "/webhook/raw",
        &[("content-type", "application/octet-stream")],
        "\u{1}binary\u{2}",
    );
    assert_eq!(r.status, 200);
    let files = files_in(&rx.dir.path().join("raw"));
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"\x01binary\x02");
}

#[test]
fn log_sink_writes_the_event_to_stdout() {
    let rx = start();
    let r = rx.post(
        "/webhook/logged",
        r#"{"marker":"m-4711","password":"hunter2"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || rx.stdout().contains("m-4711")),
        "stdout: {}",
        rx.stdout()
    );
    assert!(
        !rx.stdout().contains("hunter2"),
        "credentials must not reach the log"
    );
    // Bodies kept as text (no credential), copied or reformatted, print as their documents.
    let mut deep = json!("bottom");
    for _ in 0..12 {
        deep = json!({ "d": deep });
    }
    let bodies = [
        (
            r#"{"marker":"m-1","n":[1,-2],"s":"a b"}"#.to_owned(),
            json!({"marker":"m-1","n":[1,-2],"s":"a b"}),
        ),
        (
            " { \"marker\" : \"m-2\" , \"f\": 1.50, \"e\": \"caf\\u00e9\\n\" } ".to_owned(),
            json!({"marker":"m-2","f":1.5,"e":"café[NL]"}),
        ),
    ];
    let deep_body = json!({"marker": "m-3", "deep": deep}).to_string();
    for body in bodies.iter().map(|(b, _)| b).chain([&deep_body]) {
        assert_eq!(rx.post("/webhook/logged", body).status, 200, "{body}");
    }
    let payload = |marker: &str| -> Value {
        let out = rx.stdout();
        let line = out.lines().find(|l| l.contains(marker)).unwrap();
        serde_json::from_str::<Value>(line).unwrap()["payload"].clone()
    };
    assert!(eventually(Duration::from_secs(5), || rx
        .stdout()
        .contains("m-3")));
    for (_, want) in &bodies {
        assert_eq!(&payload(want["marker"].as_str().unwrap()), want);
    }
    let mut at = &payload("m-3")["deep"];
    for _ in 0..9 {
        at = &at["d"];
    }
    assert_eq!(at["d"], "[Max depth exceeded]");
}

#[test]
fn debug_level_traces_each_request() {
    let rx = Receiver::start(
        &[("webhooks.json", WEBHOOKS), ("connections.json", "{}")],
        &[("HOOK_TOKEN", "t"), ("LOG_LEVEL", "cwm_http=debug")],
    );
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
    assert_eq!(rx.post("/webhook/nope", "{}").status, 404);
    assert!(
        eventually(Duration::from_secs(5), || {
            let err = rx.stderr();
            err.lines().any(|l| {
                l.contains("request")
                    && l.contains("/webhook/logged")
                    && l.contains("status=200")
                    && l.contains("micros=")
            }) && err
                .lines()
                .any(|l| l.contains("/webhook/nope") && l.contains("status=404"))
        }),
        "stderr: {}",
        rx.stderr()
    );
    assert!(
        !rx.stderr().contains('\u{1b}'),
        "no terminal colours in a redirected log"
    );
}

#[test]
fn unknown_bad_and_malformed_requests() {
    let rx = start();
    let r = rx.post("/webhook/nope", "{}");
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"detail":"Webhook ID not found"}))
    );
    for bad in [
        "/webhook/admin",
        "/webhook/a--b",
        "/webhook/_x",
        "/webhook/has.dot",
        &format!("/webhook/{}", "a".repeat(65)),
    ] {
        assert_eq!(rx.post(bad, "{}").status, 400, "{bad}");
    }
    let r = rx.post("/webhook/bad%20namespace/logged", "{}");
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"detail":"Invalid namespace format"}))
    );
    assert_eq!(
        rx.post(&format!("/webhook/{}/logged", "n".repeat(65)), "{}")
            .status,
        400
    );
    let r = rx.post("/webhook/logged", "{not json");
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"detail":"Malformed JSON payload"}))
    );
    let deep = "[".repeat(60) + &"]".repeat(60);
    let r = rx.post("/webhook/logged", &deep);
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"detail":"JSON too deeply nested: 51 levels (max: 50)"})
        )
    );
    // The file backend ignores the namespace, as the upstream does.
    assert_eq!(rx.post("/webhook/anyns/logged", "{}").status, 200);
    assert_eq!(rx.get("/webhook/logged").status, 405);
    assert_eq!(rx.post("/webhook/a/b/c", "{}").status, 404);
}

#[test]
fn oversized_chunked_body_gets_413_before_it_is_buffered() {
    let rx = start();
    let mut s = rx.connect();
    write!(s, "POST /webhook/archive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..11 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if !write_lossy(&mut s, &frame) {
            break; // the server answered and closed: that is the point
        }
    }
    let _ = write_lossy(&mut s, b"0\r\n\r\n");
    let r = read_reply(&mut s);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        files_in(&rx.dir.path().join("out")).is_empty(),
        "nothing written"
    );

    // A declared Content-Length over the limit is refused without reading the body.
    let mut s = rx.connect();
    write!(
        s,
        "POST /webhook/archive HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n\r\n"
    )
    .unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["detail"],
        "Payload too large: 11534336 bytes (max: 10485760)"
    );
}

#[test]
fn wrong_bearer_token_is_401() {
    let rx = start();
    let ok = rx.post_with(
        "/webhook/secure",
        &[("authorization", "Bearer t0ken")],
        "{}",
    );
    assert_eq!(ok.status, 200);
    for h in ["Bearer wrong", "t0ken", ""] {
        let r = rx.post_with("/webhook/secure", &[("authorization", h)], "{}");
        assert_eq!(r.status, 401, "{h:?}");
        assert!(!r.body.contains("t0ken"));
    }
    assert_eq!(rx.post("/webhook/secure", "{}").status, 401);
}

#[test]
fn edited_file_is_served_without_restart_and_invalid_file_keeps_previous() {
    let rx = start();
    assert_eq!(rx.post("/webhook/added_later", "{}").status, 404);
    let path = rx.dir.path().join("webhooks.json");
    let mut v: Value = serde_json::from_str(WEBHOOKS).unwrap();
    v["added_later"] = json!({"module": "log"});
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || rx
            .post("/webhook/added_later", "{}")
            .status
            == 200),
        "edit not picked up"
    );

    std::fs::write(&path, "{ this is not json").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        rx.post("/webhook/added_later", "{}").status,
        200,
        "previous config keeps serving"
    );
    let err = rx.config_status(ADMIN)["last_error"].clone();
    assert!(
        err.as_str().is_some_and(|e| e.contains("not valid JSON")),
        "{err}"
    );

    // One bad entry is rejected alone; the rest is served.
    v["broken"] = json!({"module": "no_such_module"});
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        rejection(&rx.config_status(ADMIN), "webhooks/broken").is_some()
    }));
    assert_eq!(rx.post("/webhook/broken", "{}").status, 404);
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
}

#[test]
fn sigterm_finishes_the_in_flight_request() {
    let mut rx = start();
    let body = r#"{"slow":"request"}"#;
    let mut s = rx.connect();
    write!(s, "POST /webhook/archive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rx.terminate();
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the old one finishes.
    s.write_all(&body.as_bytes()[5..]).unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 200, "{}", r.body);
    let status = rx.wait(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert_eq!(files_in(&rx.dir.path().join("out")).len(), 1);
}

#[test]
fn health_root_metrics_and_security_headers() {
    let rx = start();
    let h = rx.get("/health");
    assert_eq!(h.status, 200);
    let v = h.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "webhook-service");
    assert!(v["timestamp"].as_f64().is_some());
    assert_eq!(
        v["components"],
        json!({"config_manager":"healthy","config_backend":"file"})
    );
    assert_eq!(h.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(h.header("x-frame-options"), Some("DENY"));
    assert_eq!(rx.post("/health", "{}").status, 405);
    assert_eq!(rx.get("/").json(), json!({"message":"200 OK"}));
    assert_eq!(rx.get("/nope").json(), json!({"detail":"Not Found"}));

    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
    let m = rx.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .contains(r#"cwm_http_requests_total{webhook="logged",status="200"} 1"#),
        "{}",
        m.body
    );
    assert!(m.body.contains("cwm_config_etcd_connected 0"));
    assert!(m.body.contains("cwm_config_webhooks 5"));
    assert!(m.body.contains("cwm_sink_delivery_seconds_bucket"));
}

#[test]
fn admin_api_auth_and_reload() {
    let rx = start();
    let status = |h: &[(&str, &str)]| rx.request("GET", "/admin/config-status", h, None);
    assert_eq!(status(&[]).status, 401);
    assert_eq!(status(&[("authorization", "Bearer wrong")]).status, 401);
    let s = status(&[("authorization", "adm1n")]);
    assert_eq!(s.status, 200);
    let v = s.json();
    assert_eq!(v["webhooks_count"], 5);
    assert_eq!(v["provider"]["backend"], "file");
    assert_eq!(v["file_watching_enabled"], true);

    let reload = |body: &str| {
        rx.post_with(
            "/admin/reload-config",
            &[("authorization", "Bearer adm1n")],
            body,
        )
    };
    let r = reload("{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "success");
    assert_eq!(
        r.json()["reloaded"],
        json!({"webhooks":true,"connections":true})
    );
    assert_eq!(
        reload(r#"{"reload_webhooks":false,"reload_connections":false}"#).json()["error"],
        "No reload operation specified"
    );
    assert_eq!(reload(r#"{"reload_webhooks":"false"}"#).status, 400);
    std::fs::write(rx.dir.path().join("connections.json"), "[]").unwrap();
    let r = reload(r#"{"reload_webhooks":false}"#);
    assert_eq!(r.status, 400);
    assert!(
        !r.body.contains(".json"),
        "no file path in the error: {}",
        r.body
    );

    let off = Receiver::start(&[("webhooks.json", WEBHOOKS)], &[("HOOK_TOKEN", "x")]);
    assert_eq!(
        off.request(
            "GET",
            "/admin/config-status",
            &[("authorization", "Bearer x")],
            None
        )
        .status,
        403
    );
}

#[test]
fn ack_receive_answers_at_once() {
    let rx = start();
    let r = rx.post("/webhook/queued", r#"{"marker":"queued-77"}"#);
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || rx
        .stdout()
        .contains("queued-77")));
}

#[test]
fn bad_settings_and_bad_config_stop_startup_with_exit_2() {
    let bin = cwm_tests::binary("cwm-receiver");
    for (k, v) in [
        ("PORT", "abc"),
        ("CONFIG_BACKEND", "consul"),
        ("MAX_PAYLOAD_BYTES", "-1"),
        ("CONFIG_RELOAD_DEBOUNCE_SECONDS", "nan"),
    ] {
        let out = std::process::Command::new(&bin).env(k, v).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{k}={v}");
        assert!(!out.stderr.is_empty());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhooks.json"), "{oops").unwrap();
    let out = std::process::Command::new(&bin)
        .current_dir(dir.path())
        .env("PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhooks.json"));
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "PORT",
        "HOST",
        "CONFIG_BACKEND",
        "WEBHOOKS_CONFIG_FILE",
        "CONNECTIONS_CONFIG_FILE",
        "MAX_PAYLOAD_BYTES",
        "CONFIG_RELOAD_ADMIN_TOKEN",
    ] {
        assert!(help.contains(var), "--help mentions {var}");
    }
}

#[test]
fn missing_webhooks_file_serves_nothing_and_warns() {
    let rx = Receiver::start(&[], &[]);
    assert_eq!(rx.post("/webhook/anything", "{}").status, 404);
    assert!(rx.stderr().contains("not found"));
}

#[test]
fn stats_counts_accepted_requests_with_auth_allow_list_and_rate_limit() {
    let rx = Receiver::start(
        &[("webhooks.json", WEBHOOKS)],
        &[
            ("HOOK_TOKEN", "x"),
            ("STATS_AUTH_TOKEN", "st"),
            ("STATS_RATE_LIMIT", "3"),
            ("DEFAULT_ENDPOINT_RATE_LIMIT", "2"),
        ],
    );
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
    assert_eq!(rx.post("/webhook/ns1/logged", "{}").status, 200);
    assert_eq!(rx.post("/webhook/nope", "{}").status, 404);
    assert_eq!(rx.get("/stats").status, 401);
    assert_eq!(
        rx.request("GET", "/stats", &[("authorization", "Bearer wrong")], None)
            .status,
        401
    );
    let s = rx.request("GET", "/stats", &[("authorization", "Bearer st")], None);
    assert_eq!(s.status, 200, "{}", s.body);
    let v = s.json();
    // The file backend ignores the route's namespace, so `ns1/logged` is the same webhook: counts
    // are kept per configured webhook, never per name a client chose.
    assert_eq!(v["logged"]["total"], 3);
    assert_eq!(v["logged"]["minute"], 3);
    assert_eq!(v["logged"]["day"], 3);
    assert!(v.get("ns1/logged").is_none(), "{v}");
    assert!(v.get("nope").is_none(), "only accepted requests count");
    for _ in 0..2 {
        assert_eq!(
            rx.request("GET", "/stats", &[("authorization", "st")], None)
                .status,
            200
        );
    }
    let limited = rx.request("GET", "/stats", &[("authorization", "st")], None);
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.json()["detail"],
        "Rate limit exceeded. Limit: 3 requests per minute"
    );
    assert!(limited.header("retry-after").is_some());

    assert_eq!(rx.get("/").status, 200);
    assert_eq!(rx.get("/").status, 200);
    assert_eq!(rx.get("/").status, 429);

    let denied = Receiver::start(
        &[("webhooks.json", WEBHOOKS)],
        &[("HOOK_TOKEN", "x"), ("STATS_ALLOWED_IPS", "10.1.2.3")],
    );
    assert_eq!(
        denied.get("/stats").json(),
        json!({"detail":"Access denied from this IP address"})
    );
    let allowed = Receiver::start(
        &[("webhooks.json", WEBHOOKS)],
        &[
            ("HOOK_TOKEN", "x"),
            ("STATS_ALLOWED_IPS", "10.1.2.3, 127.0.0.1"),
        ],
    );
    assert_eq!(allowed.get("/stats").status, 200);
}

#[test]
fn h2c_with_prior_knowledge() {
    cwm_testkit::require_binary("curl", "curl");
    let rx = start();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "-X",
            "POST",
            "-d",
            "{\"h2\":1}",
        ])
        .arg(rx.url("/webhook/logged"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}

#[test]
fn null_checks_are_no_checks_and_a_check_that_cannot_work_rejects_its_webhook() {
    let mut hooks = json!({
        "plain": {"module": "log"},
        // An explicit null is no check in the Python gateway either.
        "hmac_null": {"module": "log", "hmac": null},
        // Except for recaptcha, whose null broke every request there.
        "recaptcha_null": {"module": "log", "recaptcha": null},
    });
    let rx = Receiver::start(
        &[("webhooks.json", &hooks.to_string())],
        &[("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!(rx.post("/webhook/plain", "{}").status, 200);
    assert_eq!(rx.post("/webhook/hmac_null", "{}").status, 200);
    let provider = rx.config_status(ADMIN);
    assert_eq!(rx.post("/webhook/recaptcha_null", "{}").status, 404);
    // Its validator rejects `null` at load (auth_remote.rs has the other reCAPTCHA cases).
    assert!(rejection_reason(&provider, "recaptcha_null").starts_with("'recaptcha': "));
    assert!(rejection(&provider, "webhooks/plain").is_none());
    assert!(rejection(&provider, "webhooks/hmac_null").is_none());
    assert_eq!(provider["total_webhooks"], 2, "{provider}");
    assert!(
        rx.stderr().contains("'recaptcha': "),
        "the rejection is logged"
    );
    assert!(
        files_in(rx.dir.path())
            .iter()
            .all(|f| { f.extension().is_none_or(|e| e != "json") || f.ends_with("webhooks.json") }),
        "nothing was saved by a rejected webhook"
    );

    // A served webhook edited to a check that cannot work (an `hmac` without its secret) keeps
    // its last good value.
    hooks["plain"]["hmac"] = json!({});
    std::fs::write(rx.dir.path().join("webhooks.json"), hooks.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || rejection(
            &rx.config_status(ADMIN),
            "webhooks/plain"
        )
        .is_some_and(|r| r["serving_previous"] == true
            && r["reason"].as_str().is_some_and(
                |s| s.starts_with("'hmac': HMAC secret not configured")
            ))),
        "plain listed as rejected, serving its previous value"
    );
    assert_eq!(rx.post("/webhook/plain", "{}").status, 200);
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_file_that_does_not_parse_is_logged_once_per_change() {
    let rx = start();
    let path = rx.dir.path().join("webhooks.json");
    std::fs::write(&path, "{ not json").unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        rx.config_status(ADMIN)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON"))
    }));
    // Ten debounce periods (0.2 s) of quiet: a receiver woken by its own reads of the file, or
    // by status polls, would report the same broken file again in each of them.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rx.config_status(ADMIN)["total_webhooks"], 5);
    }
    let rejected = "configuration file rejected";
    assert_eq!(count_lines(&rx.stderr(), rejected), 1, "{}", rx.stderr());
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);

    // Another broken version is another change: one more line.
    std::fs::write(&path, "[1, 2").unwrap();
    assert!(eventually(Duration::from_secs(10), || count_lines(
        &rx.stderr(),
        rejected
    ) >= 2));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(count_lines(&rx.stderr(), rejected), 2, "{}", rx.stderr());
}

#[test]
fn a_deleted_webhooks_file_keeps_the_previous_config_until_it_is_back() {
    let rx = start();
    let path = rx.dir.path().join("webhooks.json");
    std::fs::remove_file(&path).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            rx.config_status(ADMIN)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("webhooks.json was deleted"))
        }),
        "{}",
        rx.config_status(ADMIN)
    );
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);
    assert_eq!(rx.config_status(ADMIN)["total_webhooks"], 5);
    let deleted = "configuration file deleted; previous configuration kept";
    let stderr = rx.stderr();
    assert_eq!(count_lines(&stderr, deleted), 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(deleted) && l.contains("WARN")),
        "a warning: {stderr}"
    );
    // An admin reload keeps it too, and says why.
    let r = rx.reload_config("adm1n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(rx.post("/webhook/logged", "{}").status, 200);

    std::fs::write(&path, r#"{"fresh": {"module": "log"}}"#).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || rx
            .post("/webhook/fresh", "{}")
            .status
            == 200),
        "re-created file loaded"
    );
    assert_eq!(rx.post("/webhook/logged", "{}").status, 404);
    let provider = rx.config_status(ADMIN);
    assert_eq!(provider["last_error"], Value::Null, "{provider}");
    assert_eq!(provider["total_webhooks"], 1);
}
