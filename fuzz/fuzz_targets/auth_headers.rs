//! The credential and signature header parsers of the request validators, through the public
//! seam: webhooks with `authorization`, `basic_auth`, `digest_auth`, `jwt`, `hmac` (hex, base64
//! and Stripe formats), `header_auth`, `query_auth` and `oauth1` are compiled once by the real
//! registry; each input supplies the header values, the query string and the body, and every
//! validator judges them. Nothing may panic, and no answer may carry a configured secret.
//!
//! Input: lines, in order: `Authorization`, the signature header value (sent as
//! `X-Hub-Signature-256`, `X-Shopify-Hmac-Sha256` and `Stripe-Signature` alike), `X-API-Key`, the
//! query string; the rest is the body.
#![no_main]

use std::sync::OnceLock;

use cwm_config::compile_webhook_json;
use cwm_modules::validators::Verdict;
use cwm_modules::{CompiledWebhook, Denial, ModuleContext, Registry, RequestHead};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-Zq8";

fn webhooks() -> &'static [CompiledWebhook] {
    static HOOKS: OnceLock<Vec<CompiledWebhook>> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let registry = Registry::with_builtin_sinks(ModuleContext::new());
        let s = SECRET;
        [
            format!(r#"{{"module":"log","authorization":"Bearer {s}"}}"#),
            format!(r#"{{"module":"log","authorization":"{s}"}}"#),
            format!(r#"{{"module":"log","basic_auth":{{"username":"u","password":"{s}"}}}}"#),
            format!(r#"{{"module":"log","digest_auth":{{"username":"u","password":"{s}"}}}}"#),
            format!(r#"{{"module":"log","jwt":{{"secret":"{s}","algorithm":"HS256"}}}}"#),
            format!(r#"{{"module":"log","hmac":{{"secret":"{s}","header":"X-Hub-Signature-256"}}}}"#),
            format!(
                r#"{{"module":"log","hmac":{{"secret":"{s}","header":"X-Shopify-Hmac-Sha256","format":"base64"}}}}"#
            ),
            format!(r#"{{"module":"log","hmac":{{"secret":"{s}","format":"stripe"}}}}"#),
            format!(r#"{{"module":"log","header_auth":{{"api_key":"{s}"}}}}"#),
            format!(r#"{{"module":"log","query_auth":{{"api_key":"{s}"}}}}"#),
            format!(
                r#"{{"module":"log","oauth1":{{"consumer_key":"k","consumer_secret":"{s}"}}}}"#
            ),
        ]
        .iter()
        .map(|doc| {
            compile_webhook_json(&registry, &|_: &str| None, "hook", doc.as_bytes())
                .unwrap_or_else(|e| panic!("fuzz webhook does not compile: {e}: {doc}"))
        })
        .collect()
    })
}

fn assert_clean(d: &Denial) {
    let text = format!("{d:?}");
    assert!(!text.contains(SECRET), "a denial carries the secret: {text}");
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let (authorization, signature, api_key, query) = (next(), next(), next(), next());
    let body = next();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    };
    put("authorization", authorization);
    put("x-hub-signature-256", signature);
    put("x-shopify-hmac-sha256", signature);
    put("stripe-signature", signature);
    put("x-api-key", api_key);
    put("content-type", b"application/x-www-form-urlencoded");
    let query = std::str::from_utf8(query).ok();
    let head = RequestHead {
        method: &Method::POST,
        path: "/webhook/hook",
        query,
        headers: &headers,
        peer: Some(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    for hook in webhooks() {
        for v in hook.validators.head().iter().chain(hook.validators.body()) {
            match v.check(&head, body) {
                Verdict::Pass | Verdict::Later(_) => {}
                Verdict::Deny(d) => assert_clean(&d),
            }
        }
    }
});
