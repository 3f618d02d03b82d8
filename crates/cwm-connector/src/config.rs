//! The connector's settings: defaults, a JSON or YAML file, `CONNECTOR_*` environment variables
//! and command-line flags, in that order of precedence (a later source wins, key by key).
//!
//! Differences from the Python gateway's connector, on purpose: environment variables also apply
//! when a file is given, and `--protocol` / `--log-level` only override the file and the
//! environment when they are passed explicitly.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cwm_config::Env;
use serde::{Deserialize, Serialize};

/// How the connector receives events from the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// One WebSocket; acks are frames on it.
    #[default]
    #[value(name = "websocket")]
    Websocket,
    /// Server-sent events; acks are `POST /connect/ack`.
    #[value(name = "sse")]
    Sse,
    /// Repeated long-poll requests; acks are `POST /connect/ack`.
    #[value(name = "long_poll")]
    LongPoll,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "websocket" => Some(Self::Websocket),
            "sse" => Some(Self::Sse),
            "long_poll" => Some(Self::LongPoll),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Websocket => "websocket",
            Self::Sse => "sse",
            Self::LongPoll => "long_poll",
        })
    }
}

/// A secret string (the channel token): never shown by `Debug` and never serialized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// A local HTTP destination (HTTP mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Where events are sent.
    pub url: String,
    /// HTTP method (`POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one attempt, seconds (30).
    #[serde(default = "default_target_timeout")]
    pub timeout_seconds: f64,
    /// Sleep between attempts (`false`: the attempts still run, back to back).
    #[serde(default = "yes")]
    pub retry_enabled: bool,
    /// Attempts in all (3).
    #[serde(default = "default_attempts")]
    pub retry_max_attempts: u32,
    /// First sleep between attempts, seconds (1).
    #[serde(default = "default_retry_delay")]
    pub retry_delay_seconds: f64,
    /// Factor applied to the sleep after each attempt (2); the sleep is capped at 60 s.
    #[serde(default = "default_multiplier")]
    pub retry_backoff_multiplier: f64,
}

fn default_method() -> String {
    "POST".to_owned()
}
fn default_target_timeout() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}
fn default_attempts() -> u32 {
    3
}
fn default_retry_delay() -> f64 {
    1.0
}
fn default_multiplier() -> f64 {
    2.0
}

impl Target {
    /// A target for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: default_method(),
            headers: BTreeMap::new(),
            timeout_seconds: default_target_timeout(),
            retry_enabled: true,
            retry_max_attempts: default_attempts(),
            retry_delay_seconds: default_retry_delay(),
            retry_backoff_multiplier: default_multiplier(),
        }
    }
}

/// Where delivered events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// `default_target` / `targets`: HTTP requests.
    Http,
    /// `webhooks_config`: the gateway's sink modules, configs from a file.
    Module,
    /// `etcd_host`: the gateway's sink modules, configs from etcd (kept current by a watch).
    Etcd,
}

/// The connector's settings. `Debug` and serialization never include the token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectorConfig {
    /// Base URL of the receiver (`http://` or `https://`), without trailing `/`.
    pub cloud_url: String,
    /// Channel name.
    pub channel: String,
    /// Channel token (`Authorization: Bearer`).
    #[serde(skip_serializing)]
    pub token: Secret,
    /// Stream protocol.
    pub protocol: Protocol,
    /// First reconnect delay, seconds.
    pub reconnect_delay: f64,
    /// Longest reconnect delay, seconds.
    pub max_reconnect_delay: f64,
    /// Factor applied to the reconnect delay after each attempt.
    pub reconnect_backoff_multiplier: f64,
    /// A stream silent this long (seconds) is closed and reconnected; also the WebSocket ping
    /// interval.
    pub heartbeat_timeout: f64,
    /// WebSocket connect timeout, seconds.
    pub connection_timeout: f64,
    /// Deliveries running at once.
    pub max_concurrent_requests: usize,
    /// Accepted for compatibility; unused.
    pub ack_timeout: f64,
    /// `DEBUG`, `INFO`, `WARNING` or `ERROR`.
    pub log_level: String,
    /// `std` (text) or `json`.
    pub log_format: String,
    /// Verify TLS certificates (receiver and targets).
    pub verify_ssl: bool,
    /// Extra CA certificate (PEM) to trust.
    pub ca_cert_path: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with the receiver.
    pub client_cert_path: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS with the receiver.
    pub client_key_path: Option<PathBuf>,
    /// Sent as `X-Connector-ID`.
    pub connector_id: Option<String>,
    /// HTTP mode: the target of webhooks without an entry in `targets`.
    pub default_target: Option<Target>,
    /// HTTP mode: targets by webhook id.
    pub targets: BTreeMap<String, Target>,
    /// Module mode: webhook configs (JSON object of id to config).
    pub webhooks_config: Option<PathBuf>,
    /// Module mode: connection configs (JSON object of name to config), optional.
    pub connections_config: Option<PathBuf>,
    /// etcd mode: the etcd host.
    pub etcd_host: Option<String>,
    /// etcd client port.
    pub etcd_port: u16,
    /// etcd key prefix.
    pub etcd_prefix: String,
    /// etcd namespace of the webhook configs (`default` when unset).
    pub namespace: Option<String>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            cloud_url: String::new(),
            channel: String::new(),
            token: Secret::default(),
            protocol: Protocol::Websocket,
            reconnect_delay: 1.0,
            max_reconnect_delay: 60.0,
            reconnect_backoff_multiplier: 2.0,
            heartbeat_timeout: 60.0,
            connection_timeout: 30.0,
            max_concurrent_requests: 10,
            ack_timeout: 30.0,
            log_level: "INFO".to_owned(),
            log_format: "std".to_owned(),
            verify_ssl: true,
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
            connector_id: None,
            default_target: None,
            targets: BTreeMap::new(),
            webhooks_config: None,
            connections_config: None,
            etcd_host: None,
            etcd_port: 2379,
            etcd_prefix: "/cwm/".to_owned(),
            namespace: None,
        }
    }
}

/// Why the settings cannot be used. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON / YAML, or a key has the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Settings that break the rules, every one listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

/// The keys a config file may set. Every field is optional (`null` too); unknown top-level keys
/// are ignored, unknown keys inside a target are an error.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    cloud_url: Option<String>,
    channel: Option<String>,
    token: Option<String>,
    protocol: Option<Protocol>,
    reconnect_delay: Option<f64>,
    max_reconnect_delay: Option<f64>,
    reconnect_backoff_multiplier: Option<f64>,
    heartbeat_timeout: Option<f64>,
    connection_timeout: Option<f64>,
    max_concurrent_requests: Option<usize>,
    ack_timeout: Option<f64>,
    log_level: Option<String>,
    log_format: Option<String>,
    verify_ssl: Option<bool>,
    ca_cert_path: Option<PathBuf>,
    client_cert_path: Option<PathBuf>,
    client_key_path: Option<PathBuf>,
    connector_id: Option<String>,
    default_target: Option<Target>,
    targets: Option<BTreeMap<String, Target>>,
    webhooks_config: Option<PathBuf>,
    connections_config: Option<PathBuf>,
    etcd_host: Option<String>,
    etcd_port: Option<u16>,
    etcd_prefix: Option<String>,
    namespace: Option<String>,
}

/// One setting as `--help` documents it: file key, environment variable, default, meaning.
pub struct Setting {
    /// Key in the config file.
    pub key: &'static str,
    /// Environment variable, when there is one.
    pub env: Option<&'static str>,
    /// Default value, as text.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every setting, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    s(
        "cloud_url",
        Some("CONNECTOR_CLOUD_URL"),
        "(required)",
        "base URL of the receiver, http:// or https://",
    ),
    s(
        "channel",
        Some("CONNECTOR_CHANNEL"),
        "(required)",
        "channel name: [a-zA-Z0-9][a-zA-Z0-9._-]*, at most 64 characters, no '..'",
    ),
    s(
        "token",
        Some("CONNECTOR_TOKEN"),
        "(required)",
        "channel token, sent as 'Authorization: Bearer <token>'",
    ),
    s(
        "protocol",
        Some("CONNECTOR_PROTOCOL"),
        "websocket",
        "websocket, sse or long_poll",
    ),
    s(
        "reconnect_delay",
        Some("CONNECTOR_RECONNECT_DELAY"),
        "1.0",
        "first reconnect delay, seconds (> 0; up to 30% jitter added)",
    ),
    s(
        "max_reconnect_delay",
        Some("CONNECTOR_MAX_RECONNECT_DELAY"),
        "60.0",
        "longest reconnect delay, seconds (>= reconnect_delay)",
    ),
    s(
        "reconnect_backoff_multiplier",
        None,
        "2.0",
        "factor applied to the reconnect delay after each attempt",
    ),
    s(
        "heartbeat_timeout",
        Some("CONNECTOR_HEARTBEAT_TIMEOUT"),
        "60.0",
        "a stream silent this long (seconds) is reconnected; WebSocket ping interval (> 0)",
    ),
    s(
        "connection_timeout",
        Some("CONNECTOR_CONNECTION_TIMEOUT"),
        "30.0",
        "WebSocket connect timeout and etcd startup wait, seconds",
    ),
    s(
        "max_concurrent_requests",
        Some("CONNECTOR_MAX_CONCURRENT_REQUESTS"),
        "10",
        "deliveries running at once",
    ),
    s(
        "ack_timeout",
        Some("CONNECTOR_ACK_TIMEOUT"),
        "30.0",
        "accepted for compatibility, unused",
    ),
    s(
        "log_level",
        Some("CONNECTOR_LOG_LEVEL"),
        "INFO",
        "DEBUG, INFO, WARNING or ERROR",
    ),
    s("log_format", None, "std", "std (text) or json, on stderr"),
    s(
        "verify_ssl",
        Some("CONNECTOR_VERIFY_SSL"),
        "true",
        "verify TLS certificates of the receiver and the targets (env: 'true' = on, anything else = off)",
    ),
    s(
        "ca_cert_path",
        Some("CONNECTOR_CA_CERT_PATH"),
        "-",
        "extra CA certificate (PEM) trusted for the receiver and targets",
    ),
    s(
        "client_cert_path",
        Some("CONNECTOR_CLIENT_CERT_PATH"),
        "-",
        "client certificate (PEM) for mutual TLS with the receiver",
    ),
    s(
        "client_key_path",
        Some("CONNECTOR_CLIENT_KEY_PATH"),
        "-",
        "client private key (PEM) for mutual TLS with the receiver",
    ),
    s(
        "connector_id",
        Some("CONNECTOR_ID"),
        "-",
        "sent as X-Connector-ID",
    ),
    s(
        "default_target",
        Some("CONNECTOR_TARGET_URL"),
        "-",
        "HTTP mode: target of every webhook without an entry in 'targets' (the variable replaces the whole object)",
    ),
    s(
        "default_target.method",
        Some("CONNECTOR_TARGET_METHOD"),
        "POST",
        "method of the target set by CONNECTOR_TARGET_URL",
    ),
    s(
        "default_target.timeout_seconds",
        Some("CONNECTOR_TARGET_TIMEOUT"),
        "30",
        "timeout of the target set by CONNECTOR_TARGET_URL, seconds",
    ),
    s(
        "targets",
        None,
        "{}",
        "HTTP mode: {webhook_id: target}; a target has url, method, headers, timeout_seconds, retry_enabled, retry_max_attempts, retry_delay_seconds, retry_backoff_multiplier",
    ),
    s(
        "webhooks_config",
        Some("CONNECTOR_WEBHOOKS_CONFIG"),
        "-",
        "module mode: JSON file {webhook_id: webhook config}, delivered with the gateway's sink modules",
    ),
    s(
        "connections_config",
        Some("CONNECTOR_CONNECTIONS_CONFIG"),
        "-",
        "module mode: JSON file {name: connection config}",
    ),
    s(
        "etcd_host",
        Some("CONNECTOR_ETCD_HOST"),
        "-",
        "etcd mode: webhook configs from etcd, kept current by a watch",
    ),
    s(
        "etcd_port",
        Some("CONNECTOR_ETCD_PORT"),
        "2379",
        "etcd client port",
    ),
    s(
        "etcd_prefix",
        Some("CONNECTOR_ETCD_PREFIX"),
        "/cwm/",
        "etcd key prefix; webhooks at {prefix}{namespace}/webhooks/{id}",
    ),
    s(
        "namespace",
        Some("CONNECTOR_NAMESPACE"),
        "default",
        "etcd namespace of the webhook configs ([a-zA-Z0-9_-]{1,64})",
    ),
];

const fn s(
    key: &'static str,
    env: Option<&'static str>,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        env,
        default,
        help,
    }
}

/// The settings table shown after the flags in `--help`.
pub fn settings_help() -> String {
    let mut out = String::from(
        "Settings (precedence: defaults < config file < environment < flags given on the command line;\n\
         empty environment variables count as unset):\n\n",
    );
    for st in SETTINGS {
        let default = if st.default.starts_with('(') {
            st.default.to_owned()
        } else {
            format!("default {}", st.default)
        };
        out.push_str(&format!(
            "  {:<32} {:<34} {default}\n      {}\n",
            st.key,
            st.env.unwrap_or("(file only)"),
            st.help
        ));
    }
    out
}

/// Command-line flags. Every flag is optional and overrides the file and the environment only
/// when given.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "cwm-connector",
    version,
    about = "Receives webhooks buffered by a cwm receiver's Webhook Connect channel (WebSocket, SSE or long-poll) and delivers them to local services, acknowledging each one after delivery.",
    after_help = settings_help()
)]
pub struct Cli {
    /// Config file, JSON (or YAML for .yaml / .yml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Base URL of the receiver [env: CONNECTOR_CLOUD_URL].
    #[arg(long)]
    pub cloud_url: Option<String>,
    /// Channel name [env: CONNECTOR_CHANNEL].
    #[arg(long)]
    pub channel: Option<String>,
    /// Channel token [env: CONNECTOR_TOKEN]. Visible to other users in `ps`: prefer the variable.
    #[arg(long)]
    pub token: Option<String>,
    /// Sets default_target to this URL with default settings [env: CONNECTOR_TARGET_URL].
    #[arg(long)]
    pub target_url: Option<String>,
    /// Stream protocol [env: CONNECTOR_PROTOCOL] [default: websocket].
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// DEBUG, INFO, WARNING or ERROR [env: CONNECTOR_LOG_LEVEL] [default: INFO].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Sent as X-Connector-ID [env: CONNECTOR_ID].
    #[arg(long)]
    pub connector_id: Option<String>,
    /// Do not verify TLS certificates [env: CONNECTOR_VERIFY_SSL=false].
    #[arg(long)]
    pub no_verify_ssl: bool,
    /// Module mode: webhook configs file [env: CONNECTOR_WEBHOOKS_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub webhooks_config: Option<PathBuf>,
    /// Module mode: connection configs file [env: CONNECTOR_CONNECTIONS_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub connections_config: Option<PathBuf>,
    /// etcd mode: etcd host [env: CONNECTOR_ETCD_HOST].
    #[arg(long)]
    pub etcd_host: Option<String>,
    /// etcd client port [env: CONNECTOR_ETCD_PORT] [default: 2379].
    #[arg(long)]
    pub etcd_port: Option<u16>,
    /// etcd key prefix [env: CONNECTOR_ETCD_PREFIX] [default: /cwm/].
    #[arg(long)]
    pub etcd_prefix: Option<String>,
    /// etcd namespace of the webhook configs [env: CONNECTOR_NAMESPACE] [default: default].
    #[arg(long)]
    pub namespace: Option<String>,
}

impl ConnectorConfig {
    /// Defaults < file (`cli.config`) < environment < flags, then [`ConnectorConfig::validate`].
    pub async fn load(cli: &Cli, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = &cli.config {
            let text =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?;
            config.apply_file(path, &text)?;
        }
        config.apply_env(env)?;
        config.apply_cli(cli);
        config.validate()?;
        Ok(config)
    }

    /// Apply the keys of a config file's text: YAML when `path` ends in `.yaml` / `.yml`,
    /// JSON otherwise.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        let value: serde_json::Value = if yaml {
            serde_yaml_ng::from_str(text).map_err(|e| parse_error(e.to_string()))?
        } else {
            serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?
        };
        if !value.is_object() {
            return Err(parse_error(
                "the file must hold an object of settings".into(),
            ));
        }
        let file: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            parse_error(format!("key '{path}': {}", e.into_inner()))
        })?;
        self.merge(file);
        Ok(())
    }

    fn merge(&mut self, f: FileConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        macro_rules! set_opt {
            ($($field:ident),*) => { $( if f.$field.is_some() { self.$field = f.$field; } )* };
        }
        set!(
            cloud_url,
            channel,
            protocol,
            reconnect_delay,
            max_reconnect_delay,
            reconnect_backoff_multiplier,
            heartbeat_timeout,
            connection_timeout,
            max_concurrent_requests,
            ack_timeout,
            log_level,
            log_format,
            verify_ssl,
            targets,
            etcd_port,
            etcd_prefix
        );
        set_opt!(
            ca_cert_path,
            client_cert_path,
            client_key_path,
            connector_id,
            default_target,
            webhooks_config,
            connections_config,
            etcd_host,
            namespace
        );
        if let Some(token) = f.token {
            self.token = Secret(token);
        }
    }

    /// Apply the `CONNECTOR_*` variables that are set and not empty. A value that does not parse
    /// is an error naming the variable (all such errors are listed).
    pub fn apply_env(&mut self, env: &dyn Env) -> Result<(), ConfigError> {
        let get = |name: &str| env.var(name).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        fn num<T: std::str::FromStr>(
            name: &str,
            value: Option<String>,
            errors: &mut Vec<String>,
        ) -> Option<T> {
            let value = value?;
            match value.trim().parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(format!("{name}: {value:?} is not a valid number"));
                    None
                }
            }
        }
        if let Some(v) = get("CONNECTOR_CLOUD_URL") {
            self.cloud_url = v;
        }
        if let Some(v) = get("CONNECTOR_CHANNEL") {
            self.channel = v;
        }
        if let Some(v) = get("CONNECTOR_TOKEN") {
            self.token = Secret(v);
        }
        if let Some(v) = get("CONNECTOR_PROTOCOL") {
            match Protocol::parse(&v) {
                Some(p) => self.protocol = p,
                None => errors.push(format!(
                    "CONNECTOR_PROTOCOL: {v:?} is not one of websocket, sse, long_poll"
                )),
            }
        }
        let floats: [(&str, &mut f64); 5] = [
            ("CONNECTOR_RECONNECT_DELAY", &mut self.reconnect_delay),
            (
                "CONNECTOR_MAX_RECONNECT_DELAY",
                &mut self.max_reconnect_delay,
            ),
            ("CONNECTOR_HEARTBEAT_TIMEOUT", &mut self.heartbeat_timeout),
            ("CONNECTOR_CONNECTION_TIMEOUT", &mut self.connection_timeout),
            ("CONNECTOR_ACK_TIMEOUT", &mut self.ack_timeout),
        ];
        for (name, field) in floats {
            if let Some(v) = num(name, get(name), &mut errors) {
                *field = v;
            }
        }
        if let Some(v) = num(
            "CONNECTOR_MAX_CONCURRENT_REQUESTS",
            get("CONNECTOR_MAX_CONCURRENT_REQUESTS"),
            &mut errors,
        ) {
            self.max_concurrent_requests = v;
        }
        if let Some(v) = get("CONNECTOR_LOG_LEVEL") {
            self.log_level = v;
        }
        if let Some(v) = get("CONNECTOR_VERIFY_SSL") {
            self.verify_ssl = v.trim().eq_ignore_ascii_case("true");
        }
        let paths: [(&str, &mut Option<PathBuf>); 5] = [
            ("CONNECTOR_CA_CERT_PATH", &mut self.ca_cert_path),
            ("CONNECTOR_CLIENT_CERT_PATH", &mut self.client_cert_path),
            ("CONNECTOR_CLIENT_KEY_PATH", &mut self.client_key_path),
            ("CONNECTOR_WEBHOOKS_CONFIG", &mut self.webhooks_config),
            ("CONNECTOR_CONNECTIONS_CONFIG", &mut self.connections_config),
        ];
        for (name, field) in paths {
            if let Some(v) = get(name) {
                *field = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = get("CONNECTOR_ID") {
            self.connector_id = Some(v);
        }
        if let Some(url) = get("CONNECTOR_TARGET_URL") {
            let mut target = Target::new(url);
            if let Some(m) = get("CONNECTOR_TARGET_METHOD") {
                target.method = m;
            }
            if let Some(t) = num(
                "CONNECTOR_TARGET_TIMEOUT",
                get("CONNECTOR_TARGET_TIMEOUT"),
                &mut errors,
            ) {
                target.timeout_seconds = t;
            }
            self.default_target = Some(target);
        }
        if let Some(v) = get("CONNECTOR_ETCD_HOST") {
            self.etcd_host = Some(v);
        }
        if let Some(v) = num(
            "CONNECTOR_ETCD_PORT",
            get("CONNECTOR_ETCD_PORT"),
            &mut errors,
        ) {
            self.etcd_port = v;
        }
        if let Some(v) = get("CONNECTOR_ETCD_PREFIX") {
            self.etcd_prefix = v;
        }
        if let Some(v) = get("CONNECTOR_NAMESPACE") {
            self.namespace = Some(v);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Apply the flags given on the command line.
    pub fn apply_cli(&mut self, cli: &Cli) {
        if let Some(v) = &cli.cloud_url {
            self.cloud_url.clone_from(v);
        }
        if let Some(v) = &cli.channel {
            self.channel.clone_from(v);
        }
        if let Some(v) = &cli.token {
            self.token = Secret(v.clone());
        }
        if let Some(v) = &cli.target_url {
            self.default_target = Some(Target::new(v.clone()));
        }
        if let Some(v) = cli.protocol {
            self.protocol = v;
        }
        if let Some(v) = &cli.log_level {
            self.log_level.clone_from(v);
        }
        if let Some(v) = &cli.connector_id {
            self.connector_id = Some(v.clone());
        }
        if cli.no_verify_ssl {
            self.verify_ssl = false;
        }
        if let Some(v) = &cli.webhooks_config {
            self.webhooks_config = Some(v.clone());
        }
        if let Some(v) = &cli.connections_config {
            self.connections_config = Some(v.clone());
        }
        if let Some(v) = &cli.etcd_host {
            self.etcd_host = Some(v.clone());
        }
        if let Some(v) = cli.etcd_port {
            self.etcd_port = v;
        }
        if let Some(v) = &cli.etcd_prefix {
            self.etcd_prefix.clone_from(v);
        }
        if let Some(v) = &cli.namespace {
            self.namespace = Some(v.clone());
        }
    }

    /// Check every rule; the error lists every broken one. Trims a trailing `/` of `cloud_url`.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        while self.cloud_url.ends_with('/') {
            self.cloud_url.pop();
        }
        if self.cloud_url.is_empty() {
            errors.push("cloud_url is required (CONNECTOR_CLOUD_URL or --cloud-url)".to_owned());
        } else if !(self.cloud_url.starts_with("http://") || self.cloud_url.starts_with("https://"))
        {
            errors.push(format!(
                "cloud_url {:?} must start with http:// or https://",
                self.cloud_url
            ));
        }
        if self.channel.is_empty() {
            errors.push("channel is required (CONNECTOR_CHANNEL or --channel)".to_owned());
        } else if !cwm_relay::protocol::is_valid_channel(&self.channel) {
            errors.push(format!(
                "channel {:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9._-]*$, be at most 64 characters and not contain '..'",
                self.channel
            ));
        }
        if self.token.is_empty() {
            errors.push("token is required (CONNECTOR_TOKEN or --token)".to_owned());
        }
        let http = self.default_target.is_some() || !self.targets.is_empty();
        let modes = [
            http,
            self.webhooks_config.is_some(),
            self.etcd_host.is_some(),
        ]
        .into_iter()
        .filter(|m| *m)
        .count();
        if modes == 0 {
            errors.push(
                "Either default_target/targets, webhooks_config, or etcd_host must be configured"
                    .to_owned(),
            );
        } else if modes > 1 {
            errors.push("Only one delivery mode allowed".to_owned());
        }
        if !(self.reconnect_delay > 0.0 && self.reconnect_delay.is_finite()) {
            errors.push("reconnect_delay must be greater than 0".to_owned());
        }
        if !(self.max_reconnect_delay >= self.reconnect_delay
            && self.max_reconnect_delay.is_finite())
        {
            errors.push("max_reconnect_delay must be at least reconnect_delay".to_owned());
        }
        if !(self.heartbeat_timeout > 0.0 && self.heartbeat_timeout.is_finite()) {
            errors.push("heartbeat_timeout must be greater than 0".to_owned());
        }
        if !(self.connection_timeout > 0.0 && self.connection_timeout.is_finite()) {
            errors.push("connection_timeout must be greater than 0".to_owned());
        }
        if !(self.reconnect_backoff_multiplier >= 1.0
            && self.reconnect_backoff_multiplier.is_finite())
        {
            errors.push("reconnect_backoff_multiplier must be at least 1".to_owned());
        }
        if self.max_concurrent_requests == 0 {
            errors.push("max_concurrent_requests must be at least 1".to_owned());
        }
        if self.client_cert_path.is_some() != self.client_key_path.is_some() {
            errors.push("client_cert_path and client_key_path must be set together".to_owned());
        }
        let targets = self
            .default_target
            .iter()
            .map(|t| ("default_target".to_owned(), t))
            .chain(
                self.targets
                    .iter()
                    .map(|(id, t)| (format!("targets.{id}"), t)),
            );
        for (name, t) in targets {
            if !(t.url.starts_with("http://") || t.url.starts_with("https://"))
                || t.url.parse::<http::Uri>().is_err()
            {
                errors.push(format!("{name}.url {:?} is not an http(s) URL", t.url));
            }
            if http::Method::from_bytes(t.method.to_ascii_uppercase().as_bytes()).is_err() {
                errors.push(format!(
                    "{name}.method {:?} is not an HTTP method",
                    t.method
                ));
            }
            if !(t.timeout_seconds > 0.0 && t.timeout_seconds.is_finite()) {
                errors.push(format!("{name}.timeout_seconds must be greater than 0"));
            }
            if !(t.retry_delay_seconds >= 0.0 && t.retry_delay_seconds.is_finite()) {
                errors.push(format!("{name}.retry_delay_seconds must not be negative"));
            }
        }
        if self.etcd_host.is_some() {
            let ns = self.etcd_namespace();
            if !cwm_config::names::is_valid_namespace(ns) {
                errors.push(format!(
                    "namespace {ns:?} is invalid: it must match ^[a-zA-Z0-9_-]{{1,64}}$"
                ));
            }
            if self.etcd_prefix.is_empty() {
                errors.push("etcd_prefix must not be empty".to_owned());
            }
        }
        if log_filter(&self.log_level).is_none() {
            errors.push(format!(
                "log_level {:?} is not one of DEBUG, INFO, WARNING, ERROR",
                self.log_level
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The delivery mode (after [`ConnectorConfig::validate`], exactly one is configured).
    pub fn mode(&self) -> DeliveryMode {
        if self.etcd_host.is_some() {
            DeliveryMode::Etcd
        } else if self.webhooks_config.is_some() {
            DeliveryMode::Module
        } else {
            DeliveryMode::Http
        }
    }

    /// The etcd namespace: `namespace`, or `default`.
    pub fn etcd_namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(cwm_config::etcd::DEFAULT_NAMESPACE)
    }

    /// The settings as JSON, without the token (for logs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The `tracing` level of a `log_level` (`DEBUG`, `INFO`, `WARNING`/`WARN`, `ERROR`/`CRITICAL`,
/// any case); `None` for anything else.
pub fn log_filter(level: &str) -> Option<&'static str> {
    Some(match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" => "error",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use clap::Parser;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    const FILE: &str = r#"{
        "cloud_url": "https://relay.example.com/",
        "channel": "test-channel",
        "token": "s3cret-token",
        "protocol": "sse",
        "reconnect_delay": 5.0,
        "max_reconnect_delay": 120,
        "log_level": "WARNING",
        "default_target": {"url": "http://localhost:9000/in", "timeout_seconds": 5},
        "max_concurrent": 4,
        "retry_attempts": 2,
        "retry_delay": 1
    }"#;

    fn with_file(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("cwm-connector").chain(args.iter().copied())).unwrap()
    }

    #[tokio::test]
    async fn file_values_replace_defaults_and_unknown_top_level_keys_are_ignored() {
        let (_d, path) = with_file(FILE, "c.json");
        let c = ConnectorConfig::load(&cli(&["-c", path.to_str().unwrap()]), &env(&[]))
            .await
            .unwrap();
        assert_eq!(c.cloud_url, "https://relay.example.com");
        assert_eq!(c.protocol, Protocol::Sse);
        assert_eq!(c.reconnect_delay, 5.0);
        assert_eq!(c.max_reconnect_delay, 120.0);
        assert_eq!(c.heartbeat_timeout, 60.0);
        assert_eq!(c.log_level, "WARNING");
        let t = c.default_target.as_ref().unwrap();
        assert_eq!((t.method.as_str(), t.timeout_seconds), ("POST", 5.0));
        assert_eq!(c.mode(), DeliveryMode::Http);
    }

    #[tokio::test]
    async fn env_overrides_file_and_flags_override_env() {
        let (_d, path) = with_file(FILE, "c.json");
        let p = path.to_str().unwrap();
        let e = env(&[
            ("CONNECTOR_RECONNECT_DELAY", "1.0"),
            ("CONNECTOR_PROTOCOL", "long_poll"),
            ("CONNECTOR_CHANNEL", "from-env"),
            ("CONNECTOR_LOG_LEVEL", ""),
            ("CONNECTOR_TARGET_URL", "http://127.0.0.1:1/env"),
            ("CONNECTOR_TARGET_TIMEOUT", "7"),
        ]);
        let c = ConnectorConfig::load(&cli(&["-c", p]), &e).await.unwrap();
        assert_eq!(c.reconnect_delay, 1.0, "env 1.0 overrides the file's 5.0");
        assert_eq!(c.protocol, Protocol::LongPoll);
        assert_eq!(c.channel, "from-env");
        assert_eq!(c.log_level, "WARNING", "an empty variable counts as unset");
        let t = c.default_target.unwrap();
        assert_eq!(t.url, "http://127.0.0.1:1/env");
        assert_eq!(t.timeout_seconds, 7.0);

        let c = ConnectorConfig::load(
            &cli(&[
                "-c",
                p,
                "--protocol",
                "websocket",
                "--channel",
                "from-flag",
                "--target-url",
                "http://127.0.0.1:2/flag",
                "--no-verify-ssl",
            ]),
            &e,
        )
        .await
        .unwrap();
        assert_eq!(c.protocol, Protocol::Websocket);
        assert_eq!(c.channel, "from-flag");
        assert_eq!(c.default_target.unwrap().timeout_seconds, 30.0);
        assert!(!c.verify_ssl);
        assert_eq!(c.reconnect_delay, 1.0);

        // Flags not given leave file and environment alone.
        let c = ConnectorConfig::load(&cli(&["-c", p]), &env(&[]))
            .await
            .unwrap();
        assert_eq!(c.protocol, Protocol::Sse);
        assert!(c.verify_ssl);
    }

    #[tokio::test]
    async fn yaml_files_and_verify_ssl_from_env() {
        let yaml = "cloud_url: http://localhost:8000\nchannel: c1\ntoken: t\nwebhooks_config: hooks.json\nheartbeat_timeout: 10\nverify_ssl: true\nextra_key: [1, 2]\n";
        let (_d, path) = with_file(yaml, "c.yml");
        let c = ConnectorConfig::load(
            &cli(&["--config", path.to_str().unwrap()]),
            &env(&[("CONNECTOR_VERIFY_SSL", "yes")]),
        )
        .await
        .unwrap();
        assert_eq!(c.heartbeat_timeout, 10.0);
        assert_eq!(c.mode(), DeliveryMode::Module);
        assert!(!c.verify_ssl, "only \"true\" turns verification on");
        let c = ConnectorConfig::load(
            &cli(&["--config", path.to_str().unwrap()]),
            &env(&[("CONNECTOR_VERIFY_SSL", "TRUE")]),
        )
        .await
        .unwrap();
        assert!(c.verify_ssl);
    }

    #[test]
    fn type_errors_and_unknown_target_keys_name_the_key() {
        let mut c = ConnectorConfig::default();
        let e = c
            .apply_file(Path::new("c.json"), r#"{"reconnect_delay": "soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reconnect_delay"), "{e}");
        let e = c
            .apply_file(
                Path::new("c.json"),
                r#"{"targets": {"a": {"url": "http://x", "retries": 3}}}"#,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets.a") && e.contains("retries"), "{e}");
        let e = c
            .apply_file(Path::new("c.json"), r#"{"max_concurrent_requests": 1.5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_concurrent_requests"), "{e}");
        // null is allowed and means "not set".
        c.apply_file(
            Path::new("c.json"),
            r#"{"connector_id": null, "etcd_port": null}"#,
        )
        .unwrap();
        assert_eq!(c.etcd_port, 2379);
        let e = c
            .apply_env(&env(&[("CONNECTOR_HEARTBEAT_TIMEOUT", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CONNECTOR_HEARTBEAT_TIMEOUT"), "{e}");
    }

    #[test]
    fn validation_lists_every_error() {
        let mut c = ConnectorConfig {
            channel: "bad..name".into(),
            reconnect_delay: 0.0,
            max_reconnect_delay: -1.0,
            heartbeat_timeout: 0.0,
            ..ConnectorConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        for part in [
            "cloud_url is required",
            "channel \"bad..name\" is invalid",
            "token is required",
            "Either default_target/targets, webhooks_config, or etcd_host must be configured",
            "reconnect_delay must be greater than 0",
            "max_reconnect_delay must be at least reconnect_delay",
            "heartbeat_timeout must be greater than 0",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
        let mut c = ConnectorConfig {
            cloud_url: "http://x".into(),
            channel: "ok".into(),
            token: Secret::new("t"),
            default_target: Some(Target::new("http://127.0.0.1:1/")),
            etcd_host: Some("localhost".into()),
            namespace: Some("bad ns".into()),
            ..ConnectorConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("Only one delivery mode allowed"), "{e}");
        assert!(e.contains("namespace \"bad ns\""), "{e}");
        c.default_target = None;
        c.namespace = None;
        c.validate().unwrap();
        assert_eq!(c.mode(), DeliveryMode::Etcd);
        assert_eq!(c.etcd_namespace(), "default");
    }

    #[test]
    fn the_token_is_never_shown() {
        let c = ConnectorConfig {
            token: Secret::new("channel_secret_token_123"),
            ..ConnectorConfig::default()
        };
        let debug = format!("{c:?}");
        assert!(!debug.contains("channel_secret_token_123"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let json = c.to_json();
        assert!(json.get("token").is_none());
        assert!(!json.to_string().contains("channel_secret_token_123"));
        assert!(json.get("cloud_url").is_some());
    }

    #[test]
    fn help_lists_every_variable() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for st in SETTINGS {
            if let Some(env) = st.env {
                assert!(help.contains(env), "{env} missing from --help");
            }
            assert!(help.contains(st.key), "{} missing from --help", st.key);
        }
    }
}
