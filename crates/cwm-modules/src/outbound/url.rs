//! URL helpers shared by the outbound callers: splitting a URL into checked parts, building the
//! request URI from them, and the Basic credentials header.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Uri};

/// Longest URL accepted, here and for the validators' outbound endpoints.
pub(crate) const MAX_URL_LEN: usize = 8192;

/// The lower-case scheme, the authority (`[user@]host[:port]`) and the rest (path, query,
/// fragment) of an `http` or `https` URL. Errors are reasons, for the caller to prefix.
pub(crate) fn split_url(url: &str) -> Result<(String, &str, &str), &'static str> {
    const NOT_HTTP: &str = "must start with http:// or https://";
    let (scheme, rest) = url.split_once("://").ok_or(NOT_HTTP)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(NOT_HTTP);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    Ok((scheme, authority, tail))
}

/// Host and optional port of `host[:port]` or `[v6][:port]`. Errors are reasons, for the caller
/// to prefix.
pub(crate) fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unclosed '['")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has brackets around something that is not IPv6");
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("has junk after ']'")?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err("has an invalid port"),
            }
        }
        Some(_) => return Err("has an invalid port"),
    };
    Ok((host, port))
}

/// The request URI for a checked `host` (lower-case, without brackets), built from the checked
/// parts so that parser differences cannot send the request elsewhere, and its authority
/// (`host[:port]`, IPv6 in brackets). `tail` is what follows the authority; its fragment is
/// dropped. Errors are reasons, for the caller to prefix.
pub(crate) fn request_uri(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    tail: &str,
) -> Result<(Uri, String), &'static str> {
    let tail = tail.split('#').next().unwrap_or_default();
    let path_and_query = if tail.starts_with('/') {
        Cow::Borrowed(tail)
    } else {
        Cow::Owned(format!("/{tail}"))
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = match port {
        Some(p) => format!("{host_part}:{p}"),
        None => host_part,
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(path_and_query.as_ref())
        .build()
        .map_err(|_| "is not a valid URL")?;
    // The request must go to the host that was checked, whatever the URI parser thinks.
    let sent_to = uri.host().map(|h| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    });
    if sent_to.as_deref() != Some(host) {
        return Err("is ambiguous");
    }
    Ok((uri, authority))
}

/// An `Authorization: Basic` value for `user:password`, marked sensitive; `None` when it cannot
/// be a header value.
pub(crate) fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    let token = STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}
