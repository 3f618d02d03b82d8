//! Black-box tests of the checks that verify a signature or a document: `hmac` (GitHub, Shopify
//! and Stripe formats), `jwt` and `json_schema`, through the real `cwm-receiver` and real HTTP.
//! Signatures and tokens are made here with test secrets and a test-only RSA key pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cwm_tests::{Receiver, Reply, rejection, rejection_reason, unix_now};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sha2::Sha256;

const ADMIN: &str = "adm1n";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SHOPIFY_SECRET: &str = "shpss_0123456789abcdef";
const STRIPE_SECRET: &str = "whsec_test_5ecret";
const JWT_SECRET: &str = "jwt-hs256-test-secret";
const BODY: &str = r#"{"action":"opened","order":{"id":1001,"total":"12.50"}}"#;

// A test-only RSA key pair (tests/fixtures), made for the tests and used nowhere else.
const RSA_PRIVATE: &str = include_str!("../fixtures/rsa_test_private.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/rsa_test_public.pem");

fn webhooks() -> Value {
    json!({
        "github": {"module": "log", "hmac": {
            "secret": "{$GITHUB_SECRET}", "header": "X-Hub-Signature-256"
        }},
        "shopify": {"module": "log", "hmac": {
            "secret": SHOPIFY_SECRET, "header": "X-Shopify-Hmac-SHA256", "format": "base64"
        }},
        "stripe": {"module": "log", "hmac": {"secret": STRIPE_SECRET, "format": "stripe"}},
        // The Python gateway's defaults: header X-HMAC-Signature, bare hex.
        "legacy": {"module": "log", "hmac": {"secret": GITHUB_SECRET, "algorithm": "SHA512"}},
        "jwt_hs": {"module": "log", "jwt": {
            "secret": "{$JWT_SECRET}", "issuer": "issuer.example", "audience": "cwm"
        }},
        "jwt_rs": {"module": "log", "jwt": {"secret": RSA_PUBLIC, "algorithm": "RS256"}},
        "schema": {"module": "log", "json_schema": {
            "type": "object",
            "required": ["action", "order"],
            "properties": {"order": {"$ref": "#/$defs/order"}},
            "$defs": {"order": {"type": "object", "required": ["id"],
                                "properties": {"id": {"type": "integer"}}}}
        }},
        "schema_blob": {"module": "log", "data_type": "blob", "json_schema": {"type": "object"}},
        "combined": {"module": "log", "authorization": "Bearer t0ken", "hmac": {"secret": "both"}},
        "nulls": {"module": "log", "hmac": null, "jwt": null, "json_schema": null},
        // Configs that cannot check anything: rejected at load, never served.
        "bad_hmac": {"module": "log", "hmac": {"header": "X-Hub-Signature-256"}},
        "bad_hmac_blank": {"module": "log", "hmac": {"secret": " "}},
        "bad_hmac_alg": {"module": "log", "hmac": {"secret": "s", "algorithm": "md5"}},
        "bad_jwt": {"module": "log", "jwt": {}},
        "bad_jwt_pem": {"module": "log", "jwt": {
            "secret": "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
            "algorithm": "RS256"
        }},
        "bad_jwt_private": {"module": "log", "jwt": {"secret": RSA_PRIVATE, "algorithm": "RS256"}},
        "bad_jwt_none": {"module": "log", "jwt": {"secret": "s", "algorithm": "none"}},
        "bad_schema": {"module": "log", "json_schema": {"type": "nope"}},
        "bad_schema_remote": {"module": "log", "json_schema": {"$ref": "http://127.0.0.1:9/s.json"}},
    })
}

fn start() -> Receiver {
    Receiver::start(
        &[("webhooks.json", &webhooks().to_string())],
        &[
            ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN),
            ("GITHUB_SECRET", GITHUB_SECRET),
            ("JWT_SECRET", JWT_SECRET),
        ],
    )
}

fn mac(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn post(rx: &Receiver, id: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    rx.post_json(&format!("/webhook/{id}"), headers, body)
}

/// A refusal that names no secret.
fn assert_refused(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    for secret in [
        GITHUB_SECRET,
        SHOPIFY_SECRET,
        STRIPE_SECRET,
        JWT_SECRET,
        "both",
        "t0ken",
    ] {
        assert!(!r.body.contains(secret), "{what}: {}", r.body);
    }
}

#[test]
fn hmac_signatures_github_shopify_stripe() {
    let rx = start();

    // GitHub: X-Hub-Signature-256: sha256=<hex>.
    let github = format!("sha256={}", hex(&mac(GITHUB_SECRET, &[BODY.as_bytes()])));
    let r = post(&rx, "github", &[("X-Hub-Signature-256", &github)], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let wrong = format!("sha256={}", hex(&mac("not the secret", &[BODY.as_bytes()])));
    let r = post(&rx, "github", &[("X-Hub-Signature-256", &wrong)], BODY);
    assert_refused(&r, 401, "github, wrong secret");
    assert_eq!(r.detail(), "Invalid HMAC signature");
    let tampered = BODY.replace("12.50", "0.01");
    let r = post(
        &rx,
        "github",
        &[("X-Hub-Signature-256", &github)],
        &tampered,
    );
    assert_refused(&r, 401, "github, tampered body");
    let r = post(&rx, "github", &[], BODY);
    assert_refused(&r, 401, "github, no signature");
    assert_eq!(r.detail(), "Missing X-Hub-Signature-256 header");
    let r = post(
        &rx,
        "github",
        &[("X-Hub-Signature-256", "sha1=abcdef")],
        BODY,
    );
    assert_refused(&r, 401, "github, another algorithm");

    // The Python gateway's default header and bare hex, here with SHA-512.
    let mut m = Hmac::<sha2::Sha512>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    m.update(BODY.as_bytes());
    let legacy = hex(&m.finalize().into_bytes());
    let r = post(&rx, "legacy", &[("X-HMAC-Signature", &legacy)], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&rx, "legacy", &[("X-HMAC-Signature", &legacy)], "{}");
    assert_refused(&r, 401, "legacy, tampered body");

    // Shopify: base64 in X-Shopify-Hmac-SHA256.
    let shopify = STANDARD.encode(mac(SHOPIFY_SECRET, &[BODY.as_bytes()]));
    let r = post(&rx, "shopify", &[("X-Shopify-Hmac-SHA256", &shopify)], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let wrong = STANDARD.encode(mac("shpss_other", &[BODY.as_bytes()]));
    let r = post(&rx, "shopify", &[("X-Shopify-Hmac-SHA256", &wrong)], BODY);
    assert_refused(&r, 401, "shopify, wrong secret");
    let r = post(
        &rx,
        "shopify",
        &[("X-Shopify-Hmac-SHA256", &shopify)],
        &tampered,
    );
    assert_refused(&r, 401, "shopify, tampered body");
    // The hex of the right MAC is not the base64 of it.
    let as_hex = hex(&mac(SHOPIFY_SECRET, &[BODY.as_bytes()]));
    let r = post(&rx, "shopify", &[("X-Shopify-Hmac-SHA256", &as_hex)], BODY);
    assert_refused(&r, 401, "shopify, hex");

    // Stripe: t=<unix>,v1=<hex> over "<t>.<body>".
    let stripe = |t: u64, secret: &str, body: &str| {
        hex(&mac(
            secret,
            &[t.to_string().as_bytes(), b".", body.as_bytes()],
        ))
    };
    let t = unix_now();
    let header = format!("t={t},v1={}", stripe(t, STRIPE_SECRET, BODY));
    let r = post(&rx, "stripe", &[("Stripe-Signature", &header)], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&rx, "stripe", &[("Stripe-Signature", &header)], &tampered);
    assert_refused(&r, 401, "stripe, tampered body");
    let wrong = format!("t={t},v1={}", stripe(t, "whsec_other", BODY));
    let r = post(&rx, "stripe", &[("Stripe-Signature", &wrong)], BODY);
    assert_refused(&r, 401, "stripe, wrong secret");
    // Several v1 values (a secret being rolled): one matching is enough.
    let several = format!(
        "t={t},v1={},v1={},v0={}",
        stripe(t, "whsec_old", BODY),
        stripe(t, STRIPE_SECRET, BODY),
        stripe(t, "whsec_v0", BODY)
    );
    let r = post(&rx, "stripe", &[("Stripe-Signature", &several)], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let none_match = format!(
        "t={t},v1={},v1={}",
        stripe(t, "whsec_old", BODY),
        stripe(t, "whsec_older", BODY)
    );
    let r = post(&rx, "stripe", &[("Stripe-Signature", &none_match)], BODY);
    assert_refused(&r, 401, "stripe, no v1 matches");
    // A correctly signed but old event (a replay) is refused: an hour against 300 s tolerance.
    let old = t - 3600;
    let replay = format!("t={old},v1={}", stripe(old, STRIPE_SECRET, BODY));
    let r = post(&rx, "stripe", &[("Stripe-Signature", &replay)], BODY);
    assert_refused(&r, 401, "stripe, too old");
    assert_eq!(
        r.detail(),
        "HMAC signature timestamp is outside the allowed tolerance"
    );
    // Moving t forward without re-signing breaks the signature.
    let moved = format!("t={},v1={}", old + 3600, stripe(old, STRIPE_SECRET, BODY));
    let r = post(&rx, "stripe", &[("Stripe-Signature", &moved)], BODY);
    assert_refused(&r, 401, "stripe, t moved");
    let r = post(&rx, "stripe", &[("Stripe-Signature", "v1=abc")], BODY);
    assert_refused(&r, 401, "stripe, no timestamp");
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn jwt_tokens() {
    let rx = start();
    let exp = unix_now() + 600;
    let good = json!({"sub": "sender", "iss": "issuer.example", "aud": "cwm", "exp": exp});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let send = |id: &str, token: &str| post(&rx, id, &[("authorization", &bearer(token))], BODY);

    let r = send("jwt_hs", &hs256(&good));
    assert_eq!(r.status, 200, "{}", r.body);
    for (claims, what, message) in [
        (
            with("exp", json!(unix_now() - 600)),
            "expired",
            "JWT token expired",
        ),
        (
            with("iss", json!("someone.else")),
            "wrong issuer",
            "Invalid JWT issuer",
        ),
        (
            with("aud", json!("other")),
            "wrong audience",
            "Invalid JWT audience",
        ),
    ] {
        let r = send("jwt_hs", &hs256(&claims));
        assert_refused(&r, 401, what);
        assert_eq!(r.detail(), message, "{what}");
    }
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let r = send("jwt_hs", &hs256(&no_exp));
    assert_refused(&r, 401, "no exp");
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let r = send("jwt_hs", &other_key);
    assert_refused(&r, 401, "wrong secret");
    assert_eq!(r.detail(), "Invalid JWT signature");
    let r = post(&rx, "jwt_hs", &[], BODY);
    assert_refused(&r, 401, "no token");

    // alg none: an unsigned token is never accepted.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    assert_refused(&send("jwt_hs", &unsigned), 401, "alg none (HS)");
    assert_refused(&send("jwt_rs", &unsigned), 401, "alg none (RS)");

    // RS256 with the key pair; the public key configured.
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "sender", "exp": exp}),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let r = send("jwt_rs", &rs);
    assert_eq!(r.status, 200, "{}", r.body);
    // Algorithm swap: an HS256 token whose HMAC key is the (public) RSA key.
    let swapped = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "attacker", "exp": exp}),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    let r = send("jwt_rs", &swapped);
    assert_refused(&r, 401, "algorithm swap");
    assert_eq!(r.detail(), "Invalid JWT algorithm");
}

#[test]
fn json_schema_bodies() {
    let rx = start();
    let r = post(&rx, "schema", &[], BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &rx,
        "schema",
        &[],
        r#"{"action":"opened","order":{"id":"one-thousand-and-one"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.detail(),
        "JSON schema validation failed at '/order/id' (keyword 'type')"
    );
    assert!(!r.body.contains("one-thousand-and-one"), "{}", r.body);
    let r = post(&rx, "schema", &[], r#"{"order":{"id":1}}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(&rx, "schema", &[], "action=opened");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.detail(), "Invalid JSON body");
    // A blob webhook: the schema still needs the raw body to be JSON.
    let r = post(&rx, "schema_blob", &[], "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&rx, "schema_blob", &[], "\x00binary");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.detail(), "Invalid JSON body");
    let r = post(&rx, "schema_blob", &[], "[1]");
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn bearer_and_hmac_on_one_webhook_both_must_pass() {
    let rx = start();
    let sig = hex(&mac("both", &[BODY.as_bytes()]));
    let bad_sig = hex(&mac("neither", &[BODY.as_bytes()]));
    let send = |auth: Option<&str>, sig: Option<&str>| {
        let mut h = vec![];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        if let Some(s) = sig {
            h.push(("X-HMAC-Signature", s));
        }
        post(&rx, "combined", &h, BODY)
    };
    assert_eq!(send(Some("Bearer t0ken"), Some(&sig)).status, 200);
    assert_refused(
        &send(Some("Bearer t0ken"), Some(&bad_sig)),
        401,
        "bad signature",
    );
    assert_refused(&send(Some("Bearer t0ken"), None), 401, "no signature");
    assert_refused(&send(Some("Bearer nope"), Some(&sig)), 401, "bad token");
    assert_refused(&send(None, Some(&sig)), 401, "no token");
    // `null` is no check, as in the Python gateway.
    assert_eq!(post(&rx, "nulls", &[], "{}").status, 200);
}

#[test]
fn configs_that_cannot_check_are_rejected_at_load_and_listed() {
    let rx = start();
    let provider = rx.config_status(ADMIN);
    for (id, why) in [
        ("bad_hmac", "'hmac': HMAC secret not configured"),
        ("bad_hmac_blank", "'hmac': HMAC secret not configured"),
        ("bad_hmac_alg", "'hmac': Unsupported HMAC algorithm: md5"),
        ("bad_jwt", "'jwt': JWT secret is required"),
        (
            "bad_jwt_pem",
            "'jwt': 'secret' is not a PEM public key usable with RS256",
        ),
        (
            "bad_jwt_private",
            "'jwt': 'secret' is not a PEM public key usable with RS256",
        ),
        ("bad_jwt_none", "'jwt': JWT algorithm validation failed"),
        (
            "bad_schema",
            "'json_schema': Invalid JSON schema configuration",
        ),
        (
            "bad_schema_remote",
            "'json_schema': Invalid JSON schema configuration",
        ),
    ] {
        let reason = rejection_reason(&provider, id);
        assert!(reason.starts_with(why), "{id}: {reason}");
        assert!(!reason.contains("MII"), "{id} echoes the key: {reason}");
        let r = post(&rx, id, &[], BODY);
        assert_eq!(r.status, 404, "{id} must not be served: {}", r.body);
    }
    for id in [
        "github", "shopify", "stripe", "jwt_hs", "jwt_rs", "schema", "combined", "nulls",
    ] {
        assert!(
            rejection(&provider, &format!("webhooks/{id}")).is_none(),
            "{id} rejected: {provider}"
        );
    }
}
