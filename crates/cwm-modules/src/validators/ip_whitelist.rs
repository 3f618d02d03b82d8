//! `ip_whitelist`: only clients whose address is in the list (addresses or CIDR ranges) pass; the
//! rest get 403.
//!
//! Config: `"ip_whitelist": ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]`, and the optional
//! webhook-level `"trusted_proxies": [...]` (addresses or CIDR ranges too). Both are parsed once,
//! here. `null` means no check. A value that is not a list of strings, an entry that is neither an
//! address nor a range, or an empty list rejects the webhook at load (the Python gateway skipped
//! bad entries silently and let an empty list pass every request).
//!
//! The client address is the TCP peer. Only when the peer is a trusted proxy are the forwarding
//! headers believed: `X-Forwarded-For` is read from the right, skipping trusted proxies, and the
//! first other address is the client (all of them trusted: the leftmost); without that header,
//! `X-Real-IP`; without either, the peer. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as
//! the IPv4 address. A request without a peer address fails closed.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "ip_whitelist";
/// The webhook-level key listing the proxies whose forwarding headers are believed.
const TRUSTED_PROXIES: &str = "trusted_proxies";

/// Longest piece of a forwarding header echoed back in a refusal.
const MAX_ECHO_CHARS: usize = 64;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let allowed = match ctx.config.extra.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => Nets::parse(KEY, v)?,
    };
    if allowed.0.is_empty() {
        return Err(ValidatorError::new(
            KEY,
            "the list is empty, so no client could ever pass; \
             list addresses or CIDR ranges, or remove the key",
        ));
    }
    let proxies = match ctx.config.extra.get(TRUSTED_PROXIES) {
        None | Some(Value::Null) => Nets::default(),
        Some(v) => Nets::parse(TRUSTED_PROXIES, v)?,
    };
    Ok(Some(Arc::new(IpWhitelist { allowed, proxies })))
}

/// Addresses and ranges, normalized: single addresses are host ranges, IPv4-mapped IPv6 entries
/// their IPv4 form.
#[derive(Debug, Default, PartialEq, Eq)]
struct Nets(Box<[IpNet]>);

impl Nets {
    fn parse(key: &'static str, value: &Value) -> Result<Self, ValidatorError> {
        let Value::Array(items) = value else {
            return Err(ValidatorError::new(
                key,
                "must be a list of IP addresses or CIDR ranges",
            ));
        };
        let nets = items
            .iter()
            .map(|item| {
                let text = item.as_str().ok_or_else(|| {
                    ValidatorError::new(key, format!("entry {item} is not a string"))
                })?;
                parse_net(text.trim()).ok_or_else(|| {
                    ValidatorError::new(
                        key,
                        format!("'{text}' is neither an IP address nor a CIDR range"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(nets))
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    let net = match IpNet::from_str(text) {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(IpAddr::from_str(text).ok()?),
    };
    Some(canonical_net(net))
}

/// A range inside `::ffff:0:0/96` as the IPv4 range it maps.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        IpNet::V4(v4net)
    } else {
        net
    }
}

struct IpWhitelist {
    allowed: Nets,
    proxies: Nets,
}

impl IpWhitelist {
    fn judge(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<(), Denial> {
        let client = self.client_ip(peer, headers)?;
        if self.allowed.contains(&client) {
            Ok(())
        } else {
            Err(Denial::Forbidden(
                format!("IP {client} not in whitelist").into(),
            ))
        }
    }

    /// The address the allow-list is checked against.
    fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<IpAddr, Denial> {
        let peer = peer
            .ok_or_else(|| Denial::Forbidden("Could not determine client IP".into()))?
            .to_canonical();
        if !self.proxies.contains(&peer) {
            return Ok(peer);
        }
        let forwarded = header_text(headers, &X_FORWARDED_FOR);
        let hops: Vec<&str> = forwarded
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(leftmost) = hops.first() {
            // From the right: each hop was appended by the proxy before it; the first hop that is
            // not a trusted proxy is the client. All trusted: the leftmost.
            for hop in hops.iter().rev() {
                let ip = parse_ip(hop)?;
                if !self.proxies.contains(&ip) {
                    return Ok(ip);
                }
            }
            return parse_ip(leftmost);
        }
        let real = header_text(headers, &X_REAL_IP);
        match real.trim() {
            "" => Ok(peer),
            real => parse_ip(real),
        }
    }
}

/// Every value of header `name`, joined with `,`, without CR, LF or NUL.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for value in headers.get_all(name) {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n' | '\0')),
        );
    }
    out
}

fn parse_ip(text: &str) -> Result<IpAddr, Denial> {
    IpAddr::from_str(text)
        .map(|ip| ip.to_canonical())
        .map_err(|_| {
            let shown: String = text.chars().take(MAX_ECHO_CHARS).collect();
            Denial::Forbidden(format!("Invalid IP address format: {shown}").into())
        })
}

impl Validator for IpWhitelist {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.judge(head.peer, head.headers).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, headers};
    use serde_json::json;

    fn build_with(doc: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::with_context("hook", doc, build)
    }

    fn list(allowed: &[&str], proxies: &[&str]) -> IpWhitelist {
        IpWhitelist {
            allowed: Nets::parse(KEY, &json!(allowed)).unwrap(),
            proxies: Nets::parse(TRUSTED_PROXIES, &json!(proxies)).unwrap(),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn msg(r: Result<(), Denial>) -> String {
        test_support::message(r, 403)
    }

    #[test]
    fn config_is_parsed_once_and_bad_lists_are_rejected() {
        assert!(build_with(json!({})).unwrap().is_none());
        assert!(build_with(json!({KEY: null})).unwrap().is_none());
        let v = build_with(json!({KEY: ["10.0.0.0/8"], TRUSTED_PROXIES: ["127.0.0.1"]}))
            .unwrap()
            .unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        for (doc, why) in [
            (json!({KEY: []}), "'ip_whitelist': the list is empty"),
            (json!({KEY: {}}), "'ip_whitelist': must be a list"),
            (json!({KEY: "10.0.0.1"}), "'ip_whitelist': must be a list"),
            (json!({KEY: ["10.0.0.1", 7]}), "entry 7 is not a string"),
            (
                json!({KEY: ["10.0.0.1", "10.0.0.300"]}),
                "'10.0.0.300' is neither an IP address nor a CIDR range",
            ),
            (json!({KEY: ["10.0.0.0/33"]}), "'10.0.0.0/33'"),
            (json!({KEY: ["localhost"]}), "'localhost'"),
            (
                json!({KEY: ["10.0.0.1"], TRUSTED_PROXIES: "127.0.0.1"}),
                "'trusted_proxies': must be a list",
            ),
            (
                json!({KEY: ["10.0.0.1"], TRUSTED_PROXIES: ["proxy.local"]}),
                "'trusted_proxies': 'proxy.local'",
            ),
        ] {
            let e = build_with(doc.clone()).err().unwrap().to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
    }

    #[test]
    fn addresses_and_ranges() {
        let w = list(
            &[
                "192.0.2.7",
                " 10.0.0.0/8 ",
                "2001:db8::/32",
                "::ffff:198.51.100.0/120",
            ],
            &[],
        );
        let none = HeaderMap::new();
        for ok in [
            "192.0.2.7",
            "10.1.2.3",
            "2001:db8::1",
            "198.51.100.9",
            "::ffff:10.9.9.9",
        ] {
            assert_eq!(msg(w.judge(ip(ok), &none)), "ok", "{ok}");
        }
        assert_eq!(
            msg(w.judge(ip("192.0.2.8"), &none)),
            "IP 192.0.2.8 not in whitelist"
        );
        assert_eq!(
            msg(w.judge(ip("::ffff:192.0.2.8"), &none)),
            "IP 192.0.2.8 not in whitelist"
        );
        assert_eq!(
            msg(w.judge(ip("2001:db9::1"), &none)),
            "IP 2001:db9::1 not in whitelist"
        );
        assert_eq!(msg(w.judge(None, &none)), "Could not determine client IP");
    }

    #[test]
    fn forwarding_headers_only_from_trusted_proxies() {
        let w = list(&["203.0.113.0/24"], &["127.0.0.1", "10.0.0.0/8"]);
        let xff = headers(&[("x-forwarded-for", "203.0.113.5")]);
        // An untrusted peer's headers are ignored.
        assert_eq!(
            msg(w.judge(ip("192.0.2.1"), &xff)),
            "IP 192.0.2.1 not in whitelist"
        );
        // A trusted peer (exact or in a range) is believed.
        assert_eq!(msg(w.judge(ip("127.0.0.1"), &xff)), "ok");
        assert_eq!(msg(w.judge(ip("10.3.3.3"), &xff)), "ok");
        // From the right, skipping trusted proxies: a client cannot smuggle an address in front.
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.5, 192.0.2.66, 10.0.0.2")]);
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &spoofed)),
            "IP 192.0.2.66 not in whitelist"
        );
        let chained = headers(&[
            ("x-forwarded-for", "192.0.2.66, 203.0.113.5"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        assert_eq!(msg(w.judge(ip("127.0.0.1"), &chained)), "ok");
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &all_trusted)),
            "IP 10.0.0.3 not in whitelist"
        );
        // X-Real-IP when there is no X-Forwarded-For.
        let real = headers(&[("x-real-ip", " 203.0.113.9 ")]);
        assert_eq!(msg(w.judge(ip("127.0.0.1"), &real)), "ok");
        assert_eq!(
            msg(w.judge(ip("192.0.2.1"), &real)),
            "IP 192.0.2.1 not in whitelist"
        );
        // Neither: the proxy itself.
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &HeaderMap::new())),
            "IP 127.0.0.1 not in whitelist"
        );
        let empty = headers(&[("x-forwarded-for", " , ")]);
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &empty)),
            "IP 127.0.0.1 not in whitelist"
        );
        // Garbage is refused, and echoed only in part.
        let junk = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &junk)),
            "Invalid IP address format: not-an-ip"
        );
        let long = format!("{}1", "9".repeat(100));
        let junk = headers(&[("x-real-ip", &long)]);
        assert_eq!(
            msg(w.judge(ip("127.0.0.1"), &junk)),
            format!("Invalid IP address format: {}", "9".repeat(64))
        );
    }
}
