//! The request-body JSON decoder (`cwm_http::json::parse`): depth and string limits, the Latin-1
//! fallback and charset handling, the one-pass check that keeps the text, and credential cleanup,
//! on any bytes and any `Content-Type`.
//!
//! Input: the first byte picks the `Content-Type` (none, plain JSON, a Latin-1 charset, or the
//! input's first line) and whether credential cleanup is on; the rest is the body.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use cwm_config::WebhookConfig;
use cwm_http::json::{JsonError, MAX_DEPTH, MAX_STRING_CHARS, parse};
use cwm_modules::CredentialCleanup;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Cleanup on (the default) and off.
static CLEANUPS: LazyLock<Option<[CredentialCleanup; 2]>> = LazyLock::new(|| {
    let make = |v: Value| {
        let cfg = WebhookConfig::from_value(v, &|_: &str| None).ok()?;
        CredentialCleanup::from_config(&cfg).ok()
    };
    Some([
        make(json!({}))?,
        make(json!({"credential_cleanup": {"enabled": false}}))?,
    ])
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(cleanups) = CLEANUPS.as_ref() else {
        panic!("the cleanup settings do not build");
    };
    let cleanup = &cleanups[usize::from(mode / 4 % 2)];
    let (content_type, body) = match mode % 4 {
        0 => (None, rest),
        1 => (Some("application/json".to_owned()), rest),
        2 => (
            Some("application/json; charset=ISO-8859-1".to_owned()),
            rest,
        ),
        _ => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (
                Some(String::from_utf8_lossy(&rest[..i]).into_owned()),
                &rest[i + 1..],
            ),
            None => (None, rest),
        },
    };
    match parse(
        Bytes::copy_from_slice(body),
        content_type.as_deref(),
        cleanup,
    ) {
        Ok(payload) => {
            let value = payload.value();
            check_limits(value, 0);
            // What sinks receive has nothing left for the cleanup to do.
            let mut again = value.clone();
            cleanup.clean_payload(&mut again);
            assert_eq!(&again, value, "a credential reached the sink");
            // What was accepted serialises and is accepted again, unchanged in shape.
            let Ok(text) = serde_json::to_vec(value) else {
                panic!("an accepted value does not serialise");
            };
            match parse(Bytes::from(text), None, cleanup) {
                Ok(again) => assert_eq!(shape(again.value()), shape(value)),
                Err(e) => panic!("re-parse of an accepted value failed: {e}"),
            }
        }
        Err(JsonError::TooDeep(n, max)) => assert!(n > max && max == MAX_DEPTH, "TooDeep({n})"),
        Err(JsonError::StringTooLong(n, max)) => {
            assert!(n > max && max == MAX_STRING_CHARS, "StringTooLong({n})")
        }
        Err(JsonError::Malformed) => {
            // Without a charset parameter, what serde_json reads is never called malformed.
            if content_type.as_deref().is_none_or(|c| !c.contains(';'))
                && let Ok(v) = serde_json::from_slice::<Value>(body)
            {
                panic!("valid JSON refused as malformed: {v}");
            }
        }
    }
});

/// Every accepted value keeps the documented limits.
fn check_limits(v: &Value, depth: usize) {
    assert!(depth <= MAX_DEPTH, "accepted depth {depth}");
    match v {
        Value::String(s) => assert!(s.chars().count() <= MAX_STRING_CHARS),
        Value::Array(items) => items.iter().for_each(|i| check_limits(i, depth + 1)),
        Value::Object(map) => map.values().for_each(|i| check_limits(i, depth + 1)),
        _ => {}
    }
}

/// The value with numbers erased (float text round trips may differ in the last bit).
fn shape(v: &Value) -> Value {
    match v {
        Value::Number(_) => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        other => other.clone(),
    }
}
