//! `oauth2`: an OAuth 2.0 access token, checked by token introspection (RFC 7662) or verified
//! locally as a JWT.
//!
//! Config keys (defaults): `token_type` (`Bearer`), `introspection_endpoint`, `client_id`,
//! `client_secret`, `required_scope` (`[]`; a list, or one space-separated string),
//! `validate_token` (true), `jwt_secret`, `jwt_algorithms` (`["HS256", "RS256"]`), `audience`,
//! `issuer`, `verify_exp` (true). `null` means no check, as upstream.
//!
//! The sender sends `Authorization: <token_type> <token>`.
//!
//! Modes, chosen once at load:
//! - introspection (`introspection_endpoint` set, `validate_token` true): POST
//!   `token=<t>&token_type_hint=access_token` to the endpoint (HTTP Basic `client_id:client_secret`
//!   when both are set), 5 s in all; `"active": true` passes, anything else is 401. An endpoint
//!   that cannot answer (down, timed out, 5xx or any non-2xx, a reply that is not a JSON object)
//!   is 503 with `Retry-After` (upstream: 401), so the sender retries. Nothing is cached.
//! - JWT (`jwt_secret` set, no endpoint): the token's signature is verified with `jwt_secret`
//!   (an HMAC secret for `HS*`, a PEM public key for `RS*`, `PS*`, `ES*`) under the token's own
//!   `alg`, which must be one of `jwt_algorithms`; `exp` (when present and `verify_exp`), `nbf`,
//!   and `aud` / `iss` (only when configured) are checked, with no leeway.
//! - token presence only (`validate_token` false and no `jwt_secret`), as upstream.
//!
//! `required_scope` is checked in both verifying modes against the `scope` claim or field (a
//! space-separated string or a list).
//!
//! Rejected at load (upstream failed every request instead, or passed every one for `{}`):
//! neither `introspection_endpoint` nor `jwt_secret` with `validate_token` true (so `{}`), an
//! endpoint that breaks the URL rules (`remote`), only one of `client_id` / `client_secret`,
//! bad `jwt_algorithms`, a `jwt_secret` that fits none of them, `required_scope` with nothing to
//! check it against.

use std::sync::Arc;

use http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::config::{Fields, section};
use super::remote::{self, Endpoint, pct};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};
use crate::outbound::{HttpClient, basic_auth};

pub(crate) const KEY: &str = "oauth2";

/// The algorithms the Python gateway allows. ES512 is among them, but this build cannot verify
/// it: naming it rejects the webhook at load.
const ALLOWED_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512",
];
const BLOCKED_ALGORITHMS: &[&str] = &["NONE", "HS1", "MD5"];

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object")? else {
        return Ok(None);
    };
    let fields = fields.with_text_forms();
    let token_type = fields
        .non_blank("token_type")?
        .map_or("Bearer", str::trim)
        .to_owned();
    let validate_token = fields.boolean("validate_token", true)?;
    let required_scope: Arc<[String]> = fields.words("required_scope")?.unwrap_or_default().into();
    let mode = match (
        fields.non_blank("introspection_endpoint")?,
        fields.non_blank("jwt_secret")?,
    ) {
        (Some(url), _) if validate_token => {
            let endpoint = Endpoint::parse(KEY, "introspection_endpoint", url)?;
            let basic = match (
                fields.non_blank("client_id")?,
                fields.non_blank("client_secret")?,
            ) {
                (Some(id), Some(secret)) => Some(
                    basic_auth(id, secret)
                        .ok_or_else(|| fields.error("'client_id' cannot be sent in a header"))?,
                ),
                (None, None) => None,
                _ => {
                    return Err(
                        fields.error("'client_id' and 'client_secret' must be set together")
                    );
                }
            };
            Mode::Introspect(Arc::new(Introspection {
                endpoint,
                basic,
                client: remote::client(ctx, KEY)?,
            }))
        }
        (Some(_), _) => Mode::Presence,
        (None, Some(secret)) => Mode::Jwt(Box::new(JwtMode::new(&fields, secret)?)),
        (None, None) if validate_token => {
            return Err(fields.error(
                "OAuth 2.0 validation not properly configured \
                 (missing introspection_endpoint or jwt_secret)",
            ));
        }
        (None, None) => Mode::Presence,
    };
    if matches!(mode, Mode::Presence) && !required_scope.is_empty() {
        return Err(fields.error(
            "'required_scope' needs token validation (introspection_endpoint or jwt_secret)",
        ));
    }
    Ok(Some(Arc::new(OAuth2 {
        token_type,
        required_scope,
        mode,
    })))
}

struct OAuth2 {
    token_type: String,
    required_scope: Arc<[String]>,
    mode: Mode,
}

enum Mode {
    Introspect(Arc<Introspection>),
    Jwt(Box<JwtMode>),
    /// `validate_token: false` without `jwt_secret`: a token must be present, nothing more.
    Presence,
}

struct Introspection {
    endpoint: Endpoint,
    basic: Option<HeaderValue>,
    client: HttpClient,
}

impl Validator for OAuth2 {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        let token = match self.token(head) {
            Ok(t) => t,
            Err(d) => return Verdict::Deny(d),
        };
        match &self.mode {
            Mode::Presence => Verdict::Pass,
            Mode::Jwt(jwt) => jwt
                .verify(token)
                .and_then(|claims| check_scopes(claims.get("scope"), &self.required_scope))
                .into(),
            Mode::Introspect(intro) => {
                let intro = intro.clone();
                let scopes = self.required_scope.clone();
                let form = format!("token={}&token_type_hint=access_token", pct(token));
                Verdict::Later(Box::pin(async move {
                    let reply = intro
                        .endpoint
                        .post_form(
                            &intro.client,
                            form,
                            intro.basic.as_ref(),
                            "OAuth 2.0 token introspection",
                        )
                        .await?;
                    if reply.get("active") != Some(&Value::Bool(true)) {
                        return Err(Denial::unauthorized("OAuth 2.0 token is not active"));
                    }
                    check_scopes(reply.get("scope"), &scopes)
                }))
            }
        }
    }
}

impl OAuth2 {
    /// The token of `Authorization: <token_type> <token>`.
    fn token<'h>(&self, head: &RequestHead<'h>) -> Result<&'h str, Denial> {
        let header = head
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Denial::unauthorized("Missing Authorization header"))?;
        let bytes = header.as_bytes();
        if bytes.contains(&b'\r') || bytes.contains(&b'\n') {
            return Err(Denial::unauthorized(
                "Invalid Authorization header format (newlines not allowed)",
            ));
        }
        let required =
            || Denial::unauthorized(format!("OAuth 2.0 {} token required", self.token_type));
        let text = header.to_str().map_err(|_| required())?;
        let token = text
            .strip_prefix(self.token_type.as_str())
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(required)?
            .trim();
        if token.is_empty() {
            return Err(Denial::unauthorized("Empty OAuth 2.0 token"));
        }
        Ok(token)
    }
}

/// Every required scope must be in `scope` (a space-separated string or a list of strings).
fn check_scopes(scope: Option<&Value>, required: &[String]) -> Result<(), Denial> {
    if required.is_empty() {
        return Ok(());
    }
    let granted = |want: &str| match scope {
        Some(Value::String(s)) => s.split_whitespace().any(|g| g == want),
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    };
    if required.iter().all(|r| granted(r)) {
        Ok(())
    } else {
        Err(Denial::unauthorized(
            "OAuth 2.0 token missing required scopes",
        ))
    }
}

/// Local JWT verification: one key and one validation per usable algorithm.
struct JwtMode {
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
}

impl JwtMode {
    fn new(fields: &Fields<'_>, secret: &str) -> Result<Self, ValidatorError> {
        let not_a_list = || fields.error("OAuth 2.0 JWT algorithms must be a non-empty list");
        let names = match fields.value("jwt_algorithms") {
            None => vec!["HS256".to_owned(), "RS256".to_owned()],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_str().map(|s| s.trim().to_ascii_uppercase()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(not_a_list)?,
            Some(_) => return Err(not_a_list()),
        };
        let audience = string_or_list(fields, "audience")?;
        let issuer = string_or_list(fields, "issuer")?;
        let verify_exp = fields.boolean("verify_exp", true)?;
        let pem = secret.trim_start().starts_with("-----BEGIN");
        let mut keys = Vec::new();
        for name in &names {
            if BLOCKED_ALGORITHMS.contains(&name.as_str()) {
                return Err(fields.error(format!(
                    "OAuth 2.0 JWT algorithm '{name}' is explicitly blocked for security"
                )));
            }
            if !ALLOWED_ALGORITHMS.contains(&name.as_str()) {
                return Err(fields.error(format!(
                    "OAuth 2.0 JWT algorithm '{name}' is not in the allowed algorithms whitelist"
                )));
            }
            let alg = match name.parse::<Algorithm>() {
                Ok(alg) => alg,
                Err(_) => {
                    return Err(fields.error(format!(
                        "OAuth 2.0 JWT algorithm '{name}' is not supported by this version of cwm"
                    )));
                }
            };
            // An HMAC secret only for HS*, a PEM key only for the others: a public key must
            // never become an HMAC secret (algorithm confusion).
            let key = match (alg, pem) {
                (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, false) => {
                    Some(DecodingKey::from_secret(secret.as_bytes()))
                }
                (
                    Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512,
                    true,
                ) => DecodingKey::from_rsa_pem(secret.trim().as_bytes()).ok(),
                (Algorithm::ES256 | Algorithm::ES384, true) => {
                    DecodingKey::from_ec_pem(secret.trim().as_bytes()).ok()
                }
                _ => None,
            };
            let Some(key) = key else {
                continue;
            };
            let mut v = Validation::new(alg);
            v.leeway = 0;
            v.validate_exp = verify_exp;
            v.validate_nbf = true;
            v.required_spec_claims.clear();
            match &audience {
                Some(aud) => {
                    v.set_audience(aud);
                    v.required_spec_claims.insert("aud".to_owned());
                }
                None => v.validate_aud = false,
            }
            if let Some(iss) = &issuer {
                v.set_issuer(iss);
                v.required_spec_claims.insert("iss".to_owned());
            }
            keys.push((alg, key, v));
        }
        if keys.is_empty() {
            return Err(fields.error(
                "'jwt_secret' cannot verify any of 'jwt_algorithms' (HS* takes a secret, \
                 RS*, PS* and ES* a PEM public key)",
            ));
        }
        Ok(Self { keys })
    }

    /// Verify `token`; its claims when it is good.
    fn verify(&self, token: &str) -> Result<Map<String, Value>, Denial> {
        let invalid =
            |why: &str| Denial::unauthorized(format!("Invalid OAuth 2.0 JWT token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        let (_, key, validation) = self
            .keys
            .iter()
            .find(|(alg, _, _)| *alg == header.alg)
            .ok_or_else(|| invalid("the token's algorithm is not allowed"))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Denial::unauthorized("OAuth 2.0 token expired"),
                ErrorKind::InvalidAudience => {
                    Denial::unauthorized("OAuth 2.0 token audience mismatch")
                }
                ErrorKind::InvalidIssuer => Denial::unauthorized("OAuth 2.0 token issuer mismatch"),
                ErrorKind::InvalidSignature => invalid("signature verification failed"),
                ErrorKind::ImmatureSignature => invalid("the token is not yet valid (nbf)"),
                ErrorKind::MissingRequiredClaim(c) => Denial::unauthorized(format!(
                    "Invalid OAuth 2.0 JWT token: missing the '{c}' claim"
                )),
                ErrorKind::InvalidAlgorithm => invalid("the token's algorithm is not allowed"),
                _ => invalid("malformed token"),
            },
        )?;
        if data.claims.get("iat").is_some_and(|iat| !iat.is_number()) {
            return Err(invalid("the 'iat' claim must be a number"));
        }
        Ok(data.claims)
    }
}

/// `audience` / `issuer`: one string or a list of strings.
fn string_or_list(fields: &Fields<'_>, field: &str) -> Result<Option<Vec<String>>, ValidatorError> {
    let bad = || fields.error(format!("'{field}' must be a string or a list of strings"));
    match fields.value(field) {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, Req, msg};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn build_for(oauth2: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::with_context("o2", json!({ KEY: oauth2 }), build)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn run(v: &dyn Validator, auth: Option<&str>) -> Result<(), Denial> {
        let headers: &[(&str, &str)] = match auth {
            Some(a) => &[("authorization", a)],
            None => &[],
        };
        match v.check(&Req::post(headers).head(), b"") {
            Verdict::Pass => Ok(()),
            Verdict::Deny(d) => Err(d),
            Verdict::Later(_) => panic!("JWT mode never calls out"),
        }
    }

    #[test]
    fn jwt_mode() {
        let v = build_for(json!({
            "jwt_secret": "s3cret", "audience": "hooks", "issuer": "https://issuer.example",
            "required_scope": ["write"]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(v.phase(), Phase::Head);
        let good = json!({"aud": "hooks", "iss": "https://issuer.example", "exp": now() + 600,
                          "scope": "read write", "iat": now()});
        let token = hs256(good.clone(), "s3cret");
        assert_eq!(msg(run(&*v, Some(&format!("Bearer {token}")))), "ok");
        assert_eq!(msg(run(&*v, Some(&format!("Bearer  {token} ")))), "ok");
        assert_eq!(msg(run(&*v, None)), "Missing Authorization header");
        assert_eq!(
            msg(run(&*v, Some(&format!("bearer {token}")))),
            "OAuth 2.0 Bearer token required"
        );
        assert_eq!(msg(run(&*v, Some("Bearer   "))), "Empty OAuth 2.0 token");
        assert_eq!(
            msg(run(
                &*v,
                Some(&format!("Bearer {}", hs256(good.clone(), "other")))
            )),
            "Invalid OAuth 2.0 JWT token: signature verification failed"
        );
        let with = |patch: Value| {
            let mut c = good.clone();
            for (k, val) in patch.as_object().unwrap() {
                if val.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = val.clone();
                }
            }
            format!("Bearer {}", hs256(c, "s3cret"))
        };
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"exp": now() - 10}))))),
            "OAuth 2.0 token expired"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"aud": "else"}))))),
            "OAuth 2.0 token audience mismatch"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"iss": "x"}))))),
            "OAuth 2.0 token issuer mismatch"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"iss": null}))))),
            "Invalid OAuth 2.0 JWT token: missing the 'iss' claim"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"scope": ["read"]}))))),
            "OAuth 2.0 token missing required scopes"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"scope": ["read", "write"]}))))),
            "ok"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"exp": null}))))),
            "ok",
            "exp is optional"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"nbf": now() + 600}))))),
            "Invalid OAuth 2.0 JWT token: the token is not yet valid (nbf)"
        );
        assert_eq!(
            msg(run(&*v, Some(&with(json!({"iat": "yesterday"}))))),
            "Invalid OAuth 2.0 JWT token: the 'iat' claim must be a number"
        );
        assert_eq!(
            msg(run(&*v, Some("Bearer not.a.jwt"))),
            "Invalid OAuth 2.0 JWT token: malformed token"
        );
        // An algorithm outside the list, or with no key (RS256 with an HMAC secret).
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &good,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(
            msg(run(&*v, Some(&format!("Bearer {hs512}")))),
            "Invalid OAuth 2.0 JWT token: the token's algorithm is not allowed"
        );
        // Messages never carry the token.
        let bad = format!("Bearer {}", hs256(good, "other"));
        assert!(!msg(run(&*v, Some(&bad))).contains(&bad[7..20]));

        // verify_exp false accepts an expired token.
        let lax = build_for(json!({"jwt_secret": "k", "verify_exp": false}))
            .unwrap()
            .unwrap();
        let old = hs256(json!({"exp": 1}), "k");
        assert_eq!(msg(run(&*lax, Some(&format!("Bearer {old}")))), "ok");
        // An unconfigured audience is not checked.
        let any_aud = hs256(json!({"aud": "whatever"}), "k");
        assert_eq!(msg(run(&*lax, Some(&format!("Bearer {any_aud}")))), "ok");
    }

    #[test]
    fn token_type_and_presence_mode() {
        let v = build_for(json!({"validate_token": false, "token_type": "Token"}))
            .unwrap()
            .unwrap();
        assert_eq!(msg(run(&*v, Some("Token abc"))), "ok");
        assert_eq!(
            msg(run(&*v, Some("Bearer abc"))),
            "OAuth 2.0 Token token required"
        );
        // validate_token false with an endpoint: presence only, as upstream.
        let v = build_for(json!({"validate_token": "false",
                                 "introspection_endpoint": "https://auth.example.com/i"}))
        .unwrap()
        .unwrap();
        assert_eq!(msg(run(&*v, Some("Bearer abc"))), "ok");
    }

    #[test]
    fn introspection_mode_calls_out() {
        let v = build_for(
            json!({"introspection_endpoint": "http://127.0.0.1:9/introspect",
                                 "client_id": "c", "client_secret": "s"}),
        )
        .unwrap()
        .unwrap();
        let req = Req::post(&[("authorization", "Bearer t")]);
        assert!(matches!(v.check(&req.head(), b""), Verdict::Later(_)));
    }

    #[test]
    fn scopes() {
        let req = ["a".to_owned(), "b".to_owned()];
        assert!(check_scopes(Some(&json!("b a c")), &req).is_ok());
        assert!(check_scopes(Some(&json!(["a", "b"])), &req).is_ok());
        assert!(check_scopes(Some(&json!("a")), &req).is_err());
        assert!(check_scopes(None, &req).is_err());
        assert!(check_scopes(None, &[]).is_ok());
    }

    #[test]
    fn config_rules() {
        assert!(build_for(Value::Null).unwrap().is_none());
        let pem_ec = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETKkt1bgbtME//q/qmbbJsf2q0K8Z\nGZPK9Lyh+e5rGy8s85ypqN7Cz2iU6snVFmDMN9UuVgF26fYs2naWu5PsaA==\n-----END PUBLIC KEY-----\n";
        assert!(
            build_for(json!({"jwt_secret": pem_ec, "jwt_algorithms": ["ES256", "HS256"]}))
                .unwrap()
                .is_some()
        );
        for (bad, why) in [
            (json!({}), "not properly configured"),
            (
                json!({"introspection_endpoint": ""}),
                "not properly configured",
            ),
            (
                json!({"introspection_endpoint": "ftp://x.example/"}),
                "'introspection_endpoint' must start with http",
            ),
            (
                json!({"introspection_endpoint": "http://169.254.169.254/"}),
                "cloud metadata",
            ),
            (
                json!({"introspection_endpoint": "https://u:p@x.example/"}),
                "credentials",
            ),
            (
                json!({"introspection_endpoint": "https://x.example/", "client_id": "c"}),
                "must be set together",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": []}),
                "non-empty list",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": "HS256"}),
                "non-empty list",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": ["none"]}),
                "explicitly blocked",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": ["HS999"]}),
                "whitelist",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": ["ES512"]}),
                "not supported",
            ),
            (
                json!({"jwt_secret": "s", "jwt_algorithms": ["RS256"]}),
                "cannot verify",
            ),
            (
                json!({"jwt_secret": pem_ec, "jwt_algorithms": ["HS256"]}),
                "cannot verify",
            ),
            (
                json!({"validate_token": false, "required_scope": ["a"]}),
                "'required_scope'",
            ),
            (
                json!({"jwt_secret": "s", "required_scope": [1]}),
                "'required_scope'",
            ),
            (json!({"jwt_secret": "s", "audience": 5}), "'audience'"),
            (
                json!({"jwt_secret": "s", "verify_exp": "sometimes"}),
                "'verify_exp'",
            ),
            (json!(["x"]), "must be an object"),
        ] {
            let e = build_for(bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            let text = e.to_string();
            assert!(text.starts_with("'oauth2': "), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
    }
}
