//! Reading a validator's config: the object under its key ([`section`]) and its fields
//! ([`Fields`]), each reader typed, each error a [`ValidatorError`] that names the check and the
//! field. A value is never echoed in an error: a field may hold a secret.

use serde_json::{Map, Value};

use super::validator::{BuildContext, ValidatorError};

/// The config object of check `key`: `None` when the key is absent or `null`; `not_object` is
/// the error for any other value that is not an object.
pub(super) fn section<'a>(
    ctx: &BuildContext<'a>,
    key: &'static str,
    not_object: &'static str,
) -> Result<Option<Fields<'a>>, ValidatorError> {
    match ctx.config.extra.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(obj)) => Ok(Some(Fields::new(key, obj))),
        Some(_) => Err(ValidatorError::new(key, not_object)),
    }
}

/// The fields of check `key`'s config object. `null` counts as absent everywhere.
#[derive(Clone, Copy)]
pub(super) struct Fields<'a> {
    key: &'static str,
    obj: &'a Map<String, Value>,
    /// Booleans and numbers may also be strings (see [`Fields::with_text_forms`]).
    text_forms: bool,
}

impl<'a> Fields<'a> {
    pub(super) fn new(key: &'static str, obj: &'a Map<String, Value>) -> Self {
        Self {
            key,
            obj,
            text_forms: false,
        }
    }

    /// Also read booleans (`"true"`, `"false"`, `"1"`, `"0"`, `"yes"`, `"no"`, `"on"`, `"off"`)
    /// and numbers written as strings: the form `{$VAR}` substitution gives them.
    pub(super) fn with_text_forms(self) -> Self {
        Self {
            text_forms: true,
            ..self
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.obj.is_empty()
    }

    /// An error of this check.
    pub(super) fn error(&self, message: impl Into<String>) -> ValidatorError {
        ValidatorError::new(self.key, message)
    }

    /// The raw value of `field`, for shapes no reader below covers.
    pub(super) fn value(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    /// A string.
    pub(super) fn string(&self, field: &str) -> Result<Option<&'a str>, ValidatorError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(format!("'{field}' must be a string"))),
        }
    }

    /// A string; `""` counts as absent.
    pub(super) fn non_empty(&self, field: &str) -> Result<Option<&'a str>, ValidatorError> {
        Ok(self.string(field)?.filter(|s| !s.is_empty()))
    }

    /// A string; a blank one counts as absent. The value is returned untrimmed.
    pub(super) fn non_blank(&self, field: &str) -> Result<Option<&'a str>, ValidatorError> {
        Ok(self.string(field)?.filter(|s| !s.trim().is_empty()))
    }

    /// A boolean, `default` when absent.
    pub(super) fn boolean(&self, field: &str, default: bool) -> Result<bool, ValidatorError> {
        let bad = || self.error(format!("'{field}' must be true or false"));
        match self.value(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if self.text_forms => {
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(bad()),
                }
            }
            Some(_) => Err(bad()),
        }
    }

    /// A finite number.
    pub(super) fn number(&self, field: &str) -> Result<Option<f64>, ValidatorError> {
        let bad = || self.error(format!("'{field}' must be a number"));
        let n = match self.value(field) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64().ok_or_else(bad)?,
            Some(Value::String(s)) if self.text_forms => {
                s.trim().parse::<f64>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if n.is_finite() {
            Ok(Some(n))
        } else {
            Err(bad())
        }
    }

    /// A non-negative integer.
    pub(super) fn unsigned(&self, field: &str) -> Result<Option<u64>, ValidatorError> {
        let bad = || self.error(format!("'{field}' must be a non-negative integer"));
        match self.value(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if self.text_forms => {
                s.trim().parse::<u64>().map(Some).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
        }
    }

    /// A list of strings, or one string of space-separated items.
    pub(super) fn words(&self, field: &str) -> Result<Option<Vec<String>>, ValidatorError> {
        let bad = || self.error(format!("'{field}' must be a list of strings"));
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_owned).collect())),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::object;
    use serde_json::json;

    #[test]
    fn typed_readers_name_the_check_and_the_field() {
        let m = object(json!({
            "b": "off", "c": true, "n": "2.5", "s": "x", "l": ["a", "b"], "w": "a  b",
            "bad": [1], "nan": "nan", "blank": " ", "empty": "", "u": 7, "neg": -1, "null": null
        }));
        let strict = Fields::new("k", &m);
        let text = strict.with_text_forms();
        assert!(!text.boolean("b", true).unwrap());
        assert!(text.boolean("c", false).unwrap());
        assert!(text.boolean("missing", true).unwrap());
        assert!(text.boolean("null", true).unwrap());
        assert!(text.boolean("s", true).is_err());
        let e = strict.boolean("b", true).unwrap_err();
        assert_eq!(e.to_string(), "'k': 'b' must be true or false");
        assert_eq!(text.number("n").unwrap(), Some(2.5));
        assert!(strict.number("n").is_err());
        assert!(text.number("nan").is_err());
        assert_eq!(strict.unsigned("u").unwrap(), Some(7));
        assert_eq!(
            strict.unsigned("neg").unwrap_err().to_string(),
            "'k': 'neg' must be a non-negative integer"
        );
        assert_eq!(strict.string("s").unwrap(), Some("x"));
        assert_eq!(strict.string("null").unwrap(), None);
        assert_eq!(
            strict.string("l").unwrap_err().to_string(),
            "'k': 'l' must be a string"
        );
        assert_eq!(strict.non_empty("empty").unwrap(), None);
        assert_eq!(strict.non_empty("blank").unwrap(), Some(" "));
        assert_eq!(strict.non_blank("blank").unwrap(), None);
        assert_eq!(strict.words("l").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(strict.words("w").unwrap().unwrap(), ["a", "b"]);
        assert!(strict.words("bad").is_err());
        assert!(strict.value("null").is_none());
    }
}
