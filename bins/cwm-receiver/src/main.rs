//! `cwm-receiver`: wires the config provider, the sink registry and the HTTP service together.
//!
//! Every setting is an environment variable of the upstream gateway with a matching flag. A bad
//! setting stops startup with a clear message and exit code 2.
#![forbid(unsafe_code)]

#[path = "../../common/etcd_args.rs"]
mod etcd_args;

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
use cwm_modules::{ModuleContext, Registry};

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

    /// On SIGTERM/SIGINT, how long to wait for in-flight requests and queued events, in seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30.0, value_parser = parse_positive_seconds)]
    shutdown_timeout_seconds: f64,

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

    /// Accepted for compatibility and ignored: connection hosts on localhost are always allowed.
    #[arg(long, env = "ALLOW_LOCALHOST_FOR_TESTS", hide = true, value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    allow_localhost_for_tests: Option<bool>,

    /// Accepted for compatibility and ignored: private connection hosts are always allowed.
    #[arg(long, env = "ALLOW_PRIVATE_IP_CONNECTIONS", hide = true, value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    allow_private_ip_connections: Option<bool>,

    #[command(flatten)]
    etcd: etcd_args::EtcdArgs,

    /// Diagnostic log format on stderr (events of the `log` sink always go to stdout).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Diagnostic log filter, e.g. `info` or `cwm_http=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
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
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("invalid LOG_LEVEL {:?}: {e}", args.log_level))?;
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
    let modules = ModuleContext::new();
    let registry = Arc::new(Registry::with_builtin_sinks(modules.clone()));
    let provider: Provider = match args.config_backend {
        Backend::File => {
            let file = Arc::new(FileProvider::new(
                &args.webhooks_config_file,
                &args.connections_config_file,
                registry.clone(),
                Arc::new(ProcessEnv),
            ));
            match file.load().await {
                Ok(report) => tracing::info!(
                    webhooks = report.webhooks.map_or(0, |d| d.total),
                    connections = report.connections.map_or(0, |d| d.total),
                    "configuration loaded from files"
                ),
                Err(e) => {
                    eprintln!("cwm-receiver: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
            }
            if args.config_file_watching_enabled {
                let debounce = Duration::from_secs_f64(args.config_reload_debounce_seconds);
                if let Err(e) = file.watch(debounce) {
                    eprintln!("cwm-receiver: cannot watch the configuration files: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
            }
            file
        }
        Backend::Etcd => {
            // Returns at once: until the first full load, /health and webhooks answer 503 (C4).
            let started = args
                .etcd
                .settings()
                .and_then(|s| EtcdProvider::start(s, registry.clone(), Arc::new(ProcessEnv)));
            match started {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("cwm-receiver: {e}");
                    return ExitCode::from(EXIT_BAD_SETTING);
                }
            }
        }
    };

    let settings = HttpSettings {
        max_payload_bytes: usize::try_from(args.max_payload_bytes).unwrap_or(usize::MAX),
        admin_token: args
            .config_reload_admin_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        delivery_timeout: Duration::from_secs_f64(args.delivery_timeout_seconds),
        receive_queue_capacity: args.receive_queue_capacity as usize,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout_seconds),
        force_https: args.force_https,
        stats_token: args
            .stats_auth_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        stats_allowed_ips: args.stats_allowed_ips.0,
        stats_rate_limit: args.stats_rate_limit,
        stats_sanitize_ids: args.stats_sanitize_ids,
        root_rate_limit: args.default_endpoint_rate_limit,
        trusted_proxy_ips: args.trusted_proxy_ips.0,
        ..HttpSettings::default()
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cwm-receiver: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, backend = provider.backend(), "cwm-receiver listening");
    let receiver = Receiver::new(provider.clone(), settings);
    cwm_http::serve(listener, receiver, shutdown_signal()).await;
    provider.shutdown().await;
    modules.shutdown().await;
    tracing::info!("cwm-receiver stopped");
    ExitCode::SUCCESS
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
