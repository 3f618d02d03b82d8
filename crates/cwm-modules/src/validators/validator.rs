//! The validator contract and the types every check shares: the request head a check sees,
//! its verdict, the denial kinds, and what a check is built from.

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
    /// The request method.
    pub method: &'a http::Method,
    /// The URL path as sent (percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
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
        /// The answer's message.
        message: Cow<'static, str>,
        /// Seconds until the sender may try again.
        retry_after: u64,
    },
    /// 400: the body breaks the webhook's schema.
    Invalid(Cow<'static, str>),
    /// 503 with `Retry-After`: a check could not be made now (an introspection or verification
    /// server is down); the sender should retry.
    Unavailable(Cow<'static, str>),
}

impl Denial {
    /// A 401 denial.
    pub(crate) fn unauthorized(msg: impl Into<Cow<'static, str>>) -> Self {
        Self::Unauthorized(msg.into())
    }
}

/// A check that needs I/O (token introspection, reCAPTCHA verification).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), Denial>> + Send + 'static>>;

/// The result of a check.
pub enum Verdict {
    /// The request passes this check.
    Pass,
    /// The request is refused.
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
    /// When the check runs: before or after the body is read.
    fn phase(&self) -> Phase;
    /// Judge a request. `body` is empty for [`Phase::Head`] checks, the raw body bytes (whatever
    /// the webhook's `data_type`) for [`Phase::Body`] checks.
    fn check(&self, head: &RequestHead<'_>, body: &[u8]) -> Verdict;
}

/// A validator config that cannot work: the webhook is rejected at load, never served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{key}': {message}")]
pub struct ValidatorError {
    /// The check's config key, e.g. `hmac`.
    pub key: &'static str,
    /// What is wrong with its config.
    pub message: String,
}

impl ValidatorError {
    /// An error about check `key`'s config.
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
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

/// Constant-time equality of two byte strings (lengths may leak, contents do not).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
