//! Body decoding for `data_type: json` (as the Python gateway decodes it, with its limits): the charset, then one
//! checking pass over the text ([`JsonPayload::from_text`]).

use bytes::Bytes;
use cwm_modules::CredentialCleanup;
pub use cwm_modules::payload::{JsonError, JsonLimits, JsonPayload};

/// Deepest nesting accepted; the root is depth 0.
pub const MAX_DEPTH: usize = 50;
/// Longest string value, in characters.
pub const MAX_STRING_CHARS: usize = 1_048_576;

const LIMITS: JsonLimits = JsonLimits {
    max_depth: MAX_DEPTH,
    max_string_chars: MAX_STRING_CHARS,
};

/// Decode and check a body, masking credentials as `cleanup` says. UTF-8 is expected; a body that
/// is not UTF-8 is read as Latin-1 (as upstream, decoding never fails). A declared non-UTF-8
/// charset of the Latin-1 family is honoured.
pub fn parse(
    body: Bytes,
    content_type: Option<&str>,
    cleanup: &CredentialCleanup,
) -> Result<JsonPayload, JsonError> {
    let text = if content_type.is_some_and(declares_latin1) {
        decode_latin1(&body)
    } else {
        match String::from_utf8(Vec::from(body)) {
            Ok(text) => text,
            Err(e) => decode_latin1(e.as_bytes()),
        }
    };
    JsonPayload::from_text(text, LIMITS, cleanup)
}

fn declares_latin1(ct: &str) -> bool {
    ct.split(';').skip(1).any(|p| {
        let p = p.trim().to_ascii_lowercase();
        matches!(
            p.strip_prefix("charset=").map(|c| c.trim_matches('"')),
            Some("latin-1" | "iso-8859-1" | "latin1" | "cp1252" | "windows-1252")
        )
    })
}

fn decode_latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwm_config::WebhookConfig;
    use serde_json::{Value, json};

    fn parse(body: &[u8], ct: Option<&str>) -> Result<Value, JsonError> {
        let cfg = WebhookConfig::from_value(json!({}), &|_: &str| None).unwrap();
        let cleanup = CredentialCleanup::from_config(&cfg).unwrap();
        super::parse(Bytes::copy_from_slice(body), ct, &cleanup).map(|p| p.value().clone())
    }

    fn nested(n: usize) -> String {
        "[".repeat(n) + &"]".repeat(n)
    }

    #[test]
    fn accepts_any_json_value() {
        assert_eq!(parse(b"1", None).unwrap(), Value::from(1));
        assert_eq!(parse(br#"{"a":[1,{"b":null}]}"#, None).unwrap()["a"][0], 1);
    }

    #[test]
    fn malformed() {
        for b in [&b""[..], b"{", b"{\"a\":}", b"\xEF\xBB\xBF{}", b"NaN"] {
            assert_eq!(parse(b, None), Err(JsonError::Malformed), "{b:?}");
        }
    }

    #[test]
    fn depth_limit() {
        assert!(parse(nested(51).as_bytes(), None).is_ok()); // innermost array is depth 50
        for n in [52, 500] {
            let err = parse(nested(n).as_bytes(), None).unwrap_err();
            assert_eq!(err, JsonError::TooDeep(51, MAX_DEPTH));
            assert_eq!(
                err.to_string(),
                "JSON too deeply nested: 51 levels (max: 50)"
            );
        }
    }

    #[test]
    fn string_limit() {
        let ok = format!("\"{}\"", "a".repeat(MAX_STRING_CHARS));
        assert!(parse(ok.as_bytes(), None).is_ok());
        let long = format!("{{\"k\":\"{}\"}}", "a".repeat(MAX_STRING_CHARS + 1));
        let err = parse(long.as_bytes(), None).unwrap_err();
        assert_eq!(
            err,
            JsonError::StringTooLong(MAX_STRING_CHARS + 1, MAX_STRING_CHARS)
        );
        assert_eq!(
            err.to_string(),
            "String too long: 1048577 chars (max: 1048576)"
        );
    }

    #[test]
    fn latin1_fallback() {
        let v = parse(b"{\"n\":\"caf\xe9\"}", None).unwrap();
        assert_eq!(v["n"], "café");
        let v = parse(
            b"{\"n\":\"caf\xe9\"}",
            Some("application/json; charset=ISO-8859-1"),
        )
        .unwrap();
        assert_eq!(v["n"], "café");
    }

    #[test]
    fn credentials_are_masked() {
        let v = parse(br#"{"user":"u","api_key":"k"}"#, None).unwrap();
        assert_eq!(v, json!({"user":"u","api_key":"***REDACTED***"}));
    }
}
