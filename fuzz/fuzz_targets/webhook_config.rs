//! One configuration entry, as a file or an etcd value delivers it: any bytes parsed as JSON, then
//! typed (`WebhookConfig::from_value`), validated and compiled into a sink by the real registry
//! (`cwm_config::compile_webhook` with `cwm_modules::Registry`), and as a connection
//! (`parse_connection`). The etcd route, straight from the text (`WebhookConfig::from_json`,
//! `compile_webhook_json`), must agree with it. Nothing here may panic, whatever the bytes.
//!
//! Input: the first line is the webhook id (or connection name), the rest the JSON document.
#![no_main]

use std::sync::OnceLock;

use cwm_config::names::validate_webhook_id;
use cwm_config::{WebhookConfig, compile_webhook, compile_webhook_json, parse_connection};
use cwm_modules::{CredentialCleanup, ModuleContext, Registry};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A fixed environment, so `{$VAR}` placeholders resolve or fail the same way every run.
fn env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("example.com".into()),
        "PORT" => Some("8080".into()),
        "TOKEN" => Some("Bearer s3cret".into()),
        "EMPTY" => Some(String::new()),
        "NUL" => Some("a\0b".into()),
        "BRACES" => Some("{$HOST}".into()),
        _ => None,
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // `save_to_disk` paths are resolved against this directory; compiling only reads it.
        let mut ctx = ModuleContext::new();
        ctx.base_dir = std::env::temp_dir().join("cwm-fuzz-base");
        Registry::with_builtin_sinks(ctx)
    })
}

fuzz_target!(|data: &[u8]| {
    let (id, doc) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("hook".to_owned(), data),
    };
    // etcd values are read straight from their text (`from_json`, `compile_webhook_json`); that
    // route must give what parsing the text first and then reading the `Value` gives.
    let from_text = WebhookConfig::from_json(doc, &env);
    let compiled_from_text = compile_webhook_json(registry(), &env, &id, doc).map(|_| ());
    let Ok(value) = serde_json::from_slice::<Value>(doc) else {
        assert!(from_text.is_err(), "text read that serde_json refuses");
        assert!(compiled_from_text.is_err());
        return;
    };

    let typed = WebhookConfig::from_value(value.clone(), &env);
    assert_eq!(from_text, typed, "from_json and from_value disagree");
    if let Ok(cfg) = &typed {
        if let Some(p) = cfg.retry_policy() {
            assert!((1..=20).contains(&p.max_attempts));
            assert!(p.initial_delay.is_finite() && p.max_delay >= p.initial_delay);
            assert!(p.backoff_multiplier.is_finite() && p.backoff_multiplier > 0.0);
        }
        let _ = cfg.chain();
        let _ = CredentialCleanup::from_config(cfg);
        if let Some(a) = &cfg.authorization {
            assert!(!a.contains(['\r', '\n', '\0']));
        }
        // What was read serialises and reads back the same (when no placeholder is left to
        // resolve a second time).
        if let Ok(back) = serde_json::to_value(cfg)
            && !back.to_string().contains("{$")
        {
            assert_eq!(WebhookConfig::from_value(back, &env).as_ref(), Ok(cfg));
        }
    }

    let compiled = compile_webhook(registry(), &env, &id, value.clone());
    assert_eq!(
        compiled.as_ref().map(|_| ()).map_err(Clone::clone),
        compiled_from_text,
        "compile_webhook_json and compile_webhook disagree"
    );
    if compiled.is_ok() {
        assert!(typed.is_ok(), "compiled a webhook that does not parse");
        assert_eq!(validate_webhook_id(&id), Ok(()));
        assert_eq!(id.trim(), id);
    }

    if let Ok(conn) = parse_connection(&env, &id, value) {
        assert!(!conn.kind.trim().is_empty());
        assert!(conn.port().is_ok());
        if let Some(host) = &conn.host {
            assert!(cwm_config::model::check_connection_host(host).is_ok());
        }
    }
});
