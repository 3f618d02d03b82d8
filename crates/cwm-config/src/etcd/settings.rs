//! Settings of the etcd backend: endpoints, prefix, credentials, TLS files, timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::tls::load_tls;
use crate::error::ConfigError;
use crate::names::{is_valid_namespace, normalize_prefix};

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

/// Client TLS material (ETCD_CA_CERT, ETCD_CERT, ETCD_KEY): PEM files.
///
/// Without a CA the server is verified against the Mozilla root store built into the binary
/// (`webpki-roots`); the client certificate and key are optional but go together (mutual TLS).
/// [`EtcdSettings::validated`] reads and parses every file, so a file that cannot work stops
/// startup with its path and the problem named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) that verify the server (`ETCD_CA_CERT`); `None`: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (`ETCD_CERT`); set together with `key`.
    pub cert: Option<PathBuf>,
    /// Private key of the client certificate (`ETCD_KEY`); set together with `cert`.
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
    /// The etcd user. Authentication is used only when both username and password are
    /// non-empty (upstream).
    pub username: String,
    /// The etcd user's password; see `username`. Never printed.
    pub password: String,
    /// TLS files; `None` for none (TLS may still be used, see [`EtcdSettings::uses_tls`]).
    pub tls: Option<EtcdTls>,
    /// First reconnect delay (1 s); doubles up to `reconnect_max` (60 s), with ±10 % jitter.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay (60 s).
    pub reconnect_max: Duration,
    /// Bound on establishing a connection, authentication included.
    pub connect_timeout: Duration,
    /// Bound on each unary request (one page of a listing) and on the watch being confirmed.
    /// Needed because a request to an unreachable member can otherwise wait forever.
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval, also while idle: a dead or partitioned member is
    /// noticed within `keepalive_interval + keepalive_timeout`.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping waits for its acknowledgement.
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
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        (!self.username.is_empty() && !self.password.is_empty())
            .then_some((self.username.as_str(), self.password.as_str()))
    }

    /// Remove the password from a message that is about to be logged or shown.
    pub(crate) fn redact(&self, message: String) -> String {
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
pub(crate) fn parse_endpoint(e: &str) -> Result<(&str, Option<u16>), String> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
