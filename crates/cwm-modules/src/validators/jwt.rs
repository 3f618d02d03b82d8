//! `jwt`: a JSON Web Token in `Authorization: Bearer <token>`, signed with the configured key.
//!
//! Config: `"jwt": {"secret": "...", "algorithm": "HS256", "issuer": "...", "audience": "...",
//! "verify_exp": true, "leeway_seconds": 0}`; only `secret` is required (the HMAC secret, or the
//! PEM public key for the RS, PS and ES algorithms). `null` means no check.
//!
//! The configured algorithm is the only one accepted: a token whose header names another one
//! (`none`, or an HS token made with an RS webhook's public key) is refused before its signature
//! is looked at. The key is parsed once at load, and a key that cannot verify anything (not a PEM
//! public key, a private key, an RSA key outside 2048 to 8192 bits, an EC key of another curve)
//! rejects the webhook there. `exp` is required and checked unless `verify_exp` is false; `nbf`
//! is checked; `iat` and `nbf` must be numbers; `issuer` / `audience`, when set, require the
//! claim. Claims are only judged once the signature is good, so a message about a claim tells a
//! sender nothing it could not read in its own token.

use std::borrow::Cow;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use simple_asn1::ASN1Block;

use super::config::{Fields, section};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "jwt";

const DEFAULT_ALGORITHM: &str = "HS256";
/// Longest `Authorization` header looked at.
const MAX_HEADER_BYTES: usize = 16 * 1024;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'secret'")? else {
        return Ok(None);
    };
    Jwt::from_config(&fields).map(|v| Some(Arc::new(v) as Arc<dyn Validator>))
}

/// The algorithms this build verifies, by their JOSE names.
fn algorithm(name: &str) -> Result<Algorithm, ValidatorError> {
    let alg = match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "ES512" => {
            return Err(ValidatorError::new(
                KEY,
                "JWT algorithm validation failed: ES512 is not supported by this version of cwm",
            ));
        }
        other => {
            return Err(ValidatorError::new(
                KEY,
                format!(
                    "JWT algorithm validation failed: '{other}' is not allowed (HS256/384/512, \
                     RS256/384/512, PS256/384/512, ES256/384)"
                ),
            ));
        }
    };
    Ok(alg)
}

/// The `jwt` check of one webhook.
struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl Jwt {
    fn from_config(fields: &Fields<'_>) -> Result<Self, ValidatorError> {
        let secret = fields
            .non_blank("secret")?
            .ok_or_else(|| fields.error("JWT secret is required and cannot be empty"))?;
        let name = fields
            .string("algorithm")?
            .map_or(DEFAULT_ALGORITHM.to_owned(), |a| {
                a.trim().to_ascii_uppercase()
            });
        let alg = algorithm(&name)?;
        let key = decoding_key(alg, &name, secret)?;

        let mut validation = Validation::new(alg);
        validation.leeway = fields.unsigned("leeway_seconds")?.unwrap_or(0);
        validation.validate_nbf = true;
        validation.validate_exp = fields.boolean("verify_exp", true)?;
        validation.required_spec_claims.clear();
        if validation.validate_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        if let Some(issuer) = fields.non_empty("issuer")? {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = fields.non_empty("audience")? {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Self { key, validation })
    }

    fn verify(&self, header: Option<&[u8]>) -> Result<(), Denial> {
        let Some(raw) = header else {
            return Err(Denial::unauthorized("Missing Authorization header"));
        };
        let token = std::str::from_utf8(raw)
            .ok()
            .filter(|_| raw.len() <= MAX_HEADER_BYTES)
            .and_then(|h| h.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Denial::unauthorized("JWT Bearer token required"))?;
        let data = jsonwebtoken::decode::<TimeClaims>(token, &self.key, &self.validation)
            .map_err(|e| Denial::Unauthorized(message(e.kind())))?;
        let numeric = |v: &Option<Value>| v.as_ref().is_none_or(Value::is_number);
        if numeric(&data.claims.iat) && numeric(&data.claims.nbf) {
            Ok(())
        } else {
            Err(Denial::unauthorized("JWT validation failed"))
        }
    }
}

/// The claims checked here beyond what the library checks (it skips an `nbf` it cannot read).
#[derive(Deserialize)]
struct TimeClaims {
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
}

fn message(kind: &ErrorKind) -> Cow<'static, str> {
    match kind {
        ErrorKind::ExpiredSignature => "JWT token expired".into(),
        ErrorKind::InvalidIssuer => "Invalid JWT issuer".into(),
        ErrorKind::InvalidAudience => "Invalid JWT audience".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "Invalid JWT algorithm".into()
        }
        ErrorKind::InvalidSignature => "Invalid JWT signature".into(),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "Invalid JWT token format".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            let claim = match claim.as_str() {
                c @ ("exp" | "iss" | "aud" | "nbf" | "sub") => c,
                _ => "claim",
            };
            format!("JWT missing required claim: {claim}").into()
        }
        _ => "JWT validation failed".into(),
    }
}

/// The verification key, checked now so that a key that can verify nothing fails at load.
fn decoding_key(alg: Algorithm, name: &str, secret: &str) -> Result<DecodingKey, ValidatorError> {
    let family = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Ok(DecodingKey::from_secret(secret.as_bytes()));
        }
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        _ => Family::Rsa,
    };
    let bad = |why: &str| {
        ValidatorError::new(
            KEY,
            format!("'secret' is not a PEM public key usable with {name}: {why}"),
        )
    };
    let pem = pem::parse(secret.trim()).map_err(|_| bad("not PEM"))?;
    if pem.tag().contains("PRIVATE") {
        return Err(bad("it is a private key; configure the public key"));
    }
    let key = match family {
        Family::Rsa => DecodingKey::from_rsa_pem(secret.trim().as_bytes()),
        Family::Ec => DecodingKey::from_ec_pem(secret.trim().as_bytes()),
    }
    .map_err(|_| bad("not a public key of this type"))?;
    let der = simple_asn1::from_der(pem.contents()).map_err(|_| bad("not DER"))?;
    // The key bytes the library verifies with: the PKCS#1 key itself, or the first bit string
    // of a SubjectPublicKeyInfo or certificate (as the library takes it).
    let bits = match pem.tag() {
        "RSA PUBLIC KEY" => Some(pem.contents()),
        _ => first_bit_string(&der),
    }
    .ok_or_else(|| bad("no public key in it"))?;
    match family {
        Family::Rsa => {
            let modulus_bits = match simple_asn1::from_der(bits).as_deref() {
                Ok([ASN1Block::Sequence(_, parts)]) => match parts.as_slice() {
                    [ASN1Block::Integer(_, n), ASN1Block::Integer(_, _e)] => n.bits(),
                    _ => 0,
                },
                _ => 0,
            };
            if !(2048..=8192).contains(&modulus_bits) {
                return Err(bad(&format!(
                    "RSA keys of 2048 to 8192 bits are verified, this one has {modulus_bits}"
                )));
            }
        }
        Family::Ec => {
            // An uncompressed point: 0x04, then x and y of the curve's size.
            let want = if alg == Algorithm::ES256 { 65 } else { 97 };
            if bits.len() != want || bits.first() != Some(&4) {
                return Err(bad("the key is not on the algorithm's curve"));
            }
        }
    }
    Ok(key)
}

enum Family {
    Rsa,
    Ec,
}

fn first_bit_string(blocks: &[ASN1Block]) -> Option<&[u8]> {
    blocks.iter().find_map(|b| match b {
        ASN1Block::Sequence(_, inner) => first_bit_string(inner),
        ASN1Block::BitString(_, _, bytes) => Some(bytes.as_slice()),
        _ => None,
    })
}

impl Validator for Jwt {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.verify(head.authorization()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, object};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    // Test-only keys (tests/fixtures, shared with the black-box tests), used nowhere else.
    const RSA_PRIVATE: &str = include_str!("../../../../tests/fixtures/rsa_test_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../../../tests/fixtures/rsa_test_public.pem");
    /// A self-signed certificate of `RSA_PUBLIC`.
    const RSA_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDBzCCAe+gAwIBAgIUNP7gSXpDs3IciWNj2S+mu2swvDowDQYJKoZIhvcNAQEL\n\
BQAwEzERMA8GA1UEAwwIY3dtLXRlc3QwHhcNMjYxMTMwMDkwMDExWhcNMzYxMTI3\n\
MDkwMDExWjATMREwDwYDVQQDDAhjd20tdGVzdDCCASIwDQYJKoZIhvcNAQEBBQAD\n\
ggEPADCCAQoCggEBALwFRWni5iZ8kJjnfXU258LtIuEHZwe0Ds7AfThU0Oan3oTK\n\
HMiYzAXm73Q1BQ+b4H68fSh06Z6mlepFXxs+WRNgLq0vfI48W6q+WhlnnXk6lL5p\n\
/sxpmCvUS1AWuM3bvjEIsIgDsnAXDEYp5+BrY4zMvYJPOfzOB2NTnupSkxUnAoEd\n\
UxcR6XtuTeR2b/6reJQi2p/+ieGUwsPXjgKJkHUIRqynCtJzGbqPURCEdta7huYF\n\
uBOvRHTDBp2VEE/yyJE0FV6o/EUWgJSFDyTKGHD/0iFY9Gq5+6/bqy4BmoDgD+9V\n\
tiIwTEVeQt2E34dYvqSDYCeJTixUjBy74KQo+R8CAwEAAaNTMFEwHQYDVR0OBBYE\n\
FJ2sHYz14oUajtV8QA+yBFLn4yyjMB8GA1UdIwQYMBaAFJ2sHYz14oUajtV8QA+y\n\
BFLn4yyjMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBAGYM5c2S\n\
XABfHpj5hz5+rxYgV1ZJn2Kmz5vWdKPWFtroMatGzi5Lzfr1NrwDxLPGUKtKF6Wl\n\
SS1CTrYGNGdBQdc2JMdmAAMlh3PpaIsAs/aTf6z+qPxCejVTpjJMyc+nPMtoxxbo\n\
H1ijDmFUITq6PbP8Y85mCnRjd3syK7W2VXeJHQxOn/NyLnD78lF3D7+Tq4A8gf6S\n\
rfNua6/D7dsAO52C//sc3hgyIwxFxSe1FlwUjs+xAVV0P1KS2Zs7H67AVYc0Dgj2\n\
Ik9ahpKINrrJnsS7bDLZC3o4S9qsH1wYYfny0N/Ic9jN0Hp5cgYmiou3K7CzC+P6\n\
W3GSmX5qwk7GkTs=\n\
-----END CERTIFICATE-----\n";
    const RSA1024_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCs7+DOY4kcusKlFf3g073X7FZw\n\
j4a39LQ7SWxKUIcZP2FD7gwMmH4hLzej2olXcQbtLYjW8Ldk6fe8swPVd4L8hWaK\n\
Po16TaHcTMzRwAJxakXtVcTvWW68Iqq5vatL4emCC2sNGxLgqm+Qxw+JaH3tKR4e\n\
EmcvNQASUHIMz9oT8wIDAQAB\n\
-----END PUBLIC KEY-----\n";
    const EC256_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJfW8FtHneBmE5G86\n\
yKJ3XFQMnFIyQNnPu7dH0zDGn/ihRANCAAR0WcPqIshMhht4nbBQafxV9xfzvgNl\n\
Djg9SqxmnDZ/EgrZ8pNbORSnoaj1m3mw1CCl1raZ7y1iHNWSoVANghVb\n\
-----END PRIVATE KEY-----\n";
    const EC256_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdFnD6iLITIYbeJ2wUGn8VfcX874D\n\
ZQ44PUqsZpw2fxIK2fKTWzkUp6Go9Zt5sNQgpda2me8tYhzVkqFQDYIVWw==\n\
-----END PUBLIC KEY-----\n";
    const EC384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEf0h4VjPnMT/ObTebVfusqtsrZn8cBUf/\n\
9KugVKjcMu+O05QsFCnx5VFLCT6c857Dgkf/OnHv5fR7og5Y1N2N8T0MNzjZ3fXy\n\
Hxb87Y913VnDcPHvUwJCZtGA63NdGMJL\n\
-----END PUBLIC KEY-----\n";

    fn hook(config: Value) -> Result<Jwt, ValidatorError> {
        Jwt::from_config(&Fields::new(KEY, &object(config)))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(secret: &str, claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn msg(j: &Jwt, token: &str) -> String {
        test_support::msg(j.verify(Some(format!("Bearer {token}").as_bytes())))
    }

    #[test]
    fn hs256_claims() {
        let j = hook(json!({"secret": "s3cret", "issuer": "me", "audience": "you"})).unwrap();
        let good = json!({"sub": "1", "iss": "me", "aud": "you", "exp": now() + 60, "iat": now()});
        assert_eq!(msg(&j, &hs("s3cret", &good)), "ok");
        assert_eq!(msg(&j, &hs("other", &good)), "Invalid JWT signature");
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            hs("s3cret", &c)
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            hs("s3cret", &c)
        };
        assert_eq!(
            msg(&j, &with("exp", json!(now() - 10))),
            "JWT token expired"
        );
        assert_eq!(msg(&j, &with("iss", json!("them"))), "Invalid JWT issuer");
        assert_eq!(msg(&j, &with("aud", json!("them"))), "Invalid JWT audience");
        assert_eq!(msg(&j, &with("aud", json!(["x", "you"]))), "ok");
        assert_eq!(
            msg(&j, &with("nbf", json!(now() + 60))),
            "JWT validation failed"
        );
        assert_eq!(
            msg(&j, &with("nbf", json!("soon"))),
            "JWT validation failed"
        );
        assert_eq!(msg(&j, &with("iat", json!("now"))), "JWT validation failed");
        assert_eq!(msg(&j, &without("exp")), "JWT missing required claim: exp");
        assert_eq!(msg(&j, &without("iss")), "JWT missing required claim: iss");
        assert_eq!(msg(&j, &without("aud")), "JWT missing required claim: aud");
        assert_eq!(msg(&j, "a.b"), "Invalid JWT token format");
        assert_eq!(msg(&j, "not-a-token"), "Invalid JWT token format");
        assert_eq!(
            j.verify(None),
            Err(Denial::unauthorized("Missing Authorization header"))
        );
        let basic = j.verify(Some(b"Basic dTpw"));
        assert_eq!(
            basic,
            Err(Denial::unauthorized("JWT Bearer token required"))
        );
    }

    #[test]
    fn leeway_and_verify_exp() {
        let late = json!({"exp": now() - 30});
        let strict = hook(json!({"secret": "s"})).unwrap();
        assert_eq!(msg(&strict, &hs("s", &late)), "JWT token expired");
        let lenient = hook(json!({"secret": "s", "leeway_seconds": 120})).unwrap();
        assert_eq!(msg(&lenient, &hs("s", &late)), "ok");
        let no_exp = hook(json!({"secret": "s", "verify_exp": false})).unwrap();
        assert_eq!(msg(&no_exp, &hs("s", &late)), "ok");
        assert_eq!(msg(&no_exp, &hs("s", &json!({"sub": "x"}))), "ok");
        // A token with an `aud` is refused where no audience is configured (as PyJWT does).
        let aud = json!({"exp": now() + 60, "aud": "x"});
        assert_eq!(msg(&strict, &hs("s", &aud)), "Invalid JWT audience");
    }

    #[test]
    fn algorithm_is_pinned() {
        let claims = json!({"exp": now() + 60});
        let rs = hook(json!({"secret": RSA_PUBLIC, "algorithm": "rs256"})).unwrap();
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(msg(&rs, &token), "ok");
        // The same key, another RSA algorithm: refused.
        let rs512 = encode(
            &Header::new(Algorithm::RS512),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(msg(&rs, &rs512), "Invalid JWT algorithm");
        // Algorithm swap: HS256 with the public key as the HMAC secret.
        assert_eq!(msg(&rs, &hs(RSA_PUBLIC, &claims)), "Invalid JWT algorithm");
        // alg none, unsigned.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert_ne!(msg(&rs, &none), "ok");
        let hs_hook = hook(json!({"secret": "s"})).unwrap();
        assert_ne!(msg(&hs_hook, &none), "ok");
        // PS256 with the same RSA key.
        let ps = hook(json!({"secret": RSA_PUBLIC, "algorithm": "PS256"})).unwrap();
        let token = encode(
            &Header::new(Algorithm::PS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(msg(&ps, &token), "ok");
        // The public key may come as a certificate.
        let cert = hook(json!({"secret": RSA_CERT, "algorithm": "RS256"})).unwrap();
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(msg(&cert, &token), "ok");
        // ES256.
        let es = hook(json!({"secret": EC256_PUBLIC, "algorithm": "ES256"})).unwrap();
        let token = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(msg(&es, &token), "ok");
        assert_eq!(msg(&es, &hs("s", &claims)), "Invalid JWT algorithm");
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn unusable_configs_are_rejected_at_load_without_echoing_the_secret() {
        let garbage_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        for (config, why) in [
            (json!({}), "JWT secret is required"),
            (json!({"secret": " "}), "JWT secret is required"),
            (json!({"secret": 123456789}), "'secret' must be a string"),
            (
                json!({"secret": "s", "algorithm": "none"}),
                "'NONE' is not allowed",
            ),
            (
                json!({"secret": "s", "algorithm": "HS1"}),
                "'HS1' is not allowed",
            ),
            (
                json!({"secret": "s", "algorithm": "ES512"}),
                "ES512 is not supported",
            ),
            (
                json!({"secret": "123456789", "algorithm": "RS256"}),
                "not PEM",
            ),
            (
                json!({"secret": garbage_pem, "algorithm": "RS256"}),
                "usable with RS256",
            ),
            (
                json!({"secret": RSA_PRIVATE, "algorithm": "RS256"}),
                "private key",
            ),
            (
                json!({"secret": EC256_PUBLIC, "algorithm": "RS256"}),
                "usable with RS256",
            ),
            (
                json!({"secret": RSA_PUBLIC, "algorithm": "ES256"}),
                "usable with ES256",
            ),
            (
                json!({"secret": RSA1024_PUBLIC, "algorithm": "RS256"}),
                "this one has 1024",
            ),
            (
                json!({"secret": EC384_PUBLIC, "algorithm": "ES256"}),
                "curve",
            ),
            (
                json!({"secret": "s", "leeway_seconds": -1}),
                "'leeway_seconds'",
            ),
            (json!({"secret": "s", "issuer": 5}), "'issuer'"),
        ] {
            let e = hook(config.clone())
                .err()
                .unwrap_or_else(|| panic!("{config} accepted"));
            assert_eq!(e.key, KEY);
            assert!(e.message.contains(why), "{config}: {e}");
            assert!(
                !e.message.contains("123456789") && !e.message.contains("MII"),
                "{e}"
            );
        }
        assert!(hook(json!({"secret": EC384_PUBLIC, "algorithm": "ES384"})).is_ok());
        assert!(hook(json!({"secret": RSA_PUBLIC, "algorithm": "PS512"})).is_ok());
    }
}
