//! Serde readers for `module-config` values (`#[serde(deserialize_with = ...)]`). `{$VAR}`
//! substitution always yields strings, so booleans and numbers are also accepted in their string
//! form; `null` counts as absent everywhere. Error texts are reasons (`must be a string`): the
//! sink context's reader prefixes the key.

use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::{Map, Value};

/// Python truthiness, as the Python gateway read boolean options: strings are read as booleans
/// when they look like one (`"false"`, `"0"`, `"no"`, `"off"` and `""` are false), so no value is
/// an error.
pub(crate) fn truthy_value(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off" | ""
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A boolean option defaulting to false (`null` included); see [`truthy_value`].
pub(crate) fn truthy_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(truthy_value(&Value::deserialize(d)?))
}

/// A boolean option defaulting to true (`null` included); see [`truthy_value`].
pub(crate) fn truthy_or_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => true,
        v => truthy_value(&v),
    })
}

/// The default of a boolean option that is on unless set (for `#[serde(default = ...)]`).
pub(crate) fn yes() -> bool {
    true
}

/// A string option.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(D::Error::custom("must be a string")),
    }
}

/// A number option, also given as a numeric string.
pub(crate) fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let bad = || D::Error::custom("must be a number");
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or_else(bad),
        Value::String(s) => s.trim().parse::<f64>().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A list of strings.
pub(crate) fn opt_string_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let bad = || D::Error::custom("must be a list of strings");
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(bad()),
    }
}

/// An object option.
pub(crate) fn opt_object<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(D::Error::custom("must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Opts {
        #[serde(default, deserialize_with = "truthy_or_false")]
        off: bool,
        #[serde(default = "yes", deserialize_with = "truthy_or_true")]
        on: bool,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "opt_number")]
        n: Option<f64>,
        #[serde(default, deserialize_with = "opt_string_list")]
        l: Option<Vec<String>>,
        #[serde(default, deserialize_with = "opt_object")]
        o: Option<Map<String, Value>>,
    }

    fn read(v: Value) -> Result<Opts, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_substituted_strings() {
        let o =
            read(json!({"off":"true","on":"False","s":"x","n":"2.5","l":["x"],"o":{}})).unwrap();
        assert!(o.off && !o.on);
        assert_eq!(o.s.as_deref(), Some("x"));
        assert_eq!(o.n, Some(2.5));
        assert_eq!(o.l, Some(vec!["x".to_owned()]));
        assert_eq!(o.o, Some(Map::new()));

        let o = read(json!({"off":1,"on":[],"s":null,"n":null,"l":null,"o":null})).unwrap();
        assert!(o.off && !o.on);
        assert!(o.s.is_none() && o.n.is_none() && o.l.is_none() && o.o.is_none());

        let o = read(json!({"off":null,"on":null})).unwrap();
        assert!(!o.off && o.on);
        let o = read(json!({})).unwrap();
        assert!(!o.off && o.on);
        for (key, text) in ["false", "0", "no", "OFF", " "].map(|t| ("on", t)) {
            assert!(!read(json!({ key: text })).unwrap().on, "{text}");
        }

        assert_eq!(read(json!({"s": 3})).unwrap_err(), "must be a string");
        assert_eq!(read(json!({"n": "soon"})).unwrap_err(), "must be a number");
        assert_eq!(read(json!({"n": true})).unwrap_err(), "must be a number");
        assert_eq!(
            read(json!({"l": "x"})).unwrap_err(),
            "must be a list of strings"
        );
        assert_eq!(
            read(json!({"l": [1]})).unwrap_err(),
            "must be a list of strings"
        );
        assert_eq!(read(json!({"o": []})).unwrap_err(), "must be an object");
    }
}
