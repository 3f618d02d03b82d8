//! The ETCD_* settings shared by `cwm-receiver` and `cwmctl` (one definition, included by both).

use std::path::PathBuf;
use std::time::Duration;

use cwm_config::ConfigError;
use cwm_config::etcd::{EtcdSettings, EtcdTls, parse_endpoints};

/// etcd connection settings. The same variables as the Python gateway, plus ETCD_ENDPOINTS, TLS and
/// the reconnect bounds. Every flag is `global`: with `cwmctl` it is accepted before or after the
/// subcommand and listed in each subcommand's `--help` (no effect on the receiver).
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd host (ignored when ETCD_ENDPOINTS is set).
    #[arg(long, global = true, env = "ETCD_HOST", default_value = "localhost")]
    pub etcd_host: String,

    /// etcd client port (ignored when ETCD_ENDPOINTS is set).
    #[arg(long, global = true, env = "ETCD_PORT", default_value_t = 2379, value_parser = clap::value_parser!(u16).range(1..))]
    pub etcd_port: u16,

    /// Comma-separated endpoints of an etcd cluster, e.g. `h1:2379,h2:2379`; overrides host and port.
    #[arg(long, global = true, env = "ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,

    /// Key prefix; webhooks live at `{prefix}{namespace}/webhooks/{id}`.
    #[arg(long, global = true, env = "ETCD_PREFIX", default_value = "/cwm/")]
    pub etcd_prefix: String,

    /// Namespace of `POST /webhook/{id}` (routes without a namespace), `[a-zA-Z0-9_-]{1,64}`.
    #[arg(long, global = true, env = "ETCD_NAMESPACE", default_value = "default")]
    pub etcd_namespace: String,

    /// etcd user; authentication is used when user and password are both set.
    #[arg(long, global = true, env = "ETCD_USERNAME", default_value = "")]
    pub etcd_username: String,

    /// etcd password.
    #[arg(
        long,
        global = true,
        env = "ETCD_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub etcd_password: String,

    /// CA certificate (PEM) to verify etcd's TLS certificate; setting any ETCD_CA_CERT/ETCD_CERT/ETCD_KEY turns TLS on.
    /// Without it, TLS (an https:// endpoint, or ETCD_CERT/ETCD_KEY) trusts the Mozilla roots built in.
    #[arg(long, global = true, env = "ETCD_CA_CERT")]
    pub etcd_ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, env = "ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// First reconnect delay after etcd is lost, in milliseconds (doubles, with jitter).
    #[arg(long, global = true, env = "ETCD_RECONNECT_INITIAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub etcd_reconnect_initial_ms: u64,

    /// Longest reconnect delay, in milliseconds.
    #[arg(long, global = true, env = "ETCD_RECONNECT_MAX_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub etcd_reconnect_max_ms: u64,
}

impl EtcdArgs {
    /// Validated provider settings.
    pub fn settings(&self) -> Result<EtcdSettings, ConfigError> {
        let endpoints = match self.etcd_endpoints.as_deref().map(str::trim) {
            Some(list) if !list.is_empty() => parse_endpoints(list),
            _ => vec![format!("{}:{}", self.etcd_host, self.etcd_port)],
        };
        let tls = (self.etcd_ca_cert.is_some() || self.etcd_cert.is_some()).then(|| EtcdTls {
            ca: self.etcd_ca_cert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        });
        EtcdSettings {
            endpoints,
            prefix: self.etcd_prefix.clone(),
            default_namespace: self.etcd_namespace.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.clone(),
            tls,
            reconnect_initial: Duration::from_millis(self.etcd_reconnect_initial_ms),
            reconnect_max: Duration::from_millis(self.etcd_reconnect_max_ms),
            ..EtcdSettings::default()
        }
        .validated()
    }
}
