//! TLS client settings (rustls on ring) and the HTTP client built on them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ConnectorConfig;

/// The HTTP(S) client of the connector (SSE, long-poll, acks, HTTP targets).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM block, or rustls refused its contents.
    #[error("{0}")]
    Invalid(String),
}

/// The TLS configurations the connector uses.
#[derive(Clone)]
pub struct TlsConfigs {
    /// To the receiver: verification (unless `verify_ssl=false`), the custom CA, the client
    /// certificate.
    pub cloud: Arc<ClientConfig>,
    /// To HTTP targets: the same verification and CA, no client certificate.
    pub targets: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs").finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            what,
            path: path.display().to_string(),
            source,
        })
}

fn certs(what: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{what} {}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsConfigs {
    /// Read the files named by `config` and build both configurations.
    pub async fn load(config: &ConnectorConfig) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.ca_cert_path {
            let pem = read("CA certificate", path).await?;
            for cert in certs("CA certificate", path, &pem)? {
                roots.add(cert).map_err(|e| {
                    TlsError::Invalid(format!("CA certificate {}: {e}", path.display()))
                })?;
            }
        }
        let identity = match (&config.client_cert_path, &config.client_key_path) {
            (Some(cert_path), Some(key_path)) => {
                let pem = read("client certificate", cert_path).await?;
                let chain = certs("client certificate", cert_path, &pem)?;
                let pem = read("client key", key_path).await?;
                let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    TlsError::Invalid(format!("client key {}: {e}", key_path.display()))
                })?;
                Some((chain, key))
            }
            _ => None,
        };
        let build = |identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>| {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid(format!("TLS setup failed: {e}")))?;
            let builder = if config.verify_ssl {
                builder.with_root_certificates(roots.clone())
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            };
            let mut tls = match identity {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Invalid(format!("client certificate or key: {e}")))?,
                None => builder.with_no_client_auth(),
            };
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok::<_, TlsError>(Arc::new(tls))
        };
        Ok(Self {
            cloud: build(identity)?,
            targets: build(None)?,
        })
    }
}

/// An HTTP/1.1 client over `tls` (plain `http://` too).
pub fn http_client(tls: Arc<ClientConfig>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    // hyper-rustls sets the ALPN list itself (HTTP/1.1 only here).
    let mut tls = (*tls).clone();
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// `verify_ssl=false`: any certificate is accepted (signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
