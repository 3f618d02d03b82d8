//! The etcd backend: a read-only, list-then-watch cache of `{prefix}`.
//!
//! # How it works
//!
//! [`EtcdProvider::start`] returns at once and spawns one background task that owns the etcd
//! client. The task loops over *sessions*:
//!
//! 1. connect (authenticating when credentials are set);
//! 2. list the whole prefix in pages, every page pinned to the revision `R` of the first one,
//!    build a fresh [`Snapshot`] off to the side and publish it with [`Store::replace`];
//! 3. watch the prefix from `R + 1`, applying each response with one [`Store::update`]
//!    (O(log n) per event on the persistent maps).
//!
//! A watch cancelled for compaction, a revision going backwards (etcd restored or wiped) or an
//! admin reload starts a new listing with the same client (a *resync*). Any other failure drops
//! the client and its stream, waits an exponential backoff with jitter (cut short by an admin
//! reload) and starts a new session, which re-lists everything. An expired auth token rebuilds the
//! client at once (one immediate retry, then backoff). Every resync is counted by reason.
//!
//! Readers only ever call [`ConfigProvider::snapshot`], a lock-free load that never awaits etcd,
//! so the last good configuration keeps serving while etcd is away.
//!
//! The provider never writes to etcd; [`connect`] and [`read_all`] are public so that the
//! command-line tool reads the same way, and [`tls_hint`] so that it explains a plain-text
//! connection refused by a TLS server the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::Guard;
use async_trait::async_trait;
use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, KeyValue, KvClient,
    TlsOptions, WatchOptions, WatchStream,
};
use rustls::InconsistentKeys;
use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::ConfigError;
use crate::keys::{KeyError, KeyRef, parse_key};
use crate::model::ConnectionConfig;
use crate::names::{is_valid_namespace, normalize_prefix};
use crate::provider::{
    BackendState, Compiler, ConfigProvider, Diff, ProviderStatus, ReloadReport, ReloadRequest,
    Resync, compile_webhook_json, parse_connection,
};
use crate::snapshot::{Snapshot, SnapshotBuilder, Store, now_rfc3339};
use crate::subst::Env;

/// Upstream default key prefix.
pub const DEFAULT_PREFIX: &str = "/cwm/";
/// Upstream default namespace for routes without one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Upstream default endpoint (ETCD_HOST=localhost, ETCD_PORT=2379).
pub const DEFAULT_ENDPOINT: &str = "localhost:2379";
/// Most keys per range request of a listing; a page also stops near 16 MiB of keys and values
/// (the page after a page of large values asks for fewer keys). 50,000 keys of ~260 bytes is
/// ~13 MiB. Large pages matter: etcd walks its index from a page's first key to the end of the
/// prefix for every page (to count the range), so a listing costs it O(keys² / page size); with
/// 50,000 instead of 10,000 a 250,000-key listing took about half the time (0.49 s, 0.91 s).
pub const DEFAULT_PAGE_SIZE: i64 = 50_000;

/// Target size of one page (keys and values): the next page asks for as many keys as fit, by the
/// average size of the last page. Far below [`MAX_MESSAGE_BYTES`].
const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest gRPC message accepted from etcd. Pages shrink on their own when a response is larger
/// (huge values), so this only has to exceed one value plus overhead (etcd caps a request at
/// 1.5 MiB by default).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long `reload()` waits for the background task to finish a re-list.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `shutdown()` waits for the background task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many times a listing restarts when its revision is compacted between two pages.
const LIST_ATTEMPTS: usize = 3;

// ------------------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------------------

/// Client TLS material (ETCD_CA_CERT, ETCD_CERT, ETCD_KEY): PEM files.
///
/// Without a CA the server is verified against the Mozilla root store built into the binary
/// (`webpki-roots`); the client certificate and key are optional but go together (mutual TLS).
/// [`EtcdSettings::validated`] reads and parses every file, so a file that cannot work stops
/// startup with its path and the problem named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Everything the etcd backend needs. Build it with [`EtcdSettings::new`] or fill the public
/// fields over [`EtcdSettings::default`] and call [`EtcdSettings::validated`]; reading the
/// environment is the binary's job.
///
/// `Debug` never prints the password.
#[derive(Clone)]
pub struct EtcdSettings {
    /// `host:port`, `http://host:port` or `https://host:port`. Without a scheme, TLS is used when
    /// TLS files are set or another endpoint is `https://` ([`EtcdSettings::uses_tls`]).
    pub endpoints: Vec<String>,
    /// Key prefix, normalised by [`EtcdSettings::validated`] to end in exactly one `/`.
    pub prefix: String,
    /// Namespace of routes without one.
    pub default_namespace: String,
    /// Authentication is used only when both username and password are non-empty (upstream).
    pub username: String,
    pub password: String,
    pub tls: Option<EtcdTls>,
    /// First reconnect delay (1 s); doubles up to `reconnect_max` (60 s), with ±10 % jitter.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Bound on establishing a connection, authentication included.
    pub connect_timeout: Duration,
    /// Bound on each unary request (one page of a listing) and on the watch being confirmed.
    /// Needed because a request to an unreachable member can otherwise wait forever.
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval and ack timeout, also while idle: a dead or
    /// partitioned member is noticed within `interval + timeout`.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Keys per range request of a listing.
    pub page_size: i64,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            prefix: DEFAULT_PREFIX.to_owned(),
            default_namespace: DEFAULT_NAMESPACE.to_owned(),
            username: String::new(),
            password: String::new(),
            tls: None,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("default_namespace", &self.default_namespace)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("tls", &self.tls)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl EtcdSettings {
    /// Defaults plus the three settings every deployment chooses, validated.
    pub fn new(
        endpoints: Vec<String>,
        prefix: &str,
        default_namespace: &str,
    ) -> Result<Self, ConfigError> {
        Self {
            endpoints,
            prefix: prefix.to_owned(),
            default_namespace: default_namespace.to_owned(),
            ..Self::default()
        }
        .validated()
    }

    /// Check every field and normalise the prefix. Errors are [`ConfigError::Setting`] and never
    /// quote the password.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError::Setting(m));
        if self.endpoints.is_empty() {
            return bad("etcd: at least one endpoint is required".into());
        }
        for e in &self.endpoints {
            parse_endpoint(e).map_err(ConfigError::Setting)?;
            if self.tls.is_some() && e.starts_with("http://") {
                return bad(format!(
                    "etcd: endpoint {e:?} is plain http but TLS is configured"
                ));
            }
        }
        if self.uses_tls()
            && let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://"))
        {
            return bad(format!(
                "etcd: endpoint {plain:?} is plain http but another endpoint is https://; \
                 use one scheme for every endpoint"
            ));
        }
        if self.prefix.is_empty() {
            return bad("etcd: the key prefix must not be empty".into());
        }
        self.prefix = normalize_prefix(&self.prefix);
        if !is_valid_namespace(&self.default_namespace) {
            return bad(format!(
                "etcd: invalid default namespace {:?} (must match [a-zA-Z0-9_-]{{1,64}})",
                self.default_namespace
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return bad("etcd TLS: ETCD_CERT and ETCD_KEY must be set together".into());
            }
            load_tls(tls)?;
        }
        let positive = [
            ("reconnect_initial", self.reconnect_initial),
            ("reconnect_max", self.reconnect_max),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return bad(format!("etcd: {name} must be greater than zero"));
            }
        }
        if self.reconnect_max < self.reconnect_initial {
            return bad("etcd: reconnect_max must not be below reconnect_initial".into());
        }
        if self.page_size < 1 {
            return bad("etcd: page_size must be at least 1".into());
        }
        Ok(self)
    }

    /// Whether connections use TLS: TLS files are set or an endpoint is `https://`. Endpoints
    /// without a scheme then use TLS too.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// `(user, password)` when both are non-empty.
    fn credentials(&self) -> Option<(&str, &str)> {
        (!self.username.is_empty() && !self.password.is_empty())
            .then_some((self.username.as_str(), self.password.as_str()))
    }

    /// Remove the password from a message that is about to be logged or shown.
    fn redact(&self, message: String) -> String {
        if self.password.is_empty() || !message.contains(&self.password) {
            message
        } else {
            message.replace(&self.password, "<redacted>")
        }
    }
}

/// Split an ETCD_ENDPOINTS value (`h1:2379,h2:2379`) into endpoints; blanks are dropped.
pub fn parse_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `(host, port)` of an endpoint, or why it is refused. Never echoes an endpoint that may carry
/// credentials.
fn parse_endpoint(e: &str) -> Result<(&str, Option<u16>), String> {
    if e.contains('@') {
        return Err("etcd endpoint must not contain credentials ('@')".into());
    }
    let invalid = || format!("invalid etcd endpoint {e:?}");
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#'))
    {
        return Err(invalid());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(invalid)?),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(invalid());
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid port in etcd endpoint {e:?}")),
        },
    };
    Ok((host, port))
}

// ------------------------------------------------------------------------------------------------
// Client helpers (shared with the command-line tool)
// ------------------------------------------------------------------------------------------------

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

/// TLS options from the files, read and checked again for every connection (certificates may be
/// renewed in place): the CA, or the Mozilla roots without one, and the client identity.
async fn tls_options(tls: EtcdTls) -> Result<TlsOptions, ConfigError> {
    let loaded = tokio::task::spawn_blocking(move || load_tls(&tls))
        .await
        .map_err(|e| ConfigError::Setting(format!("etcd TLS: reading the files failed: {e}")))??;
    Ok(loaded.into_options())
}

/// The TLS files' contents, each checked.
struct LoadedTls {
    /// The CA file as it was read.
    ca: Option<Vec<u8>>,
    /// The client certificate and key files as they were read.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl LoadedTls {
    /// Trust the CA, or the Mozilla roots without one; present the identity when there is one.
    fn into_options(self) -> TlsOptions {
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
fn load_tls(tls: &EtcdTls) -> Result<LoadedTls, ConfigError> {
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

/// Read every key under `prefix` at one revision, in pages of at most `page_size` keys and about
/// 16 MiB of keys and values (gRPC messages are allowed up to 64 MiB; one range over everything
/// could exceed that and would be held whole in memory). Every page after the first is pinned to
/// the first page's revision, which is returned: watching from `revision + 1` misses nothing.
/// Keys come back sorted. Each page is bounded by 10 s. For one namespace, pass
/// [`crate::keys::namespace_webhooks_prefix`].
///
/// If the revision is compacted between two pages, the listing starts over (up to 3 times); a
/// page too large for one gRPC message is retried with half as many keys.
pub async fn read_all(
    client: &mut Client,
    prefix: &str,
    page_size: i64,
) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), ConfigError> {
    let mut listing = Listing::new(
        client,
        prefix.as_bytes(),
        page_size,
        EtcdSettings::default().request_timeout,
    );
    let mut out = Vec::new();
    while let Some(page) = listing
        .next()
        .await
        .map_err(|f| ConfigError::Etcd(f.message))?
    {
        if page.restarted {
            out.clear();
        }
        out.extend(page.kvs.into_iter().map(KeyValue::into_key_value));
    }
    Ok((listing.revision(), out))
}

/// Why an etcd interaction failed, classified for the retry policy.
#[derive(Debug)]
struct Failure {
    /// The auth token was refused (expired): rebuild the client and resync.
    auth: bool,
    message: String,
    /// The connection failed below gRPC after it was made (see [`is_transport_failure`]): over
    /// plain text, worth asking whether the server speaks TLS ([`tls_hint`]).
    transport: bool,
}

impl Failure {
    fn other(message: impl Into<String>) -> Self {
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
fn is_transport_failure(e: &etcd_client::Error) -> bool {
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
fn describe(e: &etcd_client::Error) -> String {
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
fn is_auth_expired(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| {
        s.code() == tonic::Code::Unauthenticated || s.message().contains("invalid auth token")
    })
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| s.message().contains("required revision has been compacted"))
}

fn is_too_large(e: &etcd_client::Error) -> bool {
    status(e).is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) && s.message().contains("message length too large")
    })
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a
/// prefix); `\0` means "to the end of the keyspace".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Keys to ask for after a page of `keys` keys and `bytes` bytes asked with `limit`: about
/// [`PAGE_BYTES`] of keys and values, at most `page_size` keys. Large values make smaller pages (bounded memory, far from
/// the message limit); a page shrunk by large values grows back when values get smaller.
fn next_limit(keys: usize, bytes: usize, limit: i64, page_size: i64) -> i64 {
    if keys < 2 || bytes == 0 {
        return limit;
    }
    let per_key = bytes.div_ceil(keys);
    i64::try_from(PAGE_BYTES / per_key)
        .unwrap_or(i64::MAX)
        .clamp(1, page_size)
}

/// One page of a listing, keys in order.
struct Page {
    kvs: Vec<KeyValue>,
    /// The listing started over (its revision was compacted between two pages): what earlier
    /// pages gave is void.
    restarted: bool,
    /// Keys in the whole range at the listing's revision, as etcd counted them for this page.
    count: i64,
    /// The listing's revision.
    revision: i64,
}

/// A listing of every key under a prefix, page by page, every page pinned to the revision of
/// the first one. The next request is sent only when [`Listing::next`] is called again, so the
/// caller can work on one page while the next one is on its way.
///
/// If the revision is compacted between two pages, the listing starts over (up to 3 times); a
/// page too large for one gRPC message is asked again with half as many keys. Each request is
/// bounded by `request_timeout`.
struct Listing {
    kv: KvClient,
    end: Vec<u8>,
    prefix: Vec<u8>,
    /// First key of the next page.
    start: Vec<u8>,
    page_size: i64,
    limit: i64,
    /// Revision of the first page; 0 before it.
    revision: i64,
    attempts: usize,
    done: bool,
    request_timeout: Duration,
}

impl Listing {
    fn new(client: &Client, prefix: &[u8], page_size: i64, request_timeout: Duration) -> Self {
        let page_size = page_size.max(1);
        Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            end: prefix_end(prefix),
            prefix: prefix.to_vec(),
            start: prefix.to_vec(),
            page_size,
            limit: page_size,
            revision: 0,
            attempts: 1,
            done: false,
            request_timeout,
        }
    }

    /// The revision every page is pinned to (0 before the first page).
    fn revision(&self) -> i64 {
        self.revision
    }

    /// The next page, or `None` once the listing is complete.
    async fn next(&mut self) -> Result<Option<Page>, Failure> {
        if self.done {
            return Ok(None);
        }
        let mut restarted = false;
        loop {
            let mut options = GetOptions::new()
                .with_range(self.end.clone())
                .with_limit(self.limit);
            if self.revision != 0 {
                options = options.with_revision(self.revision);
            }
            let timeout = self.request_timeout;
            let request = self.kv.get(self.start.clone(), Some(options));
            let mut resp = match tokio::time::timeout(timeout, request).await {
                Err(_) => {
                    return Err(Failure::other(format!(
                        "range request timed out after {timeout:?}"
                    )));
                }
                Ok(Err(e)) if self.revision != 0 && is_compacted(&e) => {
                    if self.attempts >= LIST_ATTEMPTS {
                        return Err(Failure::other(
                            "the listing revision was compacted repeatedly; etcd compacts too \
                             aggressively",
                        ));
                    }
                    tracing::info!(
                        revision = self.revision,
                        "listing revision compacted between pages; listing again"
                    );
                    self.attempts += 1;
                    self.revision = 0;
                    self.start = self.prefix.clone();
                    self.limit = self.page_size;
                    restarted = true;
                    continue;
                }
                Ok(Err(e)) if self.limit > 1 && is_too_large(&e) => {
                    self.limit = (self.limit / 2).max(1);
                    tracing::debug!(
                        limit = self.limit,
                        "range page too large; halving the page size"
                    );
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(resp)) => resp,
            };
            if self.revision == 0 {
                self.revision = resp
                    .header()
                    .map(|h| h.revision())
                    .filter(|r| *r > 0)
                    .ok_or_else(|| Failure::other("range response without a revision"))?;
            }
            let more = resp.more();
            let count = resp.count();
            let kvs = resp.take_kvs();
            let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
            self.limit = next_limit(kvs.len(), bytes, self.limit, self.page_size);
            match kvs.last() {
                Some(last) if more => {
                    self.start.clear();
                    self.start.extend_from_slice(last.key());
                    self.start.push(0);
                }
                _ => self.done = true,
            }
            return Ok(Some(Page {
                kvs,
                restarted,
                count,
                revision: self.revision,
            }));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Provider
// ------------------------------------------------------------------------------------------------

const STATE_CONNECTING: u8 = 0;
const STATE_HEALTHY: u8 = 1;
const STATE_DISCONNECTED: u8 = 2;

#[derive(Default)]
struct Info {
    last_reload: Option<String>,
    last_error: Option<String>,
    last_resync: Option<Resync>,
    resyncs: BTreeMap<String, u64>,
}

/// State shared by the provider handle and its background task.
struct Shared<C: Compiler> {
    settings: EtcdSettings,
    compiler: Arc<C>,
    env: Arc<dyn Env + Send + Sync>,
    store: Store<C::Webhook>,
    /// `STATE_*`; the watch is confirmed only in `STATE_HEALTHY`.
    state: AtomicU8,
    info: Mutex<Info>,
    /// Flips to true after the first full load, for [`EtcdProvider::wait_loaded`].
    loaded: watch::Sender<bool>,
}

type ReloadReply = oneshot::Sender<Result<ReloadReport, String>>;

/// A request from the handle to the background task.
enum Cmd {
    Reload(ReloadRequest, ReloadReply),
}

/// Serves webhooks and connections from etcd, kept current by a watch. See the module docs.
pub struct EtcdProvider<C: Compiler> {
    shared: Arc<Shared<C>>,
    cmds: mpsc::Sender<Cmd>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Compiler> EtcdProvider<C> {
    /// Validate the settings and start the background task; returns at once. Until the first
    /// full load, [`ConfigProvider::state`] is [`BackendState::Connecting`] and the snapshot is
    /// empty and not loaded; the task keeps retrying with backoff. Must run inside a Tokio runtime.
    pub fn start(
        settings: EtcdSettings,
        compiler: Arc<C>,
        env: Arc<dyn Env + Send + Sync>,
    ) -> Result<Arc<Self>, ConfigError> {
        let settings = settings.validated()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::Setting("the etcd provider must be started inside a Tokio runtime".into())
        })?;
        if !settings.username.is_empty() && settings.password.is_empty() {
            tracing::warn!("ETCD_USERNAME is set without ETCD_PASSWORD: connecting without auth");
        }
        let shared = Arc::new(Shared {
            store: Store::new(Snapshot::empty(&settings.default_namespace, false)),
            settings,
            compiler,
            env,
            state: AtomicU8::new(STATE_CONNECTING),
            info: Mutex::new(Info::default()),
            loaded: watch::Sender::new(false),
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let worker = Worker {
            backoff: new_backoff(&shared.settings),
            shared: shared.clone(),
            cmds: cmd_rx,
            tracker: Arc::default(),
            waiting: Vec::new(),
            next_reason: None,
            last_seen: 0,
            auth_retry: true,
        };
        tracing::info!(
            endpoints = ?shared.settings.endpoints,
            prefix = %shared.settings.prefix,
            default_namespace = %shared.settings.default_namespace,
            auth = shared.settings.credentials().is_some(),
            tls = shared.settings.uses_tls(),
            "starting etcd configuration provider"
        );
        let task_shared = shared.clone();
        let task = runtime.spawn(async move {
            tokio::select! {
                () = worker.run() => {}
                _ = stop_rx.wait_for(|stop| *stop) => {}
            }
            task_shared.mark_stopped();
        });
        Ok(Arc::new(Self {
            shared,
            cmds: cmd_tx,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Wait until the first full load has been published, at most `timeout`. For the CLI and
    /// tests, and for a binary that prefers to fail at startup when etcd is unreachable.
    pub async fn wait_loaded(&self, timeout: Duration) -> Result<(), ConfigError> {
        let mut rx = self.shared.loaded.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|loaded| *loaded)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ConfigError::Etcd("the provider has stopped".into())),
            Err(_) => {
                let last = self.shared.info().last_error.clone();
                Err(ConfigError::Etcd(format!(
                    "no complete load within {timeout:?}{}",
                    last.map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    /// The validated settings (the password is redacted by `Debug`).
    pub fn settings(&self) -> &EtcdSettings {
        &self.shared.settings
    }
}

impl<C: Compiler> Drop for EtcdProvider<C> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl<C: Compiler> Shared<C> {
    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Release);
    }

    fn mark_stopped(&self) {
        self.set_state(if self.store.is_loaded() {
            STATE_DISCONNECTED
        } else {
            STATE_CONNECTING
        });
    }

    fn record_error(&self, message: &str) {
        self.info().last_error = Some(message.to_owned());
    }

    fn record_resync(&self, reason: &str) {
        let mut info = self.info();
        *info.resyncs.entry(reason.to_owned()).or_insert(0) += 1;
        info.last_resync = Some(Resync {
            reason: reason.to_owned(),
            at: now_rfc3339(),
        });
    }

    fn rejection_key(key: &[u8]) -> String {
        String::from_utf8_lossy(key).into_owned()
    }

    /// Parse and compile one key's value. Never fails as a whole: the result says whether
    /// this key is ignored, refused or usable.
    fn evaluate<'k>(&self, key: &'k [u8], value: &[u8]) -> Entry<'k, C::Webhook> {
        evaluate(
            &self.settings.prefix,
            &*self.compiler,
            &*self.env,
            key,
            value,
        )
    }
}

/// Judge one key and its value as the provider loads them; `cwmctl validate` uses the same
/// verdict.
pub(crate) fn evaluate<'k, C: Compiler>(
    prefix: &str,
    compiler: &C,
    env: &dyn Env,
    key: &'k [u8],
    value: &[u8],
) -> Entry<'k, C::Webhook> {
    match parse_key(prefix, key) {
        Err(KeyError::OutsidePrefix | KeyError::Unrecognised) => Entry::Ignored,
        Err(e) => Entry::BadKey(e.to_string()),
        Ok(KeyRef::Webhook { namespace, id }) => Entry::Webhook {
            namespace,
            id,
            result: compile_webhook_json(compiler, env, id, value),
        },
        Ok(KeyRef::Connection { name }) => Entry::Connection {
            name,
            result: serde_json::from_slice(value)
                .map_err(|e| crate::EntryError::Json(e.to_string()).to_string())
                .and_then(|v| parse_connection(env, name, v)),
        },
    }
}

/// The verdict on one key.
pub(crate) enum Entry<'k, W> {
    /// Not part of the layout (debug log only; `cwmctl validate` reports it).
    Ignored,
    /// In the layout's shape but unusable: not UTF-8, invalid namespace, empty name.
    BadKey(String),
    Webhook {
        namespace: &'k str,
        id: &'k str,
        result: Result<W, String>,
    },
    Connection {
        name: &'k str,
        result: Result<ConnectionConfig, String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook = 0,
    Connection = 1,
}

fn new_backoff(settings: &EtcdSettings) -> ExponentialBackoff {
    ExponentialBackoff {
        current_interval: settings.reconnect_initial,
        initial_interval: settings.reconnect_initial,
        randomization_factor: 0.1,
        multiplier: 2.0,
        max_interval: settings.reconnect_max,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// How a watch ended without a connection failure: list again with the same client.
struct Relist(&'static str);

/// The background task's state. Owned by the task alone: no locks on the event path.
struct Worker<C: Compiler> {
    shared: Arc<Shared<C>>,
    cmds: mpsc::Receiver<Cmd>,
    backoff: ExponentialBackoff,
    /// Mod revision and kind of every recognised key currently in etcd (valid or not), to count
    /// added, removed and modified keys of a re-list. Shared (read-only) with the thread that
    /// builds the next listing; the watch changes it copy-on-write, which never copies in
    /// practice because no listing runs while watching.
    tracker: Arc<Tracker>,
    /// Admin reloads waiting for the next full listing.
    waiting: Vec<(ReloadRequest, ReloadReply)>,
    /// Why the next full listing happens; `None` for the first load.
    next_reason: Option<&'static str>,
    /// Highest revision seen from etcd; a lower one means etcd was restored or wiped.
    last_seen: i64,
    /// Whether an auth failure may rebuild the client without waiting (once per good listing).
    auth_retry: bool,
}

impl<C: Compiler> Worker<C> {
    /// Sessions forever; only the stop signal (or an abort) ends the task.
    async fn run(mut self) {
        loop {
            let failure = match connect(&self.shared.settings).await {
                Ok(mut client) => {
                    let failure = self.session(&mut client).await;
                    // The client (and any stream on it) is dropped here, before a new one exists.
                    drop(client);
                    failure
                }
                // Authentication happens while connecting: a transport failure is possible.
                Err(ConfigError::Etcd(message)) => Failure {
                    transport: true,
                    ..Failure::other(message)
                },
                Err(e) => Failure::other(e.to_string()),
            };
            let auth = failure.auth;
            let mut message = failure.message;
            if failure.transport
                && let Some(hint) = tls_hint(&self.shared.settings).await
            {
                message = format!("{message}; {hint}");
            }
            let message = self.shared.settings.redact(message);
            let loaded = self.shared.store.is_loaded();
            if loaded {
                self.shared.set_state(STATE_DISCONNECTED);
                self.next_reason = Some(if auth { "auth" } else { "reconnect" });
            }
            self.shared.record_error(&message);
            if auth && self.auth_retry {
                // An expired token: a new client authenticates afresh. Pending admin reloads are
                // served by that attempt.
                self.auth_retry = false;
                tracing::warn!(error = %message, "etcd auth token refused; authenticating again");
                continue;
            }
            for (_, reply) in self.waiting.drain(..) {
                let _ = reply.send(Err(message.clone()));
            }
            let delay = self
                .backoff
                .next_backoff()
                .unwrap_or(self.shared.settings.reconnect_max)
                .min(self.shared.settings.reconnect_max);
            if loaded {
                tracing::warn!(error = %message, retry_in = ?delay, "etcd unavailable; serving the last configuration");
            } else {
                tracing::warn!(error = %message, retry_in = ?delay, "etcd unavailable; no configuration loaded yet");
            }
            self.pause(delay).await;
        }
    }

    /// Wait `delay`, or less when an admin reload asks for an attempt now.
    async fn pause(&mut self, delay: Duration) {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => {}
            cmd = self.cmds.recv() => match cmd {
                Some(Cmd::Reload(request, reply)) => self.waiting.push((request, reply)),
                None => sleep.await,
            },
        }
    }

    /// List, then watch; list again on resync triggers. Returns only on a failure.
    async fn session(&mut self, client: &mut Client) -> Failure {
        loop {
            let started = Instant::now();
            let built = match self.list(client).await {
                Ok(built) => built,
                Err(failure) => return failure,
            };
            let revision = built.revision;
            let mut reason = self.next_reason.take();
            if self.shared.store.is_loaded() && revision < self.last_seen {
                tracing::warn!(
                    revision,
                    last_seen = self.last_seen,
                    "etcd revision went backwards (restored or wiped)"
                );
                reason = Some("revision_regressed");
            }
            let report = self.apply_full(built, reason, started);
            self.last_seen = revision;
            self.auth_retry = true;
            for (request, reply) in self.waiting.drain(..) {
                let _ = reply.send(Ok(ReloadReport {
                    webhooks: request.webhooks.then(|| report.webhooks.clone()).flatten(),
                    connections: request
                        .connections
                        .then(|| report.connections.clone())
                        .flatten(),
                }));
            }
            match self.watch(client, revision).await {
                Ok(Relist(reason)) => self.next_reason = Some(reason),
                Err(failure) => return failure,
            }
        }
    }

    /// Watch from `listed + 1` until a resync trigger (`Ok`) or a failure (`Err`).
    async fn watch(&mut self, client: &mut Client, listed: i64) -> Result<Relist, Failure> {
        let settings = &self.shared.settings;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(listed + 1)
            .with_progress_notify();
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream: WatchStream = match tokio::time::timeout(
            settings.request_timeout,
            watch_client.watch(settings.prefix.as_bytes(), Some(options)),
        )
        .await
        {
            Err(_) => return Err(Failure::other("creating the watch timed out")),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(stream)) => stream,
        };
        let confirm_by = tokio::time::Instant::now() + settings.request_timeout;
        let mut confirmed = false;
        loop {
            let resp = tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Reload(request, reply)) => {
                        self.waiting.push((request, reply));
                        return Ok(Relist("admin"));
                    }
                    // The handle is gone; the stop signal ends the task.
                    None => std::future::pending().await,
                },
                () = tokio::time::sleep_until(confirm_by), if !confirmed => {
                    return Err(Failure::other("etcd did not confirm the watch in time"));
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Err(Failure::other("the watch stream ended")),
                    Err(e) => return Err(e.into()),
                },
            };
            if resp.created() && !confirmed {
                confirmed = true;
                self.shared.set_state(STATE_HEALTHY);
                self.shared.info().last_error = None;
                self.backoff.reset();
                tracing::debug!(from_revision = listed + 1, "etcd watch established");
            }
            if resp.compact_revision() != 0 {
                tracing::warn!(
                    compact_revision = resp.compact_revision(),
                    applied = self.shared.store.load().revision(),
                    "etcd watch cancelled by compaction; resyncing"
                );
                return Ok(Relist("compacted"));
            }
            if resp.canceled() {
                let why = resp.cancel_reason();
                return Err(Failure {
                    auth: why.contains("permission denied") || why.contains("auth token"),
                    message: format!("etcd cancelled the watch: {why}"),
                    transport: false,
                });
            }
            // A follower's header may lag the linearizable listing a little, so headers only
            // raise `last_seen`; going backwards is judged on listings and events.
            if let Some(header) = resp.header() {
                self.last_seen = self.last_seen.max(header.revision());
            }
            if !resp.events().is_empty()
                && let Some(reason) = self.apply_events(resp.events(), listed)
            {
                return Ok(Relist(reason));
            }
        }
    }

    /// List the whole prefix and build the next snapshot from it, without publishing anything.
    ///
    /// Pages are parsed, compiled and put into the snapshot on a blocking thread while the next
    /// page is on its way from etcd (at most [`PAGES_QUEUED`] page waits in between); the async
    /// runtime only receives pages.
    async fn list(&self, client: &Client) -> Result<Built<C::Webhook>, Failure> {
        let settings = &self.shared.settings;
        let mut listing = Listing::new(
            client,
            settings.prefix.as_bytes(),
            settings.page_size,
            settings.request_timeout,
        );
        let started = Instant::now();
        self.sync_connections_first(client).await?;
        let mut builder = BuildTask::spawn(&self.shared, &self.tracker);
        let mut pages = 0usize;
        while let Some(page) = listing.next().await? {
            pages = if page.restarted { 1 } else { pages + 1 };
            if page.restarted {
                // The old builder stops after the page at hand; its work is dropped.
                builder = BuildTask::spawn(&self.shared, &self.tracker);
            }
            builder.send(page).await?;
        }
        let listed = started.elapsed();
        let mut built = builder.finish().await?;
        built.pages = pages;
        built.listed = listed;
        Ok(built)
    }

    /// Hand the compiler the connections before the listing compiles webhooks against them
    /// (keys are listed in order, and `global/connections/` sorts among the namespaces). A
    /// connection that changes between this read and the listing is corrected when the listing
    /// is published.
    async fn sync_connections_first(&self, client: &Client) -> Result<(), Failure> {
        let settings = &self.shared.settings;
        let prefix = crate::keys::connection_key(&settings.prefix, "");
        let mut kv = client.kv_client();
        let resp = tokio::time::timeout(
            settings.request_timeout,
            kv.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| Failure::other("reading the connections timed out"))??;
        let mut connections = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            if let Entry::Connection {
                name,
                result: Ok(c),
            } = self.shared.evaluate(kv.key(), kv.value())
            {
                connections.push((Arc::from(name), Arc::new(c)));
            }
        }
        self.shared.compiler.sync_connections(&connections);
        Ok(())
    }

    /// Publish a complete listing with [`Store::replace`]. A key present with an invalid
    /// value keeps its previous good value; keys no longer present disappear.
    fn apply_full(
        &mut self,
        built: Built<C::Webhook>,
        reason: Option<&'static str>,
        started: Instant,
    ) -> ReloadReport {
        let shared = &*self.shared;
        let store = &shared.store;
        let mut rejected: HashSet<String> = HashSet::with_capacity(built.rejected.len());
        for (key, why, serving_previous) in built.rejected {
            store.reject(&key, why, serving_previous);
            rejected.insert(key);
        }
        for r in store.rejections() {
            if !rejected.contains(&r.key) {
                store.clear_rejection(&r.key);
            }
        }
        let namespaces = built.snapshot.namespace_count();
        shared
            .compiler
            .sync_connections(&built.snapshot.connections());
        let superseded = store.replace(built.snapshot);
        let old_tracker = std::mem::replace(&mut self.tracker, Arc::new(built.tracker));
        // The superseded snapshot and tracker hold every key of the previous listing: free them
        // off the runtime (readers may still hold the snapshot; the last one frees it).
        tokio::task::spawn_blocking(move || drop((superseded, old_tracker)));
        shared.loaded.send_replace(true);
        shared.info().last_reload = Some(now_rfc3339());
        if let Some(reason) = reason {
            shared.record_resync(reason);
        }
        let (webhooks, connections) = (built.webhooks, built.connections);
        tracing::info!(
            reason = reason.unwrap_or("initial"),
            revision = built.revision,
            keys = built.keys,
            namespaces,
            webhooks = webhooks.total,
            connections = connections.total,
            rejected = webhooks.rejected + connections.rejected,
            ignored = built.ignored,
            pages = built.pages,
            listed_ms = built.listed.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "etcd configuration loaded"
        );
        ReloadReport {
            webhooks: Some(webhooks),
            connections: Some(connections),
        }
    }

    /// Apply one watch response with a single [`Store::update`]. Events at or below the
    /// listing revision are already reflected and skipped. Returns why the whole prefix must be
    /// listed again instead:
    /// - `revision_regressed` (nothing applied): an event is older than what the snapshot
    ///   reflects (etcd went backwards);
    /// - `connection_changed`: a connection that rejected webhooks name was added or changed, so
    ///   those webhooks are compiled again.
    ///
    /// Connection events are applied before webhook events, and the compiler sees the new set of
    /// connections before any webhook of the response is compiled.
    fn apply_events(&mut self, events: &[etcd_client::Event], listed: i64) -> Option<&'static str> {
        let shared = &*self.shared;
        let applied = shared.store.load().revision();
        if events
            .iter()
            .filter_map(etcd_client::Event::kv)
            .any(|kv| kv.mod_revision() < applied)
        {
            tracing::warn!(
                applied,
                "etcd sent an event older than the snapshot; resyncing"
            );
            return Some("revision_regressed");
        }
        let prefix = shared.settings.prefix.as_str();
        let is_connection = |e: &&etcd_client::Event| {
            e.kv().is_some_and(|kv| {
                matches!(parse_key(prefix, kv.key()), Ok(KeyRef::Connection { .. }))
            })
        };
        let changed: Vec<String> = events
            .iter()
            .filter(is_connection)
            .filter_map(|e| e.kv().filter(|kv| kv.mod_revision() > listed))
            .filter_map(|kv| match parse_key(prefix, kv.key()) {
                Ok(KeyRef::Connection { name }) => Some(name.to_owned()),
                _ => None,
            })
            .collect();
        let ordered = events
            .iter()
            .filter(is_connection)
            .chain(events.iter().filter(|e| !is_connection(e)));
        let tracker = Arc::make_mut(&mut self.tracker);
        shared.store.update(|snap| {
            let mut revision = snap.revision();
            let mut synced = changed.is_empty();
            for event in ordered {
                let Some(kv) = event.kv() else { continue };
                if kv.mod_revision() <= listed {
                    continue;
                }
                if !synced && !is_connection(&event) {
                    shared.compiler.sync_connections(&snap.connections());
                    synced = true;
                }
                revision = revision.max(kv.mod_revision());
                let key = kv.key();
                match event.event_type() {
                    EventType::Put => Self::put_event(shared, tracker, snap, kv),
                    EventType::Delete => Self::delete_event(shared, tracker, snap, key),
                }
            }
            if !synced {
                shared.compiler.sync_connections(&snap.connections());
            }
            snap.set_revision(revision);
        });
        if let Some(last) = events.iter().filter_map(etcd_client::Event::kv).next_back() {
            self.last_seen = self.last_seen.max(last.mod_revision());
        }
        let waiting = |name: &str| {
            let needle = format!("connection '{name}'");
            shared
                .store
                .rejections()
                .iter()
                .any(|r| r.key.contains("/webhooks/") && r.reason.contains(&needle))
        };
        if changed.iter().any(|name| waiting(name)) {
            tracing::info!("a connection that rejected webhooks name changed; resyncing");
            return Some("connection_changed");
        }
        None
    }

    fn put_event(
        shared: &Shared<C>,
        tracker: &mut Tracker,
        snap: &mut Snapshot<C::Webhook>,
        kv: &KeyValue,
    ) {
        let key = kv.key();
        let store = &shared.store;
        match shared.evaluate(key, kv.value()) {
            Entry::Ignored => {
                tracing::debug!(key = %String::from_utf8_lossy(key), "ignoring key outside the layout");
            }
            Entry::BadKey(reason) => store.reject(&Shared::<C>::rejection_key(key), reason, false),
            Entry::Webhook {
                namespace,
                id,
                result,
            } => {
                tracker.insert(key.into(), (Kind::Webhook, kv.mod_revision()));
                match result {
                    Ok(w) => {
                        snap.put_webhook(namespace, id, Arc::new(w));
                        store.clear_rejection(&Shared::<C>::rejection_key(key));
                        tracing::debug!(namespace, id, "webhook updated from etcd");
                    }
                    Err(reason) => {
                        let serving = snap.webhook_exact(namespace, id).is_some();
                        store.reject(&Shared::<C>::rejection_key(key), reason, serving);
                    }
                }
            }
            Entry::Connection { name, result } => {
                tracker.insert(key.into(), (Kind::Connection, kv.mod_revision()));
                match result {
                    Ok(c) => {
                        snap.put_connection(name, Arc::new(c));
                        store.clear_rejection(&Shared::<C>::rejection_key(key));
                        tracing::debug!(name, "connection updated from etcd");
                    }
                    Err(reason) => {
                        let serving = snap.connection(name).is_some();
                        store.reject(&Shared::<C>::rejection_key(key), reason, serving);
                    }
                }
            }
        }
    }

    fn delete_event(
        shared: &Shared<C>,
        tracker: &mut Tracker,
        snap: &mut Snapshot<C::Webhook>,
        key: &[u8],
    ) {
        tracker.remove(key);
        match parse_key(&shared.settings.prefix, key) {
            Ok(KeyRef::Webhook { namespace, id }) => {
                snap.remove_webhook(namespace, id);
                tracing::debug!(namespace, id, "webhook deleted in etcd");
            }
            Ok(KeyRef::Connection { name }) => {
                snap.remove_connection(name);
                tracing::debug!(name, "connection deleted in etcd");
            }
            Err(_) => {}
        }
        shared
            .store
            .clear_rejection(&Shared::<C>::rejection_key(key));
    }
}

/// Kind and mod revision of every recognised key, by key.
type Tracker = HashMap<Box<[u8]>, (Kind, i64)>;

/// Pages handed to the builder thread and not yet taken. One is enough to keep it busy while the
/// next page is fetched; each page held costs its size in memory (up to [`PAGE_BYTES`]).
const PAGES_QUEUED: usize = 1;

/// The blocking thread building one listing's snapshot, and the queue of pages it reads.
struct BuildTask<C: Compiler> {
    pages: mpsc::Sender<Page>,
    task: JoinHandle<Built<C::Webhook>>,
}

impl<C: Compiler> BuildTask<C> {
    fn spawn(shared: &Arc<Shared<C>>, previous: &Arc<Tracker>) -> Self {
        let (pages, mut queue) = mpsc::channel(PAGES_QUEUED);
        let mut build = FullBuild::new(shared.clone(), previous.clone());
        let task = tokio::task::spawn_blocking(move || {
            while let Some(page) = queue.blocking_recv() {
                build.add(page);
            }
            build.finish()
        });
        Self { pages, task }
    }

    async fn send(&self, page: Page) -> Result<(), Failure> {
        self.pages
            .send(page)
            .await
            .map_err(|_| Failure::other("the snapshot builder stopped"))
    }

    /// Wait for the last page to be built; the listing is complete.
    async fn finish(self) -> Result<Built<C::Webhook>, Failure> {
        drop(self.pages);
        self.task
            .await
            .map_err(|e| Failure::other(format!("building the snapshot failed: {e}")))
    }
}

/// A complete listing, built and ready to publish.
struct Built<W> {
    revision: i64,
    snapshot: Snapshot<W>,
    tracker: Tracker,
    /// Refused keys: rejection key, reason, whether an older value keeps serving.
    rejected: Vec<(String, String, bool)>,
    webhooks: Diff,
    connections: Diff,
    keys: usize,
    ignored: usize,
    /// Range requests that made the listing, and how long until the last one answered.
    pages: usize,
    listed: Duration,
}

/// One listing being turned into a snapshot, page by page, on the builder thread (every key
/// is judged alone).
struct FullBuild<C: Compiler> {
    shared: Arc<Shared<C>>,
    /// The snapshot being replaced: a key whose value is now refused keeps its value from it.
    current: Arc<Snapshot<C::Webhook>>,
    next: SnapshotBuilder<C::Webhook>,
    tracker: Tracker,
    changes: Changes,
    rejected: Vec<(String, String, bool)>,
    revision: i64,
    keys: usize,
    ignored: usize,
}

impl<C: Compiler> FullBuild<C> {
    fn new(shared: Arc<Shared<C>>, previous: Arc<Tracker>) -> Self {
        Self {
            current: Guard::into_inner(shared.store.load()),
            next: SnapshotBuilder::new(&shared.settings.default_namespace),
            shared,
            tracker: Tracker::new(),
            changes: Changes::new(previous),
            rejected: Vec::new(),
            revision: 0,
            keys: 0,
            ignored: 0,
        }
    }

    fn add(&mut self, page: Page) {
        self.revision = page.revision;
        if self.tracker.is_empty() {
            // etcd counts the whole range with every page: size the tracker once.
            self.tracker.reserve(
                usize::try_from(page.count)
                    .unwrap_or(0)
                    .min(MAX_RESERVED_KEYS),
            );
        }
        let shared = self.shared.clone();
        for kv in page.kvs {
            self.keys += 1;
            let mod_revision = kv.mod_revision();
            let (key, value) = kv.into_key_value();
            let kind = match shared.evaluate(&key, &value) {
                Entry::Ignored => {
                    self.ignored += 1;
                    tracing::debug!(key = %String::from_utf8_lossy(&key), "ignoring key outside the layout");
                    None
                }
                Entry::BadKey(reason) => {
                    self.changes.rejected(Kind::Webhook);
                    let k = Shared::<C>::rejection_key(&key);
                    self.rejected.push((k, reason, false));
                    None
                }
                Entry::Webhook {
                    namespace,
                    id,
                    result,
                } => {
                    match result {
                        Ok(w) => self.next.put_webhook(namespace, id, Arc::new(w)),
                        Err(reason) => {
                            self.changes.rejected(Kind::Webhook);
                            let previous = self.current.webhook_exact(namespace, id).cloned();
                            let k = Shared::<C>::rejection_key(&key);
                            self.rejected.push((k, reason, previous.is_some()));
                            if let Some(p) = previous {
                                self.next.put_webhook(namespace, id, p);
                            }
                        }
                    }
                    Some(Kind::Webhook)
                }
                Entry::Connection { name, result } => {
                    match result {
                        Ok(c) => self.next.put_connection(name, Arc::new(c)),
                        Err(reason) => {
                            self.changes.rejected(Kind::Connection);
                            let previous = self.current.connection(name).cloned();
                            let k = Shared::<C>::rejection_key(&key);
                            self.rejected.push((k, reason, previous.is_some()));
                            if let Some(p) = previous {
                                self.next.put_connection(name, p);
                            }
                        }
                    }
                    Some(Kind::Connection)
                }
            };
            if let Some(kind) = kind {
                self.changes.key(&key, kind, mod_revision);
                self.tracker
                    .insert(key.into_boxed_slice(), (kind, mod_revision));
            }
        }
    }

    fn finish(self) -> Built<C::Webhook> {
        let (mut webhooks, mut connections) = self.changes.finish();
        let snapshot = self.next.build(self.revision);
        webhooks.total = snapshot.webhook_count();
        connections.total = snapshot.connection_count();
        Built {
            revision: self.revision,
            snapshot,
            tracker: self.tracker,
            rejected: self.rejected,
            webhooks,
            connections,
            keys: self.keys,
            ignored: self.ignored,
            pages: 0,
            listed: Duration::ZERO,
        }
    }
}

/// Added, removed and modified keys of each kind between the previous listing and this one,
/// counted one key of this listing at a time.
struct Changes {
    previous: Arc<Tracker>,
    /// Webhooks, connections.
    diffs: [Diff; 2],
    /// Keys of the previous listing seen again, by kind.
    kept: [usize; 2],
}

impl Changes {
    fn new(previous: Arc<Tracker>) -> Self {
        Self {
            previous,
            diffs: Default::default(),
            kept: [0, 0],
        }
    }

    /// One recognised key of this listing.
    fn key(&mut self, key: &[u8], kind: Kind, mod_revision: i64) {
        let diff = &mut self.diffs[kind as usize];
        match self.previous.get(key) {
            None => diff.added += 1,
            Some((_, old)) => {
                self.kept[kind as usize] += 1;
                if *old != mod_revision {
                    diff.modified += 1;
                }
            }
        }
    }

    /// One key of this listing refused (a bad key counts as a webhook).
    fn rejected(&mut self, kind: Kind) {
        self.diffs[kind as usize].rejected += 1;
    }

    /// Webhook and connection diffs (`total` left at 0).
    fn finish(self) -> (Diff, Diff) {
        let mut before = [0usize; 2];
        for (kind, _) in self.previous.values() {
            before[*kind as usize] += 1;
        }
        let [mut webhooks, mut connections] = self.diffs;
        webhooks.removed = before[0].saturating_sub(self.kept[0]);
        connections.removed = before[1].saturating_sub(self.kept[1]);
        (webhooks, connections)
    }
}

/// Upper bound of the tracker's first reservation (etcd's count is only a hint).
const MAX_RESERVED_KEYS: usize = 4_000_000;

#[async_trait]
impl<C: Compiler> ConfigProvider<C::Webhook> for EtcdProvider<C> {
    fn snapshot(&self) -> Guard<Arc<Snapshot<C::Webhook>>> {
        self.shared.store.load()
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn state(&self) -> BackendState {
        if !self.shared.store.is_loaded() {
            return BackendState::Connecting;
        }
        match self.shared.state.load(Ordering::Acquire) {
            STATE_HEALTHY => BackendState::Healthy,
            _ => BackendState::Disconnected,
        }
    }

    fn status(&self) -> ProviderStatus {
        let settings = &self.shared.settings;
        let mut details = Map::new();
        details.insert(
            "endpoints".into(),
            Value::Array(
                settings
                    .endpoints
                    .iter()
                    .map(|e| Value::String(e.clone()))
                    .collect(),
            ),
        );
        if let Some(Ok((host, port))) = settings.endpoints.first().map(|e| parse_endpoint(e)) {
            details.insert("host".into(), Value::String(host.to_owned()));
            details.insert("port".into(), Value::from(port.unwrap_or(2379)));
        }
        details.insert("prefix".into(), Value::String(settings.prefix.clone()));
        let (last_reload, last_error, last_resync, resyncs) = {
            let info = self.shared.info();
            (
                info.last_reload.clone(),
                info.last_error.clone(),
                info.last_resync.clone(),
                info.resyncs.clone(),
            )
        };
        let mut status = ProviderStatus::from_store("etcd", &self.shared.store);
        status.connected = self.state() == BackendState::Healthy;
        status.last_reload = last_reload;
        status.last_error = last_error.map(|e| settings.redact(e));
        status.last_resync = last_resync;
        status.resyncs = resyncs;
        status.details = details;
        status
    }

    /// A full re-list now (reason "admin"), whatever `request` says; the report only carries
    /// the requested kinds. While disconnected this cuts the backoff wait short and tries now.
    async fn reload(&self, request: ReloadRequest) -> Result<ReloadReport, ConfigError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Reload(request, tx))
            .await
            .map_err(|_| ConfigError::Etcd("the provider has stopped".into()))?;
        match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
            Err(_) => Err(ConfigError::Etcd(format!(
                "reload did not complete within {RELOAD_TIMEOUT:?}"
            ))),
            Ok(Err(_)) => Err(ConfigError::Etcd("the provider has stopped".into())),
            Ok(Ok(result)) => result.map_err(ConfigError::Etcd),
        }
    }

    /// Stop the background task (dropping the client and the watch) within 5 s, even during a
    /// backoff wait. The last snapshot stays readable. Idempotent.
    async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
            tracing::info!("etcd configuration provider stopped");
        }
        self.shared.mark_stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let s = EtcdSettings::default().validated().unwrap();
        assert_eq!(s.endpoints, vec!["localhost:2379"]);
        assert_eq!(s.prefix, "/cwm/");
        assert_eq!(s.default_namespace, "default");
        assert_eq!(s.reconnect_initial, Duration::from_secs(1));
        assert_eq!(s.reconnect_max, Duration::from_secs(60));
        assert!(s.credentials().is_none());
    }

    #[test]
    fn custom_settings_normalise_the_prefix() {
        let s = EtcdSettings::new(vec!["etcd.example.com:2380".into()], "/myapp", "production")
            .unwrap();
        assert_eq!(s.prefix, "/myapp/");
        assert_eq!(s.default_namespace, "production");
    }

    #[test]
    fn bad_settings_are_rejected() {
        let ok = || EtcdSettings::default();
        let cases: Vec<EtcdSettings> = vec![
            EtcdSettings {
                endpoints: vec![],
                ..ok()
            },
            EtcdSettings {
                endpoints: vec!["".into()],
                ..ok()
            },
            EtcdSettings {
                endpoints: vec!["host:0".into()],
                ..ok()
            },
            EtcdSettings {
                endpoints: vec!["host:70000".into()],
                ..ok()
            },
            EtcdSettings {
                endpoints: vec!["host:not-a-port".into()],
                ..ok()
            },
            EtcdSettings {
                endpoints: vec!["user:pw@host:2379".into()],
                ..ok()
            },
            EtcdSettings {
                prefix: String::new(),
                ..ok()
            },
            EtcdSettings {
                default_namespace: "bad namespace!".into(),
                ..ok()
            },
            EtcdSettings {
                default_namespace: "invalid/namespace".into(),
                ..ok()
            },
            EtcdSettings {
                default_namespace: String::new(),
                ..ok()
            },
            EtcdSettings {
                reconnect_initial: Duration::from_secs(2),
                reconnect_max: Duration::from_secs(1),
                ..ok()
            },
            EtcdSettings {
                page_size: 0,
                ..ok()
            },
            EtcdSettings {
                connect_timeout: Duration::ZERO,
                ..ok()
            },
            EtcdSettings {
                // A certificate without its key (TLS without any file is fine: built-in roots).
                tls: Some(EtcdTls {
                    cert: Some("/nonexistent/client.pem".into()),
                    ..EtcdTls::default()
                }),
                ..ok()
            },
            EtcdSettings {
                tls: Some(EtcdTls {
                    ca: Some("/nonexistent/ca.pem".into()),
                    ..EtcdTls::default()
                }),
                ..ok()
            },
        ];
        for s in cases {
            let shown = format!("{s:?}");
            assert!(
                matches!(s.validated(), Err(ConfigError::Setting(_))),
                "{shown}"
            );
        }
        let credentials_in_url = EtcdSettings {
            endpoints: vec!["http://u:secretpw@h:1".into()],
            ..ok()
        }
        .validated()
        .unwrap_err()
        .to_string();
        assert!(!credentials_in_url.contains("secretpw"));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoints(" h1:2379, ,h2:2379 "),
            vec!["h1:2379", "h2:2379"]
        );
        assert_eq!(parse_endpoint("h:2379"), Ok(("h", Some(2379))));
        assert_eq!(parse_endpoint("http://h:1/"), Ok(("h", Some(1))));
        assert_eq!(parse_endpoint("https://h"), Ok(("h", None)));
        assert_eq!(parse_endpoint("[::1]:2379"), Ok(("::1", Some(2379))));
        assert!(parse_endpoint("[::1").is_err());
        assert!(parse_endpoint("h:1:2").is_err());
        assert!(parse_endpoint("h/x").is_err());
    }

    #[test]
    fn auth_needs_both_credentials_and_debug_redacts() {
        let s = EtcdSettings {
            username: "cwm".into(),
            ..EtcdSettings::default()
        };
        assert!(s.credentials().is_none());
        let s = EtcdSettings {
            username: "cwm".into(),
            password: "s3cr3t-pw".into(),
            ..EtcdSettings::default()
        };
        assert_eq!(s.credentials(), Some(("cwm", "s3cr3t-pw")));
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(
            s.redact("failed for s3cr3t-pw".into()),
            "failed for <redacted>"
        );
    }

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

    #[test]
    fn https_endpoints_mean_tls() {
        let s = |endpoints: &[&str]| EtcdSettings {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            ..EtcdSettings::default()
        };
        assert!(!s(&["h1:2379", "http://h2:2379"]).uses_tls());
        assert!(s(&["https://h1:2379"]).uses_tls());
        assert!(s(&["https://h1:2379"]).validated().is_ok(), "no CA needed");
        let mixed = s(&["https://h1:2379", "http://h2:2379"])
            .validated()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            mixed.contains("\"http://h2:2379\" is plain http"),
            "{mixed}"
        );
    }

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
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/cwm/"), b"/cwm0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
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

    #[test]
    fn pages_follow_value_sizes() {
        // ~260-byte entries: the key limit applies.
        assert_eq!(next_limit(100, 26_000, 50_000, 50_000), 50_000);
        // 64 KiB entries: about 16 MiB per page.
        assert_eq!(next_limit(10, 655_360, 50_000, 50_000), 256);
        // Back to small values: grows to the key limit again.
        assert_eq!(next_limit(10, 1_000, 256, 50_000), 50_000);
        // Never below one key; a page too small to judge keeps the limit.
        assert_eq!(next_limit(2, 80 << 20, 10, 50_000), 1);
        assert_eq!(next_limit(1, 10, 7, 50_000), 7);
    }

    #[test]
    fn diffs_count_by_kind_and_revision() {
        let old: Tracker = [
            (b"a".as_slice(), (Kind::Webhook, 1)),
            (b"b", (Kind::Webhook, 2)),
            (b"c", (Kind::Connection, 3)),
        ]
        .into_iter()
        .map(|(k, v)| (Box::from(k), v))
        .collect();
        let mut changes = Changes::new(Arc::new(old));
        changes.key(b"a", Kind::Webhook, 1);
        changes.key(b"b", Kind::Webhook, 5);
        changes.key(b"d", Kind::Webhook, 6);
        let (w, c) = changes.finish();
        assert_eq!((w.added, w.removed, w.modified), (1, 0, 1));
        assert_eq!((c.added, c.removed, c.modified), (0, 1, 0));
    }
}
