//! The TLS files: read, checked with the rustls etcd-client uses, and turned into options.

use std::fmt;
use std::path::Path;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::InconsistentKeys;
use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::settings::EtcdTls;
use crate::error::ConfigError;

/// TLS options from the files, read and checked again for every connection (certificates may be
/// renewed in place): the CA, or the Mozilla roots without one, and the client identity.
pub(crate) async fn tls_options(tls: EtcdTls) -> Result<TlsOptions, ConfigError> {
    let loaded = tokio::task::spawn_blocking(move || load_tls(&tls))
        .await
        .map_err(|e| ConfigError::Setting(format!("etcd TLS: reading the files failed: {e}")))??;
    Ok(loaded.into_options())
}

/// The TLS files' contents, each checked.
pub(crate) struct LoadedTls {
    /// The CA file as it was read.
    pub(crate) ca: Option<Vec<u8>>,
    /// The client certificate and key files as they were read.
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl LoadedTls {
    /// Trust the CA, or the Mozilla roots without one; present the identity when there is one.
    pub(crate) fn into_options(self) -> TlsOptions {
        let options = match self.ca {
            Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(ca)),
            None => TlsOptions::new().trust_anchors(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        match self.identity {
            Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

/// Which TLS file, to name it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFile {
    Ca,
    Cert,
    Key,
}

impl TlsFile {
    fn name(self) -> &'static str {
        match self {
            TlsFile::Ca => "CA certificate (ETCD_CA_CERT)",
            TlsFile::Cert => "client certificate (ETCD_CERT)",
            TlsFile::Key => "client key (ETCD_KEY)",
        }
    }

    fn error(self, path: &Path, problem: impl fmt::Display) -> ConfigError {
        ConfigError::Setting(format!(
            "etcd TLS: {} {}: {problem}",
            self.name(),
            path.display()
        ))
    }
}

/// A TLS file's bytes and its PEM blocks of known kinds.
struct Pem {
    bytes: Vec<u8>,
    blocks: Vec<(SectionKind, Vec<u8>)>,
}

impl Pem {
    fn read(what: TlsFile, path: &Path) -> Result<Self, ConfigError> {
        // A few KiB of certificates, read once per etcd session by the watch worker; never on
        // the request path.
        #[allow(clippy::disallowed_methods)]
        let bytes = std::fs::read(path)
            .map_err(|e| what.error(path, format_args!("cannot be read: {e}")))?;
        let blocks = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                let problem = match e {
                    pem::Error::MissingSectionEnd { .. } => {
                        "is not valid PEM: a block has no -----END line".to_owned()
                    }
                    pem::Error::IllegalSectionStart { .. } => {
                        "is not valid PEM: a -----BEGIN line is malformed".to_owned()
                    }
                    pem::Error::Base64Decode(e) => {
                        format!("is not valid PEM: a block is not valid base64 ({e})")
                    }
                    other => format!("is not valid PEM: {other}"),
                };
                what.error(path, problem)
            })?;
        Ok(Self { bytes, blocks })
    }

    fn has(&self, kind: SectionKind) -> bool {
        self.blocks.iter().any(|(k, _)| *k == kind)
    }

    fn has_private_key(&self) -> bool {
        self.blocks.iter().any(|(k, _)| {
            matches!(
                k,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
            )
        })
    }

    fn mentions(&self, text: &str) -> bool {
        self.bytes.windows(text.len()).any(|w| w == text.as_bytes())
    }

    /// Every certificate, each parsed as X.509; at least one.
    fn certificates(
        &self,
        what: TlsFile,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let certs: Vec<CertificateDer<'static>> = self
            .blocks
            .iter()
            .filter(|(k, _)| *k == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der.clone()))
            .collect();
        if certs.is_empty() {
            let problem = if self.has_private_key() {
                match what {
                    TlsFile::Cert => {
                        "holds a private key, not a certificate (are ETCD_CERT and ETCD_KEY \
                         swapped?)"
                    }
                    _ => "holds a private key, not a certificate",
                }
            } else if self.mentions("-----BEGIN") {
                "holds no certificate (no -----BEGIN CERTIFICATE----- block)"
            } else {
                "is not a PEM certificate (no -----BEGIN CERTIFICATE----- block; a DER file \
                 must be converted to PEM)"
            };
            return Err(what.error(path, problem));
        }
        for (i, cert) in certs.iter().enumerate() {
            RootCertStore::empty().add(cert.clone()).map_err(|e| {
                // rustls words this for a peer's certificate; only the reason applies here.
                let reason = match e {
                    rustls::Error::InvalidCertificate(reason) => format!("{reason:?}"),
                    other => other.to_string(),
                };
                what.error(
                    path,
                    format_args!(
                        "certificate {} of the file is not valid X.509 ({reason})",
                        i + 1
                    ),
                )
            })?;
        }
        Ok(certs)
    }

    /// The first private key.
    fn private_key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
        let what = TlsFile::Key;
        if let Some(key) = self
            .blocks
            .iter()
            .find_map(|(kind, der)| PrivateKeyDer::from_pem(*kind, der.clone()))
        {
            return Ok(key);
        }
        let problem = if self.has(SectionKind::Certificate) {
            "holds a certificate, not a private key (are ETCD_CERT and ETCD_KEY swapped?)"
        } else if self.mentions("ENCRYPTED PRIVATE KEY") {
            "holds an encrypted private key; the key must be unencrypted"
        } else if self.mentions("-----BEGIN") {
            "holds no private key (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or \
             EC PRIVATE KEY block)"
        } else {
            "is not a PEM private key (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or \
             EC PRIVATE KEY block; a DER file must be converted to PEM)"
        };
        Err(what.error(path, problem))
    }
}

/// Read and check the TLS files the way the TLS layer will use them, naming the file and the
/// problem: a CA that holds no parsable certificate, a certificate file that holds a key (or the
/// reverse), a key rustls cannot use, a key that does not belong to the certificate.
pub(crate) fn load_tls(tls: &EtcdTls) -> Result<LoadedTls, ConfigError> {
    let ca = match &tls.ca {
        Some(path) => {
            let pem = Pem::read(TlsFile::Ca, path)?;
            pem.certificates(TlsFile::Ca, path)?;
            Some(pem.bytes)
        }
        None => None,
    };
    let identity = match (&tls.cert, &tls.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = Pem::read(TlsFile::Cert, cert_path)?;
            let chain = cert.certificates(TlsFile::Cert, cert_path)?;
            let key = Pem::read(TlsFile::Key, key_path)?;
            let signing = rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(key.private_key(key_path)?)
                .map_err(|e| {
                    TlsFile::Key.error(key_path, format_args!("the key cannot be used: {e}"))
                })?;
            match CertifiedKey::new(chain, signing).keys_match() {
                Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
                Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                    return Err(TlsFile::Key.error(
                        key_path,
                        format_args!(
                            "does not belong to the client certificate {}",
                            cert_path.display()
                        ),
                    ));
                }
                Err(e) => return Err(TlsFile::Cert.error(cert_path, e)),
            }
            Some((cert.bytes, key.bytes))
        }
        _ => None,
    };
    Ok(LoadedTls { ca, identity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_trusts_the_ca_or_else_the_mozilla_roots() {
        let roots = |ca: Option<Vec<u8>>| {
            let options = LoadedTls { ca, identity: None }.into_options();
            !format!("{options:?}").contains("trust_anchors: []")
        };
        assert!(roots(None), "no CA: the built-in roots");
        assert!(!roots(Some(b"a CA".to_vec())), "a CA: only that CA");
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 50);
    }
}
