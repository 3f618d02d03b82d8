//! What the validators' unit tests share: building a check from a webhook config document,
//! making a request head, and reading a verdict.

use std::sync::Arc;

use cwm_config::WebhookConfig;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value, json};

use super::validator::{BuildContext, Denial, RequestHead, Validator, ValidatorError, Verdict};
use crate::context::ModuleContext;

/// A JSON object's members.
pub(crate) fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Call `f` with the build context of webhook `id` configured as `doc` (`"module": "log"` is
/// added).
pub(crate) fn with_context<T>(id: &str, doc: Value, f: impl FnOnce(&BuildContext<'_>) -> T) -> T {
    let mut doc = object(doc);
    doc.insert("module".into(), json!("log"));
    let config = WebhookConfig::from_value(Value::Object(doc), &|_: &str| None).unwrap();
    let modules = ModuleContext::new();
    f(&BuildContext {
        webhook_id: id,
        config: &config,
        modules: &modules,
    })
}

/// What `build` makes of webhook `hook` configured as `{key: value}`.
pub(crate) fn build_with(
    build: super::validator::Build,
    key: &str,
    value: Value,
) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    with_context("hook", json!({ key: value }), build)
}

/// A header map of `pairs` (repeated names append).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// A request whose [`RequestHead`] a test can borrow (no peer address).
pub(crate) struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

impl Req {
    pub(crate) fn new(
        method: &str,
        path: &str,
        query: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> Self {
        Self {
            method: method.parse().unwrap(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: headers(pairs),
        }
    }

    /// `POST /webhook/hook` with these headers.
    pub(crate) fn post(pairs: &[(&str, &str)]) -> Self {
        Self::new("POST", "/webhook/hook", None, pairs)
    }

    pub(crate) fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            peer: None,
        }
    }
}

/// `"ok"` for a pass, the message of a refusal with HTTP status `status` (401, 403 or 400), any
/// other refusal in its `Debug` form.
pub(crate) fn message(r: Result<(), Denial>, status: u16) -> String {
    match (r, status) {
        (Ok(()), _) => "ok".into(),
        (Err(Denial::Unauthorized(m)), 401)
        | (Err(Denial::Forbidden(m)), 403)
        | (Err(Denial::Invalid(m)), 400) => m.into_owned(),
        (Err(other), _) => format!("{other:?}"),
    }
}

/// [`message`] for a check that answers 401.
pub(crate) fn msg(r: Result<(), Denial>) -> String {
    message(r, 401)
}

/// [`msg`] of a verdict; `"later"` for one that needs I/O.
pub(crate) fn verdict(v: Verdict) -> String {
    match v {
        Verdict::Pass => msg(Ok(())),
        Verdict::Deny(d) => msg(Err(d)),
        Verdict::Later(_) => "later".into(),
    }
}

/// What `v` says of `req` without a body.
pub(crate) fn check(v: &dyn Validator, req: &Req) -> String {
    verdict(v.check(&req.head(), b""))
}
