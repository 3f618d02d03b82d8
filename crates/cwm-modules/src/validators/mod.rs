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
mod validator;

use std::sync::Arc;

pub use validator::{
    Build, BuildContext, Denial, Pending, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

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

    /// Whether the webhook configures no check.
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
