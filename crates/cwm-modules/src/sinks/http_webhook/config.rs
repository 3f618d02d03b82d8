//! The `http_webhook` sink's `module-config`, its checked form ([`Settings`]), the destination
//! ([`Target`], V-URL) and the header rules.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::opts;
use crate::outbound::ssrf::check_host;
use crate::outbound::{MAX_URL_LEN, basic_auth, request_uri, split_host_port, split_url};
use crate::sink::BuildError;

pub(super) const MAX_HEADER_NAME: usize = 200;
pub(super) const MAX_HEADER_VALUE: usize = 8192;
const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// The whole exchange's time limit when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "content-length",
];

/// `module-config` of an `http_webhook` webhook, as written. [`HttpWebhookConfig::resolve`]
/// checks it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpWebhookConfig {
    /// The destination, `http://` or `https://` (required).
    #[serde(default, deserialize_with = "opts::opt_string")]
    pub url: Option<String>,
    /// `POST` (default), `PUT` or `PATCH`, any case.
    #[serde(default, deserialize_with = "opts::opt_string")]
    pub method: Option<String>,
    /// Custom headers (string, number or boolean values); they win over forwarded ones.
    #[serde(default, deserialize_with = "opts::opt_object")]
    pub headers: Option<Map<String, Value>>,
    /// Forward the request's headers (default false).
    #[serde(default, deserialize_with = "opts::truthy_or_false")]
    pub forward_headers: bool,
    /// Whitelist of forwarded *and* custom header names; `[]` sends none.
    #[serde(default, deserialize_with = "opts::opt_string_list")]
    pub allowed_headers: Option<Vec<String>>,
    /// Host whitelist that replaces the SSRF host rules; an empty list means none.
    #[serde(default, deserialize_with = "opts::opt_string_list")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Seconds for the whole exchange (a number or a numeric string, default 30, at most 3600).
    #[serde(default, deserialize_with = "opts::opt_number")]
    pub timeout: Option<f64>,
}

/// The checked settings an `http_webhook` sink delivers with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) method: Method,
    /// Custom headers that passed the header rules.
    pub(crate) custom: Vec<(HeaderName, HeaderValue)>,
    pub(crate) forward: bool,
    /// Lower-cased, trimmed.
    pub(crate) allowed_headers: Option<Vec<String>>,
    pub(crate) timeout: Duration,
}

impl HttpWebhookConfig {
    /// Check the settings: the URL (V-URL), the method, the time limit and the custom headers.
    pub(crate) fn resolve(self) -> Result<Settings, BuildError> {
        let url = self
            .url
            .ok_or_else(|| BuildError::option("url", "is required"))?;
        let target = Target::parse(&url, self.allowed_hosts.as_deref())
            .map_err(|e| BuildError::option("url", e))?;
        let method = match self
            .method
            .map(|m| m.trim().to_ascii_uppercase())
            .as_deref()
        {
            None | Some("POST") => Method::POST,
            Some("PUT") => Method::PUT,
            Some("PATCH") => Method::PATCH,
            Some(_) => return Err(BuildError::option("method", "must be POST, PUT or PATCH")),
        };
        let allowed_headers = self.allowed_headers.map(|list| {
            list.iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        });
        let timeout = match self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => {
                Duration::from_secs_f64(t)
            }
            Some(_) => {
                return Err(BuildError::option(
                    "timeout",
                    "must be between 0 and 3600 seconds",
                ));
            }
        };
        let custom = custom_headers(self.headers.as_ref(), allowed_headers.as_deref())?;
        Ok(Settings {
            target,
            method,
            custom,
            forward: self.forward_headers,
            allowed_headers,
            timeout,
        })
    }
}

/// Custom headers, filtered once at load. A header the filter drops is skipped (as upstream).
fn custom_headers(
    map: Option<&Map<String, Value>>,
    allowed: Option<&[String]>,
) -> Result<Vec<(HeaderName, HeaderValue)>, BuildError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(BuildError::option(
                    &format!("headers.{name}"),
                    "must be a string",
                ));
            }
        };
        match filter_header(name, &text, allowed) {
            Some(h) => out.push(h),
            None => {
                tracing::warn!(header = %name, "http_webhook: custom header skipped by the header rules")
            }
        }
    }
    Ok(out)
}

/// The upstream's header rules: hop-by-hop names, RFC 7230 token names of at most 200
/// characters, the optional whitelist, no line breaks or NUL in values, trimmed values of at most
/// 8192 characters.
pub(super) fn filter_header(
    name: &str,
    value: &str,
    allowed: Option<&[String]>,
) -> Option<(HeaderName, HeaderValue)> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_token_byte) {
        return None;
    }
    if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return None;
    }
    if let Some(list) = allowed
        && !list.iter().any(|a| a.eq_ignore_ascii_case(name))
    {
        return None;
    }
    if value.contains(['\r', '\n', '\0', '\u{2028}', '\u{2029}', '\u{0b}', '\u{0c}']) {
        return None;
    }
    let value = value.trim();
    if value.len() > MAX_HEADER_VALUE && value.chars().count() > MAX_HEADER_VALUE {
        return None;
    }
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value)
            .or_else(|_| HeaderValue::from_bytes(value.as_bytes()))
            .ok()?,
    ))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A checked destination.
#[derive(Debug)]
pub(crate) struct Target {
    /// Without user info and fragment.
    pub(super) uri: Uri,
    /// `scheme://host[:port]`, the only form of the URL that error messages show.
    pub(super) label: String,
    pub(super) basic_auth: Option<HeaderValue>,
    /// Parts of the URL that must never be shown (user info, query).
    secrets: Vec<String>,
}

impl Target {
    /// The upstream's URL rules and the request URI. Errors are reasons, for the caller to
    /// prefix with the key.
    pub(super) fn parse(raw: &str, allowed_hosts: Option<&[String]>) -> Result<Self, String> {
        // Reasons only: the caller names the key (`'module-config.url': ...`).
        let bad = |why: &str| why.to_owned();
        let url = raw.trim();
        if url.is_empty() || url.len() > MAX_URL_LEN {
            return Err(bad("is empty or too long"));
        }
        if url.contains('\0') || url.to_ascii_lowercase().contains("%00") {
            return Err(bad("contains NUL"));
        }
        let (scheme, netloc, tail) = split_url(url).map_err(bad)?;
        if netloc.is_empty() {
            return Err(bad("has no host"));
        }
        let (userinfo, hostport) = match netloc.rfind('@') {
            Some(i) => (Some(&netloc[..i]), &netloc[i + 1..]),
            None => (None, netloc),
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let host = host.to_ascii_lowercase();
        check_host(&host, allowed_hosts)?;
        let (uri, authority) = request_uri(&scheme, &host, port, tail).map_err(bad)?;

        let mut secrets = Vec::new();
        let basic_auth = match userinfo {
            Some(info) if !info.is_empty() => {
                secrets.push(info.to_owned());
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user = percent_decode_str(user).decode_utf8_lossy();
                let pass = percent_decode_str(pass).decode_utf8_lossy();
                secrets.push(user.clone().into_owned());
                if !pass.is_empty() {
                    secrets.push(pass.clone().into_owned());
                }
                Some(basic_auth(&user, &pass).ok_or("has invalid credentials")?)
            }
            _ => None,
        };
        if let Some(query) = uri.query()
            && !query.is_empty()
        {
            secrets.push(query.to_owned());
        }
        secrets.retain(|s| s.len() >= 3);
        Ok(Self {
            uri,
            label: format!("{scheme}://{authority}"),
            basic_auth,
            secrets,
        })
    }

    /// Remove URL secrets from a message (defence in depth: error texts should not hold them).
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "***");
        }
        text
    }
}
