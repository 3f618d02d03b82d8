//! The shared outbound HTTP(S) client: its connector, and the resolver that applies the
//! connect-time address check ([`connect_refused`]) to every new connection.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::ssrf::connect_refused;

/// The process-wide client type.
pub(crate) type HttpClient = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// The `User-Agent` of every outbound request.
pub(crate) const USER_AGENT_VALUE: &str = concat!("cwm/", env!("CARGO_PKG_VERSION"));

/// Build the shared client. Called once per process, on first use (an `http_webhook` or
/// `clickhouse` load, or a validator that calls out).
pub(crate) fn build_client() -> Result<HttpClient, String> {
    build_client_with(Arc::new(SystemLookup))
}

/// The shared client, resolving names with `lookup` (tests inject a table).
pub(crate) fn build_client_with(lookup: Arc<dyn Lookup>) -> Result<HttpClient, String> {
    // An explicit provider: never depends on which rustls backends other crates switch on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { lookup });
    http.enforce_http(false);
    http.set_nodelay(true);
    let http = GuardedConnector { inner: http };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Why the client did not connect, as its resolver and connector report it. Found again in the
/// client's error chain by [`refused_in`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectGuardError {
    /// Every address of the host is one the connect-time check refuses. Names no address, so
    /// messages never tell more about the network than the URL already does.
    #[error("the host resolves only to cloud metadata, link-local or multicast addresses")]
    Refused,
    /// The name did not resolve.
    #[error("name resolution failed: {0}")]
    Lookup(#[source] io::Error),
}

/// A boxed, sendable future (resolver and connector futures).
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How host names become addresses. The ports of the answer are ignored.
pub(crate) trait Lookup: Send + Sync {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

/// The system resolver through tokio (`getaddrinfo` on the blocking pool, never on a worker).
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, 0)).await?.collect()) })
    }
}

/// The client's resolver: resolves with [`Lookup`] and keeps only the addresses
/// [`connect_refused`] allows. It runs for every new connection, so a host that changes its
/// answer (DNS rebinding) is judged again each time.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ConnectGuardError;
    type Future = BoxFuture<Result<Self::Response, ConnectGuardError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectGuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.lookup.lookup(name.as_str().to_owned());
        Box::pin(async move {
            let mut addrs = lookup.await.map_err(ConnectGuardError::Lookup)?;
            if addrs.is_empty() {
                return Err(ConnectGuardError::Lookup(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no addresses",
                )));
            }
            addrs.retain(|a| !connect_refused(a.ip()));
            if addrs.is_empty() {
                return Err(ConnectGuardError::Refused);
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The client's TCP connector: `HttpConnector` with the [`GuardedResolver`], plus the same check
/// for an IP-literal host, which `HttpConnector` connects to without asking the resolver.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let literal = dst
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if literal.is_some_and(connect_refused) {
            return Box::pin(std::future::ready(Err(ConnectGuardError::Refused.into())));
        }
        let connecting = self.inner.call(dst);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Whether the connect-time check refused the connection somewhere in `e`'s causes.
pub(crate) fn refused_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<ConnectGuardError>(),
            Some(ConnectGuardError::Refused)
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The error and its causes ("client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
