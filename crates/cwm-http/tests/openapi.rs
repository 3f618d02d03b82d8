//! In-process tests of `/openapi.json`, `/docs`, `/redoc` and their assets: a [`Receiver`] over
//! a store of webhooks compiled with the built-in validators, driven without a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cwm_config::StaticProvider;
use cwm_config::{Snapshot, Store};
use cwm_http::{HttpSettings, Receiver};
use cwm_modules::{CompiledWebhook, ModuleContext, Registry};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const SECRETS: [&str; 6] = [
    "tok-s3cret",
    "hmac-s3cret",
    "key-s3cret",
    "query-s3cret",
    "basic-s3cret",
    "client-s3cret",
];

const HOOKS: &[(&str, &str, &str)] = &[
    ("plain", "default", r#"{"module":"log"}"#),
    (
        "orders",
        "default",
        r#"{"module":"log","authorization":"Bearer tok-s3cret",
            "hmac":{"secret":"hmac-s3cret","header":"X-Hub-Signature-256"},
            "rate_limit":{"max_requests":5,"window_seconds":10},
            "json_schema":{"type":"object","required":["order"],
                           "properties":{"order":{"type":"integer"}}}}"#,
    ),
    (
        "files",
        "default",
        r#"{"module":"log","data_type":"blob",
            "header_auth":{"header_name":"X-Key","api_key":"key-s3cret"},
            "query_auth":{"api_key":"query-s3cret"},
            "basic_auth":{"username":"u","password":"basic-s3cret"}}"#,
    ),
    (
        "other-hmac",
        "default",
        r#"{"module":"log","hmac":{"secret":"hmac-s3cret","header":"X-Other-Signature"}}"#,
    ),
    (
        "introspected",
        "default",
        r#"{"module":"log","oauth2":{"introspection_endpoint":"http://10.0.0.5/introspect",
            "client_id":"c","client_secret":"client-s3cret","required_scope":["write"]}}"#,
    ),
    ("we ird", "default", r#"{"module":"log"}"#),
    (
        "team-hook",
        "team-a",
        r#"{"module":"log","jwt":{"secret":"tok-s3cret"}}"#,
    ),
];

fn registry() -> Registry {
    Registry::with_builtin_sinks(ModuleContext::new())
}

fn compile(registry: &Registry, id: &str, doc: &str) -> Arc<CompiledWebhook> {
    Arc::new(
        cwm_config::compile_webhook_json(registry, &|_: &str| None, id, doc.as_bytes())
            .unwrap_or_else(|e| panic!("{id}: {e}")),
    )
}

/// A receiver over `HOOKS` (namespaced like etcd), and its store.
fn receiver(settings: HttpSettings) -> (Receiver, Arc<Store<CompiledWebhook>>) {
    let registry = registry();
    let store = Arc::new(Store::new(Snapshot::empty("default", false)));
    for (id, ns, doc) in HOOKS {
        // Ids are validated at load; the store (and so the generator) may still see any string.
        let hook = compile(&registry, &id.replace(' ', ""), doc);
        store.update(|s| s.put_webhook(ns, id, hook));
    }
    store.mark_loaded();
    let rx = Receiver::new(Arc::new(StaticProvider(store.clone())), settings);
    (rx, store)
}

async fn get(rx: &Receiver, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let req = http::Request::get(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = rx.handle(req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

async fn document(rx: &Receiver) -> Value {
    let (status, headers, body) = get(rx, "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn document_lists_every_webhook_in_the_upstream_shape() {
    let (rx, _store) = receiver(HttpSettings {
        root_path: "/hooks".into(),
        ..HttpSettings::default()
    });
    let doc = document(&rx).await;
    assert_eq!(doc["openapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "Core Webhook Module API");
    assert_eq!(doc["info"]["version"], "1.0.0");
    assert_eq!(doc["servers"][0]["url"], "/hooks");

    let paths = doc["paths"].as_object().unwrap();
    let keys: Vec<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "/webhook/files",
            "/webhook/introspected",
            "/webhook/orders",
            "/webhook/other-hmac",
            "/webhook/plain",
            "/webhook/we%20ird",
            "/webhook/team-a/team-hook",
        ]
    );
    let orders = &paths["/webhook/orders"]["post"];
    assert_eq!(orders["operationId"], "post_webhook_orders");
    assert_eq!(orders["tags"][0], "webhooks");
    assert_eq!(orders["summary"], "Send webhook to orders");
    assert!(
        orders["description"]
            .as_str()
            .unwrap()
            .contains("Rate Limiting: 5 requests per 10 seconds")
    );
    assert_eq!(
        orders["requestBody"]["content"]["application/json"]["schema"]["required"][0],
        "order"
    );
    // Every check must pass: one requirement naming them all.
    assert_eq!(
        orders["security"],
        serde_json::json!([{"bearerAuth": [], "hmacAuth": []}])
    );
    assert_eq!(
        paths["/webhook/plain"]["post"]["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"],
        true
    );
    assert_eq!(
        paths["/webhook/plain"]["post"]["security"],
        serde_json::json!([])
    );
    let files = &paths["/webhook/files"]["post"];
    assert_eq!(
        files["requestBody"]["content"]["application/octet-stream"]["schema"]["format"],
        "binary"
    );
    assert_eq!(
        files["security"],
        serde_json::json!([{"basicAuth": [], "headerAuth": [], "queryAuth": []}])
    );
    assert_eq!(
        paths["/webhook/we%20ird"]["post"]["operationId"],
        "post_webhook_we_ird"
    );
    let team = &paths["/webhook/team-a/team-hook"]["post"];
    assert_eq!(team["operationId"], "post_webhook_team_a_team_hook");
    assert_eq!(team["tags"][0], "team-a");

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["basicAuth"]["scheme"], "basic");
    assert_eq!(schemes["jwtAuth"]["bearerFormat"], "JWT");
    assert_eq!(schemes["headerAuth"]["name"], "X-Key");
    assert_eq!(schemes["queryAuth"]["in"], "query");
    assert_eq!(schemes["queryAuth"]["name"], "api_key");
    // Two webhooks with different signature headers: two schemes.
    assert_eq!(schemes["hmacAuth"]["name"], "X-Hub-Signature-256");
    assert_eq!(schemes["hmacAuth_2"]["name"], "X-Other-Signature");
    assert_eq!(
        paths["/webhook/other-hmac"]["post"]["security"],
        serde_json::json!([{"hmacAuth_2": []}])
    );
    // A private introspection endpoint is not shown: a bearer scheme naming the scopes.
    assert_eq!(schemes["oauth2"]["type"], "http");
    assert!(
        schemes["oauth2"]["description"]
            .as_str()
            .unwrap()
            .contains("write")
    );
}

#[tokio::test]
async fn document_never_shows_a_secret() {
    let (rx, _store) = receiver(HttpSettings::default());
    let (_, _, body) = get(&rx, "/openapi.json").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert!(
        !text.contains("10.0.0.5"),
        "private introspection URL leaked"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["servers"][0]["url"],
        "/"
    );
}

#[tokio::test]
async fn document_is_rebuilt_when_the_config_changes() {
    let (rx, store) = receiver(HttpSettings::default());
    assert!(document(&rx).await["paths"].get("/webhook/added").is_none());
    let hook = compile(
        &registry(),
        "added",
        r#"{"module":"log","authorization":"t0ken"}"#,
    );
    store.update(|s| {
        s.put_webhook("default", "added", hook);
        s.remove_webhook("default", "plain");
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let doc = document(&rx).await;
        if doc["paths"].get("/webhook/added").is_some() {
            assert!(doc["paths"].get("/webhook/plain").is_none());
            assert_eq!(
                doc["components"]["securitySchemes"]["authorizationHeader"]["name"],
                "Authorization"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the document was not rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types_and_policy() {
    let (rx, _store) = receiver(HttpSettings {
        root_path: "/hooks".into(),
        ..HttpSettings::default()
    });
    for (page, needle) in [
        ("/docs", "swagger-ui-bundle.js"),
        ("/redoc", "redoc.standalone.js"),
    ] {
        let (status, headers, body) = get(&rx, page).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("http"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains(needle), "{html}");
        assert!(html.contains("\"/hooks/openapi.json\""), "{html}");
        assert!(html.contains("/hooks/docs/assets/"), "{html}");
        // No inline script: every <script> loads a file.
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: {html}");
        }
    }
    for (asset, kind) in [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-init.js", "text/javascript; charset=utf-8"),
        ("redoc.standalone.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
    ] {
        let (status, headers, body) = get(&rx, &format!("/docs/assets/{asset}")).await;
        assert_eq!(status, 200, "{asset}");
        assert_eq!(headers["content-type"], kind, "{asset}");
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=31536000"),
            "{asset}"
        );
        assert!(!body.is_empty());
    }
    assert_eq!(get(&rx, "/docs/assets/nope.js").await.0, 404);
    // The other routes keep the receiver's default policy.
    let (_, headers, _) = get(&rx, "/health").await;
    assert!(
        !headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("worker-src")
    );
}

#[tokio::test]
async fn disabled_docs_answer_404() {
    let (rx, _store) = receiver(HttpSettings {
        openapi_docs: false,
        ..HttpSettings::default()
    });
    for path in [
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/assets/swagger-ui-bundle.js",
    ] {
        assert_eq!(get(&rx, path).await.0, 404, "{path}");
    }
}
