//! `recaptcha`: a Google reCAPTCHA v2 or v3 token, verified by the verification service.
//!
//! Config keys (defaults): `secret_key` (required), `version` (`v3`, or `v2`), `token_source`
//! (`header`; any other value means the body), `token_field` (`X-Recaptcha-Token`, the header
//! name), `min_score` (0.5, v3 only). Extensions: `verify_url` (the verification endpoint,
//! Google's by default; for a local proxy or a test server, under the URL rules of `remote`)
//! and `action` (v3: the reply's `action` must equal it).
//!
//! The token: the `token_field` header, or, with the body source, the first non-empty string
//! among `recaptcha_token`, `recaptcha` and `g-recaptcha-response` of a JSON object body (UTF-8,
//! else Latin-1), as upstream (`token_field` is not used for the body). A header token is
//! checked before the body is read; a body token after.
//!
//! Verification: a form POST of `secret` and `response` (and, for v3, `remoteip`: the first
//! `X-Forwarded-For` entry, else `X-Real-IP`, else `Remote-Addr`, sent only when it is an IP
//! address) to the verify URL, 5 s in all. `success` must be true, and for v3 `score` (0 when
//! absent) at least `min_score`. A verification service that cannot answer (down, timed out,
//! non-2xx, a reply that is not a JSON object) is 503 with `Retry-After` (upstream: 401); so is a
//! reply saying the secret is wrong or missing (`invalid-input-secret`, `missing-input-secret`),
//! which is the operator's to fix, not the sender's.
//!
//! Rejected at load: `null` (upstream failed every request with a 500), `{}` or no
//! `secret_key` (upstream passed every request for `{}`), an unknown `version`, a bad
//! `token_field`, `min_score` outside 0..1, a bad `verify_url`, `action` with v2.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;
use serde_json::{Map, Value};

use super::config::section;
use super::remote::{self, Endpoint, pct};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};
use crate::outbound::HttpClient;

pub(crate) const KEY: &str = "recaptcha";

const DEFAULT_VERIFY_URL: &str = "https://www.google.com/recaptcha/api/siteverify";
const DEFAULT_TOKEN_FIELD: &str = "X-Recaptcha-Token";
const MISSING_IN_BODY: &str =
    "Missing reCAPTCHA token (expected in body: recaptcha_token, recaptcha, g-recaptcha-response)";
/// Error codes of the service that mean the configured secret is wrong.
const SECRET_ERRORS: &[&str] = &["invalid-input-secret", "missing-input-secret"];
/// Longest token sent on (Google's are about 2 KB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    if ctx.config.extra.get(KEY) == Some(&Value::Null) {
        return Err(ValidatorError::new(
            KEY,
            "null is not a configuration (an object with 'secret_key' is)",
        ));
    }
    let Some(fields) = section(ctx, KEY, "must be an object")? else {
        return Ok(None);
    };
    let fields = fields.with_text_forms();
    let secret = fields
        .non_empty("secret_key")?
        .ok_or_else(|| fields.error("reCAPTCHA secret key not configured"))?;
    let version = match fields
        .string("version")?
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("v3") => Version::V3,
        Some("v2") => Version::V2,
        Some(_) => return Err(fields.error("'version' must be v2 or v3")),
    };
    let source = match fields.string("token_source")? {
        None | Some("header") => Source::Header,
        Some(_) => Source::Body,
    };
    let field = fields
        .string("token_field")?
        .map_or(DEFAULT_TOKEN_FIELD, str::trim);
    let header = HeaderName::from_bytes(field.as_bytes())
        .map_err(|_| fields.error("'token_field' must be a valid header name"))?;
    let min_score = fields.number("min_score")?.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&min_score) {
        return Err(fields.error("'min_score' must be between 0 and 1"));
    }
    let action = fields.non_blank("action")?.map(str::to_owned);
    if action.is_some() && version == Version::V2 {
        return Err(fields.error("'action' applies to v3 only"));
    }
    let url = fields
        .non_blank("verify_url")?
        .unwrap_or(DEFAULT_VERIFY_URL);
    let endpoint = Endpoint::parse(KEY, "verify_url", url)?;
    let client = remote::client(ctx, KEY)?;
    Ok(Some(Arc::new(Recaptcha {
        source,
        header,
        field: field.to_owned(),
        shared: Arc::new(Shared {
            secret: pct(secret),
            version,
            min_score,
            action,
            endpoint,
            client,
        }),
    })))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Body,
}

struct Recaptcha {
    source: Source,
    header: HeaderName,
    /// `token_field` as configured, for messages.
    field: String,
    shared: Arc<Shared>,
}

/// What the verification future needs.
struct Shared {
    /// Percent-encoded, ready for the form.
    secret: String,
    version: Version,
    min_score: f64,
    action: Option<String>,
    endpoint: Endpoint,
    client: HttpClient,
}

impl Validator for Recaptcha {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        match self.source {
            Source::Header => Phase::Head,
            Source::Body => Phase::Body,
        }
    }

    fn check(&self, head: &RequestHead<'_>, body: &[u8]) -> Verdict {
        let token: Option<Cow<'_, str>> = match self.source {
            Source::Header => head
                .headers
                .get(&self.header)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Cow::Borrowed),
            Source::Body => body_token(body).map(Cow::Owned),
        };
        let Some(token) = token else {
            return Verdict::Deny(match self.source {
                Source::Header => Denial::unauthorized(format!(
                    "Missing reCAPTCHA token (expected in header: {})",
                    self.field
                )),
                Source::Body => Denial::unauthorized(MISSING_IN_BODY),
            });
        };
        if token.len() > MAX_TOKEN_LEN {
            return Verdict::Deny(Denial::unauthorized("Invalid reCAPTCHA token"));
        }
        let mut form = format!("secret={}&response={}", self.shared.secret, pct(&token));
        if self.shared.version == Version::V3
            && let Some(ip) = remote_ip(head)
        {
            form.push_str("&remoteip=");
            form.push_str(&pct(&ip.to_string()));
        }
        let shared = self.shared.clone();
        Verdict::Later(Box::pin(async move {
            let reply = shared
                .endpoint
                .post_form(&shared.client, form, None, "reCAPTCHA verification")
                .await?;
            shared.judge(&reply)
        }))
    }
}

impl Shared {
    /// The verdict of a verification reply.
    fn judge(&self, reply: &Map<String, Value>) -> Result<(), Denial> {
        if reply.get("success") != Some(&Value::Bool(true)) {
            let codes: Vec<&str> = reply
                .get("error-codes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter(|c| is_code(c))
                        .take(8)
                        .collect()
                })
                .unwrap_or_default();
            if codes.iter().any(|c| SECRET_ERRORS.contains(c)) {
                tracing::error!(
                    endpoint = %self.endpoint.label(),
                    codes = ?codes,
                    "recaptcha: the verification service rejects the configured secret_key"
                );
                return Err(Denial::Unavailable(
                    "reCAPTCHA verification unavailable, please retry later".into(),
                ));
            }
            return Err(Denial::unauthorized(if codes.is_empty() {
                "reCAPTCHA verification failed: Verification failed".to_owned()
            } else {
                format!("reCAPTCHA verification failed: {}", codes.join(", "))
            }));
        }
        if self.version == Version::V3 {
            let score = reply.get("score").and_then(Value::as_f64).unwrap_or(0.0);
            if score < self.min_score {
                return Err(Denial::unauthorized(format!(
                    "reCAPTCHA score {score:.2} below threshold {}",
                    self.min_score
                )));
            }
            if let Some(want) = &self.action
                && reply.get("action").and_then(Value::as_str) != Some(want.as_str())
            {
                return Err(Denial::unauthorized("reCAPTCHA action mismatch"));
            }
        }
        Ok(())
    }
}

/// An error code worth echoing: short, lower-case letters, digits and dashes.
fn is_code(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The token fields of a JSON object body; every other member is skipped unparsed.
#[derive(serde::Deserialize)]
struct BodyFields {
    recaptcha_token: Option<Value>,
    recaptcha: Option<Value>,
    #[serde(rename = "g-recaptcha-response")]
    g_recaptcha_response: Option<Value>,
}

/// The token of a JSON object body: the first non-empty string among `recaptcha_token`,
/// `recaptcha` and `g-recaptcha-response`.
fn body_token(body: &[u8]) -> Option<String> {
    let text: Cow<'_, str> = match std::str::from_utf8(body) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => Cow::Owned(body.iter().map(|&b| char::from(b)).collect()),
    };
    let fields: BodyFields = serde_json::from_str(&text).ok()?;
    [
        fields.recaptcha_token,
        fields.recaptcha,
        fields.g_recaptcha_response,
    ]
    .into_iter()
    .find_map(|v| match v {
        Some(Value::String(t)) if !t.is_empty() => Some(t),
        _ => None,
    })
}

/// The client address upstream sent as `remoteip` (unverified headers), when it is an address.
fn remote_ip(head: &RequestHead<'_>) -> Option<IpAddr> {
    let header = |name: &HeaderName| head.headers.get(name).and_then(|v| v.to_str().ok());
    let raw = header(&X_FORWARDED_FOR)
        .and_then(|v| v.split(',').next())
        .or_else(|| header(&X_REAL_IP))
        .or_else(|| header(&REMOTE_ADDR))?;
    raw.trim().parse().ok()
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static REMOTE_ADDR: HeaderName = HeaderName::from_static("remote-addr");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ModuleContext;
    use crate::validators::test_support::{self, Req, msg, object as obj};
    use http::{HeaderMap, HeaderValue};
    use serde_json::json;

    fn build_for(recaptcha: Option<Value>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        let doc = recaptcha.map_or_else(|| json!({}), |r| json!({ KEY: r }));
        test_support::with_context("rc", doc, build)
    }

    fn shared(version: Version, action: Option<&str>) -> Shared {
        Shared {
            secret: "s".into(),
            version,
            min_score: 0.5,
            action: action.map(str::to_owned),
            endpoint: Endpoint::parse(KEY, "verify_url", DEFAULT_VERIFY_URL).unwrap(),
            client: ModuleContext::new().http_client().unwrap(),
        }
    }

    #[test]
    fn replies() {
        let v2 = shared(Version::V2, None);
        assert_eq!(msg(v2.judge(&obj(json!({"success": true})))), "ok");
        assert_eq!(
            msg(v2.judge(&obj(json!({"success": false, "error-codes": ["invalid-input-response", "timeout-or-duplicate"]})))),
            "reCAPTCHA verification failed: invalid-input-response, timeout-or-duplicate"
        );
        assert_eq!(
            msg(v2.judge(&obj(json!({"success": "true"})))),
            "reCAPTCHA verification failed: Verification failed"
        );
        assert_eq!(
            msg(v2.judge(&obj(json!({"success": false, "error-codes": ["<script>"]})))),
            "reCAPTCHA verification failed: Verification failed"
        );
        assert!(matches!(
            v2.judge(&obj(
                json!({"success": false, "error-codes": ["invalid-input-secret"]})
            )),
            Err(Denial::Unavailable(_))
        ));
        let v3 = shared(Version::V3, Some("submit"));
        assert_eq!(
            msg(v3.judge(&obj(
                json!({"success": true, "score": 0.9, "action": "submit"})
            ))),
            "ok"
        );
        assert_eq!(
            msg(v3.judge(&obj(
                json!({"success": true, "score": 0.5, "action": "submit"})
            ))),
            "ok"
        );
        assert_eq!(
            msg(v3.judge(&obj(
                json!({"success": true, "score": 0.1, "action": "submit"})
            ))),
            "reCAPTCHA score 0.10 below threshold 0.5"
        );
        assert_eq!(
            msg(v3.judge(&obj(json!({"success": true, "action": "submit"})))),
            "reCAPTCHA score 0.00 below threshold 0.5"
        );
        assert_eq!(
            msg(v3.judge(&obj(
                json!({"success": true, "score": 0.9, "action": "login"})
            ))),
            "reCAPTCHA action mismatch"
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(body_token(br#"{"recaptcha": "t1"}"#).as_deref(), Some("t1"));
        assert_eq!(
            body_token(br#"{"recaptcha_token": "", "recaptcha": 5, "g-recaptcha-response": "t3"}"#)
                .as_deref(),
            Some("t3")
        );
        assert_eq!(body_token(br#"["recaptcha"]"#), None);
        assert_eq!(body_token(b"recaptcha=t"), None);
        assert_eq!(
            body_token(b"{\"recaptcha\": \"caf\xe9\"}").as_deref(),
            Some("caf\u{e9}")
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static(" 203.0.113.7 , 10.0.0.1"),
        );
        headers.insert("x-real-ip", HeaderValue::from_static("198.51.100.1"));
        let ip = |headers: &HeaderMap| {
            remote_ip(&RequestHead {
                method: &http::Method::POST,
                path: "/",
                query: None,
                headers,
                peer: None,
            })
        };
        assert_eq!(ip(&headers), Some("203.0.113.7".parse().unwrap()));
        headers.remove("x-forwarded-for");
        assert_eq!(ip(&headers), Some("198.51.100.1".parse().unwrap()));
        headers.insert("x-forwarded-for", HeaderValue::from_static("junk"));
        assert_eq!(ip(&headers), None);
    }

    #[test]
    fn missing_tokens_are_refused_before_any_call() {
        let v = build_for(Some(json!({"secret_key": "k", "version": "v2"})))
            .unwrap()
            .unwrap();
        assert_eq!(v.phase(), Phase::Head);
        let req = Req::post(&[]);
        let head = req.head();
        match v.check(&head, b"") {
            Verdict::Deny(d) => assert_eq!(
                msg(Err(d)),
                "Missing reCAPTCHA token (expected in header: X-Recaptcha-Token)"
            ),
            _ => panic!("no token must be refused at once"),
        }
        let b = build_for(Some(json!({"secret_key": "k", "token_source": "body"})))
            .unwrap()
            .unwrap();
        assert_eq!(b.phase(), Phase::Body);
        match b.check(&head, br#"{"other": 1}"#) {
            Verdict::Deny(d) => assert_eq!(
                msg(Err(d)),
                "Missing reCAPTCHA token (expected in body: recaptcha_token, recaptcha, g-recaptcha-response)"
            ),
            _ => panic!("no token must be refused at once"),
        }
        assert!(matches!(
            b.check(&head, br#"{"recaptcha": "t"}"#),
            Verdict::Later(_)
        ));
    }

    #[test]
    fn config_rules() {
        assert!(build_for(None).unwrap().is_none());
        assert!(
            build_for(Some(
                json!({"secret_key": "k", "verify_url": "http://127.0.0.1:8080/v",
                                  "min_score": "0.7", "action": "submit"})
            ))
            .unwrap()
            .is_some()
        );
        for (bad, why) in [
            (Value::Null, "null is not a configuration"),
            (json!({}), "secret key not configured"),
            (json!({"secret_key": ""}), "secret key not configured"),
            (json!("k"), "must be an object"),
            (json!({"secret_key": "k", "version": "v1"}), "'version'"),
            (
                json!({"secret_key": "k", "token_field": "bad header"}),
                "'token_field'",
            ),
            (json!({"secret_key": "k", "min_score": 2}), "'min_score'"),
            (
                json!({"secret_key": "k", "min_score": "high"}),
                "'min_score'",
            ),
            (
                json!({"secret_key": "k", "verify_url": "ftp://x.example/"}),
                "'verify_url'",
            ),
            (
                json!({"secret_key": "k", "verify_url": "http://metadata.google.internal/"}),
                "'verify_url'",
            ),
            (
                json!({"secret_key": "k", "version": "v2", "action": "a"}),
                "'action'",
            ),
        ] {
            let e = build_for(Some(bad.clone()))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            let text = e.to_string();
            assert!(text.starts_with("'recaptcha': "), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
    }
}
