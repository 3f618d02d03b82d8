//! `hmac`: a keyed digest of the raw body that the sender puts in a header (GitHub, Shopify,
//! Stripe and the Python gateway's own format).
//!
//! Config: `"hmac": {"secret": "...", "header": "X-HMAC-Signature", "algorithm": "sha256",
//! "format": "hex", "tolerance_seconds": 300}`; only `secret` is required. `null` means no check.
//!
//! - `format: "hex"` (the default, the Python gateway's only format): the header is `<hex>` or
//!   `<algorithm>=<hex>` (GitHub's `X-Hub-Signature-256: sha256=<hex>`), the HMAC of the raw body.
//! - `format: "base64"`: the header is the standard base64 of the HMAC of the raw body (Shopify's
//!   `X-Shopify-Hmac-SHA256`).
//! - `format: "stripe"`: the header (default `Stripe-Signature`) is `t=<unix seconds>,v1=<hex>`,
//!   with one or more `v1` values, each the HMAC of `<t>.<raw body>`; one of them must match and
//!   `t` must be within `tolerance_seconds` of now.
//!
//! The key is built once; per request the body is hashed once and the decoded MAC bytes are
//! compared in constant time. A config that cannot work (no secret, unknown algorithm or format,
//! bad header name) rejects the webhook at load, where the Python gateway refused every request.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ::hmac::{Hmac, Mac};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderName;

use super::config::{Fields, section};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq,
};

pub(crate) const KEY: &str = "hmac";

/// The Python gateway's default header.
const DEFAULT_HEADER: &str = "X-HMAC-Signature";
/// Stripe's header, the default of `format: "stripe"`.
const STRIPE_HEADER: &str = "Stripe-Signature";
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
/// Longest signature header looked at.
const MAX_HEADER_BYTES: usize = 8192;
/// Most `v1` values of one Stripe header that are tried.
const MAX_STRIPE_SIGNATURES: usize = 16;
/// The longest MAC (SHA-512).
const MAX_MAC_BYTES: usize = 64;

const BAD_SIGNATURE: &str = "Invalid HMAC signature";
const NOT_HEX: &str = "Invalid HMAC signature format (must be hexadecimal)";
const NOT_BASE64: &str = "Invalid HMAC signature format (must be base64)";
const NOT_STRIPE: &str = "Invalid HMAC signature format (must be t=<timestamp>,v1=<hex>)";
const STALE: &str = "HMAC signature timestamp is outside the allowed tolerance";

/// Standard base64, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Hex,
    Base64,
    Stripe,
}

impl Format {
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            "stripe" => Some(Self::Stripe),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The prefix a hex signature may carry, e.g. `sha256=`.
    fn prefix(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

/// The keyed hash, its key schedule done once at build; each request clones it.
#[derive(Clone)]
enum Key {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

/// A computed MAC (at most SHA-512's 64 bytes), on the stack.
struct Tag {
    bytes: [u8; MAX_MAC_BYTES],
    len: usize,
}

impl Tag {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Key {
    fn new(algorithm: Algorithm, secret: &[u8]) -> Result<Self, ValidatorError> {
        let bad = |_| ValidatorError::new(KEY, "the secret cannot be used as an HMAC key");
        Ok(match algorithm {
            Algorithm::Sha1 => Self::Sha1(Hmac::new_from_slice(secret).map_err(bad)?),
            Algorithm::Sha256 => Self::Sha256(Hmac::new_from_slice(secret).map_err(bad)?),
            Algorithm::Sha512 => Self::Sha512(Hmac::new_from_slice(secret).map_err(bad)?),
        })
    }

    /// The MAC of the concatenation of `parts`.
    fn tag(&self, parts: &[&[u8]]) -> Tag {
        fn run<M: Mac + Clone>(key: &M, parts: &[&[u8]]) -> Tag {
            let mut mac = key.clone();
            for p in parts {
                mac.update(p);
            }
            let out = mac.finalize().into_bytes();
            let mut tag = Tag {
                bytes: [0; MAX_MAC_BYTES],
                len: out.len().min(MAX_MAC_BYTES),
            };
            tag.bytes[..tag.len].copy_from_slice(&out[..tag.len]);
            tag
        }
        match self {
            Self::Sha1(k) => run(k, parts),
            Self::Sha256(k) => run(k, parts),
            Self::Sha512(k) => run(k, parts),
        }
    }
}

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object with 'secret'")? else {
        return Ok(None);
    };
    HmacCheck::from_config(&fields).map(|v| Some(Arc::new(v) as Arc<dyn Validator>))
}

/// The `hmac` check of one webhook.
struct HmacCheck {
    key: Key,
    algorithm: Algorithm,
    format: Format,
    header: HeaderName,
    /// The header name as configured, for messages.
    shown: Box<str>,
    tolerance_seconds: u64,
}

impl HmacCheck {
    fn from_config(fields: &Fields<'_>) -> Result<Self, ValidatorError> {
        let secret = fields.non_blank("secret")?.ok_or_else(|| {
            fields.error("HMAC secret not configured: 'secret' is missing or blank")
        })?;
        let algorithm = match fields.string("algorithm")? {
            None => Algorithm::Sha256,
            Some(name) => Algorithm::parse(name).ok_or_else(|| {
                fields.error(format!(
                    "Unsupported HMAC algorithm: {name} (sha256, sha1 or sha512)"
                ))
            })?,
        };
        let format = match fields.string("format")? {
            None => Format::Hex,
            Some(name) => Format::parse(name).ok_or_else(|| {
                fields.error(format!("unknown format '{name}' (hex, base64 or stripe)"))
            })?,
        };
        let default_header = match format {
            Format::Stripe => STRIPE_HEADER,
            Format::Hex | Format::Base64 => DEFAULT_HEADER,
        };
        let shown = fields.string("header")?.map_or(default_header, str::trim);
        let header = HeaderName::from_bytes(shown.as_bytes()).map_err(|_| {
            fields.error(format!("header '{shown}' is not a valid HTTP header name"))
        })?;
        let tolerance_seconds = fields
            .unsigned("tolerance_seconds")?
            .unwrap_or(DEFAULT_TOLERANCE_SECONDS);
        Ok(Self {
            key: Key::new(algorithm, secret.as_bytes())?,
            algorithm,
            format,
            header,
            shown: shown.into(),
            tolerance_seconds,
        })
    }

    fn verify(&self, header: Option<&[u8]>, body: &[u8], now: u64) -> Result<(), Denial> {
        let Some(raw) = header else {
            return Err(Denial::unauthorized(format!(
                "Missing {} header",
                self.shown
            )));
        };
        let value = std::str::from_utf8(raw)
            .ok()
            .filter(|_| raw.len() <= MAX_HEADER_BYTES)
            .map(str::trim);
        match self.format {
            Format::Hex => {
                self.verify_hex(value.ok_or(NOT_HEX).map_err(Denial::unauthorized)?, body)
            }
            Format::Base64 => {
                let value = value.ok_or(NOT_BASE64).map_err(Denial::unauthorized)?;
                // Room for the longest header looked at: any base64 it holds decodes here, on
                // the stack (a value longer than a MAC is a mismatch, not a format error).
                let mut buf = [0; MAX_HEADER_BYTES / 4 * 3];
                let n = BASE64
                    .decode_slice(value, &mut buf)
                    .ok()
                    .filter(|_| !value.is_empty())
                    .ok_or(NOT_BASE64)
                    .map_err(Denial::unauthorized)?;
                matches(&buf[..n], &self.key.tag(&[body]))
            }
            Format::Stripe => self.verify_stripe(
                value.ok_or(NOT_STRIPE).map_err(Denial::unauthorized)?,
                body,
                now,
            ),
        }
    }

    /// `<hex>` or `<algorithm>=<hex>`, the prefix exactly the lower-case configured algorithm.
    fn verify_hex(&self, value: &str, body: &[u8]) -> Result<(), Denial> {
        let hex = match value.split_once('=') {
            None => value,
            Some((prefix, hex)) if prefix == self.algorithm.prefix() => hex,
            Some(_) => return Err(Denial::unauthorized(NOT_HEX)),
        };
        let mut buf = [0; MAX_MAC_BYTES];
        let given = decode_hex(hex, &mut buf)
            .ok_or(NOT_HEX)
            .map_err(Denial::unauthorized)?;
        matches(given, &self.key.tag(&[body]))
    }

    /// `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`; other schemes (`v0`) are ignored.
    fn verify_stripe(&self, value: &str, body: &[u8], now: u64) -> Result<(), Denial> {
        let bad = || Denial::unauthorized(NOT_STRIPE);
        let mut timestamp = None;
        let mut signatures: [&str; MAX_STRIPE_SIGNATURES] = [""; MAX_STRIPE_SIGNATURES];
        let mut n = 0;
        for item in value.split(',') {
            let (k, v) = item.split_once('=').ok_or_else(bad)?;
            match k.trim() {
                "t" if timestamp.is_none() => timestamp = Some(v.trim()),
                "t" => return Err(bad()),
                "v1" if n < MAX_STRIPE_SIGNATURES => {
                    signatures[n] = v.trim();
                    n += 1;
                }
                "v1" => return Err(bad()),
                _ => {}
            }
        }
        let t = timestamp.ok_or_else(bad)?;
        let sent: u64 = t
            .parse()
            .ok()
            .filter(|_| t.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let expected = self.key.tag(&[t.as_bytes(), b".", body]);
        let mut any = false;
        let mut buf = [0; MAX_MAC_BYTES];
        for sig in &signatures[..n] {
            let given = decode_hex(sig, &mut buf).ok_or_else(bad)?;
            // Every value is compared, so the time taken does not say which one matched.
            any |= ct_eq(given, expected.as_slice());
        }
        if !any {
            return Err(Denial::unauthorized(BAD_SIGNATURE));
        }
        if now.abs_diff(sent) > self.tolerance_seconds {
            return Err(Denial::unauthorized(STALE));
        }
        Ok(())
    }
}

/// Decode non-empty hex (either case) into `buf`. `None` when it is not hex; a value too long for
/// any MAC decodes to an empty slice, which matches nothing.
fn decode_hex<'b>(hex: &str, buf: &'b mut [u8; MAX_MAC_BYTES]) -> Option<&'b [u8]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    if !bytes.len().is_multiple_of(2) || bytes.len() / 2 > MAX_MAC_BYTES {
        return Some(&[]);
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        buf[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(&buf[..bytes.len() / 2])
}

fn matches(given: &[u8], expected: &Tag) -> Result<(), Denial> {
    if ct_eq(given, expected.as_slice()) {
        Ok(())
    } else {
        Err(Denial::unauthorized(BAD_SIGNATURE))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Validator for HmacCheck {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Body
    }

    fn check(&self, head: &RequestHead<'_>, body: &[u8]) -> Verdict {
        let header = head.headers.get(&self.header).map(|v| v.as_bytes());
        let now = match self.format {
            Format::Stripe => unix_now(),
            Format::Hex | Format::Base64 => 0,
        };
        self.verify(header, body, now).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, msg, object};
    use serde_json::{Value, json};

    const BODY: &[u8] = br#"{"action":"opened","number":1}"#;

    fn hook(config: Value) -> Result<HmacCheck, ValidatorError> {
        HmacCheck::from_config(&Fields::new(KEY, &object(config)))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac256(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    #[test]
    fn hex_bare_and_prefixed_as_github_sends_it() {
        let h = hook(json!({"secret": "It's a Secret to Everybody"})).unwrap();
        assert_eq!(h.header.as_str(), "x-hmac-signature");
        // GitHub's documented test vector.
        let body = b"Hello, World!";
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(msg(h.verify(Some(sig.as_bytes()), body, 0)), "ok");
        let prefixed = format!("sha256={sig}");
        assert_eq!(msg(h.verify(Some(prefixed.as_bytes()), body, 0)), "ok");
        let upper = format!("sha256={}", sig.to_uppercase());
        assert_eq!(msg(h.verify(Some(upper.as_bytes()), body, 0)), "ok");
        assert_eq!(
            msg(h.verify(Some(prefixed.as_bytes()), b"Hello, World?", 0)),
            BAD_SIGNATURE
        );
        for bad in [
            format!("sha1={sig}"),
            format!("SHA256={sig}"),
            "zz".into(),
            "sha256=".into(),
            String::new(),
        ] {
            assert_eq!(
                msg(h.verify(Some(bad.as_bytes()), body, 0)),
                NOT_HEX,
                "{bad}"
            );
        }
        // Hex of the wrong length is a mismatch, not a format error.
        assert_eq!(msg(h.verify(Some(b"abc"), body, 0)), BAD_SIGNATURE);
        assert_eq!(
            msg(h.verify(Some(&sig.as_bytes()[..62]), body, 0)),
            BAD_SIGNATURE
        );
        assert_eq!(
            msg(h.verify(Some("a".repeat(300).as_bytes()), body, 0)),
            BAD_SIGNATURE
        );
        assert_eq!(msg(h.verify(Some(b"\xff"), body, 0)), NOT_HEX);
        assert_eq!(
            msg(h.verify(None, body, 0)),
            "Missing X-HMAC-Signature header"
        );
    }

    #[test]
    fn sha1_and_sha512() {
        let h1 = hook(json!({"secret": "key", "algorithm": "SHA1"})).unwrap();
        let h512 = hook(json!({"secret": "key", "algorithm": " sha512 "})).unwrap();
        let body = b"The quick brown fox jumps over the lazy dog";
        // RFC-style known answers (Wikipedia's HMAC examples).
        let s1 = "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9";
        let s512 = "b42af09057bac1e2d41708e48a902e09b5ff7f12ab428a4fe86653c73dd248fb\
                    82f948a549f7b791a5b41915ee4d1ec3935357e4e2317250d0372afa2ebeeb3a";
        assert_eq!(msg(h1.verify(Some(s1.as_bytes()), body, 0)), "ok");
        assert_eq!(
            msg(h1.verify(Some(format!("sha1={s1}").as_bytes()), body, 0)),
            "ok"
        );
        assert_eq!(msg(h512.verify(Some(s512.as_bytes()), body, 0)), "ok");
        assert_eq!(
            msg(h512.verify(Some(format!("sha512={s512}").as_bytes()), body, 0)),
            "ok"
        );
        assert_eq!(
            msg(h512.verify(Some(s1.as_bytes()), body, 0)),
            BAD_SIGNATURE
        );
    }

    #[test]
    fn base64_as_shopify_sends_it() {
        let h = hook(
            json!({"secret": "shpss_test", "format": "base64", "header": "X-Shopify-Hmac-SHA256"}),
        )
        .unwrap();
        let sig = BASE64.encode(mac256("shpss_test", &[BODY]));
        assert_eq!(msg(h.verify(Some(sig.as_bytes()), BODY, 0)), "ok");
        assert_eq!(
            msg(h.verify(Some(sig.trim_end_matches('=').as_bytes()), BODY, 0)),
            "ok"
        );
        let wrong = BASE64.encode(mac256("other", &[BODY]));
        assert_eq!(
            msg(h.verify(Some(wrong.as_bytes()), BODY, 0)),
            BAD_SIGNATURE
        );
        assert_eq!(msg(h.verify(Some(sig.as_bytes()), b"{}", 0)), BAD_SIGNATURE);
        // Base64 of anything longer than a MAC, up to the longest header, is a mismatch.
        let long = BASE64.encode(vec![7u8; MAX_HEADER_BYTES / 4 * 3]);
        assert_eq!(long.len(), MAX_HEADER_BYTES);
        assert_eq!(msg(h.verify(Some(long.as_bytes()), BODY, 0)), BAD_SIGNATURE);
        assert_eq!(msg(h.verify(Some(b"not base64!"), BODY, 0)), NOT_BASE64);
        assert_eq!(msg(h.verify(Some(b""), BODY, 0)), NOT_BASE64);
        assert_eq!(
            msg(h.verify(None, BODY, 0)),
            "Missing X-Shopify-Hmac-SHA256 header"
        );
    }

    #[test]
    fn stripe_timestamps_and_several_signatures() {
        let h = hook(json!({"secret": "whsec_test", "format": "stripe"})).unwrap();
        assert_eq!(h.header.as_str(), "stripe-signature");
        let now = 1_700_000_000u64;
        let sign =
            |t: u64, secret: &str| hex(&mac256(secret, &[t.to_string().as_bytes(), b".", BODY]));
        let good = sign(now, "whsec_test");
        let header = format!(
            "t={now},v1={good},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        );
        assert_eq!(msg(h.verify(Some(header.as_bytes()), BODY, now)), "ok");
        // Within the tolerance either way, outside it refused even when the signature is right.
        assert_eq!(
            msg(h.verify(Some(header.as_bytes()), BODY, now + 300)),
            "ok"
        );
        assert_eq!(
            msg(h.verify(Some(header.as_bytes()), BODY, now - 300)),
            "ok"
        );
        assert_eq!(
            msg(h.verify(Some(header.as_bytes()), BODY, now + 301)),
            STALE
        );
        assert_eq!(
            msg(h.verify(Some(header.as_bytes()), BODY, now - 301)),
            STALE
        );
        // Any of several v1 values (a secret being rolled).
        let old = sign(now, "whsec_old");
        let two = format!("t={now}, v1={old}, v1={good}");
        assert_eq!(msg(h.verify(Some(two.as_bytes()), BODY, now)), "ok");
        let none = format!("t={now},v1={old}");
        assert_eq!(
            msg(h.verify(Some(none.as_bytes()), BODY, now)),
            BAD_SIGNATURE
        );
        // The timestamp is signed: another t breaks the signature.
        let moved = format!("t={},v1={good}", now + 1);
        assert_eq!(
            msg(h.verify(Some(moved.as_bytes()), BODY, now)),
            BAD_SIGNATURE
        );
        assert_eq!(
            msg(h.verify(Some(header.as_bytes()), b"{}", now)),
            BAD_SIGNATURE
        );
        for bad in [
            format!("v1={good}"),
            format!("t={now}"),
            format!("t=-{now},v1={good}"),
            format!("t=+{now},v1={good}"),
            format!("t=x,v1={good}"),
            format!("t={now},t={now},v1={good}"),
            format!("t={now},v1=xyz"),
            format!("t={now};v1={good}"),
            format!("t={now},{}", vec![format!("v1={good}"); 17].join(",")),
        ] {
            assert_eq!(
                msg(h.verify(Some(bad.as_bytes()), BODY, now)),
                NOT_STRIPE,
                "{bad}"
            );
        }
        assert_eq!(
            msg(h.verify(None, BODY, now)),
            "Missing Stripe-Signature header"
        );
        let tight =
            hook(json!({"secret": "whsec_test", "format": "Stripe", "tolerance_seconds": 5}))
                .unwrap();
        assert_eq!(
            msg(tight.verify(Some(header.as_bytes()), BODY, now + 5)),
            "ok"
        );
        assert_eq!(
            msg(tight.verify(Some(header.as_bytes()), BODY, now + 6)),
            STALE
        );
    }

    #[test]
    fn unusable_configs_are_rejected_at_load_without_echoing_the_secret() {
        for (config, why) in [
            (json!({}), "HMAC secret not configured"),
            (json!({"secret": ""}), "HMAC secret not configured"),
            (json!({"secret": "  "}), "HMAC secret not configured"),
            (json!({"secret": null}), "HMAC secret not configured"),
            (json!({"secret": 123456789}), "'secret' must be a string"),
            (
                json!({"secret": "s", "algorithm": "md5"}),
                "Unsupported HMAC algorithm: md5",
            ),
            (json!({"secret": "s", "algorithm": 5}), "'algorithm'"),
            (
                json!({"secret": "s", "format": "jwt"}),
                "unknown format 'jwt'",
            ),
            (
                json!({"secret": "s", "header": "bad header"}),
                "not a valid HTTP header name",
            ),
            (
                json!({"secret": "s", "tolerance_seconds": -1}),
                "'tolerance_seconds'",
            ),
        ] {
            let e = hook(config.clone())
                .err()
                .unwrap_or_else(|| panic!("{config} accepted"));
            assert_eq!(e.key, KEY);
            assert!(e.message.contains(why), "{config}: {e}");
            assert!(!e.to_string().contains("123456789"), "{e}");
        }
    }

    #[test]
    fn build_reads_the_webhook_config() {
        let build_with = |v: Value| {
            test_support::with_context("h", v, build).map(|v| v.map(|v| (v.name(), v.phase())))
        };
        assert_eq!(build_with(json!({})), Ok(None));
        assert_eq!(build_with(json!({"hmac": null})), Ok(None));
        assert_eq!(
            build_with(json!({"hmac": {"secret": "s"}})),
            Ok(Some(("hmac", Phase::Body)))
        );
        assert!(build_with(json!({"hmac": {}})).is_err());
        assert!(build_with(json!({"hmac": "s"})).is_err());
    }
}
