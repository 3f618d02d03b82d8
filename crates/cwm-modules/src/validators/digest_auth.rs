//! `digest_auth`: HTTP Digest authentication (RFC 7616 subset, as the Python gateway: no server
//! challenge, no nonce tracking).
//!
//! Config: `"digest_auth": {"username": "...", "password": "...", "realm": "Webhook API",
//! "algorithm": "MD5", "qop": "auth"}` (`realm`, `algorithm` and `qop` optional, those are the
//! defaults). `username` and `password` must be non-empty strings, `algorithm` `MD5` or `SHA-256`
//! and `qop` `auth` or `""`, or the webhook is rejected at load. `null` means no check.
//!
//! The sender computes `response` from the configured credentials, any `nonce` it likes and the
//! request method and `uri`: `H(H(user:realm:password):nonce:nc:cnonce:auth:H(METHOD:uri))` when
//! `qop` is `auth` and it sends a `cnonce` (`nc` defaults to `00000001`), otherwise
//! `H(H(user:realm:password):nonce:H(METHOD:uri))`. `H` is the configured algorithm (the Python
//! gateway always used MD5). User name and response are compared in constant time, both always,
//! and a mismatch of either says only `Invalid digest auth credentials`.

use std::sync::Arc;

use md5::{Digest, Md5};
use sha2::Sha256;

use super::config::{Fields, section};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq,
};

pub(crate) const KEY: &str = "digest_auth";

const NOT_CONFIGURED: &str = "Digest auth credentials not configured";
const DEFAULT_REALM: &str = "Webhook API";
/// The parameters a header must carry, in the order they are checked.
const REQUIRED: [&str; 5] = ["username", "realm", "nonce", "uri", "response"];
/// Longest piece of the header echoed back in a refusal.
const MAX_ECHO_CHARS: usize = 32;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'username' and 'password'")?
    else {
        return Ok(None);
    };
    let config = Config::from_fields(&fields)?;
    let ha1 = config.algorithm.hex(&[
        config.username.as_bytes(),
        config.realm.as_bytes(),
        config.password.as_bytes(),
    ]);
    Ok(Some(Arc::new(DigestAuth {
        username: config.username.as_bytes().into(),
        realm: config.realm.into(),
        algorithm: config.algorithm,
        qop_auth: config.qop_auth,
        ha1: ha1.into(),
    })))
}

/// The hash a digest is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex of the hash of `parts` joined with `:`.
    fn hex(self, parts: &[&[u8]]) -> String {
        match self {
            Self::Md5 => hex_digest::<Md5>(parts),
            Self::Sha256 => hex_digest::<Sha256>(parts),
        }
    }
}

fn hex_digest<D: Digest>(parts: &[&[u8]]) -> String {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The typed `digest_auth` object.
struct Config<'a> {
    username: &'a str,
    password: &'a str,
    realm: &'a str,
    algorithm: Algorithm,
    /// `qop` is `auth`: a header with a `cnonce` uses the RFC 2617/7616 form.
    qop_auth: bool,
}

impl<'a> Config<'a> {
    fn from_fields(fields: &Fields<'a>) -> Result<Self, ValidatorError> {
        let username = credential(fields, "username")?;
        let password = credential(fields, "password")?;
        let realm = fields.string("realm")?.unwrap_or(DEFAULT_REALM);
        let algorithm = match fields.string("algorithm")? {
            None => Algorithm::Md5,
            Some(name) => Algorithm::parse(name.trim()).ok_or_else(|| {
                fields.error(format!(
                    "algorithm '{name}' is not supported (MD5 or SHA-256)"
                ))
            })?,
        };
        let qop_auth = match fields.string("qop")? {
            None | Some("auth") => true,
            Some("") => false,
            Some(other) => {
                return Err(fields.error(format!(
                    "qop '{other}' is not supported (\"auth\", or \"\" for none)"
                )));
            }
        };
        Ok(Self {
            username,
            password,
            realm,
            algorithm,
            qop_auth,
        })
    }
}

/// A required non-empty string: the user name or the password.
fn credential<'a>(fields: &Fields<'a>, name: &str) -> Result<&'a str, ValidatorError> {
    fields
        .non_empty(name)?
        .ok_or_else(|| fields.error(format!("{NOT_CONFIGURED}: '{name}' is missing or empty")))
}

struct DigestAuth {
    username: Box<[u8]>,
    realm: Box<str>,
    algorithm: Algorithm,
    qop_auth: bool,
    /// `H(username:realm:password)`, lower-case hex.
    ha1: Box<str>,
}

impl DigestAuth {
    fn judge(&self, method: &str, header: Option<&[u8]>) -> Result<(), Denial> {
        let Some(header) = header else {
            return Err(Denial::unauthorized("Missing Authorization header"));
        };
        let header = String::from_utf8_lossy(header);
        let Some(rest) = header.strip_prefix("Digest ") else {
            return Err(Denial::unauthorized("Digest authentication required"));
        };
        let params = Params::parse(rest);
        let mut required = [""; REQUIRED.len()];
        for (slot, name) in required.iter_mut().zip(REQUIRED) {
            *slot = params.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                Denial::unauthorized(format!("Missing required Digest parameter: {name}"))
            })?;
        }
        let [username, realm, nonce, uri, response] = required;
        if realm != &*self.realm {
            return Err(Denial::unauthorized("Invalid digest auth realm"));
        }
        let ha2 = self.algorithm.hex(&[method.as_bytes(), uri.as_bytes()]);
        let cnonce = params.get("cnonce").filter(|c| !c.is_empty());
        let expected = match cnonce {
            Some(cnonce) if self.qop_auth => {
                let nc = params
                    .get("nc")
                    .filter(|n| !n.is_empty())
                    .unwrap_or("00000001");
                self.algorithm.hex(&[
                    self.ha1.as_bytes(),
                    nonce.as_bytes(),
                    nc.as_bytes(),
                    cnonce.as_bytes(),
                    b"auth",
                    ha2.as_bytes(),
                ])
            }
            _ => self
                .algorithm
                .hex(&[self.ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
        };
        // Both compared, always: the answer does not say which one was wrong.
        let user_ok = ct_eq(username.as_bytes(), &self.username);
        let response_ok = ct_eq(
            response.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        );
        if !(user_ok & response_ok) {
            return Err(Denial::unauthorized("Invalid digest auth credentials"));
        }
        if let Some(algorithm) = params.get("algorithm")
            && !algorithm.eq_ignore_ascii_case(self.algorithm.name())
        {
            let shown: String = algorithm.chars().take(MAX_ECHO_CHARS).collect();
            return Err(Denial::unauthorized(format!(
                "Invalid digest auth algorithm: {shown}"
            )));
        }
        Ok(())
    }
}

/// The `key=value` parameters of a Digest header, keys lower-cased, values unquoted; a repeated
/// key keeps its last value.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(mut rest: &str) -> Self {
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            let Some(eq) = rest.find(['=', ',']) else {
                break;
            };
            if rest[eq..].starts_with(',') {
                // A token without a value: skip it.
                rest = &rest[eq..];
                continue;
            }
            let key = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(quoted) = rest.strip_prefix('"') {
                let mut value = String::new();
                let mut escaped = false;
                let mut end = quoted.len();
                for (i, c) in quoted.char_indices() {
                    if escaped {
                        value.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    } else {
                        value.push(c);
                    }
                }
                rest = &quoted[end..];
                value
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let value = rest[..end].trim().to_owned();
                rest = &rest[end..];
                value
            };
            params.push((key, value));
        }
        Self(params)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Validator for DigestAuth {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.judge(head.method.as_str(), head.authorization())
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

    fn judge(v: &Arc<dyn Validator>, method: http::Method, auth: Option<&str>) -> String {
        let headers: &[(&str, &str)] = match auth {
            Some(a) => &[("authorization", a)],
            None => &[],
        };
        let req = Req::new(method.as_str(), "/webhook/hook", None, headers);
        test_support::check(&**v, &req)
    }

    fn md5(s: &str) -> String {
        Algorithm::Md5.hex(&[s.as_bytes()])
    }

    #[test]
    fn rfc_2617_example() {
        // RFC 2617 section 3.5: Mufasa / Circle Of Life.
        let v = build_with(json!({
            "username": "Mufasa", "password": "Circle Of Life", "realm": "testrealm@host.com"
        }))
        .unwrap()
        .unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        let header = r#"Digest username="Mufasa", realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth,
            nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",
            opaque="5ccc069c403ebaf9f0171e9517f40e41""#
            .replace('\n', "");
        assert_eq!(judge(&v, http::Method::GET, Some(&header)), "ok");
        // Upper-case hex is accepted.
        let upper = header.replace(
            "6629fae49393a05397450978507c4ef1",
            "6629FAE49393A05397450978507C4EF1",
        );
        assert_eq!(judge(&v, http::Method::GET, Some(&upper)), "ok");
        // The method is part of the digest.
        assert_eq!(
            judge(&v, http::Method::POST, Some(&header)),
            "Invalid digest auth credentials"
        );
        // Wrong user name: the same message as a wrong response.
        let other_user = header.replace(r#"username="Mufasa""#, r#"username="Simba""#);
        assert_eq!(
            judge(&v, http::Method::GET, Some(&other_user)),
            "Invalid digest auth credentials"
        );
        let realm = header.replace("testrealm@host.com", "elsewhere");
        assert_eq!(
            judge(&v, http::Method::GET, Some(&realm)),
            "Invalid digest auth realm"
        );
        let sha = header.replace("qop=auth,", "algorithm=SHA-256, qop=auth,");
        assert_eq!(
            judge(&v, http::Method::GET, Some(&sha)),
            "Invalid digest auth algorithm: SHA-256"
        );
        let md5_lower = header.replace("qop=auth,", "algorithm=md5, qop=auth,");
        assert_eq!(judge(&v, http::Method::GET, Some(&md5_lower)), "ok");
    }

    #[test]
    fn legacy_form_without_cnonce_and_header_errors() {
        let v = build_with(json!({"username": "u", "password": "p"}))
            .unwrap()
            .unwrap();
        let ha1 = md5("u:Webhook API:p");
        let ha2 = md5("POST:/webhook/hook");
        let response = md5(&format!("{ha1}:n0nce:{ha2}"));
        let header = format!(
            r#"Digest username="u", realm="Webhook API", nonce="n0nce", uri="/webhook/hook", response="{response}""#
        );
        assert_eq!(judge(&v, http::Method::POST, Some(&header)), "ok");
        // With a cnonce the qop form is expected, nc defaulting to 00000001.
        let qop = md5(&format!("{ha1}:n0nce:00000001:c:auth:{ha2}"));
        let with_cnonce = format!(
            r#"Digest username="u", realm="Webhook API", nonce="n0nce", uri="/webhook/hook", cnonce="c", response="{qop}""#
        );
        assert_eq!(judge(&v, http::Method::POST, Some(&with_cnonce)), "ok");
        let legacy_with_cnonce = header.replace("uri=", r#"cnonce="c", uri="#);
        assert_eq!(
            judge(&v, http::Method::POST, Some(&legacy_with_cnonce)),
            "Invalid digest auth credentials"
        );
        assert_eq!(
            judge(&v, http::Method::POST, None),
            "Missing Authorization header"
        );
        assert_eq!(
            judge(&v, http::Method::POST, Some("Basic dTpw")),
            "Digest authentication required"
        );
        for p in REQUIRED {
            let without = header.replace(&format!("{p}="), "x-other=");
            assert_eq!(
                judge(&v, http::Method::POST, Some(&without)),
                format!("Missing required Digest parameter: {p}")
            );
        }
        let empty_nonce = header.replace(r#"nonce="n0nce""#, r#"nonce="""#);
        assert_eq!(
            judge(&v, http::Method::POST, Some(&empty_nonce)),
            "Missing required Digest parameter: nonce"
        );
        // Unquoted values work too.
        let unquoted = format!(
            "Digest username=u, realm=\"Webhook API\", nonce=n0nce, uri=/webhook/hook, response={response}"
        );
        assert_eq!(judge(&v, http::Method::POST, Some(&unquoted)), "ok");
    }

    #[test]
    fn sha256_and_no_qop() {
        let v = build_with(json!({
            "username": "u", "password": "p", "realm": "r", "algorithm": "sha-256", "qop": ""
        }))
        .unwrap()
        .unwrap();
        let h = |s: &str| Algorithm::Sha256.hex(&[s.as_bytes()]);
        let response = h(&format!("{}:n:{}", h("u:r:p"), h("POST:/x")));
        assert_eq!(response.len(), 64);
        let header = format!(
            r#"Digest username="u", realm="r", nonce="n", uri="/x", algorithm=SHA-256, cnonce="c", response="{response}""#
        );
        // qop "": the cnonce is ignored and the short form expected.
        assert_eq!(judge(&v, http::Method::POST, Some(&header)), "ok");
        let md5_claim = header.replace("algorithm=SHA-256", "algorithm=MD5");
        assert_eq!(
            judge(&v, http::Method::POST, Some(&md5_claim)),
            "Invalid digest auth algorithm: MD5"
        );
    }

    #[test]
    fn config_errors_are_load_errors() {
        assert!(build_with(Value::Null).unwrap().is_none());
        for (bad, why) in [
            (
                json!({}),
                "'digest_auth': Digest auth credentials not configured",
            ),
            (json!({"username": "u"}), "'password' is missing or empty"),
            (
                json!({"username": "", "password": "p"}),
                "'username' is missing or empty",
            ),
            (
                json!({"username": "u", "password": 99}),
                "'password' must be a string",
            ),
            (
                json!({"username": "u", "password": "p", "algorithm": "MD5-sess"}),
                "algorithm 'MD5-sess' is not supported",
            ),
            (
                json!({"username": "u", "password": "p", "qop": "auth-int"}),
                "qop 'auth-int' is not supported",
            ),
            (
                json!({"username": "u", "password": "p", "realm": 1}),
                "'realm' must be a string",
            ),
            (json!("u:p"), "must be an object"),
        ] {
            let e = build_with(bad.clone()).err().unwrap();
            assert_eq!(e.key, KEY);
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(!e.to_string().contains("99"), "no secret in {e}");
        }
    }

    #[test]
    fn params_parse_quotes_escapes_and_repeats() {
        let p =
            Params::parse(r#" A="x, y", b=plain ,, flag, c="q\"uo\\te", b=last, d="unterminated"#);
        assert_eq!(p.get("a"), Some("x, y"));
        assert_eq!(p.get("b"), Some("last"));
        assert_eq!(p.get("c"), Some(r#"q"uo\te"#));
        assert_eq!(p.get("d"), Some("unterminated"));
        assert_eq!(p.get("flag"), None);
        assert!(Params::parse("").0.is_empty());
        assert!(Params::parse("novalue").0.is_empty());
    }
}
