//! `header_auth`: an API key the request must carry in a header.
//!
//! Config: `"header_auth": {"api_key": "...", "header_name": "X-API-Key", "case_sensitive": false}`
//! (`header_name` and `case_sensitive` optional, those are the defaults). `api_key` must be a
//! non-blank string and `header_name` a valid header name, or the webhook is rejected at load (the
//! Python gateway refused every request instead). `null` means no check. Unless `case_sensitive`,
//! both sides are lower-cased before they are compared; the received value is not trimmed. The
//! comparison is constant-time.

use std::sync::Arc;

use http::HeaderName;
use serde_json::{Map, Value};

use super::{BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq};

pub(crate) const KEY: &str = "header_auth";

const DEFAULT_HEADER: &str = "X-API-Key";

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let obj = match ctx.config.extra.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(ValidatorError::new(KEY, "must be an object with 'api_key'"));
        }
    };
    let config = Config::from_object(obj)?;
    let header = HeaderName::from_bytes(config.header_name.as_bytes()).map_err(|_| {
        ValidatorError::new(
            KEY,
            format!(
                "header_name '{}' is not a valid HTTP header name",
                config.header_name
            ),
        )
    })?;
    let api_key = if config.case_sensitive {
        config.api_key.to_owned()
    } else {
        config.api_key.to_lowercase()
    };
    Ok(Some(Arc::new(HeaderAuth {
        header,
        shown: config.header_name.into(),
        api_key: api_key.into_bytes().into(),
        case_sensitive: config.case_sensitive,
    })))
}

/// The typed `header_auth` object.
struct Config<'a> {
    header_name: &'a str,
    api_key: &'a str,
    case_sensitive: bool,
}

impl<'a> Config<'a> {
    fn from_object(obj: &'a Map<String, Value>) -> Result<Self, ValidatorError> {
        let header_name = match obj.get("header_name") {
            None | Some(Value::Null) => DEFAULT_HEADER,
            Some(Value::String(s)) => s.trim(),
            Some(_) => {
                return Err(ValidatorError::new(
                    KEY,
                    "Header auth header_name must be a string",
                ));
            }
        };
        let api_key = match obj.get("api_key") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(ValidatorError::new(
                    KEY,
                    "Header auth API key not configured: 'api_key' is missing or blank",
                ));
            }
            Some(_) => {
                return Err(ValidatorError::new(
                    KEY,
                    "Header auth API key must be a string",
                ));
            }
        };
        let case_sensitive = match obj.get("case_sensitive") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ValidatorError::new(
                    KEY,
                    "'case_sensitive' must be true or false",
                ));
            }
        };
        Ok(Self {
            header_name,
            api_key,
            case_sensitive,
        })
    }
}

struct HeaderAuth {
    header: HeaderName,
    /// The header name as configured, for messages.
    shown: Box<str>,
    /// The key, lower-cased unless `case_sensitive`.
    api_key: Box<[u8]>,
    case_sensitive: bool,
}

impl HeaderAuth {
    fn judge(&self, value: Option<&[u8]>) -> Result<(), Denial> {
        let Some(value) = value else {
            return Err(Denial::unauthorized(format!(
                "Missing required header: {}",
                self.shown
            )));
        };
        let value = String::from_utf8_lossy(value);
        let invalid = || Denial::unauthorized(format!("Invalid API key in header: {}", self.shown));
        if value.trim().is_empty() {
            return Err(invalid());
        }
        let matches = if self.case_sensitive {
            ct_eq(value.as_bytes(), &self.api_key)
        } else {
            ct_eq(value.to_lowercase().as_bytes(), &self.api_key)
        };
        if matches { Ok(()) } else { Err(invalid()) }
    }
}

impl Validator for HeaderAuth {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.judge(head.headers.get(&self.header).map(|v| v.as_bytes()))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ModuleContext;
    use cwm_config::WebhookConfig;
    use serde_json::json;

    fn build_with(value: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        let config =
            WebhookConfig::from_value(json!({"module": "log", KEY: value}), &|_: &str| None)
                .unwrap();
        let modules = ModuleContext::new();
        build(&BuildContext {
            webhook_id: "hook",
            config: &config,
            modules: &modules,
        })
    }

    fn check(v: &Arc<dyn Validator>, headers: &[(&str, &str)]) -> String {
        let mut map = http::HeaderMap::new();
        for (k, val) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                val.parse().unwrap(),
            );
        }
        let head = RequestHead {
            method: &http::Method::POST,
            path: "/webhook/hook",
            query: None,
            headers: &map,
            peer: None,
        };
        match v.check(&head, b"") {
            Verdict::Pass => "ok".into(),
            Verdict::Deny(Denial::Unauthorized(m)) => m.into_owned(),
            Verdict::Deny(other) => format!("{other:?}"),
            Verdict::Later(_) => "later".into(),
        }
    }

    #[test]
    fn config_errors_are_load_errors() {
        assert!(build_with(Value::Null).unwrap().is_none());
        for (bad, why) in [
            (json!({}), "Header auth API key not configured"),
            (json!({"api_key": ""}), "Header auth API key not configured"),
            (
                json!({"api_key": "  "}),
                "Header auth API key not configured",
            ),
            (
                json!({"api_key": 42}),
                "Header auth API key must be a string",
            ),
            (
                json!({"api_key": "k", "header_name": 1}),
                "Header auth header_name must be a string",
            ),
            (
                json!({"api_key": "k", "header_name": ""}),
                "header_name '' is not a valid HTTP header name",
            ),
            (
                json!({"api_key": "k", "header_name": "X Key"}),
                "header_name 'X Key' is not a valid HTTP header name",
            ),
            (
                json!({"api_key": "k", "case_sensitive": "yes"}),
                "'case_sensitive' must be true or false",
            ),
            (json!("k"), "must be an object"),
        ] {
            let e = build_with(bad.clone()).err().unwrap();
            assert_eq!(e.key, KEY);
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(!e.to_string().contains("42"), "no secret in {e}");
        }
    }

    #[test]
    fn default_header_case_insensitive() {
        let v = build_with(json!({"api_key": "S3cret-Key"}))
            .unwrap()
            .unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        assert_eq!(check(&v, &[("x-api-key", "S3cret-Key")]), "ok");
        assert_eq!(check(&v, &[("X-API-KEY", "s3cret-key")]), "ok");
        assert_eq!(check(&v, &[]), "Missing required header: X-API-Key");
        assert_eq!(
            check(&v, &[("x-api-key", "nope")]),
            "Invalid API key in header: X-API-Key"
        );
        assert_eq!(
            check(&v, &[("x-api-key", "")]),
            "Invalid API key in header: X-API-Key"
        );
        // The value is not trimmed (the HTTP parser already drops surrounding spaces; a tab
        // inside stays).
        assert_eq!(
            check(&v, &[("x-api-key", "S3cret-Key\t")]),
            "Invalid API key in header: X-API-Key"
        );
        assert_eq!(
            check(&v, &[("authorization", "S3cret-Key")]),
            "Missing required header: X-API-Key"
        );
    }

    #[test]
    fn custom_header_case_sensitive() {
        let v = build_with(json!({
            "api_key": "S3cret", "header_name": "X-Hook-Token", "case_sensitive": true
        }))
        .unwrap()
        .unwrap();
        assert_eq!(check(&v, &[("x-hook-token", "S3cret")]), "ok");
        assert_eq!(
            check(&v, &[("x-hook-token", "s3cret")]),
            "Invalid API key in header: X-Hook-Token"
        );
        assert_eq!(
            check(&v, &[("x-api-key", "S3cret")]),
            "Missing required header: X-Hook-Token"
        );
    }
}
