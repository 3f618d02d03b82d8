//! Reading `module-config` values. `{$VAR}` substitution always yields strings, so booleans and
//! numbers are also accepted in their string form.

use serde_json::{Map, Value};

/// A boolean option. Strings are read as booleans when they look like one; anything else follows
/// Python truthiness, as the upstream did, so no value is an error.
pub(crate) fn truthy(mc: &Map<String, Value>, key: &str, default: bool) -> bool {
    match mc.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off" | ""
        ),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A string option; `null` counts as absent.
pub(crate) fn string<'a>(mc: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match mc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("'module-config.{key}' must be a string")),
    }
}

/// A number option, also given as a numeric string.
pub(crate) fn number(mc: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    let bad = || format!("'module-config.{key}' must be a number");
    match mc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A list of strings; `null` counts as absent.
pub(crate) fn string_list(
    mc: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, String> {
    match mc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("'module-config.{key}' must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("'module-config.{key}' must be a list of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn reads_substituted_strings() {
        let m = mc(json!({"a":"true","b":"False","c":1,"d":"2.5","e":[],"f":["x"],"g":3}));
        assert!(truthy(&m, "a", false));
        assert!(!truthy(&m, "b", true));
        assert!(truthy(&m, "c", false));
        assert!(!truthy(&m, "e", true));
        assert!(truthy(&m, "missing", true));
        assert_eq!(number(&m, "d"), Ok(Some(2.5)));
        assert!(number(&m, "a").is_err());
        assert_eq!(string_list(&m, "f"), Ok(Some(vec!["x".to_owned()])));
        assert!(string_list(&m, "a").is_err());
        assert!(string(&m, "g").is_err());
        assert_eq!(string(&m, "a"), Ok(Some("true")));
    }
}
