#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cwm_config::WebhookConfig;
use serde_json::{Value, json};

use super::transcode::{
    DEPTH_EXCEEDED, LogFormat, MAX_BLOB_BYTES, MAX_DEPTH, MAX_FIELD_CHARS, REDACTED, RULE,
    TRUNCATED, Timestamp, copyable, is_sensitive,
};
use super::writer::SendError;
use super::{LogBuilder, LogConfig, format_event};
use crate::context::ModuleContext;
use crate::payload::JsonPayload;
use crate::sink::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};

/// The builder's answer for `config`, as the registry would build it.
fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, BuildError> {
    LogBuilder.build(&SinkContext {
        webhook_id: "hook",
        config,
        connection: None,
        modules: ctx,
    })
}

#[test]
fn config_reads_python_truthiness() {
    let read = |mc: Value| -> LogConfig {
        let config =
            WebhookConfig::from_value(json!({"module": "log", "module-config": mc}), &|_: &str| {
                None
            })
            .unwrap();
        SinkContext {
            webhook_id: "hook",
            config: &config,
            connection: None,
            modules: &ModuleContext::new(),
        }
        .module_config()
        .unwrap()
    };
    let c = read(json!({}));
    assert!(!c.pretty_print && c.redact_sensitive);
    let c = read(json!({"pretty_print": null, "redact_sensitive": null}));
    assert!(!c.pretty_print && c.redact_sensitive);
    for off in [
        json!(false),
        json!("false"),
        json!("0"),
        json!(0),
        json!("no"),
        json!(""),
    ] {
        let c = read(json!({"pretty_print": off, "redact_sensitive": off}));
        assert!(!c.pretty_print && !c.redact_sensitive, "{off}");
    }
    for on in [
        json!(true),
        json!("true"),
        json!("1"),
        json!(1),
        json!("yes"),
        json!([0]),
    ] {
        let c = read(json!({"pretty_print": on, "redact_sensitive": on, "extra": 1}));
        assert!(c.pretty_print && c.redact_sensitive, "{on}");
    }
}

#[test]
fn format_event_is_the_queued_line() {
    let ev = event(Payload::Json(json!({"token": "t"}).into()), &[]);
    let mut out = Vec::new();
    STD.render(&ev, &mut out);
    assert_eq!(format_event(&ev, false, true), out);
}

fn event(payload: Payload, headers: &[(&str, &str)]) -> Event {
    Event {
        namespace: Some("ns".into()),
        webhook_id: "hook".into(),
        payload,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
    }
}

fn line(format: LogFormat, ev: &Event) -> Value {
    let mut out = Vec::new();
    format.render(ev, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
    serde_json::from_slice(&out).unwrap()
}

const STD: LogFormat = LogFormat {
    pretty: false,
    redact: true,
};

#[test]
fn standard_line_redacts_headers_and_keys() {
    let ev = event(
        Payload::Json(
            json!({
                "user": "bob",
                "Password": "p",
                "nested": {"apiKey": "k", "my_api_key": "k2", "ok": 1, "SessionId": "s"},
                "auth": {"inner": "v"},
                "list": [{"credit-card": "4111"}, 2],
                "monkey": "banana"
            })
            .into(),
        ),
        &[
            ("authorization", "Bearer x"),
            ("x-api-key", "k"),
            ("x_auth_token", "t"),
            ("cookie", "c"),
            ("content-type", "application/json"),
        ],
    );
    let v = line(STD, &ev);
    assert_eq!(v["received_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["namespace"], "ns");
    assert_eq!(v["webhook_id"], "hook");
    assert_eq!(
        v["headers"],
        json!({"authorization":REDACTED,"x-api-key":REDACTED,"x_auth_token":REDACTED,"cookie":REDACTED,"content-type":"application/json"})
    );
    assert_eq!(
        v["payload"],
        json!({
            "user": "bob",
            "Password": REDACTED,
            "nested": {"apiKey": REDACTED, "my_api_key": REDACTED, "ok": 1, "SessionId": REDACTED},
            "auth": REDACTED,
            "list": [{"credit-card": REDACTED}, 2],
            "monkey": "banana"
        })
    );
    let plain = line(
        LogFormat {
            pretty: false,
            redact: false,
        },
        &ev,
    );
    assert_eq!(plain["headers"]["authorization"], "Bearer x");
    assert_eq!(plain["payload"]["Password"], "p");
}

#[test]
fn standard_line_sanitizes() {
    let mut deep = json!("bottom");
    for _ in 0..12 {
        deep = json!({ "d": deep });
    }
    let long = "x".repeat(MAX_FIELD_CHARS + 5);
    let ev = event(
        Payload::Json(
            json!({"msg": "a\r\nb\u{1}c\td\u{7f}", "long": long, "deep": deep, "n": null, "f": 1.5})
                .into(),
        ),
        &[("x-note", "line1\nline2")],
    );
    let v = line(STD, &ev);
    assert_eq!(v["payload"]["msg"], "a[NL][NL]b[CTRL]c\td[CTRL]");
    let cut = v["payload"]["long"].as_str().unwrap();
    assert_eq!(cut.len(), MAX_FIELD_CHARS + TRUNCATED.len());
    assert!(cut.ends_with(TRUNCATED));
    assert_eq!(v["headers"]["x-note"], "line1[NL]line2");
    assert_eq!(v["payload"]["n"], Value::Null);
    assert_eq!(v["payload"]["f"], 1.5);
    // Top level is depth 0, so the value at depth 11 is replaced.
    let mut cur = &v["payload"]["deep"];
    for _ in 0..9 {
        cur = &cur["d"];
    }
    assert_eq!(cur["d"], DEPTH_EXCEEDED);
}

#[test]
fn blob_is_base64_with_length() {
    let ev = event(Payload::Blob(Bytes::from_static(b"\x00\xffhi\n")), &[]);
    let v = line(STD, &ev);
    assert_eq!(
        v["payload"],
        json!({"length":5,"truncated":false,"base64":"AP9oaQo="})
    );
    let big = Bytes::from(vec![7u8; MAX_BLOB_BYTES + 1]);
    let v = line(STD, &event(Payload::Blob(big), &[]));
    assert_eq!(v["payload"]["truncated"], true);
    assert_eq!(
        v["payload"]["base64"].as_str().unwrap().len(),
        MAX_FIELD_CHARS
    );
    assert_eq!(v["payload"]["length"], MAX_BLOB_BYTES + 1);
}

#[test]
fn pretty_block() {
    let f = LogFormat {
        pretty: true,
        redact: true,
    };
    let ev = event(
        Payload::Json(json!({"token":"t","text":"é\nz"}).into()),
        &[("authorization", "x"), ("accept", "*/*")],
    );
    let mut out = Vec::new();
    f.render(&ev, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(&format!(
        "{RULE}\nWEBHOOK RECEIVED\n{RULE}\nWebhook: ns/hook\n"
    )));
    assert!(text.contains("Received: 2023-11-14T22:13:20.123Z\n"));
    assert!(text.contains(
        "\nHeaders:\n{\n  \"authorization\": \"[REDACTED]\",\n  \"accept\": \"*/*\"\n}\n"
    ));
    assert!(
        text.contains("\nPayload:\n{\n  \"token\": \"[REDACTED]\",\n  \"text\": \"é\\nz\"\n}\n")
    );
    assert!(text.ends_with(&format!("}}\n{RULE}\n")));

    let ev = event(
        Payload::Json(json!(["y".repeat(MAX_FIELD_CHARS)]).into()),
        &[],
    );
    let mut out = Vec::new();
    f.render(&ev, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with(&format!("yyy\n{TRUNCATED}\n{RULE}\n")));
}

/// The request's text, kept as it is (cleanup off, so credential keys do not force a copy).
fn text_payload(text: &str) -> Payload {
    let cfg = cwm_config::WebhookConfig::from_value(
        json!({"credential_cleanup": {"enabled": false}}),
        &|_: &str| None,
    )
    .unwrap();
    let off = crate::CredentialCleanup::from_config(&cfg).unwrap();
    let limits = crate::payload::JsonLimits {
        max_depth: 50,
        max_string_chars: 1 << 20,
    };
    Payload::Json(JsonPayload::from_text(text.to_owned(), limits, &off).unwrap())
}

#[test]
fn text_payloads_print_like_parsed_ones() {
    let mut deep = String::from("\"bottom\"");
    for i in 0..13 {
        deep = if i % 2 == 0 {
            format!("{{\"d\": {deep}, \"n\": {i}}}")
        } else {
            format!("[{i}, {deep}]")
        };
    }
    let long = "é".repeat(MAX_FIELD_CHARS + 3);
    let docs = [
        r#"{"event":"push","repository":"cwm","sender":{"login":"octocat","id":583231},"commits":3,"forced":false,"n":null}"#.to_owned(),
        " [ 1 , -2 , 3.25 , 1e3 , -0 , 18446744073709551615 , -9223372036854775808 , 1.7976931348623157e308 ] ".to_owned(),
        r#"{"Password":"p","nested":{"apiKey":"k","ok":{"x":1},"SessionId":{"a":[1]}},"list":[{"credit-card":"4"},2],"monkey":"banana"}"#.to_owned(),
        r#"{"esc\u0061ped key":"a\r\nb\u0001c\td\u007f\"q\" \\ \/ \ud83d\ude00","x-api-key":{"deep":1},"auth":[]}"#.to_owned(),
        format!("{{\"long\":\"{long}\",\"deep\":{deep},\"e\":{{}},\"a\":[],\"u\":\"\u{2028}\"}}"),
        "\"just a string\"".to_owned(),
        "true".to_owned(),
        "null".to_owned(),
        // Copied as they are by the standard line:
        r#"{"a":[true,false,null,-5,0,123456789012345678,"x y:z","{[]}"],"b":{"c":{}},"é":"ü"}"#.to_owned(),
        format!("[{}]", "[".repeat(9) + &"]".repeat(9)),
        // Not copied: one reason each.
        r#"{"a":1.5}"#.to_owned(),
        r#"{"a":1e5}"#.to_owned(),
        r#"{"a":-0}"#.to_owned(),
        r#"{"a":1234567890123456789}"#.to_owned(),
        r#"{"a":18446744073709551616}"#.to_owned(),
        r#"{"a" :1}"#.to_owned(),
        "{\"a\":\"\u{7f}\"}".to_owned(),
        r#"{"a":"\"q\""}"#.to_owned(),
        r#"{"my_token":1}"#.to_owned(),
        format!("[{}]", "[".repeat(10) + &"]".repeat(10)),
        format!("[\"{}\"]", "x".repeat(MAX_FIELD_CHARS + 1)),
    ];
    for doc in [0, 5, 6, 7, 8, 9].map(|i| &docs[i]) {
        assert!(copyable(doc, true), "{doc}");
    }
    assert!(
        copyable(&docs[18], false),
        "keys are only judged when redacting"
    );
    for doc in &docs[1..5] {
        assert!(!copyable(doc, true), "{doc}");
    }
    for doc in &docs[10..] {
        assert!(!copyable(doc, true), "{doc}");
    }
    for doc in &docs {
        let value: Value = serde_json::from_str(doc).unwrap();
        let parsed = event(Payload::Json(value.into()), &[("x-note", "n")]);
        let text = event(text_payload(doc), &[("x-note", "n")]);
        for (pretty, redact) in [(false, true), (false, false), (true, true), (true, false)] {
            let f = LogFormat { pretty, redact };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f.render(&parsed, &mut a);
            f.render(&text, &mut b);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                String::from_utf8(a).unwrap(),
                "{doc} pretty={pretty} redact={redact}"
            );
        }
    }
    // The rules apply on the text path too (the comparison above would pass if both broke).
    let v = line(STD, &event(text_payload(&docs[2]), &[]));
    assert_eq!(v["payload"]["nested"]["apiKey"], REDACTED);
    assert_eq!(v["payload"]["nested"]["ok"], json!({"x": 1}));
    assert_eq!(v["payload"]["monkey"], "banana");
    let v = line(STD, &event(text_payload(&docs[4]), &[]));
    assert!(v["payload"]["long"].as_str().unwrap().ends_with(TRUNCATED));
    let mut at = &v["payload"]["deep"];
    for _ in 0..MAX_DEPTH - 1 {
        at = at.get("d").or_else(|| at.get(1)).unwrap();
    }
    assert_eq!(at.get("d").or_else(|| at.get(1)).unwrap(), DEPTH_EXCEEDED);
}

#[test]
fn sensitive_matching() {
    for name in [
        "X-Api-Key",
        "api_key",
        "DB_URL",
        "set-cookie",
        "author",
        "TO\u{212A}EN",
    ] {
        assert!(is_sensitive(name), "{name}");
    }
    for name in ["content-type", "user", "x-request-id", "monkey", ""] {
        assert!(!is_sensitive(name), "{name}");
    }
}

#[test]
fn out_of_range_clock_is_clamped() {
    let before = UNIX_EPOCH - Duration::from_secs(5);
    assert_eq!(Timestamp(before).to_string(), "1970-01-01T00:00:00.000Z");
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn sink_queues_to_one_writer_and_flushes() {
    let cap = Capture::default();
    let ctx = ModuleContext::with_log_target(Box::new(cap.clone()));
    let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
    let a = factory(&cfg, &ctx).unwrap();
    let b = factory(&cfg, &ctx).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let sink = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            sink.deliver(&event(Payload::Json(json!({ "i": i }).into()), &[]))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    a.shutdown().await;
    let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    let mut seen: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]["i"]
                .as_i64()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    assert!(ctx.shutdown(Duration::from_secs(60)).await);
}

/// An output nobody reads: every write waits until the gate opens.
#[derive(Clone, Default)]
struct Gated {
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    out: Capture,
}

impl Gated {
    fn open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }

    fn ids(&self) -> Vec<i64> {
        let text = String::from_utf8(self.out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["payload"]["i"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn numbered(i: i64) -> Event {
    event(
        Payload::Json(json!({ "i": i, "pad": "x".repeat(200) }).into()),
        &[],
    )
}

#[tokio::test]
async fn full_byte_budget_fails_fast_then_drains() {
    let out = Gated::default();
    let ctx = ModuleContext::with_log_target_and_budget(Box::new(out.clone()), 4096);
    let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
    let sink = factory(&cfg, &ctx).unwrap();
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        match sink.deliver(&numbered(i)).await {
            Ok(()) => accepted.push(i),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("a blocked output fills a 4 KiB budget");
    assert_eq!(
        err,
        SinkError::Unavailable("log queue full: stdout is not keeping up".into())
    );
    assert_eq!(err, SinkError::Unavailable(SendError::Full.to_string()));
    assert!(err.retryable());
    // ~300-byte lines: the budget, not the line count, stopped the queue.
    assert!((1..=20).contains(&accepted.len()), "{}", accepted.len());
    // Still full while the output is blocked: nothing was written or given back.
    assert!(sink.deliver(&numbered(-1)).await.is_err());
    assert!(out.ids().is_empty());

    out.open();
    assert!(ctx.shutdown(Duration::from_secs(60)).await);
    assert_eq!(out.ids(), accepted);
    sink.deliver(&numbered(5000)).await.unwrap();
    assert!(ctx.shutdown(Duration::from_secs(60)).await);
    assert_eq!(out.ids().last(), Some(&5000));
}

#[tokio::test]
async fn shutdown_returns_when_stdout_is_blocked() {
    // No log sink was ever built: nothing to flush.
    assert!(ModuleContext::new().shutdown(Duration::ZERO).await);

    let out = Gated::default();
    let ctx = ModuleContext::with_log_target(Box::new(out.clone()));
    let cfg = WebhookConfig::from_value(json!({"module":"log"}), &|_: &str| None).unwrap();
    let sink = factory(&cfg, &ctx).unwrap();
    for i in 0..3 {
        sink.deliver(&numbered(i)).await.unwrap();
    }
    assert!(!ctx.shutdown(Duration::from_millis(50)).await);
    assert!(out.ids().is_empty());
    out.open();
    assert!(ctx.shutdown(Duration::from_secs(60)).await);
    assert_eq!(out.ids(), vec![0, 1, 2]);
}
