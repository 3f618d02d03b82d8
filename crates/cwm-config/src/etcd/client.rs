//! Connecting to etcd and classifying what goes wrong (shared with the command-line tool).

use std::sync::Arc;

use etcd_client::{Client, ConnectOptions};
use rustls::RootCertStore;

use super::settings::{EtcdSettings, parse_endpoint};
use super::tls::tls_options;
use crate::error::ConfigError;

/// Connect to etcd with the options the provider uses: HTTP/2 keepalive (also while idle),
/// require-leader on every request (so a member cut off from its leader refuses instead of
/// serving stale data or a silent watch), a TCP connect timeout, optional TLS and optional
/// authentication. The whole call, authentication included, is bounded by
/// `connect_timeout + request_timeout`.
///
/// Without credentials no request is made: an unreachable etcd shows up on the first read.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, ConfigError> {
    let mut options = ConnectOptions::new()
        .with_keep_alive(settings.keepalive_interval, settings.keepalive_timeout)
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(settings.keepalive_interval)
        .with_connect_timeout(settings.connect_timeout)
        .with_require_leader(true);
    if let Some((user, password)) = settings.credentials() {
        options = options.with_user(user, password);
    }
    if settings.uses_tls() {
        options = options.with_tls(tls_options(settings.tls.clone().unwrap_or_default()).await?);
    }
    let bound = settings.connect_timeout + settings.request_timeout;
    match tokio::time::timeout(bound, Client::connect(&settings.endpoints, Some(options))).await {
        Err(_) => Err(ConfigError::Etcd(format!(
            "connecting timed out after {bound:?}"
        ))),
        Ok(Err(e)) => Err(ConfigError::Etcd(
            settings.redact(format!("connect: {}", describe(&e))),
        )),
        Ok(Ok(client)) => Ok(client),
    }
}

/// Why an etcd interaction failed, classified for the retry policy.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The auth token was refused (expired): rebuild the client and resync.
    pub(crate) auth: bool,
    pub(crate) message: String,
    /// The connection failed below gRPC after it was made (see [`is_transport_failure`]): over
    /// plain text, worth asking whether the server speaks TLS ([`tls_hint`]).
    pub(crate) transport: bool,
}

impl Failure {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self {
            auth: false,
            message: message.into(),
            transport: false,
        }
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Self {
        Self {
            auth: is_auth_expired(&e),
            message: describe(&e),
            transport: is_transport_failure(&e),
        }
    }
}

/// A failure of the client's transport rather than an answer from etcd, and not a TCP connection
/// that could not be made: the server closed or reset the connection, or sent something that is
/// not HTTP/2. What a TLS server does with plain-text HTTP/2 (etcd closes the connection without
/// a word; a TLS proxy answers with a TLS alert, which HTTP/2 reads as an oversized frame).
pub(crate) fn is_transport_failure(e: &etcd_client::Error) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        // An answer from etcd carries no source; the client's own failures do.
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(t) => Some(t),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    let transport = cause.is_some();
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            )
        }) {
            return false;
        }
        cause = c.source();
    }
    transport
}

/// Why a plain-text connection to etcd may have failed: the first endpoint that answers a TLS
/// ClientHello with TLS, as a hint for the operator ("the server at X answered with TLS: set
/// ETCD_CA_CERT or use an https:// endpoint"). `None` when TLS is configured or no endpoint
/// speaks TLS. Probes every endpoint at once, within the connect timeout; sends nothing but the
/// hello.
pub async fn tls_hint(settings: &EtcdSettings) -> Option<String> {
    if settings.uses_tls() {
        return None;
    }
    let mut probes = tokio::task::JoinSet::new();
    for endpoint in &settings.endpoints {
        let endpoint = endpoint.clone();
        probes.spawn(async move { speaks_tls(&endpoint).await.then_some(endpoint) });
    }
    let first = async {
        while let Some(probe) = probes.join_next().await {
            if let Ok(Some(endpoint)) = probe {
                return Some(endpoint);
            }
        }
        None
    };
    let endpoint = tokio::time::timeout(settings.connect_timeout, first)
        .await
        .ok()
        .flatten()?;
    Some(format!(
        "the server at {endpoint} answered with TLS: set ETCD_CA_CERT or use an https:// \
         endpoint"
    ))
}

/// Whether the server at a plain endpoint answers a TLS ClientHello with a TLS record
/// (a handshake or an alert).
async fn speaks_tls(endpoint: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok((host, port)) = parse_endpoint(endpoint) else {
        return false;
    };
    // etcd-client turns a bare endpoint into http://, whose default port is 80.
    let port = port.unwrap_or(80);
    let Some(hello) = client_hello(host) else {
        return false;
    };
    let Ok(mut stream) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    if stream.write_all(&hello).await.is_err() {
        return false;
    }
    let mut head = [0_u8; 2];
    // 0x16: handshake (ServerHello), 0x15: alert; then the major version, 3.
    stream.read_exact(&mut head).await.is_ok() && matches!(head, [0x15 | 0x16, 0x03])
}

/// The bytes of a TLS ClientHello for `host`.
fn client_hello(host: &str) -> Option<Vec<u8>> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .or_else(|_| rustls::pki_types::ServerName::try_from("localhost"))
        .ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// A short description of an etcd-client error: gRPC code and message, without metadata.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut text = format!("{:?}: {}", s.code(), s.message());
            // Transport and TLS failures keep their cause in the source chain.
            let mut source = std::error::Error::source(s);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                // Layers often repeat their cause's text; say each thing once.
                if !text.contains(&cause_text) {
                    text.push_str(&format!(" ({cause_text})"));
                }
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

fn status(e: &etcd_client::Error) -> Option<&tonic::Status> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        _ => None,
    }
}

/// An invalid or expired auth token (etcd answers `Unauthenticated`; some paths lose the code
/// and keep the message).
pub(crate) fn is_auth_expired(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| {
        s.code() == tonic::Code::Unauthenticated || s.message().contains("invalid auth token")
    })
}

pub(crate) fn is_compacted(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| s.message().contains("required revision has been compacted"))
}

pub(crate) fn is_too_large(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) && s.message().contains("message length too large")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_transport_failure(&etcd_client::Error::IoError(refused)));
        let closed = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_transport_failure(&etcd_client::Error::IoError(closed)));
        // An answer from etcd.
        let answer = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"));
        assert!(!is_transport_failure(&answer));
    }

    #[test]
    fn error_classification() {
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unauthenticated(
            "etcdserver: invalid auth token",
        ));
        assert!(is_auth_expired(&e));
        assert_eq!(
            describe(&e),
            "Unauthenticated: etcdserver: invalid auth token"
        );
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unknown(
            "etcdserver: invalid auth token",
        ));
        assert!(is_auth_expired(&e));
        let e = etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert!(!is_auth_expired(&e));
        let e = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(is_compacted(&e) && !is_too_large(&e));
        let e = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        ));
        assert!(is_too_large(&e));
    }
}
