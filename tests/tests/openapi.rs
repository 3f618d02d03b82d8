//! Black-box tests of the OpenAPI routes: the real `cwm-receiver`, its `/openapi.json` checked
//! by `openapi-spec-validator` (PyPI, in the test virtualenv), and `/docs` and `/redoc` rendered
//! by a headless Chromium with no internet access needed (every asset comes from the receiver).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cwm_tests::Receiver;
use serde_json::Value;

const WEBHOOKS: &str = r#"{
  "orders": {"module": "log", "authorization": "Bearer order-s3cret",
             "json_schema": {"type": "object", "required": ["order"],
                             "properties": {"order": {"type": "integer"}}}},
  "github": {"module": "log",
             "hmac": {"secret": "gh-s3cret", "header": "X-Hub-Signature-256"}},
  "uploads": {"module": "log", "data_type": "blob",
              "basic_auth": {"username": "u", "password": "basic-s3cret"},
              "header_auth": {"header_name": "X-Key", "api_key": "key-s3cret"},
              "rate_limit": {"max_requests": 10, "window_seconds": 60}},
  "partner": {"module": "log", "query_auth": {"api_key": "query-s3cret"},
              "jwt": {"secret": "jwt-s3cret"}},
  "plain": {"module": "log"},
  "oauth": {"module": "log",
            "oauth2": {"introspection_endpoint": "https://auth.example.com/introspect",
                       "client_id": "c", "client_secret": "oauth2-s3cret",
                       "required_scope": ["write", "read"]}},
  "oauth-internal": {"module": "log",
            "oauth2": {"introspection_endpoint": "http://10.1.2.3/introspect",
                       "client_id": "c", "client_secret": "oauth2-s3cret"}},
  "signed": {"module": "log",
             "oauth1": {"consumer_key": "k", "consumer_secret": "oauth1-s3cret"},
             "digest_auth": {"username": "u", "password": "digest-s3cret"}}
}"#;
const IDS: [&str; 8] = [
    "orders",
    "github",
    "uploads",
    "partner",
    "plain",
    "oauth",
    "oauth-internal",
    "signed",
];
const SECRETS: [&str; 9] = [
    "oauth2-s3cret",
    "oauth1-s3cret",
    "digest-s3cret",
    "order-s3cret",
    "gh-s3cret",
    "basic-s3cret",
    "key-s3cret",
    "query-s3cret",
    "jwt-s3cret",
];

fn start(env: &[(&str, &str)]) -> Receiver {
    Receiver::start(
        &[("webhooks.json", WEBHOOKS), ("connections.json", "{}")],
        env,
    )
}

/// The test virtualenv's `openapi-spec-validator` (`CWM_TEST_VENV`, default
/// `<workspace>/target/venv`).
fn spec_validator() -> PathBuf {
    let venv = std::env::var_os("CWM_TEST_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin/openapi-spec-validator");
    assert!(
        bin.is_file(),
        "{} is missing: this test checks the document with the PyPI validator. Run `make \
         deps-test` (it builds the virtualenv), or `pip install openapi-spec-validator` into the \
         virtualenv CWM_TEST_VENV names.",
        bin.display()
    );
    bin
}

/// The DOM of `url` after its scripts ran, from a headless Chromium.
fn rendered_dom(url: &str) -> String {
    let chromium = cwm_testkit::require_binary("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    // To a file, not a pipe: a DOM larger than the pipe buffer would block Chromium until read.
    let dump = profile.path().join("dom.html");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(std::fs::File::create(&dump).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish rendering {url} within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success(), "chromium failed on {url}");
    String::from_utf8_lossy(&std::fs::read(&dump).unwrap()).into_owned()
}

#[test]
fn document_passes_the_openapi_validator_and_shows_no_secret() {
    let validator = spec_validator();
    let rx = start(&[("ROOT_PATH", "/hooks/")]);
    let reply = rx.get("/openapi.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let text = reply.body.clone();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} is in the document");
    }
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["servers"][0]["url"], "/hooks");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
        "https://auth.example.com/introspect"
    );
    assert_eq!(schemes["oauth2_2"]["scheme"], "bearer");
    assert!(
        !text.contains("10.1.2.3"),
        "a private introspection URL is shown"
    );
    for id in IDS {
        assert!(
            doc["paths"].get(format!("/webhook/{id}")).is_some(),
            "{id} is not in the document"
        );
    }

    let file = rx.dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn swagger_ui_and_redoc_render_every_webhook_offline() {
    let rx = start(&[]);
    let swagger = rendered_dom(&rx.url("/docs"));
    for id in IDS {
        assert!(
            swagger.contains(&format!("data-path=\"/webhook/{id}\"")),
            "Swagger UI shows no operation for {id}:\n{swagger}"
        );
    }
    let redoc = rendered_dom(&rx.url("/redoc"));
    for id in IDS {
        assert!(
            redoc.contains(&format!("Send webhook to {id}")),
            "ReDoc shows no operation for {id}:\n{redoc}"
        );
    }
}

#[test]
fn disabled_docs_answer_404() {
    let rx = start(&[("DISABLE_OPENAPI_DOCS", "true")]);
    for path in [
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/assets/swagger-ui-bundle.js",
    ] {
        assert_eq!(rx.get(path).status, 404, "{path}");
    }
    // The webhook routes are untouched.
    assert_eq!(rx.post("/webhook/plain", "{}").status, 200);
}
