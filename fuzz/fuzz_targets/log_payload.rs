//! The `log` sink's two ways of printing a JSON payload: straight from the request's text (the
//! transcoder, or a byte-for-byte copy when nothing would change) and from the parsed document.
//! Both must print the same document in every format, whatever the JSON.
//!
//! Input: the first byte picks pretty or standard output and redaction on or off; the rest is the
//! body, used when it is valid JSON within the receiver's limits.
#![no_main]

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;
use std::time::UNIX_EPOCH;

use cwm_config::WebhookConfig;
use cwm_http::json::{MAX_DEPTH, MAX_STRING_CHARS};
use cwm_modules::log::format_event;
use cwm_modules::payload::{JsonLimits, JsonPayload};
use cwm_modules::{CredentialCleanup, Event, Payload};
use libfuzzer_sys::fuzz_target;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// The receiver's limits.
const LIMITS: JsonLimits = JsonLimits {
    max_depth: MAX_DEPTH,
    max_string_chars: MAX_STRING_CHARS,
};

/// Cleanup off: every valid body is kept as text, whatever its keys.
static OFF: LazyLock<Option<CredentialCleanup>> = LazyLock::new(|| {
    let v = json!({"credential_cleanup": {"enabled": false}});
    let cfg = WebhookConfig::from_value(v, &|_: &str| None).ok()?;
    CredentialCleanup::from_config(&cfg).ok()
});

fn event(payload: Payload) -> Event {
    Event {
        namespace: Some("ns".into()),
        webhook_id: "hook".into(),
        payload,
        headers: vec![("x-h".into(), "v".into())],
        received_at: UNIX_EPOCH,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Some(off) = OFF.as_ref() else {
        panic!("the cleanup setting does not build");
    };
    let Ok(kept) = JsonPayload::from_text(text.to_owned(), LIMITS, off) else {
        return;
    };
    let parsed = JsonPayload::from(kept.value().clone());
    let (pretty, redact) = (mode & 1 == 1, mode & 2 == 2);
    let a = format_event(&event(Payload::Json(kept)), pretty, redact);
    let b = format_event(&event(Payload::Json(parsed)), pretty, redact);
    if pretty {
        // Byte for byte, unless the sender repeated a key (printed each time from the text).
        assert!(a == b || repeats_a_key(text), "pretty output differs");
        return;
    }
    for line in [&a, &b] {
        assert_eq!(
            line.iter().position(|&c| c == b'\n'),
            Some(line.len() - 1),
            "one line"
        );
    }
    if a != b {
        assert!(repeats_a_key(text), "standard line differs");
        // Read back, the repeated key keeps its last value in both.
        let (Ok(va), Ok(vb)) = (
            serde_json::from_slice::<Value>(&a),
            serde_json::from_slice::<Value>(&b),
        ) else {
            panic!("a standard line is not JSON");
        };
        assert_eq!(va, vb);
    }
});

/// Whether some object in `text` has the same key twice.
fn repeats_a_key(text: &str) -> bool {
    let mut found = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = Dups(&mut found).deserialize(&mut de);
    found
}

struct Dups<'a>(&'a mut bool);

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Dups(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !keys.insert(k) {
                *self.0 = true;
            }
            map.next_value_seed(Dups(&mut *self.0))?;
        }
        Ok(())
    }
}
