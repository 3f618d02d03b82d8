//! Outbound HTTP(S): the one client every outbound caller shares (the `http_webhook` and
//! `clickhouse` sinks, the `oauth2`, `remote` and `recaptcha` validators), with its SSRF checks.
//!
//! One client serves the whole process ([`ModuleContext`](crate::ModuleContext)): connection
//! pooling, HTTP/1.1 and HTTP/2 (ALPN), TLS by rustls with the `ring` provider and the Mozilla
//! roots (webpki-roots). Every request carries [`USER_AGENT_VALUE`].
//!
//! Two checks guard the destinations:
//!
//! - Load time ([`ssrf::check_host`], the V-URL host rules): callers check the URL's host as
//!   written when their config loads, and build the request URI from the checked parts
//!   ([`url`]), so parser differences cannot reach another host.
//! - Connect time (beyond the Python gateway, which had no DNS check): the load-time rules judge
//!   the URL's host as written, so a name could still resolve to a cloud metadata endpoint, or
//!   resolve to a public address at load and to the metadata address later (DNS rebinding).
//!   The client therefore resolves every new connection's host itself
//!   ([`GuardedResolver`](client::GuardedResolver), tokio's `lookup_host`, which runs
//!   `getaddrinfo` off the runtime) and drops each address that is a cloud metadata address
//!   (`is_metadata_host`: 169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192),
//!   link-local (169.254.0.0/16, fe80::/10) or multicast, also when written as IPv4-mapped, 6to4
//!   or NAT64 IPv6; only the remaining addresses are connected to, and a host left with none is
//!   refused. An IP literal is judged the same way before connecting
//!   ([`GuardedConnector`](client::GuardedConnector)). Loopback and private addresses stay
//!   allowed (they are operator configuration): reaching them is the load-time rules' business.
//!   Pooled connections were checked when they were opened. A refusal is found in the client's
//!   error chain by [`refused_in`].
//!
//! Invariant: this module knows nothing of sinks or validators; they import it.

pub(crate) mod client;
pub(crate) mod ssrf;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod url;

pub(crate) use client::{
    ConnectGuardError, HttpClient, USER_AGENT_VALUE, build_client, error_chain, refused_in,
};
#[cfg(test)]
pub(crate) use client::{Lookup, build_client_with};
pub(crate) use url::{MAX_URL_LEN, basic_auth, request_uri, split_host_port, split_url};
