//! Request validators: the authentication and admission checks a webhook config names
//! (`authorization`, `hmac`, `jwt`, ...), each built once from its config when the webhook is
//! loaded, never per request.
//!
//! A check runs in one of two phases: [`Phase::Head`] checks need only the request head (address,
//! headers, query) and run before the body is read, so an unauthenticated sender's body is never
//! buffered; [`Phase::Body`] checks need the raw body (`hmac`, `json_schema`, ...) and run after it
//! is read, before it is parsed. Within a phase, checks run in the Python gateway's fixed order
//! ([`VALIDATORS`]); every configured check must pass and the first failure answers.
//!
//! Adding a method is one file in this folder (its typed config, read with the readers of
//! `config.rs`, its [`Validator`] and a `build` function) plus one line in [`VALIDATORS`].

mod api_key;
mod authorization;
mod basic_auth;
mod config;
mod digest_auth;
mod header_auth;
mod hmac;
mod ip_whitelist;
mod json_schema;
mod jwt;
mod oauth1;
mod oauth2;
mod query_auth;
mod rate_limit;
mod recaptcha;
mod remote;
#[cfg(test)]
pub(crate) mod test_support;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use cwm_config::WebhookConfig;
use http::HeaderMap;

use crate::context::ModuleContext;

/// What a validator sees of a request before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a http::Method,
    /// The URL path as sent (percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The TCP peer; `None` when the embedding gave none (address checks then fail closed).
    pub peer: Option<IpAddr>,
}

impl<'a> RequestHead<'a> {
    /// The raw `Authorization` header (the first one).
    pub(crate) fn authorization(&self) -> Option<&'a [u8]> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
    }
}

/// Why a request is refused; each kind has its own HTTP status. Messages never say which part of
/// a credential was wrong, and never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 401: authentication failed.
    Unauthorized(Cow<'static, str>),
    /// 403: the client address is not allowed.
    Forbidden(Cow<'static, str>),
    /// 429 with `Retry-After: retry_after` seconds.
    RateLimited {
        message: Cow<'static, str>,
        retry_after: u64,
    },
    /// 400: the body breaks the webhook's schema.
    Invalid(Cow<'static, str>),
    /// 503 with `Retry-After`: a check could not be made now (an introspection or verification
    /// server is down); the sender should retry.
    Unavailable(Cow<'static, str>),
}

impl Denial {
    pub fn unauthorized(msg: impl Into<Cow<'static, str>>) -> Self {
        Self::Unauthorized(msg.into())
    }
}

/// A check that needs I/O (token introspection, reCAPTCHA verification).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), Denial>> + Send + 'static>>;

/// The result of a check.
pub enum Verdict {
    Pass,
    Deny(Denial),
    /// Await this future for the answer. It owns what it needs (`'static`).
    Later(Pending),
}

impl From<Result<(), Denial>> for Verdict {
    fn from(r: Result<(), Denial>) -> Self {
        match r {
            Ok(()) => Self::Pass,
            Err(d) => Self::Deny(d),
        }
    }
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the body is read.
    Head,
    /// After the body is read, before it is parsed.
    Body,
}

/// One configured check of one webhook.
pub trait Validator: Send + Sync + 'static {
    /// The config key, e.g. `"hmac"`.
    fn name(&self) -> &'static str;
    fn phase(&self) -> Phase;
    /// Judge a request. `body` is empty for [`Phase::Head`] checks, the raw body bytes (whatever
    /// the webhook's `data_type`) for [`Phase::Body`] checks.
    fn check(&self, head: &RequestHead<'_>, body: &[u8]) -> Verdict;
}

/// A validator config that cannot work: the webhook is rejected at load, never served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{key}': {message}")]
pub struct ValidatorError {
    pub key: &'static str,
    pub message: String,
}

impl ValidatorError {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// What a validator is built from, besides its own config value.
pub struct BuildContext<'a> {
    /// The configured webhook id.
    pub webhook_id: &'a str,
    /// The whole webhook config (some checks read a neighbour key, e.g. `trusted_proxies`).
    pub config: &'a WebhookConfig,
    /// Process-wide resources (the outbound HTTP client).
    pub modules: &'a ModuleContext,
}

/// Builds a validator from its config; `Ok(None)` when the config asks for no check.
pub type Build = fn(&BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError>;

/// Every implemented check, in the Python gateway's run order.
pub const VALIDATORS: &[(&str, Build)] = &[
    (rate_limit::KEY, rate_limit::build),
    (recaptcha::KEY, recaptcha::build),
    (basic_auth::KEY, basic_auth::build),
    (digest_auth::KEY, digest_auth::build),
    (jwt::KEY, jwt::build),
    (oauth1::KEY, oauth1::build),
    (oauth2::KEY, oauth2::build),
    (authorization::KEY, authorization::build),
    (hmac::KEY, hmac::build),
    (ip_whitelist::KEY, ip_whitelist::build),
    (json_schema::KEY, json_schema::build),
    (query_auth::KEY, query_auth::build),
    (header_auth::KEY, header_auth::build),
];

/// The checks of one webhook, split by phase, each phase in [`VALIDATORS`] order.
#[derive(Clone, Default)]
pub struct Validators {
    head: Box<[Arc<dyn Validator>]>,
    body: Box<[Arc<dyn Validator>]>,
}

impl Validators {
    /// Build every check `ctx.config` names.
    pub fn build(ctx: &BuildContext<'_>) -> Result<Self, ValidatorError> {
        let (mut head, mut body) = (Vec::new(), Vec::new());
        for (_, build) in VALIDATORS {
            if let Some(v) = build(ctx)? {
                match v.phase() {
                    Phase::Head => head.push(v),
                    Phase::Body => body.push(v),
                }
            }
        }
        Ok(Self {
            head: head.into(),
            body: body.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.body.is_empty()
    }

    /// The checks that run before the body is read.
    pub fn head(&self) -> &[Arc<dyn Validator>] {
        &self.head
    }

    /// The checks that need the body.
    pub fn body(&self) -> &[Arc<dyn Validator>] {
        &self.body
    }

    /// Names of the configured checks, head phase first.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.head.iter().chain(self.body.iter()).map(|v| v.name())
    }

    /// Run `checks` in order; the first failure answers.
    pub async fn run(
        checks: &[Arc<dyn Validator>],
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Result<(), Denial> {
        for v in checks {
            match v.check(head, body) {
                Verdict::Pass => {}
                Verdict::Deny(d) => return Err(d),
                Verdict::Later(f) => f.await?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Constant-time equality of two byte strings (lengths may leak, contents do not).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
