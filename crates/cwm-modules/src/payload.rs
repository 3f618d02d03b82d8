//! JSON bodies as sinks receive them: usually the request's own text, checked in one pass that
//! builds nothing, and parsed into a [`Value`] only if a sink asks for one.
//!
//! Building a `serde_json::Value` (an order-preserving map per object, a `String` per key and
//! string) and walking it again for credential cleanup cost more than the rest of a small
//! request. Most bodies have no credential to mask and go to a sink (`log`) that only formats
//! them, so the receiver checks the text instead ([`JsonPayload::from_text`]) and keeps it.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::cleanup::CredentialCleanup;

/// The limits a JSON body is held to (as upstream: depth 50, strings of 1 MiB characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting accepted; the root is depth 0. serde_json stops at 128 levels on its own,
    /// so values above 127 act as 127 (deeper text is refused as malformed).
    pub max_depth: usize,
    /// Longest string value, in characters.
    pub max_string_chars: usize,
}

/// Why a JSON body was refused; `Display` is the client-facing `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The body is not valid JSON.
    #[error("Malformed JSON payload")]
    Malformed,
    /// Nested deeper than allowed: (depth, limit).
    #[error("JSON too deeply nested: {0} levels (max: {1})")]
    TooDeep(usize, usize),
    /// A string longer than allowed: (length in chars, limit).
    #[error("String too long: {0} chars (max: {1})")]
    StringTooLong(usize, usize),
}

/// A JSON document, always valid and within the limits it was checked against.
#[derive(Clone)]
pub struct JsonPayload {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// The checked request text and, once a sink asked, its parsed form.
    Text {
        text: String,
        value: OnceLock<Value>,
    },
    /// A document built in memory (credential cleanup changed it, or a caller made it).
    Value(Value),
}

/// How a sink reads a payload without parsing it twice.
pub(crate) enum JsonRef<'a> {
    Text(&'a str),
    Value(&'a Value),
}

impl JsonPayload {
    /// Check `text` against `limits` in one pass without building it, and keep it. Only when an
    /// object key names a credential (by `cleanup`'s rules) is the document parsed and cleaned.
    pub fn from_text(
        text: String,
        limits: JsonLimits,
        cleanup: &CredentialCleanup,
    ) -> Result<Self, JsonError> {
        let mut check = Check {
            limits,
            cleanup: cleanup.enabled().then_some(cleanup),
            credential_seen: false,
            refused: None,
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        let checked = Level {
            depth: 0,
            check: &mut check,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if checked.is_err() {
            return Err(check.refused.unwrap_or(JsonError::Malformed));
        }
        if !check.credential_seen {
            return Ok(Self {
                repr: Repr::Text {
                    text,
                    value: OnceLock::new(),
                },
            });
        }
        let mut value: Value = serde_json::from_str(&text).map_err(|_| JsonError::Malformed)?;
        cleanup.clean_payload(&mut value);
        Ok(Self::from(value))
    }

    /// The parsed document.
    pub fn value(&self) -> &Value {
        match &self.repr {
            // `text` passed the check in `from_text`, so parsing it succeeds.
            Repr::Text { text, value } => {
                value.get_or_init(|| serde_json::from_str(text).unwrap_or_default())
            }
            Repr::Value(v) => v,
        }
    }

    /// The document as JSON text for a destination: the request's own text when it was kept
    /// (numbers, spacing and key order exactly as sent, so integers beyond 64 bits survive),
    /// otherwise the cleaned document as compact JSON.
    pub fn to_json_bytes(&self) -> Result<Bytes, serde_json::Error> {
        match &self.repr {
            Repr::Text { text, .. } => Ok(Bytes::copy_from_slice(text.as_bytes())),
            Repr::Value(v) => serde_json::to_vec(v).map(Bytes::from),
        }
    }

    pub(crate) fn view(&self) -> JsonRef<'_> {
        match &self.repr {
            Repr::Text { text, .. } => JsonRef::Text(text),
            Repr::Value(v) => JsonRef::Value(v),
        }
    }
}

impl From<Value> for JsonPayload {
    fn from(v: Value) -> Self {
        Self {
            repr: Repr::Value(v),
        }
    }
}

impl PartialEq for JsonPayload {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl fmt::Debug for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Text { text, .. } => f.debug_tuple("JsonPayload").field(text).finish(),
            Repr::Value(v) => f.debug_tuple("JsonPayload").field(v).finish(),
        }
    }
}

/// State of one check pass. A refusal is recorded here: serde's error only says that one occurred.
struct Check<'c> {
    limits: JsonLimits,
    cleanup: Option<&'c CredentialCleanup>,
    credential_seen: bool,
    refused: Option<JsonError>,
}

impl Check<'_> {
    fn refuse<E: de::Error>(&mut self, why: JsonError) -> E {
        let e = E::custom(&why);
        self.refused = Some(why);
        e
    }
}

/// One value at `depth`.
struct Level<'a, 'c> {
    depth: usize,
    check: &'a mut Check<'c>,
}

impl<'c> Level<'_, 'c> {
    fn child(&mut self) -> Level<'_, 'c> {
        Level {
            depth: self.depth + 1,
            check: &mut *self.check,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > self.check.limits.max_depth {
            let max = self.check.limits.max_depth;
            return Err(self.check.refuse(JsonError::TooDeep(self.depth, max)));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let max = self.check.limits.max_string_chars;
        // Byte length bounds the char count, so only long strings are counted.
        if s.len() > max {
            let n = s.chars().count();
            if n > max {
                return Err(self.check.refuse(JsonError::StringTooLong(n, max)));
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(()) = map.next_key_seed(Key(&mut *self.check))? {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
}

/// An object key: only looked at, never copied (escaped keys are unescaped in serde_json's
/// scratch buffer).
struct Key<'a, 'c>(&'a mut Check<'c>);

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        if let Some(cleanup) = self.0.cleanup
            && !self.0.credential_seen
            && cleanup.is_credential(key)
        {
            self.0.credential_seen = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwm_config::WebhookConfig;
    use serde_json::json;

    const LIMITS: JsonLimits = JsonLimits {
        max_depth: 50,
        max_string_chars: 1_048_576,
    };

    fn cleanup(v: Value) -> CredentialCleanup {
        let cfg = WebhookConfig::from_value(v, &|_: &str| None).unwrap();
        CredentialCleanup::from_config(&cfg).unwrap()
    }

    fn nested(n: usize) -> String {
        "[".repeat(n) + &"]".repeat(n)
    }

    #[test]
    fn keeps_text_without_credentials() {
        let c = cleanup(json!({}));
        let text = r#"{ "user": "bob", "list": [1, 2.5, {"n\u0061me": null}], "ok": true }"#;
        let p = JsonPayload::from_text(text.into(), LIMITS, &c).unwrap();
        assert!(matches!(p.view(), JsonRef::Text(t) if t == text));
        assert_eq!(
            p.value(),
            &json!({"user":"bob","list":[1,2.5,{"name":null}],"ok":true})
        );
    }

    #[test]
    fn cleans_when_a_key_is_a_credential() {
        let c = cleanup(json!({}));
        // The escaped key is `password`: keys are judged after unescaping.
        let text = r#"{"user":"bob","n":{"pass\u0077ord":"x"}}"#;
        let p = JsonPayload::from_text(text.into(), LIMITS, &c).unwrap();
        assert!(matches!(p.view(), JsonRef::Value(_)));
        assert_eq!(
            p.value(),
            &json!({"user":"bob","n":{"password":"***REDACTED***"}})
        );
        let off = cleanup(json!({"credential_cleanup":{"enabled":false}}));
        let p = JsonPayload::from_text(text.into(), LIMITS, &off).unwrap();
        assert!(matches!(p.view(), JsonRef::Text(_)));
    }

    #[test]
    fn refusals() {
        let c = cleanup(json!({}));
        let check = |t: &str| JsonPayload::from_text(t.into(), LIMITS, &c).map(|_| ());
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "\u{feff}{}",
            "NaN",
            "[1] x",
            "1e400",
            "{1:2}",
        ] {
            assert_eq!(check(bad), Err(JsonError::Malformed), "{bad:?}");
        }
        assert!(check(&nested(51)).is_ok()); // innermost array is depth 50
        assert_eq!(check(&nested(52)), Err(JsonError::TooDeep(51, 50)));
        assert_eq!(check(&nested(5000)), Err(JsonError::TooDeep(51, 50)));
        let ok = format!("{{\"k\":\"{}\"}}", "é".repeat(LIMITS.max_string_chars));
        assert!(check(&ok).is_ok());
        let long = format!("[\"{}\"]", "a".repeat(LIMITS.max_string_chars + 1));
        assert_eq!(
            check(&long),
            Err(JsonError::StringTooLong(
                LIMITS.max_string_chars + 1,
                1_048_576
            ))
        );
        assert_eq!(
            JsonError::TooDeep(51, 50).to_string(),
            "JSON too deeply nested: 51 levels (max: 50)"
        );
    }

    #[test]
    fn json_bytes_are_the_text_as_sent_or_the_cleaned_document() {
        let c = cleanup(json!({}));
        let text = "{ \"id\": 123456789012345678901234567890, \"f\": 1.50 }";
        let kept = JsonPayload::from_text(text.into(), LIMITS, &c).unwrap();
        assert_eq!(kept.to_json_bytes().unwrap(), text.as_bytes());
        let cleaned = JsonPayload::from_text("{ \"token\": \"t\" }".into(), LIMITS, &c).unwrap();
        assert_eq!(
            cleaned.to_json_bytes().unwrap(),
            &br#"{"token":"***REDACTED***"}"#[..]
        );
    }

    #[test]
    fn value_payloads_compare_by_document() {
        let c = cleanup(json!({}));
        let a = JsonPayload::from_text("[1, {\"a\": 2}]".into(), LIMITS, &c).unwrap();
        assert_eq!(a, JsonPayload::from(json!([1, {"a": 2}])));
    }
}
