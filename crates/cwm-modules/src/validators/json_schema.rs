//! `json_schema`: the raw body must be a JSON document that matches a JSON Schema.
//!
//! Config: `"json_schema": {<JSON Schema>}`, compiled once at load: draft 2020-12 unless the
//! schema's `$schema` names another draft, `format` an annotation only (not asserted), no remote
//! `$ref` (nothing is fetched: a reference outside the schema rejects the webhook at load), local
//! references (`#/$defs/...`, `#/definitions/...`) resolved. A schema that does not compile, or a
//! value that is not an object, rejects the webhook at load. `null` means no check.
//!
//! A body that is not JSON, or does not match, is refused with 400. The message names where the first mismatch is and which keyword failed, never the offending value.

use std::sync::Arc;

use serde_json::Value;

use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "json_schema";

/// Longest instance path quoted in a message (in characters).
const MAX_PATH_CHARS: usize = 120;
/// Longest schema error quoted in a load error (in characters).
const MAX_SCHEMA_ERROR_CHARS: usize = 300;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    match ctx.config.extra.get(KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(schema) => {
            JsonSchema::compile(schema).map(|v| Some(Arc::new(v) as Arc<dyn Validator>))
        }
    }
}

/// The `json_schema` check of one webhook.
struct JsonSchema {
    validator: jsonschema::Validator,
}

impl JsonSchema {
    fn compile(schema: &Value) -> Result<Self, ValidatorError> {
        if !schema.is_object() {
            return Err(ValidatorError::new(
                KEY,
                "Invalid JSON schema configuration: must be an object (a JSON Schema)",
            ));
        }
        let validator = jsonschema::options()
            .offline()
            .should_validate_formats(false)
            .build(schema)
            .map_err(|e| {
                ValidatorError::new(
                    KEY,
                    format!(
                        "Invalid JSON schema configuration: {}",
                        truncate(&e.to_string(), MAX_SCHEMA_ERROR_CHARS)
                    ),
                )
            })?;
        Ok(Self { validator })
    }

    fn verify(&self, body: &[u8]) -> Result<(), Denial> {
        let Ok(document) = serde_json::from_slice::<Value>(body) else {
            return Err(Denial::Invalid("Invalid JSON body".into()));
        };
        self.validator.validate(&document).map_err(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "the document root".to_owned()
            } else {
                format!("'{}'", truncate(&path, MAX_PATH_CHARS))
            };
            Denial::Invalid(
                format!(
                    "JSON schema validation failed at {at} (keyword '{}')",
                    e.kind().keyword()
                )
                .into(),
            )
        })
    }
}

/// `s` cut to at most `max` characters, with `...` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}...", &s[..i]),
    }
}

impl Validator for JsonSchema {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Body
    }

    fn check(&self, _head: &RequestHead<'_>, body: &[u8]) -> Verdict {
        self.verify(body).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support;
    use serde_json::json;

    fn msg(r: Result<(), Denial>) -> String {
        test_support::message(r, 400)
    }

    fn order_schema() -> JsonSchema {
        JsonSchema::compile(&json!({
            "type": "object",
            "required": ["id", "items"],
            "properties": {
                "id": {"type": "integer"},
                "email": {"type": "string", "format": "email"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
            },
            "$defs": {"item": {"type": "object", "required": ["sku"]}},
        }))
        .unwrap()
    }

    #[test]
    fn matching_and_mismatching_bodies() {
        let s = order_schema();
        assert_eq!(
            msg(s.verify(br#"{"id": 1, "items": [{"sku": "a"}]}"#)),
            "ok"
        );
        // `format` is an annotation only, as in the Python gateway.
        assert_eq!(
            msg(s.verify(br#"{"id": 1, "items": [], "email": "not an address"}"#)),
            "ok"
        );
        assert_eq!(
            msg(s.verify(br#"{"items": []}"#)),
            "JSON schema validation failed at the document root (keyword 'required')"
        );
        assert_eq!(
            msg(s.verify(br#"{"id": "secret-value-1", "items": []}"#)),
            "JSON schema validation failed at '/id' (keyword 'type')"
        );
        assert_eq!(
            msg(s.verify(br#"{"id": 1, "items": [{"sku": "a"}, {"name": "b"}]}"#)),
            "JSON schema validation failed at '/items/1' (keyword 'required')"
        );
        for bad in [&b"not json"[..], b"", b"{\"id\": 1", b"\xff"] {
            assert_eq!(msg(s.verify(bad)), "Invalid JSON body");
        }
        let long_key = format!(r#"{{"{}": 1}}"#, "k".repeat(500));
        let strict =
            JsonSchema::compile(&json!({"additionalProperties": {"type": "string"}})).unwrap();
        let m = msg(strict.verify(long_key.as_bytes()));
        assert!(m.ends_with("...' (keyword 'type')"), "{m}");
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn drafts_and_empty_schema() {
        let any = JsonSchema::compile(&json!({})).unwrap();
        assert_eq!(msg(any.verify(b"[1, 2]")), "ok");
        assert_eq!(msg(any.verify(b"nope")), "Invalid JSON body");
        let draft7 = JsonSchema::compile(&json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"n": {"type": "number"}},
            "properties": {"n": {"$ref": "#/definitions/n"}},
        }))
        .unwrap();
        assert_eq!(msg(draft7.verify(br#"{"n": 1.5}"#)), "ok");
        assert_ne!(msg(draft7.verify(br#"{"n": "x"}"#)), "ok");
    }

    #[test]
    fn unusable_schemas_are_rejected_at_load() {
        for schema in [
            json!({"type": "nope"}),
            json!({"type": 5}),
            json!({"required": "id"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!({"$ref": "#/$defs/missing"}),
            json!(true),
            json!(false),
            json!("schema"),
            json!([]),
        ] {
            let e = JsonSchema::compile(&schema)
                .err()
                .unwrap_or_else(|| panic!("{schema} accepted"));
            assert_eq!(e.key, KEY);
            assert!(
                e.message.starts_with("Invalid JSON schema configuration"),
                "{schema}: {e}"
            );
        }
    }
}
