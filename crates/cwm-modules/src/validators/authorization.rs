//! `authorization`: a static token, or `Bearer <token>`, that the `Authorization` header must carry.
//!
//! Config: `"authorization": "<string>"`, trimmed; blank (or not a string) means no check, as in
//! the Python gateway. Compared in constant time.

use std::sync::Arc;

use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq,
};

pub(crate) const KEY: &str = "authorization";

/// Longest `Authorization` header looked at.
const MAX_HEADER_CHARS: usize = 8192;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(expected) = ctx
        .config
        .authorization
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let check = match expected.strip_prefix("Bearer ") {
        Some(token) => Expected::Bearer(token.trim_end().as_bytes().into()),
        None => Expected::Exact(expected.as_bytes().into()),
    };
    Ok(Some(Arc::new(Authorization(check))))
}

enum Expected {
    Bearer(Box<[u8]>),
    Exact(Box<[u8]>),
}

struct Authorization(Expected);

impl Validator for Authorization {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        check(&self.0, head.authorization()).into()
    }
}

fn check(expected: &Expected, header: Option<&[u8]>) -> Result<(), Denial> {
    let raw = header.unwrap_or_default();
    if raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Denial::unauthorized(
            "Invalid header format: contains forbidden character",
        ));
    }
    let header = String::from_utf8_lossy(raw);
    // A character is at least one byte: only a header of more bytes than the limit is counted.
    if raw.len() > MAX_HEADER_CHARS {
        let n = header.chars().count();
        if n > MAX_HEADER_CHARS {
            return Err(Denial::unauthorized(format!(
                "Header too long: {n} characters (max: {MAX_HEADER_CHARS})"
            )));
        }
    }
    let header = header.trim();
    match expected {
        Expected::Bearer(token) => {
            let Some(given) = header.strip_prefix("Bearer ") else {
                return Err(Denial::unauthorized(
                    "Invalid Bearer token format: must start with 'Bearer '",
                ));
            };
            if given.starts_with(char::is_whitespace) {
                return Err(Denial::unauthorized(
                    "Invalid Bearer token format: token cannot start with whitespace",
                ));
            }
            if ct_eq(given.trim_end().as_bytes(), token) {
                Ok(())
            } else {
                Err(Denial::unauthorized("Unauthorized"))
            }
        }
        Expected::Exact(value) => {
            if ct_eq(header.as_bytes(), value) {
                Ok(())
            } else {
                Err(Denial::unauthorized("Unauthorized"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::msg;

    fn bearer(t: &str) -> Expected {
        Expected::Bearer(t.as_bytes().into())
    }

    #[test]
    fn bearer_and_exact_tokens() {
        let e = bearer("t0ken");
        assert_eq!(msg(check(&e, Some(b"Bearer t0ken"))), "ok");
        assert_eq!(msg(check(&e, Some(b"  Bearer t0ken  "))), "ok");
        assert_eq!(msg(check(&e, Some(b"Bearer nope"))), "Unauthorized");
        assert_eq!(
            msg(check(&e, None)),
            "Invalid Bearer token format: must start with 'Bearer '"
        );
        assert_eq!(
            msg(check(&e, Some(b"Bearer  t0ken"))),
            "Invalid Bearer token format: token cannot start with whitespace"
        );
        assert_eq!(
            msg(check(&e, Some(b"Bearer t\n0ken"))),
            "Invalid header format: contains forbidden character"
        );
        let long = format!("Bearer {}", "x".repeat(9000));
        assert!(msg(check(&e, Some(long.as_bytes()))).starts_with("Header too long"));
        let exact = Expected::Exact(b"secret".as_slice().into());
        assert_eq!(msg(check(&exact, Some(b"secret"))), "ok");
        assert_eq!(msg(check(&exact, Some(b"Bearer secret"))), "Unauthorized");
    }
}
