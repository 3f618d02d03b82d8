//! `cwm-receiver`: wires the config provider, the sink registry and the HTTP service together.
//!
//! Every setting is an environment variable of the upstream gateway with a matching flag. A bad
//! setting stops startup with a clear message and exit code 2.
#![forbid(unsafe_code)]

#[path = "../../common/etcd_args.rs"]
mod etcd_args;
#[path = "../../common/vault_args.rs"]
mod vault_args;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use cwm_config::ProcessEnv;
use cwm_config::etcd::EtcdProvider;
use cwm_config::file::FileProvider;
use cwm_http::{HttpSettings, Provider, Receiver};
use cwm_modules::analytics::Analytics;
use cwm_modules::{ModuleContext, Registry};
use cwm_relay::cloud::{
    BufferChoice, ChannelManager, ManagerSettings, WebhookConnectSink, open_buffer,
};

/// mimalloc instead of the system allocator: the request path allocates small, short-lived
/// buffers (body text, header copies, log lines) across worker threads, which glibc malloc
/// serves markedly slower (see README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad setting or an unusable configuration file.
const EXIT_BAD_SETTING: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    File,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// cwm webhook receiver: accepts webhooks over HTTP, authenticates them and delivers each payload
/// to its sink. Configuration comes from JSON files or etcd; every flag can also be set through the
/// environment variable shown, the same variables the Python gateway reads.
#[derive(Debug, Parser)]
#[command(name = "cwm-receiver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: std::net::IpAddr,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,

    /// Where webhooks and connections come from: `file` (JSON files) or `etcd`.
    #[arg(
        long,
        env = "CONFIG_BACKEND",
        value_enum,
        ignore_case = true,
        default_value = "file"
    )]
    config_backend: Backend,

    /// Webhook definitions (file backend). A missing file means no webhooks.
    #[arg(long, env = "WEBHOOKS_CONFIG_FILE", default_value = "webhooks.json")]
    webhooks_config_file: PathBuf,

    /// Connection definitions (file backend). A missing file means no connections.
    #[arg(
        long,
        env = "CONNECTIONS_CONFIG_FILE",
        default_value = "connections.json"
    )]
    connections_config_file: PathBuf,

    /// Reload the files automatically when they change (file backend).
    #[arg(long, env = "CONFIG_FILE_WATCHING_ENABLED", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    config_file_watching_enabled: bool,

    /// Quiet time after a file change before reloading, in seconds (0.1 to 3600).
    #[arg(long, env = "CONFIG_RELOAD_DEBOUNCE_SECONDS", default_value_t = 3.0, value_parser = parse_debounce)]
    config_reload_debounce_seconds: f64,

    /// Token for /admin/reload-config and /admin/config-status (`Authorization: Bearer <token>`).
    /// Unset: the admin API answers 403.
    #[arg(long, env = "CONFIG_RELOAD_ADMIN_TOKEN", hide_env_values = true)]
    config_reload_admin_token: Option<String>,

    /// Largest accepted request body in bytes; larger bodies get 413 while streaming.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_payload_bytes: u64,

    /// How long a delivery (retries included) may take before the sender gets 503, in seconds.
    #[arg(long, env = "DELIVERY_TIMEOUT_SECONDS", default_value_t = 10.0, value_parser = parse_positive_seconds)]
    delivery_timeout_seconds: f64,

    /// Events held in memory for webhooks with `"ack": "receive"` before answering 503.
    #[arg(long, env = "RECEIVE_QUEUE_CAPACITY", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    receive_queue_capacity: u32,

    /// Most events one webhook with `"ack": "receive"` may hold in that queue, so one slow sink
    /// cannot fill it for every other webhook (at most RECEIVE_QUEUE_CAPACITY).
    #[arg(long, env = "RECEIVE_QUEUE_PER_WEBHOOK", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    receive_queue_per_webhook: u32,

    /// Bytes of `log` sink lines that may wait for stdout; beyond that the `log` sink answers 503
    /// at once (a blocked stdout cannot grow memory without bound).
    #[arg(long, env = "LOG_QUEUE_MAX_BYTES", default_value_t = ModuleContext::DEFAULT_LOG_QUEUE_MAX_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    log_queue_max_bytes: u64,

    /// On SIGTERM/SIGINT, how long shutdown may take in all (in-flight requests, queued events,
    /// sink flushes), in seconds. Past it the process exits with code 1 whatever is left.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30.0, value_parser = parse_positive_seconds)]
    shutdown_timeout_seconds: f64,

    /// How long a request head may take to arrive, in seconds (from the connection's start, or
    /// from its first byte on a keep-alive connection); then 408 and the connection closes.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10.0, value_parser = parse_positive_seconds)]
    header_read_timeout_seconds: f64,

    /// Longest pause between two chunks of a request body, in seconds; then 408 and close.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value_t = 30.0, value_parser = parse_positive_seconds)]
    body_read_timeout_seconds: f64,

    /// How long a keep-alive connection may stay idle between requests, in seconds.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_SECONDS", default_value_t = 75.0, value_parser = parse_positive_seconds)]
    keep_alive_timeout_seconds: f64,

    /// Most client connections served at once. Lowered to what the process file limit allows
    /// (raised to its hard limit at start) minus a reserve for sinks, etcd and files. Past it, new
    /// connections wait in the listen backlog while idle ones are closed to make room.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = cwm_http::settings::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,

    /// Always send Strict-Transport-Security (otherwise only behind `X-Forwarded-Proto: https`).
    #[arg(long, env = "FORCE_HTTPS", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    force_https: bool,

    /// Token required by GET /stats (`Bearer <token>` or the bare token). Unset: /stats is open.
    #[arg(long, env = "STATS_AUTH_TOKEN", hide_env_values = true)]
    stats_auth_token: Option<String>,

    /// Comma-separated client IPs allowed to read /stats (empty: any).
    #[arg(long, env = "STATS_ALLOWED_IPS", default_value = "", value_parser = parse_ip_list)]
    stats_allowed_ips: IpList,

    /// GET /stats requests per minute per client IP.
    #[arg(long, env = "STATS_RATE_LIMIT", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    stats_rate_limit: u32,

    /// Show webhook ids in /stats as `webhook_<hash>`.
    #[arg(long, env = "STATS_SANITIZE_IDS", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    stats_sanitize_ids: bool,

    /// GET / requests per minute per client IP.
    #[arg(long, env = "DEFAULT_ENDPOINT_RATE_LIMIT", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    default_endpoint_rate_limit: u32,

    /// Comma-separated proxy IPs whose X-Forwarded-For / X-Real-IP names the client (for /stats and /).
    #[arg(long, env = "TRUSTED_PROXY_IPS", default_value = "", value_parser = parse_ip_list)]
    trusted_proxy_ips: IpList,

    /// Comma-separated browser origins allowed to call the receiver (CORS), e.g.
    /// `https://app.example.com`. Empty: no CORS headers. Invalid entries are skipped with a warning.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    cors_allowed_origins: String,

    /// Remove GET /openapi.json, /docs (Swagger UI) and /redoc (they answer 404).
    #[arg(long, env = "DISABLE_OPENAPI_DOCS", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    disable_openapi_docs: bool,

    /// Prefix a reverse proxy serves the receiver under (e.g. `/hooks`), used only in generated
    /// URLs: the OpenAPI `servers` entry and the links of /docs and /redoc. Routes stay unprefixed.
    #[arg(long, env = "ROOT_PATH", default_value = "")]
    root_path: String,

    /// Accepted for compatibility and ignored: connection hosts on localhost are always allowed.
    #[arg(long, env = "ALLOW_LOCALHOST_FOR_TESTS", hide = true, value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    allow_localhost_for_tests: Option<bool>,

    /// Accepted for compatibility and ignored: private connection hosts are always allowed.
    #[arg(long, env = "ALLOW_PRIVATE_IP_CONNECTIONS", hide = true, value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    allow_private_ip_connections: Option<bool>,

    /// Log every webhook request answered 200 (credentials masked) to the `webhook_logs` table
    /// of this `clickhouse` connection, in batches. Unset: no analytics. A name that is missing
    /// or not a `clickhouse` connection keeps analytics off, with a warning, until such a
    /// connection appears.
    #[arg(long, env = "ANALYTICS_CONNECTION")]
    analytics_connection: Option<String>,

    #[command(flatten)]
    etcd: etcd_args::EtcdArgs,

    #[command(flatten)]
    connect: ConnectArgs,

    #[command(flatten)]
    vault: vault_args::VaultArgs,

    /// Diagnostic log format on stderr (events of the `log` sink always go to stdout).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Diagnostic log filter, e.g. `info` or `cwm_http=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// Webhook Connect: buffer events of `webhook_connect` webhooks per channel for connectors behind
/// a firewall (see docs/WEBHOOK_CONNECT.md).
#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// Serve Webhook Connect: the `webhook_connect` module, the `/connect` streaming API and the
    /// `/admin/webhook-connect` API. Off: those routes answer 503 and `webhook_connect` webhooks
    /// are rejected at load.
    #[arg(long, env = "WEBHOOK_CONNECT_ENABLED", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    webhook_connect_enabled: bool,

    /// Where events wait for connectors: `redis`, `rabbitmq` or `memory` (this process only, lost
    /// on restart). Unset: redis when WEBHOOK_CONNECT_REDIS_URL is set, else rabbitmq when
    /// WEBHOOK_CONNECT_RABBITMQ_URL or RABBITMQ_URL is set, else memory.
    #[arg(long, env = "WEBHOOK_CONNECT_BUFFER")]
    webhook_connect_buffer: Option<String>,

    /// Redis URL of the redis buffer, e.g. `redis://redis:6379/0`.
    #[arg(long, env = "WEBHOOK_CONNECT_REDIS_URL", hide_env_values = true)]
    webhook_connect_redis_url: Option<String>,

    /// AMQP URL of the rabbitmq buffer, e.g. `amqp://guest:guest@rabbitmq:5672/%2f`.
    #[arg(long, env = "WEBHOOK_CONNECT_RABBITMQ_URL", hide_env_values = true)]
    webhook_connect_rabbitmq_url: Option<String>,

    /// Fallback for WEBHOOK_CONNECT_RABBITMQ_URL.
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true)]
    rabbitmq_url: Option<String>,

    /// Token of the `/admin/webhook-connect` API (`Authorization: Bearer <token>`). Unset: that
    /// API answers 403 (its `/health` stays open).
    #[arg(long, env = "WEBHOOK_CONNECT_ADMIN_TOKEN", hide_env_values = true)]
    webhook_connect_admin_token: Option<String>,
}

impl ConnectArgs {
    /// The channel manager, when Webhook Connect is enabled.
    fn manager(&self) -> Result<Option<ChannelManager>, String> {
        if !self.webhook_connect_enabled {
            return Ok(None);
        }
        let choice = BufferChoice::from_settings(
            self.webhook_connect_buffer.as_deref(),
            self.webhook_connect_redis_url.as_deref(),
            self.webhook_connect_rabbitmq_url
                .as_deref()
                .filter(|u| !u.trim().is_empty())
                .or(self.rabbitmq_url.as_deref()),
        )
        .map_err(|e| e.to_string())?;
        let buffer = open_buffer(&choice).map_err(|e| format!("Webhook Connect buffer: {e}"))?;
        tracing::info!(buffer = choice.kind(), "Webhook Connect enabled");
        let settings = ManagerSettings {
            admin_token: self
                .webhook_connect_admin_token
                .as_deref()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            ..ManagerSettings::default()
        };
        Ok(Some(ChannelManager::new(buffer, settings)))
    }
}

/// A comma-separated list of IP addresses.
#[derive(Debug, Clone, Default)]
struct IpList(Vec<std::net::IpAddr>);

fn parse_ip_list(s: &str) -> Result<IpList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{p:?} is not an IP address (CIDR ranges are not supported)"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(IpList)
}

fn parse_debounce(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err("must be a number of seconds between 0.1 and 3600".into()),
    }
}

fn parse_positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err("must be a number of seconds between 0 and 86400".into()),
    }
}

fn init_tracing(args: &Args) -> Result<(), String> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("invalid LOG_LEVEL {:?}: {e}", args.log_level))?;
    for quiet in vault_args::quiet_client_logs(&args.log_level) {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    // Like the upstream, a `.env` in the working directory fills variables that are not set.
    let _ = dotenvy::dotenv();
    let args = Args::parse();
    if let Err(msg) = init_tracing(&args) {
        eprintln!("cwm-receiver: {msg}");
        return ExitCode::from(EXIT_BAD_SETTING);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cwm-receiver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let modules = ModuleContext::new()
        .with_log_queue_max_bytes(usize::try_from(args.log_queue_max_bytes).unwrap_or(usize::MAX));
    let connect = match args.connect.manager() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("cwm-receiver: {msg}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    let mut registry = Registry::with_builtin_sinks(modules.clone());
    if let Some(manager) = &connect {
        registry.register(WebhookConnectSink::builder(manager.clone()));
    }
    let registry = Arc::new(registry);
    // `{$vault:...}` references: fetched at load time, never on the request path.
    let secrets = match args.vault.resolver() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("cwm-receiver: {msg}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    let provider: Provider = match args.config_backend {
        Backend::File => {
            // Started the same way as the etcd provider below; this one returns once both files
            // are loaded (and watched, when enabled).
            let watch = args
                .config_file_watching_enabled
                .then(|| Duration::from_secs_f64(args.config_reload_debounce_seconds));
            let started = FileProvider::start(
                &args.webhooks_config_file,
                &args.connections_config_file,
                registry.clone(),
                Arc::new(ProcessEnv),
                secrets,
                watch,
            )
            .await;
            match started {
                Ok(file) => file,
                Err(e @ cwm_config::ConfigError::Watch(_)) => {
                    eprintln!("cwm-receiver: cannot watch the configuration files: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
                Err(e) => {
                    eprintln!("cwm-receiver: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
            }
        }
        Backend::Etcd => {
            // Returns at once: until the first full load, /health and webhooks answer 503.
            let started = args.etcd.settings().and_then(|s| {
                EtcdProvider::start(s, registry.clone(), Arc::new(ProcessEnv), secrets)
            });
            match started {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("cwm-receiver: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
            }
        }
    };

    let shutdown_timeout = Duration::from_secs_f64(args.shutdown_timeout_seconds);
    let settings = HttpSettings {
        max_payload_bytes: usize::try_from(args.max_payload_bytes).unwrap_or(usize::MAX),
        admin_token: args
            .config_reload_admin_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        delivery_timeout: Duration::from_secs_f64(args.delivery_timeout_seconds),
        receive_queue_capacity: args.receive_queue_capacity as usize,
        receive_queue_per_webhook: args
            .receive_queue_per_webhook
            .min(args.receive_queue_capacity) as usize,
        shutdown_timeout,
        header_read_timeout: Duration::from_secs_f64(args.header_read_timeout_seconds),
        body_idle_timeout: Duration::from_secs_f64(args.body_read_timeout_seconds),
        keep_alive_timeout: Duration::from_secs_f64(args.keep_alive_timeout_seconds),
        max_connections: connection_cap(args.max_connections as usize),
        force_https: args.force_https,
        stats_token: args
            .stats_auth_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        stats_allowed_ips: args.stats_allowed_ips.0,
        stats_rate_limit: args.stats_rate_limit,
        stats_sanitize_ids: args.stats_sanitize_ids,
        root_rate_limit: args.default_endpoint_rate_limit,
        openapi_docs: !args.disable_openapi_docs,
        root_path: args.root_path.trim().trim_end_matches('/').to_owned(),
        trusted_proxy_ips: args.trusted_proxy_ips.0,
        cors: cwm_http::settings::Cors::parse(&args.cors_allowed_origins),
        ..HttpSettings::default()
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cwm-receiver: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, backend = provider.backend(), "cwm-receiver listening");
    let mut receiver = Receiver::new(provider.clone(), settings).with_modules(modules.clone());
    let analytics = args
        .analytics_connection
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .and_then(|name| match Analytics::start(&modules, name) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "ANALYTICS_CONNECTION ignored");
                None
            }
        });
    if let Some(a) = &analytics {
        receiver = receiver.with_analytics(a.clone());
    }
    if let Some(manager) = &connect {
        receiver = receiver.with_connect(manager.clone());
    }
    let deadline = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let deadline = deadline.clone();
        async move {
            shutdown_signal().await;
            let _ = deadline.set(tokio::time::Instant::now() + shutdown_timeout);
            exit_at_deadline(shutdown_timeout);
        }
    };
    cwm_http::serve(listener, receiver, signal).await;
    let deadline = deadline
        .get()
        .copied()
        .unwrap_or_else(|| tokio::time::Instant::now() + shutdown_timeout);
    let _ = tokio::time::timeout_at(deadline, provider.shutdown()).await;
    // Analytics writes its queue through a connection client: before the clients close.
    if let Some(a) = &analytics {
        a.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
    }
    if !modules
        .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        tracing::warn!("sinks still flushing at the shutdown deadline");
        return ExitCode::FAILURE;
    }
    tracing::info!("cwm-receiver stopped");
    ExitCode::SUCCESS
}

/// Listen on `addr` with a deep backlog: at the connection cap, new connections wait there (the
/// kernel caps it at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel may queue for `accept`.
const LISTEN_BACKLOG: u32 = 4096;

/// Whatever clients or sinks do (a half-sent request, a blocked stdout), the process is gone
/// `timeout` after the shutdown signal: a thread of its own ends it if the orderly path has not.
fn exit_at_deadline(timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            // Its own thread, not a runtime worker: sleeping is what it is for.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(timeout);
            eprintln!("cwm-receiver: shutdown deadline reached; exiting with work left undone");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown deadline thread");
    }
}

/// The connection cap: `requested`, lowered to what the process file limit allows after raising
/// the soft limit to the hard one, minus a reserve for sinks, etcd, files and the listener.
fn connection_cap(requested: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file limit; assuming 1024");
            1024
        }
    };
    let reserve = (limit / 10).clamp(64, 1024);
    let allowed = usize::try_from(limit.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX);
    if requested > allowed {
        tracing::warn!(
            requested,
            allowed,
            file_limit = limit,
            "MAX_CONNECTIONS lowered to what the file limit allows"
        );
    }
    requested.min(allowed)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
