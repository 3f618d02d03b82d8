//! Body decoding for `data_type: json` (pipeline.md 2.2, DECISIONS H4).

use serde_json::Value;

/// Deepest nesting accepted; the root is depth 0.
pub const MAX_DEPTH: usize = 50;
/// Longest string value, in characters.
pub const MAX_STRING_CHARS: usize = 1_048_576;

/// Why a JSON body was refused; `Display` is the client-facing `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("Malformed JSON payload")]
    Malformed,
    #[error("JSON too deeply nested: {0} levels (max: 50)")]
    TooDeep(usize),
    #[error("String too long: {0} chars (max: 1048576)")]
    StringTooLong(usize),
}

/// Parse a body. UTF-8 is expected; a body that is not UTF-8 is read as Latin-1 (as upstream,
/// decoding never fails). A declared non-UTF-8 charset of the Latin-1 family is honoured.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Value, JsonError> {
    let latin1 = content_type.is_some_and(declares_latin1);
    let parsed = if latin1 {
        serde_json::from_str::<Value>(&decode_latin1(body))
    } else {
        match serde_json::from_slice::<Value>(body) {
            Err(e) if std::str::from_utf8(body).is_err() && !e.is_eof() => {
                serde_json::from_str::<Value>(&decode_latin1(body))
            }
            r => r,
        }
    };
    let value = parsed.map_err(|e| {
        // serde_json refuses nesting beyond 128 levels on its own.
        if e.to_string().starts_with("recursion limit exceeded") {
            JsonError::TooDeep(128)
        } else {
            JsonError::Malformed
        }
    })?;
    check(&value, 0)?;
    Ok(value)
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

fn check(v: &Value, depth: usize) -> Result<(), JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError::TooDeep(depth));
    }
    match v {
        Value::String(s) => {
            // Byte length bounds the char count, so only long strings are counted.
            if s.len() > MAX_STRING_CHARS {
                let n = s.chars().count();
                if n > MAX_STRING_CHARS {
                    return Err(JsonError::StringTooLong(n));
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check(i, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|i| check(i, depth + 1)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            parse(nested(52).as_bytes(), None),
            Err(JsonError::TooDeep(51))
        );
        assert!(matches!(
            parse(nested(500).as_bytes(), None),
            Err(JsonError::TooDeep(_))
        ));
    }

    #[test]
    fn string_limit() {
        let ok = format!("\"{}\"", "a".repeat(MAX_STRING_CHARS));
        assert!(parse(ok.as_bytes(), None).is_ok());
        let long = format!("{{\"k\":\"{}\"}}", "a".repeat(MAX_STRING_CHARS + 1));
        assert_eq!(
            parse(long.as_bytes(), None),
            Err(JsonError::StringTooLong(MAX_STRING_CHARS + 1))
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
}
