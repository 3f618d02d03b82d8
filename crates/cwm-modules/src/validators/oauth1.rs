//! `oauth1`: an OAuth 1.0 signed request (RFC 5849 subset), as the Python gateway checks it.
//!
//! Config keys: `consumer_key` and `consumer_secret` (required: a webhook without them is
//! rejected at load), `token_secret` (`""`), `signature_method` (`HMAC-SHA1` or `PLAINTEXT`,
//! case-insensitive; anything else, `RSA-SHA1` included, is rejected at load),
//! `verify_timestamp` (true), `timestamp_window` (300 s), `verify_nonce` (true). `null` means no
//! check, as upstream.
//!
//! The sender sends `Authorization: OAuth k="v", ...` (only double-quoted values are read, then
//! percent-decoded). Checks, in order: the header, the required parameters
//! (`oauth_consumer_key`, `oauth_signature_method`, `oauth_signature`), the signature method, the
//! timestamp window, the nonce's presence, the signature (and the consumer key, compared in
//! constant time and reported as a bad signature, so a message never says which part was
//! wrong), then the nonce is recorded: a nonce seen before within its lifetime is a replay.
//!
//! Signature base strings. A signature is accepted if it matches either form:
//! - the Python gateway's: `METHOD&pct(path)&pct(params)`, the path alone (no scheme, host or
//!   query), the header parameters but `oauth_signature` (`realm` included), plus the fields of
//!   a body that is UTF-8 text with both `&` and `=` (first value per name, blank values
//!   dropped), sorted by name;
//! - RFC 5849 section 3.4.1: the base string URI `scheme://host[:port]/path` (host from `Host`,
//!   or `X-Forwarded-Host`; scheme `http` or `https`, either is tried, since a proxy may end
//!   TLS), the query parameters, the header parameters but `realm` and `oauth_signature`, and
//!   the body fields when the body is `application/x-www-form-urlencoded`, sorted after
//!   encoding. That is what standard OAuth 1.0 clients send.
//!
//! The check needs the body (form fields are signed), so it runs in [`Phase::Body`]; a body over
//! 64 KiB is checked on the blocking pool, not on a runtime worker.
//!
//! Deviations from upstream (fixes): with `verify_timestamp` a missing `oauth_timestamp` is
//! refused (upstream let it pass, which made its nonces expire and replays possible); the nonce
//! is recorded only after the signature verified (upstream recorded it first, so anyone could
//! fill the store); a full store answers 503 with `Retry-After` (upstream 401); nonces are
//! scoped per webhook; the consumer key is compared in constant time.
//!
//! Nonce store: one per process, bounded: an entry lives until `timestamp + window + 60 s`
//! (the request's timestamp, or now when it is not verified), at most [`NONCE_CAPACITY`]
//! entries of a fixed size (a SHA-256 of webhook id and nonce, so a long nonce costs nothing),
//! expired entries leave in expiry order as new ones come.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ::hmac::{Hmac, Mac};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::config::section;
use super::remote::pct;
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict, ct_eq,
};

pub(crate) const KEY: &str = "oauth1";

/// Most nonces remembered at once, over every webhook of the process (as upstream).
const NONCE_CAPACITY: usize = 100_000;
/// How long a nonce outlives its timestamp's window, in seconds (as upstream).
const NONCE_GRACE_SECS: i64 = 60;
const DEFAULT_WINDOW_SECS: f64 = 300.0;
/// Longest `timestamp_window` accepted: one year.
const MAX_WINDOW_SECS: f64 = 365.0 * 86_400.0;

type HmacSha1 = Hmac<Sha1>;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    Ok(parse(ctx)?.map(|v| Arc::new(Checked(Arc::new(v))) as Arc<dyn Validator>))
}

fn parse(ctx: &BuildContext<'_>) -> Result<Option<OAuth1>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object")? else {
        return Ok(None);
    };
    let fields = fields.with_text_forms();
    let (Some(consumer_key), Some(consumer_secret)) = (
        fields.non_empty("consumer_key")?,
        fields.non_empty("consumer_secret")?,
    ) else {
        return Err(fields.error(
            "OAuth 1.0 consumer credentials not configured \
             ('consumer_key' and 'consumer_secret' are required)",
        ));
    };
    let token_secret = fields.string("token_secret")?.unwrap_or_default();
    let method = match fields
        .string("signature_method")?
        .map(|s| s.trim().to_ascii_uppercase())
        .as_deref()
    {
        None | Some("HMAC-SHA1") => SignatureMethod::HmacSha1,
        Some("PLAINTEXT") => SignatureMethod::Plaintext,
        Some("RSA-SHA1") => {
            return Err(fields.error(
                "'signature_method' RSA-SHA1 is not supported (use HMAC-SHA1 or PLAINTEXT)",
            ));
        }
        Some(_) => {
            return Err(fields.error("'signature_method' must be HMAC-SHA1 or PLAINTEXT"));
        }
    };
    let window = fields
        .number("timestamp_window")?
        .unwrap_or(DEFAULT_WINDOW_SECS);
    if !(0.0..=MAX_WINDOW_SECS).contains(&window) {
        return Err(fields.error("'timestamp_window' must be between 0 and 31536000 seconds"));
    }
    let signing_key = format!("{}&{}", pct(consumer_secret), pct(token_secret));
    let mac = HmacSha1::new_from_slice(signing_key.as_bytes())
        .map_err(|_| fields.error("the signing key cannot be used"))?;
    let mut nonce_scope = Sha256::new();
    nonce_scope.update(ctx.webhook_id.as_bytes());
    nonce_scope.update([0]);
    Ok(Some(OAuth1 {
        consumer_key: consumer_key.as_bytes().into(),
        method,
        signing_key: signing_key.into_bytes().into(),
        mac,
        verify_timestamp: fields.boolean("verify_timestamp", true)?,
        window,
        verify_nonce: fields.boolean("verify_nonce", true)?,
        nonces: NONCES.clone(),
        nonce_scope,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureMethod {
    HmacSha1,
    Plaintext,
}

impl SignatureMethod {
    fn name(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC-SHA1",
            Self::Plaintext => "PLAINTEXT",
        }
    }
}

struct OAuth1 {
    consumer_key: Box<[u8]>,
    method: SignatureMethod,
    /// `pct(consumer_secret)&pct(token_secret)`: the HMAC key, and the PLAINTEXT signature.
    signing_key: Box<[u8]>,
    /// HMAC-SHA1 keyed with `signing_key`, cloned per base string.
    mac: HmacSha1,
    verify_timestamp: bool,
    window: f64,
    verify_nonce: bool,
    nonces: Arc<NonceStore>,
    /// SHA-256 fed with the webhook id: nonces are remembered per webhook.
    nonce_scope: Sha256,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The validator: [`OAuth1`] run inline for small bodies, on the blocking pool for larger ones
/// (signing a form body means percent-encoding and hashing it several times: up to 10 MiB must
/// not hold a runtime worker).
struct Checked(Arc<OAuth1>);

/// Largest body checked on the runtime thread.
const INLINE_BODY_BYTES: usize = 64 * 1024;

impl Validator for Checked {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Body
    }

    fn check(&self, head: &RequestHead<'_>, body: &[u8]) -> Verdict {
        let now = unix_now();
        if body.len() <= INLINE_BODY_BYTES {
            return self.0.verify(head, body, now).into();
        }
        let v = self.0.clone();
        let owned = OwnedHead::from(head);
        let body = body.to_vec();
        Verdict::Later(Box::pin(async move {
            tokio::task::spawn_blocking(move || v.verify(&owned.head(), &body, now))
                .await
                .unwrap_or_else(|_| Err(Denial::unauthorized("Invalid OAuth 1.0 signature")))
        }))
    }
}

/// A request head that owns its parts (for the blocking pool).
struct OwnedHead {
    method: http::Method,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    peer: Option<std::net::IpAddr>,
}

impl OwnedHead {
    fn from(head: &RequestHead<'_>) -> Self {
        Self {
            method: head.method.clone(),
            path: head.path.to_owned(),
            query: head.query.map(str::to_owned),
            headers: head.headers.clone(),
            peer: head.peer,
        }
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            peer: self.peer,
        }
    }
}

impl OAuth1 {
    fn verify(&self, head: &RequestHead<'_>, body: &[u8], now: i64) -> Result<(), Denial> {
        let header = head
            .authorization()
            .ok_or_else(|| Denial::unauthorized("Missing Authorization header"))?;
        let header = String::from_utf8_lossy(header);
        let rest = header
            .strip_prefix("OAuth ")
            .ok_or_else(|| Denial::unauthorized("OAuth 1.0 authentication required"))?;
        let params = parse_header(rest);
        let required = |name: &'static str| {
            params.get(name).map(String::as_str).ok_or_else(|| {
                Denial::unauthorized(format!("Missing required OAuth 1.0 parameter: {name}"))
            })
        };
        let consumer_key = required("oauth_consumer_key")?;
        let method = required("oauth_signature_method")?;
        let signature = required("oauth_signature")?;
        if !method.eq_ignore_ascii_case(self.method.name()) {
            return Err(Denial::unauthorized(if is_short_token(method) {
                format!("Invalid OAuth 1.0 signature method: {method}")
            } else {
                "Invalid OAuth 1.0 signature method".to_owned()
            }));
        }
        let mut nonce_expires = now;
        if self.verify_timestamp {
            let ts = required("oauth_timestamp")?
                .trim()
                .parse::<i64>()
                .map_err(|_| Denial::unauthorized("Invalid OAuth 1.0 timestamp"))?;
            let diff = (i128::from(now) - i128::from(ts)).abs();
            if diff as f64 > self.window {
                return Err(Denial::unauthorized(format!(
                    "OAuth 1.0 timestamp out of window (diff: {diff}s, max: {}s)",
                    self.window
                )));
            }
            nonce_expires = ts;
        }
        let nonce = if self.verify_nonce {
            let nonce = required("oauth_nonce")?;
            if nonce.trim().is_empty() {
                return Err(Denial::unauthorized("Invalid OAuth 1.0 nonce format"));
            }
            Some(nonce)
        } else {
            None
        };

        // Both compared whatever the other says: one message for either failing.
        let key_ok = ct_eq(consumer_key.as_bytes(), &self.consumer_key);
        let signature_ok = self.signature_matches(head, body, &params, signature);
        if !(key_ok & signature_ok) {
            return Err(Denial::unauthorized("Invalid OAuth 1.0 signature"));
        }

        if let Some(nonce) = nonce {
            let mut h = self.nonce_scope.clone();
            h.update(nonce.as_bytes());
            let expires = nonce_expires
                .saturating_add(self.window.ceil() as i64)
                .saturating_add(NONCE_GRACE_SECS);
            match self.nonces.insert(h.finalize().into(), expires, now) {
                Ok(()) => {}
                Err(NonceError::Replay) => {
                    return Err(Denial::unauthorized(
                        "OAuth 1.0 nonce has already been used (replay attack detected)",
                    ));
                }
                Err(NonceError::Full) => {
                    tracing::warn!(
                        capacity = self.nonces.capacity,
                        "oauth1: nonce store full; requests refused with 503 until nonces expire"
                    );
                    return Err(Denial::Unavailable(
                        "Server nonce storage full, please retry later".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `given` (percent-decoded) is the request's signature under any accepted base
    /// string. Every candidate is computed and compared in constant time.
    fn signature_matches(
        &self,
        head: &RequestHead<'_>,
        body: &[u8],
        params: &BTreeMap<String, String>,
        given: &str,
    ) -> bool {
        match self.method {
            SignatureMethod::Plaintext => ct_eq(given.as_bytes(), &self.signing_key),
            SignatureMethod::HmacSha1 => {
                let mut ok = false;
                let mut candidates = vec![compat_base_string(head, params, body)];
                candidates.extend(rfc_base_strings(head, params, body));
                for base in candidates {
                    ok |= ct_eq(self.sign(&base).as_bytes(), given.as_bytes());
                }
                ok
            }
        }
    }

    /// Base64 HMAC-SHA1 of `base`.
    fn sign(&self, base: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(base.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// Whether a sender's value is harmless to echo in a message.
fn is_short_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The `k="v"` pairs of an `OAuth` header (values percent-decoded; a repeated name keeps its
/// last value), as upstream's `(\w+)="([^"]*)"`: unquoted values are ignored.
fn parse_header(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(off) = s[i..].find("=\"") {
        let eq = i + off;
        let start = bytes[..eq]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(0, |p| p + 1);
        let value_start = eq + 2;
        let Some(len) = s[value_start..].find('"') else {
            break;
        };
        if start < eq {
            let name = &s[start..eq];
            let value = percent_decode_str(&s[value_start..value_start + len]).decode_utf8_lossy();
            out.insert(name.to_owned(), value.into_owned());
        }
        i = value_start + len + 1;
    }
    out
}

/// Form decoding of one component: `+` is a space, then percent-decoding (UTF-8, lossy).
fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The upstream base string: `METHOD&pct(path)&pct(params)` (see the module docs).
fn compat_base_string(
    head: &RequestHead<'_>,
    header: &BTreeMap<String, String>,
    body: &[u8],
) -> String {
    let mut params: BTreeMap<String, String> = header
        .iter()
        .filter(|(k, _)| *k != "oauth_signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Ok(text) = std::str::from_utf8(body)
        && text.contains('&')
        && text.contains('=')
    {
        // Python's parse_qs (blank values dropped, first value per name), then dict.update.
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for pair in text.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && !v.is_empty()
            {
                fields
                    .entry(form_decode(k))
                    .or_insert_with(|| form_decode(v));
            }
        }
        params.extend(fields);
    }
    base_string(
        head.method.as_str(),
        &percent_decode_str(head.path).decode_utf8_lossy(),
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// `METHOD&pct(uri)&pct(k=v&...)` with the pairs in the order given (already sorted by name).
fn base_string<'a>(
    method: &str,
    uri: &str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let normalized = pairs
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        pct(uri),
        pct(&normalized)
    )
}

static X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// The RFC 5849 base strings of the request, one per (host, scheme) candidate; none when the
/// request names no usable host.
fn rfc_base_strings(
    head: &RequestHead<'_>,
    header: &BTreeMap<String, String>,
    body: &[u8],
) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for name in [&http::header::HOST, &X_FORWARDED_HOST] {
        if let Some(h) = head
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| is_host(h))
            && !hosts.contains(&h)
        {
            hosts.push(h);
        }
    }
    if hosts.is_empty() {
        return Vec::new();
    }
    let normalized = rfc_normalized_params(head, header, body);
    let method = head.method.as_str().to_ascii_uppercase();
    let mut out = Vec::with_capacity(hosts.len() * 2);
    for host in &hosts {
        for (scheme, default_port) in [("http", ":80"), ("https", ":443")] {
            let host = host.strip_suffix(default_port).unwrap_or(host);
            let uri = format!("{scheme}://{host}{}", head.path);
            out.push(format!("{method}&{}&{}", pct(&uri), pct(&normalized)));
        }
    }
    out
}

/// RFC 5849 3.4.1.3: every parameter (query, header but `realm` and `oauth_signature`, form
/// body), each name and value encoded, sorted by name then value, joined.
fn rfc_normalized_params(
    head: &RequestHead<'_>,
    header: &BTreeMap<String, String>,
    body: &[u8],
) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut add_form = |text: &str| {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((pct(&form_decode(k)), pct(&form_decode(v))));
        }
    };
    if let Some(q) = head.query {
        add_form(q);
    }
    let is_form = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form && let Ok(text) = std::str::from_utf8(body) {
        add_form(text);
    }
    pairs.extend(
        header
            .iter()
            .filter(|(k, _)| *k != "realm" && *k != "oauth_signature")
            .map(|(k, v)| (pct(k), pct(v))),
    );
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A `Host` value worth building a URI from: a name or address with an optional port.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The process's nonces.
static NONCES: LazyLock<Arc<NonceStore>> =
    LazyLock::new(|| Arc::new(NonceStore::new(NONCE_CAPACITY)));

#[derive(Debug, PartialEq, Eq)]
enum NonceError {
    Replay,
    Full,
}

/// Nonces seen, until they expire: bounded in entries, each of a fixed size.
struct NonceStore {
    capacity: usize,
    inner: Mutex<Nonces>,
}

#[derive(Default)]
struct Nonces {
    /// Key to expiry (unix seconds).
    expiry: HashMap<[u8; 32], i64>,
    /// The same entries, soonest expiry first.
    queue: BinaryHeap<Reverse<(i64, [u8; 32])>>,
}

impl NonceStore {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// Record `key` until `expires`; a key already recorded and not expired at `now` is a
    /// replay. Expired entries are dropped first.
    fn insert(&self, key: [u8; 32], expires: i64, now: i64) -> Result<(), NonceError> {
        let mut n = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Reverse((at, k))) = n.queue.peek().copied() {
            if at > now {
                break;
            }
            n.queue.pop();
            if n.expiry.get(&k) == Some(&at) {
                n.expiry.remove(&k);
            }
        }
        if n.expiry.contains_key(&key) {
            return Err(NonceError::Replay);
        }
        if n.expiry.len() >= self.capacity {
            return Err(NonceError::Full);
        }
        n.expiry.insert(key, expires);
        n.queue.push(Reverse((expires, key)));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().expiry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, Req};
    use serde_json::{Value, json};

    fn build_for(id: &str, oauth1: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::with_context(id, json!({ KEY: oauth1 }), build)
    }

    /// A validator with its own nonce store of `capacity` entries.
    fn validator(id: &str, oauth1: Value, capacity: usize) -> OAuth1 {
        let mut v = test_support::with_context(id, json!({ KEY: oauth1 }), parse)
            .unwrap()
            .unwrap();
        v.nonces = Arc::new(NonceStore::new(capacity));
        v
    }

    /// RFC 5849 3.4.1.1: the example request and its signature base string.
    #[test]
    fn rfc5849_base_string_example() {
        let auth = r#"OAuth realm="Example", oauth_consumer_key="9djdj82h48djs9d2", oauth_token="kkk9d7dh3k39sjv7", oauth_signature_method="HMAC-SHA1", oauth_timestamp="137131201", oauth_nonce="7d8f3e4a", oauth_signature="bYT5CMsGcbgUdFHObYMEfcx6bsw%3D""#;
        let req = Req::new(
            "POST",
            "/request",
            Some("b5=%3D%253D&a3=a&c%40=&a2=r%20b"),
            &[
                ("host", "example.com"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", auth),
            ],
        );
        let params = parse_header(auth.strip_prefix("OAuth ").unwrap());
        assert_eq!(params["realm"], "Example");
        assert_eq!(params["oauth_signature"], "bYT5CMsGcbgUdFHObYMEfcx6bsw=");
        let bases = rfc_base_strings(&req.head(), &params, b"c2&a3=2+q");
        assert_eq!(
            bases[0],
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
        assert!(bases[1].starts_with("POST&https%3A%2F%2Fexample.com%2Frequest&"));
        // The upstream form: path only, no query, realm kept, body fields when they look like
        // a form (blank values dropped).
        assert_eq!(
            compat_base_string(&req.head(), &params, b"c2&a3=2+q"),
            "POST&%2Frequest&a3%3D2%2520q%26oauth_consumer_key%3D9djdj82h48djs9d2\
             %26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1\
             %26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7%26realm%3DExample"
        );
    }

    /// The photos example of OAuth Core 1.0 (Appendix A.5), signed with HMAC-SHA1.
    #[test]
    fn hmac_sha1_signature_example() {
        let v = validator(
            "sig-example",
            json!({"consumer_key": "dpf43f3p2l4k3l03", "consumer_secret": "kd94hf93k423kf44",
                   "token_secret": "pfkkdhi9sl3r4s00"}),
            10,
        );
        let base = "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26\
                    oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26\
                    oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26\
                    oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal";
        assert_eq!(v.sign(base), "tR3+Ty81lMeYAr/Fid0kMTYa/WM=");

        // The same request as a real one: the RFC base string is among the candidates.
        let auth = r#"OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", oauth_token="nnch734d00sl2jdk", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1191242096", oauth_nonce="kllo9940pd9333jh", oauth_version="1.0", oauth_signature="tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D""#;
        let req = Req::new(
            "GET",
            "/photos",
            Some("file=vacation.jpg&size=original"),
            &[("host", "photos.example.net"), ("authorization", auth)],
        );
        assert_eq!(v.verify(&req.head(), b"", 1_191_242_096), Ok(()));
        // Replayed: refused.
        assert_eq!(
            v.verify(&req.head(), b"", 1_191_242_100),
            Err(Denial::unauthorized(
                "OAuth 1.0 nonce has already been used (replay attack detected)"
            ))
        );
        // Another host: the signature no longer matches.
        let other = Req::new(
            "GET",
            "/photos",
            Some("file=vacation.jpg&size=original"),
            &[("host", "evil.example.net"), ("authorization", auth)],
        );
        assert_eq!(
            v.verify(&other.head(), b"", 1_191_242_096),
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
    }

    /// An `Authorization` header signed over the upstream base string.
    fn signed(
        v: &OAuth1,
        path: &str,
        ts: i64,
        nonce: &str,
        consumer_key: &str,
        body: &[u8],
    ) -> String {
        let mut params = BTreeMap::new();
        for (k, val) in [
            ("oauth_consumer_key", consumer_key.to_owned()),
            ("oauth_signature_method", "HMAC-SHA1".to_owned()),
            ("oauth_timestamp", ts.to_string()),
            ("oauth_nonce", nonce.to_owned()),
            ("oauth_version", "1.0".to_owned()),
        ] {
            params.insert(k.to_owned(), val);
        }
        let req = Req::new("POST", path, None, &[]);
        let sig = v.sign(&compat_base_string(&req.head(), &params, body));
        let mut header = String::from("OAuth ");
        for (k, val) in &params {
            header.push_str(&format!("{k}=\"{}\", ", pct(val)));
        }
        header.push_str(&format!("oauth_signature=\"{}\"", pct(&sig)));
        header
    }

    fn post(v: &OAuth1, auth: &str, body: &[u8], now: i64) -> Result<(), Denial> {
        let req = Req::new("POST", "/webhook/o1", None, &[("authorization", auth)]);
        v.verify(&req.head(), body, now)
    }

    #[test]
    fn upstream_base_string_windows_and_replays() {
        let cfg = json!({"consumer_key": "ck", "consumer_secret": "cs", "timestamp_window": 300});
        let v = validator("o1", cfg, 3);
        let now = 1_700_000_000;
        let ok = signed(&v, "/webhook/o1", now, "n1", "ck", b"");
        assert_eq!(post(&v, &ok, b"", now), Ok(()));
        assert_eq!(
            post(&v, &ok, b"", now + 10),
            Err(Denial::unauthorized(
                "OAuth 1.0 nonce has already been used (replay attack detected)"
            ))
        );
        // After its lifetime (timestamp + window + 60 s) the nonce is forgotten, but by then
        // its timestamp is out of the window.
        assert_eq!(
            post(&v, &ok, b"", now + 400),
            Err(Denial::unauthorized(
                "OAuth 1.0 timestamp out of window (diff: 400s, max: 300s)"
            ))
        );
        // Future timestamps are out of window too; at the edge they pass.
        let edge = signed(&v, "/webhook/o1", now + 300, "n2", "ck", b"");
        assert_eq!(post(&v, &edge, b"", now), Ok(()));
        let future = signed(&v, "/webhook/o1", now + 301, "n3", "ck", b"");
        assert!(post(&v, &future, b"", now).is_err());

        // Form fields in the body are signed.
        let body = b"a=1&b=two+words";
        let with_body = signed(&v, "/webhook/o1", now, "n4", "ck", body);
        assert_eq!(
            post(&v, &with_body, b"a=1&b=changed", now),
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
        assert_eq!(post(&v, &with_body, body, now), Ok(()));

        // A wrong consumer key reads as a bad signature; a wrong path too.
        let wrong_key = signed(&v, "/webhook/o1", now, "n5", "other", b"");
        assert_eq!(
            post(&v, &wrong_key, b"", now),
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
        let wrong_path = signed(&v, "/webhook/o2", now, "n6", "ck", b"");
        assert_eq!(
            post(&v, &wrong_path, b"", now),
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
        // Refused requests did not take a nonce: n5 can still be used with a good signature.
        let n5 = signed(&v, "/webhook/o1", now, "n5", "ck", b"");
        assert_eq!(v.nonces.len(), 3);
        // The store is full (3 entries): 503, not a replay and not a pass.
        assert!(matches!(
            post(&v, &n5, b"", now),
            Err(Denial::Unavailable(_))
        ));
        // Once the first entries expire there is room again.
        let later = now + 700;
        let fresh = signed(&v, "/webhook/o1", later, "n5", "ck", b"");
        assert_eq!(post(&v, &fresh, b"", later), Ok(()));
        assert_eq!(v.nonces.len(), 1);
    }

    #[test]
    fn header_and_parameter_messages() {
        let v = validator(
            "o1m",
            json!({"consumer_key": "ck", "consumer_secret": "cs"}),
            10,
        );
        let now = 1_700_000_000;
        let req = Req::new("POST", "/webhook/o1m", None, &[]);
        assert_eq!(
            v.verify(&req.head(), b"", now),
            Err(Denial::unauthorized("Missing Authorization header"))
        );
        let msg = |auth: &str| match post(&v, auth, b"", now) {
            Err(Denial::Unauthorized(m)) => m.into_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(msg("Bearer x"), "OAuth 1.0 authentication required");
        assert_eq!(
            msg(r#"OAuth oauth_signature_method="HMAC-SHA1", oauth_signature="x""#),
            "Missing required OAuth 1.0 parameter: oauth_consumer_key"
        );
        // Unquoted values are not read.
        assert_eq!(
            msg(
                r#"OAuth oauth_consumer_key=ck, oauth_signature_method="HMAC-SHA1", oauth_signature="x""#
            ),
            "Missing required OAuth 1.0 parameter: oauth_consumer_key"
        );
        assert_eq!(
            msg(
                r#"OAuth oauth_consumer_key="ck", oauth_signature_method="PLAINTEXT", oauth_signature="x""#
            ),
            "Invalid OAuth 1.0 signature method: PLAINTEXT"
        );
        let base = r#"OAuth oauth_consumer_key="ck", oauth_signature_method="hmac-sha1", oauth_signature="x""#;
        assert_eq!(
            msg(base),
            "Missing required OAuth 1.0 parameter: oauth_timestamp"
        );
        assert_eq!(
            msg(&format!(r#"{base}, oauth_timestamp="soon""#)),
            "Invalid OAuth 1.0 timestamp"
        );
        assert_eq!(
            msg(&format!(r#"{base}, oauth_timestamp="{now}""#)),
            "Missing required OAuth 1.0 parameter: oauth_nonce"
        );
        assert_eq!(
            msg(&format!(
                r#"{base}, oauth_timestamp="{now}", oauth_nonce=" ""#
            )),
            "Invalid OAuth 1.0 nonce format"
        );
        let bad = msg(&format!(
            r#"{base}, oauth_timestamp="{now}", oauth_nonce="abc""#
        ));
        assert_eq!(bad, "Invalid OAuth 1.0 signature");
    }

    #[test]
    fn plaintext_and_unverified_timestamps() {
        let v = validator(
            "o1p",
            json!({"consumer_key": "ck", "consumer_secret": "c s", "token_secret": "t&s",
                   "signature_method": "plaintext", "verify_timestamp": false, "verify_nonce": false}),
            10,
        );
        // The PLAINTEXT signature is the encoded key, percent-encoded again in the header.
        let auth = format!(
            r#"OAuth oauth_consumer_key="ck", oauth_signature_method="PLAINTEXT", oauth_signature="{}""#,
            pct("c%20s&t%26s")
        );
        assert_eq!(post(&v, &auth, b"", 0), Ok(()));
        assert_eq!(post(&v, &auth, b"", 0), Ok(()), "nonces not verified");
        let wrong = r#"OAuth oauth_consumer_key="ck", oauth_signature_method="PLAINTEXT", oauth_signature="c%2520s%26t""#;
        assert_eq!(
            post(&v, wrong, b"", 0),
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
    }

    #[tokio::test]
    async fn large_bodies_are_checked_off_the_runtime() {
        let v = validator(
            "o1-large",
            json!({"consumer_key": "ck", "consumer_secret": "cs"}),
            10,
        );
        let now = unix_now();
        let body = format!("a=1&blob={}", "x&y=z%".repeat(40_000));
        let auth = signed(&v, "/webhook/o1", now, "big", "ck", body.as_bytes());
        let checked = Checked(Arc::new(v));
        let req = Req::new("POST", "/webhook/o1", None, &[("authorization", &auth)]);
        let run = |body: &[u8]| match checked.check(&req.head(), body) {
            Verdict::Later(f) => f,
            _ => panic!("a large body is checked on the blocking pool"),
        };
        let mut tampered = body.clone().into_bytes();
        tampered[2] = b'2';
        assert_eq!(
            run(&tampered).await,
            Err(Denial::unauthorized("Invalid OAuth 1.0 signature"))
        );
        assert_eq!(run(body.as_bytes()).await, Ok(()));
        assert_eq!(
            run(body.as_bytes()).await,
            Err(Denial::unauthorized(
                "OAuth 1.0 nonce has already been used (replay attack detected)"
            ))
        );
        // Small bodies are judged at once.
        assert!(matches!(
            checked.check(&req.head(), b"{}"),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn nonce_store_is_bounded_and_expires_in_order() {
        let s = NonceStore::new(2);
        assert_eq!(s.insert([1; 32], 100, 0), Ok(()));
        assert_eq!(s.insert([1; 32], 100, 50), Err(NonceError::Replay));
        assert_eq!(s.insert([2; 32], 200, 50), Ok(()));
        assert_eq!(s.insert([3; 32], 300, 50), Err(NonceError::Full));
        // At 100 the first one expired: room for one, and it may be used again.
        assert_eq!(s.insert([1; 32], 400, 100), Ok(()));
        assert_eq!(s.insert([3; 32], 300, 100), Err(NonceError::Full));
        assert_eq!(s.insert([3; 32], 300, 200), Ok(()));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn header_parsing() {
        let p = parse_header(
            r#"realm="r", oauth_a="x%20y", bad=unquoted, oauth_b="", oauth_a="last", 1="one""#,
        );
        assert_eq!(p["realm"], "r");
        assert_eq!(p["oauth_a"], "last");
        assert_eq!(p["oauth_b"], "");
        assert_eq!(p["1"], "one");
        assert!(!p.contains_key("bad"));
        assert!(parse_header(r#"oauth_a="unterminated"#).is_empty());
    }

    #[test]
    fn config_rules() {
        assert!(build_for("c", Value::Null).unwrap().is_none());
        let v = build_for("c", json!({"consumer_key": "k", "consumer_secret": "s"}))
            .unwrap()
            .unwrap();
        assert_eq!((v.name(), v.phase()), ("oauth1", Phase::Body));
        for (bad, why) in [
            (json!({}), "consumer credentials not configured"),
            (
                json!({"consumer_key": "k"}),
                "consumer credentials not configured",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": ""}),
                "consumer credentials",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": 5}),
                "'consumer_secret' must be a string",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": "s", "signature_method": "RSA-SHA1"}),
                "RSA-SHA1 is not supported",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": "s", "signature_method": "HMAC-SHA256"}),
                "must be HMAC-SHA1 or PLAINTEXT",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": "s", "timestamp_window": -1}),
                "'timestamp_window'",
            ),
            (
                json!({"consumer_key": "k", "consumer_secret": "s", "verify_nonce": "maybe"}),
                "'verify_nonce' must be true or false",
            ),
            (json!("k:s"), "must be an object"),
        ] {
            let e = build_for("c", bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            let text = e.to_string();
            assert!(text.starts_with("'oauth1': "), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
        // Substituted values arrive as strings.
        assert!(
            build_for(
                "c",
                json!({"consumer_key": "k", "consumer_secret": "s",
            "verify_timestamp": "false", "timestamp_window": "60"})
            )
            .unwrap()
            .is_some()
        );
    }
}
