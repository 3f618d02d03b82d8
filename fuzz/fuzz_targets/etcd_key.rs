//! etcd key parsing (`cwm_config::keys::parse_key`) with any prefix and key bytes, and the name
//! rules of `cwm_config::names` on any string.
//!
//! Input: the prefix (first line; normalised, and also used as given), then the key bytes.
#![no_main]

use cwm_config::keys::{KeyError, KeyRef, connection_key, parse_key, webhook_key};
use cwm_config::names::{
    MAX_NAME_LEN, is_valid_module_name, is_valid_namespace, normalize_prefix, validate_webhook_id,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (raw_prefix, key) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("/cwm/".to_owned(), data),
    };
    let prefix = normalize_prefix(&raw_prefix);
    assert!(
        prefix.ends_with('/') && !prefix.ends_with("//"),
        "{prefix:?}"
    );
    assert_eq!(
        normalize_prefix(&prefix),
        prefix,
        "normalize_prefix is idempotent"
    );

    // The key as given, and the same key under the prefix.
    check_key(&prefix, key);
    let mut full = prefix.as_bytes().to_vec();
    full.extend_from_slice(key);
    check_key(&prefix, &full);
    // The prefix as given (not normalised) must not panic either.
    let _ = parse_key(&raw_prefix, key);

    // The name rules, on the prefix line, the key and each of its segments.
    check_names(&raw_prefix);
    let key_text = String::from_utf8_lossy(key);
    check_names(&key_text);
    key_text.split('/').for_each(check_names);
});

fn check_key(prefix: &str, key: &[u8]) {
    match parse_key(prefix, key) {
        Ok(KeyRef::Webhook { namespace, id }) => {
            assert!(is_namespace_re(namespace), "namespace {namespace:?}");
            assert!(!id.is_empty() && !id.contains('/'), "id {id:?}");
            // The key is exactly what the builder makes of its parts.
            assert_eq!(webhook_key(prefix, namespace, id).as_bytes(), key);
        }
        Ok(KeyRef::Connection { name }) => {
            assert!(!name.is_empty() && !name.contains('/'), "name {name:?}");
            assert_eq!(connection_key(prefix, name).as_bytes(), key);
        }
        Err(KeyError::OutsidePrefix) => assert!(!key.starts_with(prefix.as_bytes())),
        Err(KeyError::NotUtf8) => {
            assert!(key.starts_with(prefix.as_bytes()));
            assert!(std::str::from_utf8(&key[prefix.len()..]).is_err());
        }
        Err(KeyError::InvalidNamespace(ns)) => assert!(!is_namespace_re(&ns), "{ns:?}"),
        Err(KeyError::EmptyName | KeyError::Unrecognised) => {
            assert!(key.starts_with(prefix.as_bytes()));
        }
    }
}

fn check_names(s: &str) {
    // `^[a-zA-Z0-9_-]{1,64}$`
    assert_eq!(is_valid_namespace(s), is_namespace_re(s), "namespace {s:?}");

    // `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`, at most 64.
    let module_re =
        s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric) && is_namespace_re(s);
    assert_eq!(is_valid_module_name(s), module_re, "module {s:?}");

    if validate_webhook_id(s).is_ok() {
        let id = s.trim();
        assert!(is_namespace_re(id), "webhook id {s:?}");
        assert!(id.as_bytes()[0].is_ascii_alphanumeric(), "webhook id {s:?}");
        assert!(!id.contains("--") && !id.contains("__"), "webhook id {s:?}");
        assert!(!id.starts_with('_'), "webhook id {s:?}");
        let lower = id.to_ascii_lowercase();
        assert!(
            !matches!(lower.as_str(), "admin" | "stats" | "health" | "api"),
            "{s:?}"
        );
        assert!(
            !["_internal", "_system", "_admin"]
                .iter()
                .any(|x| lower.ends_with(x)),
            "{s:?}"
        );
    }
}

/// `^[a-zA-Z0-9_-]{1,64}$`, written out.
fn is_namespace_re(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-'))
}
