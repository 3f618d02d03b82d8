//! Address and host rules for outbound destinations: the load-time host rules of V-URL
//! ([`check_host`]) and the connect-time address check ([`connect_refused`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cwm_config::model::is_metadata_host;

/// The upstream's localhost names plus names that resolve to loopback on common systems.
const LOCALHOST_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "127.1",
    "127.0.1",
    "127.000.000.001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "2130706433",
    "0x7f000001",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
];

/// Whether the client refuses to connect to `ip`: a cloud metadata address (by the same list as
/// connection hosts), link-local or multicast, also inside IPv4-mapped, IPv4-compatible, 6to4
/// and NAT64 (64:ff9b::/96) IPv6 addresses. Loopback and private addresses are allowed.
pub(crate) fn connect_refused(ip: IpAddr) -> bool {
    let refused = |ip: IpAddr| {
        is_metadata_host(&ip.to_string())
            || ip.is_multicast()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            }
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => refused(IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            refused(IpAddr::V6(v6)) || embedded_v4(v6).is_some_and(|v4| refused(v4.into()))
        }
    }
}

/// The IPv4 address an IPv6 address carries to an IPv4 host: IPv4-compatible (`::a.b.c.d`, not
/// `::` or `::1`), 6to4 (`2002:AABB:CCDD::/48`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        Some(tail)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(tail)
    } else {
        None
    }
}

/// The host rules of V-URL. `host` is lower-case, without brackets.
pub(crate) fn check_host(host: &str, allowed_hosts: Option<&[String]>) -> Result<(), String> {
    if let Some(list) = allowed_hosts.filter(|l| !l.is_empty()) {
        let listed = list.iter().any(|entry| {
            let e = entry.trim();
            let e = e
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(e);
            e.eq_ignore_ascii_case(host)
        });
        return if listed {
            Ok(())
        } else {
            Err("URL host is not in 'allowed_hosts'".into())
        };
    }
    let reject = |why: &str| Err(format!("URL host rejected: {why}"));
    if LOCALHOST_NAMES.contains(&host) || host.ends_with(".localhost") {
        return reject("localhost");
    }
    if is_metadata_host(host) {
        return reject("cloud metadata endpoint");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if ip_blocked(ip) {
            reject("private, loopback, link-local, multicast or reserved address")
        } else {
            Ok(())
        };
    }
    if inet_aton(host).is_some() || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Octal, hex, short and integer forms: resolvers read them as addresses. No real
        // destination is written that way, so all are refused, not only the private ones.
        return reject("numeric host that is not a dotted-quad address");
    }
    if host.len() > 253 || !is_dns_name(host) {
        return reject("not a valid host name");
    }
    Ok(())
}

/// Python `ipaddress` predicates (CPython 3.11): link-local, loopback, multicast, reserved or
/// private. 100.64/10 is not private there, so it passes.
fn ip_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_blocked(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Outside 2000::/3 everything is loopback, unspecified, IPv4-mapped, ULA, link-local,
            // multicast or IETF-reserved.
            if s[0] & 0xe000 != 0x2000 {
                return true;
            }
            // 2001::/23 (IETF protocol assignments, Teredo included) and 2001:db8::/32.
            if s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8) {
                return true;
            }
            // 6to4 carries an IPv4 address that the relay will reach.
            if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                return v4_blocked(Ipv4Addr::new(a, b, c, d));
            }
            false
        }
    }
}

fn v4_blocked(ip: Ipv4Addr) -> bool {
    const PRIVATE: &[(u32, u8)] = &[
        (0x0000_0000, 8),  // 0/8
        (0x0a00_0000, 8),  // 10/8
        (0x7f00_0000, 8),  // 127/8
        (0xa9fe_0000, 16), // 169.254/16
        (0xac10_0000, 12), // 172.16/12
        (0xc000_0000, 29), // 192.0.0.0/29
        (0xc000_00aa, 31), // 192.0.0.170/31
        (0xc000_0200, 24), // 192.0.2/24
        (0xc0a8_0000, 16), // 192.168/16
        (0xc612_0000, 15), // 198.18/15
        (0xc633_6400, 24), // 198.51.100/24
        (0xcb00_7100, 24), // 203.0.113/24
        (0xe000_0000, 4),  // 224/4 multicast
        (0xf000_0000, 4),  // 240/4 reserved, broadcast included
    ];
    let n = u32::from(ip);
    PRIVATE
        .iter()
        .any(|&(net, len)| n >> (32 - u32::from(len)) == net >> (32 - u32::from(len)))
}

/// What `inet_aton` (and so `getaddrinfo`) reads as an IPv4 address: one to four parts, each
/// decimal, octal (leading 0) or hex (0x).
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let mut parts = Vec::with_capacity(4);
    for p in s.split('.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(inet_number(p)?);
    }
    let (&last, init) = parts.split_last()?;
    if init.iter().any(|&n| n > 255) || last > (u64::from(u32::MAX) >> (8 * init.len())) {
        return None;
    }
    let mut v = last;
    for (i, &n) in init.iter().enumerate() {
        v |= n << (24 - 8 * i);
    }
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

fn inet_number(p: &str) -> Option<u64> {
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        return hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten();
    }
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match p.strip_prefix('0') {
        Some(oct) if !oct.is_empty() => u64::from_str_radix(oct, 8).ok(),
        _ => p.parse().ok(),
    }
}

/// The upstream's host name rule: dot-separated labels of letters, digits and inner hyphens, 1..63 long.
fn is_dns_name(host: &str) -> bool {
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_time_address_rules() {
        let refused = [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.255.255",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::ffff:100.100.100.200",
        ];
        for ip in refused {
            assert!(
                connect_refused(ip.parse().unwrap()),
                "{ip} should be refused"
            );
        }
        let allowed = [
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "::",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "100.100.100.201",
            "169.253.255.255",
            "169.255.0.1",
            "fd00::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "2002:0808:0808::1",
        ];
        for ip in allowed {
            assert!(
                !connect_refused(ip.parse().unwrap()),
                "{ip} should be allowed"
            );
        }
    }

    #[test]
    fn numeric_forms() {
        assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0x7f.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0177.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("10.1.258"), Some(Ipv4Addr::new(10, 1, 1, 2)));
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("256.1.1.1"), None);
        assert_eq!(inet_aton("08.1.1.1"), None);
        assert_eq!(inet_aton("1e100"), None);
        assert_eq!(inet_aton("4294967296"), None);
    }
}
