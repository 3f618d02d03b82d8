//! `query_auth`: an API key the request must carry in a query parameter (`?api_key=...`).
//!
//! Config: `"query_auth": {"api_key": "...", "parameter_name": "api_key", "case_sensitive": false}`
//! (`parameter_name` and `case_sensitive` optional, those are the defaults). `api_key` must be a
//! non-blank string and `parameter_name` 1 to 100 of `A-Za-z0-9_-.`, or the webhook is rejected at
//! load (the Python gateway refused every request instead). `null` means no check.
//!
//! The query is decoded as a form (`+` is a space, `%XX` escapes, UTF-8); a repeated parameter
//! counts with its last value. A value longer than 1000 characters is refused; control characters
//! (C0, DEL and C1) are removed before comparing. Unless `case_sensitive`, both sides are
//! lower-cased. The comparison is constant-time.

use std::borrow::Cow;
use std::sync::Arc;

use percent_encoding::percent_decode;

use super::api_key::ApiKey;
use super::config::section;
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "query_auth";

const DEFAULT_PARAMETER: &str = "api_key";
const MAX_NAME_CHARS: usize = 100;
const MAX_VALUE_CHARS: usize = 1000;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'api_key'")? else {
        return Ok(None);
    };
    let parameter = fields
        .string("parameter_name")
        .map_err(|_| fields.error("Invalid parameter name configuration: must be a string"))?
        .unwrap_or(DEFAULT_PARAMETER);
    check_parameter_name(parameter)?;
    let api_key = ApiKey::from_config(&fields, "Query auth")?;
    Ok(Some(Arc::new(QueryAuth {
        parameter: parameter.into(),
        api_key,
    })))
}

/// `^[a-zA-Z0-9_\-.]+$`, at most 100 characters.
fn check_parameter_name(name: &str) -> Result<(), ValidatorError> {
    let why = if name.is_empty() {
        "parameter_name is empty"
    } else if name.chars().count() > MAX_NAME_CHARS {
        "parameter_name is longer than 100 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        "parameter_name may hold only letters, digits, '_', '-' and '.'"
    } else {
        return Ok(());
    };
    Err(ValidatorError::new(
        KEY,
        format!("Invalid parameter name configuration: {why}"),
    ))
}

struct QueryAuth {
    parameter: Box<str>,
    api_key: ApiKey,
}

impl QueryAuth {
    fn judge(&self, query: Option<&str>) -> Result<(), Denial> {
        let name = &self.parameter;
        let Some(raw) = last_value(query.unwrap_or_default(), name) else {
            return Err(Denial::unauthorized(format!(
                "Missing required query parameter: {name}"
            )));
        };
        let value = form_decode(raw);
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(Denial::unauthorized(format!(
                "Invalid query parameter value for: {name} \
                 (too long or contains invalid characters)"
            )));
        }
        let value: String = value.chars().filter(|c| !is_control(*c)).collect();
        if self.api_key.matches(&value) {
            Ok(())
        } else {
            Err(Denial::unauthorized(format!(
                "Invalid API key in query parameter: {name}"
            )))
        }
    }
}

/// The raw (still encoded) value of the last `name` parameter in `query`; a parameter without
/// `=` has the empty value.
fn last_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .rsplit('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| form_decode(key) == name)
        .map(|(_, value)| value)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then `%XX`, then UTF-8 (bad
/// sequences become U+FFFD).
fn form_decode(s: &str) -> Cow<'_, str> {
    if s.contains('+') {
        let spaced = s.replace('+', " ");
        Cow::Owned(
            percent_decode(spaced.as_bytes())
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_decode(s.as_bytes()).decode_utf8_lossy()
    }
}

/// C0 controls, DEL and C1 controls (U+0000..U+001F, U+007F..U+009F).
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

impl Validator for QueryAuth {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.judge(head.query).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, Req};
    use serde_json::{Value, json};

    fn build_with(value: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::build_with(build, KEY, value)
    }

    fn check(v: &Arc<dyn Validator>, query: Option<&str>) -> String {
        test_support::check(&**v, &Req::new("POST", "/webhook/hook", query, &[]))
    }

    #[test]
    fn config_errors_are_load_errors() {
        assert!(build_with(Value::Null).unwrap().is_none());
        let long = "p".repeat(101);
        for (bad, why) in [
            (json!({}), "Query auth API key not configured"),
            (json!({"api_key": ""}), "Query auth API key not configured"),
            (json!({"api_key": " "}), "Query auth API key not configured"),
            (
                json!({"api_key": 42}),
                "Query auth API key must be a string",
            ),
            (
                json!({"api_key": "k", "parameter_name": "a b"}),
                "Invalid parameter name configuration: parameter_name may hold only",
            ),
            (
                json!({"api_key": "k", "parameter_name": ""}),
                "Invalid parameter name configuration: parameter_name is empty",
            ),
            (
                json!({"api_key": "k", "parameter_name": long}),
                "longer than 100 characters",
            ),
            (
                json!({"api_key": "k", "parameter_name": ["x"]}),
                "Invalid parameter name configuration: must be a string",
            ),
            (
                json!({"api_key": "k", "case_sensitive": 1}),
                "'case_sensitive' must be true or false",
            ),
            (json!(["k"]), "must be an object"),
        ] {
            let e = build_with(bad.clone()).err().unwrap();
            assert_eq!(e.key, KEY);
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(!e.to_string().contains("42"), "no secret in {e}");
        }
        assert!(
            build_with(json!({"api_key": "k", "parameter_name": "my.key-name_2"}))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn default_parameter_case_insensitive() {
        let v = build_with(json!({"api_key": "Key 1+2"})).unwrap().unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        assert_eq!(check(&v, Some("api_key=Key%201%2B2")), "ok");
        assert_eq!(check(&v, Some("x=1&api_key=KEY+1%2b2")), "ok");
        // The last of repeated parameters counts.
        assert_eq!(check(&v, Some("api_key=nope&api_key=key+1%2B2")), "ok");
        assert_eq!(
            check(&v, Some("api_key=key+1%2B2&api_key=nope")),
            "Invalid API key in query parameter: api_key"
        );
        // Control characters are removed before comparing.
        assert_eq!(check(&v, Some("api_key=Key%00%201%2B%7F2%C2%85")), "ok");
        assert_eq!(check(&v, None), "Missing required query parameter: api_key");
        assert_eq!(
            check(&v, Some("apikey=Key")),
            "Missing required query parameter: api_key"
        );
        for blank in ["api_key", "api_key=", "api_key=+%20", "api_key=%01%02"] {
            assert_eq!(
                check(&v, Some(blank)),
                "Invalid API key in query parameter: api_key",
                "{blank}"
            );
        }
        let long = format!("api_key={}", "a".repeat(1001));
        assert_eq!(
            check(&v, Some(&long)),
            "Invalid query parameter value for: api_key (too long or contains invalid characters)"
        );
        // The name is decoded too.
        assert_eq!(check(&v, Some("api%5Fkey=key+1%2B2")), "ok");
    }

    #[test]
    fn custom_parameter_case_sensitive() {
        let v = build_with(json!({
            "api_key": "S3cret", "parameter_name": "token", "case_sensitive": true
        }))
        .unwrap()
        .unwrap();
        assert_eq!(check(&v, Some("token=S3cret")), "ok");
        assert_eq!(
            check(&v, Some("token=s3cret")),
            "Invalid API key in query parameter: token"
        );
        assert_eq!(
            check(&v, Some("api_key=S3cret")),
            "Missing required query parameter: token"
        );
    }
}
