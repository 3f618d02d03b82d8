//! `basic_auth`: HTTP Basic authentication (`Authorization: Basic base64(user:password)`).
//!
//! Config: `"basic_auth": {"username": "...", "password": "..."}`. Both must be non-empty
//! strings, or the webhook is rejected at load (the Python gateway let `{}` pass every request and
//! refused every request when only one was set). `null` means no check. The header is parsed as
//! strictly as the Python gateway does, with its messages; user name and password are both
//! compared, in constant time, and a mismatch of either says only `Invalid credentials`.

use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::config::{Fields, section};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq,
};

pub(crate) const KEY: &str = "basic_auth";

const NOT_CONFIGURED: &str = "Basic auth credentials not configured";

/// Standard base64 with its padding required, as Python's `b64decode`; like it, bits left over
/// in the last character are ignored rather than refused.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'username' and 'password'")?
    else {
        return Ok(None);
    };
    let username = required(&fields, "username")?;
    let password = required(&fields, "password")?;
    Ok(Some(Arc::new(BasicAuth {
        username: username.as_bytes().into(),
        password: password.as_bytes().into(),
    })))
}

/// A non-empty string field of the config: the user name or the password.
fn required<'a>(fields: &Fields<'a>, name: &str) -> Result<&'a str, ValidatorError> {
    fields
        .non_empty(name)?
        .ok_or_else(|| fields.error(format!("{NOT_CONFIGURED}: '{name}' is missing or empty")))
}

struct BasicAuth {
    username: Box<[u8]>,
    password: Box<[u8]>,
}

impl BasicAuth {
    fn judge(&self, header: Option<&[u8]>) -> Result<(), Denial> {
        let (user, password) = credentials(header)?;
        // Both compared, always: the time taken does not say which one was wrong.
        let user_ok = ct_eq(user.as_bytes(), &self.username);
        let password_ok = ct_eq(password.as_bytes(), &self.password);
        if user_ok & password_ok {
            Ok(())
        } else {
            Err(Denial::unauthorized("Invalid credentials"))
        }
    }
}

/// The user name and password an `Authorization: Basic ...` header carries.
fn credentials(header: Option<&[u8]>) -> Result<(String, String), Denial> {
    let Some(header) = header else {
        return Err(Denial::unauthorized("Missing Authorization header"));
    };
    let Some(encoded) = header.strip_prefix(b"Basic ") else {
        return Err(Denial::unauthorized("Basic authentication required"));
    };
    if matches!(encoded.first(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        return Err(Denial::unauthorized("Invalid Basic authentication format"));
    }
    if encoded.is_empty() {
        return Err(Denial::unauthorized(
            "Invalid Basic authentication format: missing credentials",
        ));
    }
    if encoded.last().is_some_and(u8::is_ascii_whitespace) {
        return Err(Denial::unauthorized(
            "Invalid base64 encoding: whitespace not allowed",
        ));
    }
    if !is_base64_shaped(encoded) {
        return Err(Denial::unauthorized("Invalid base64 encoding format"));
    }
    let decoded = BASE64
        .decode(encoded)
        .map_err(|_| Denial::unauthorized("Invalid base64 encoding in Authorization header"))?;
    let text = String::from_utf8(decoded)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect());
    let Some((user, password)) = text.split_once(':') else {
        return Err(Denial::unauthorized("Invalid basic auth format"));
    };
    Ok((user.to_owned(), password.to_owned()))
}

/// `^[A-Za-z0-9+/]*={0,2}$`
fn is_base64_shaped(s: &[u8]) -> bool {
    let body = s.iter().position(|&b| b == b'=').unwrap_or(s.len());
    let (chars, padding) = s.split_at(body);
    chars
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        && padding.len() <= 2
        && padding.iter().all(|&b| b == b'=')
}

impl Validator for BasicAuth {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.judge(head.authorization()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, msg};
    use serde_json::{Value, json};

    fn build_with(value: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::build_with(build, KEY, value)
    }

    fn auth() -> BasicAuth {
        BasicAuth {
            username: b"alice".as_slice().into(),
            password: b"s3cr3t:x".as_slice().into(),
        }
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", BASE64.encode(user_pass))
    }

    #[test]
    fn config_needs_both_credentials() {
        assert!(build_with(Value::Null).unwrap().is_none());
        let v = build_with(json!({"username": "u", "password": "p"}))
            .unwrap()
            .unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        for (bad, why) in [
            (
                json!({}),
                "'basic_auth': Basic auth credentials not configured",
            ),
            (json!({"username": "u"}), "'password' is missing or empty"),
            (
                json!({"username": "", "password": "p"}),
                "'username' is missing or empty",
            ),
            (
                json!({"username": "u", "password": null}),
                "'password' is missing or empty",
            ),
            (
                json!({"username": "u", "password": 12}),
                "'password' must be a string",
            ),
            (json!([]), "must be an object"),
            (json!("u:p"), "must be an object"),
        ] {
            let e = build_with(bad.clone()).err().unwrap().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("12"), "no secret in {e}");
        }
    }

    #[test]
    fn valid_and_invalid_headers() {
        let a = auth();
        let check = |h: &str| msg(a.judge(Some(h.as_bytes())));
        // The password may contain ':'; the split is at the first one.
        assert_eq!(check(&basic("alice:s3cr3t:x")), "ok");
        assert_eq!(check(&basic("alice:wrong")), "Invalid credentials");
        assert_eq!(check(&basic("bob:s3cr3t:x")), "Invalid credentials");
        assert_eq!(check(&basic("alice:")), "Invalid credentials");
        assert_eq!(msg(a.judge(None)), "Missing Authorization header");
        assert_eq!(check("Bearer abc"), "Basic authentication required");
        assert_eq!(
            check(&basic("alice:s3cr3t:x").replace("Basic", "basic")),
            "Basic authentication required"
        );
        assert_eq!(check("Basic  YTpi"), "Invalid Basic authentication format");
        assert_eq!(check("Basic \tYTpi"), "Invalid Basic authentication format");
        assert_eq!(
            check("Basic "),
            "Invalid Basic authentication format: missing credentials"
        );
        assert_eq!(
            check("Basic YTpi "),
            "Invalid base64 encoding: whitespace not allowed"
        );
        assert_eq!(check("Basic YT pi"), "Invalid base64 encoding format");
        assert_eq!(check("Basic YTpi==="), "Invalid base64 encoding format");
        assert_eq!(check("Basic YT=pi"), "Invalid base64 encoding format");
        assert_eq!(check("Basic YTp-"), "Invalid base64 encoding format");
        assert_eq!(
            check("Basic YTp"),
            "Invalid base64 encoding in Authorization header"
        );
        assert_eq!(check(&basic("no colon")), "Invalid basic auth format");
        // Not UTF-8: read as Latin-1, still compared (and refused).
        let latin1 = format!("Basic {}", BASE64.encode(b"al\xefce:s3cr3t:x"));
        assert_eq!(check(&latin1), "Invalid credentials");
    }

    #[test]
    fn latin1_fallback_and_non_ascii_credentials() {
        let a = BasicAuth {
            username: "jos\u{e9}".as_bytes().into(),
            password: b"pw".as_slice().into(),
        };
        let utf8 = format!("Basic {}", BASE64.encode("jos\u{e9}:pw"));
        assert_eq!(msg(a.judge(Some(utf8.as_bytes()))), "ok");
        // The same name in Latin-1 decodes to the same text.
        let latin1 = format!("Basic {}", BASE64.encode(b"jos\xe9:pw"));
        assert_eq!(msg(a.judge(Some(latin1.as_bytes()))), "ok");
    }

    #[test]
    fn base64_shape() {
        for ok in ["", "YQ==", "YWI=", "abc+/09", "=", "=="] {
            assert!(is_base64_shaped(ok.as_bytes()), "{ok}");
        }
        for bad in ["===", "a=b", "a b", "a_b", "ä"] {
            assert!(!is_base64_shaped(bad.as_bytes()), "{bad}");
        }
    }
}
