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

use super::api_key::ApiKey;
use super::config::section;
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "header_auth";

const DEFAULT_HEADER: &str = "X-API-Key";

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'api_key'")? else {
        return Ok(None);
    };
    let shown = fields
        .string("header_name")
        .map_err(|_| fields.error("Header auth header_name must be a string"))?
        .map_or(DEFAULT_HEADER, str::trim);
    let api_key = ApiKey::from_config(&fields, "Header auth")?;
    let header = HeaderName::from_bytes(shown.as_bytes()).map_err(|_| {
        fields.error(format!(
            "header_name '{shown}' is not a valid HTTP header name"
        ))
    })?;
    Ok(Some(Arc::new(HeaderAuth {
        header,
        shown: shown.into(),
        api_key,
    })))
}

struct HeaderAuth {
    header: HeaderName,
    /// The header name as configured, for messages.
    shown: Box<str>,
    api_key: ApiKey,
}

impl HeaderAuth {
    fn judge(&self, value: Option<&[u8]>) -> Result<(), Denial> {
        let Some(value) = value else {
            return Err(Denial::unauthorized(format!(
                "Missing required header: {}",
                self.shown
            )));
        };
        if self.api_key.matches(&String::from_utf8_lossy(value)) {
            Ok(())
        } else {
            Err(Denial::unauthorized(format!(
                "Invalid API key in header: {}",
                self.shown
            )))
        }
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
    use crate::validators::test_support::{self, Req};
    use serde_json::{Value, json};

    fn build_with(value: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::build_with(build, KEY, value)
    }

    fn check(v: &Arc<dyn Validator>, headers: &[(&str, &str)]) -> String {
        test_support::check(&**v, &Req::post(headers))
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
