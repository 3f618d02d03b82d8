//! `cwm-connector`: receives webhooks from a cwm receiver's Webhook Connect channel and delivers
//! them locally. Settings: defaults < config file (`-c`) < `CONNECTOR_*` variables < flags given
//! on the command line (`--help` lists them all). Module and etcd modes fetch `{$vault:...}`
//! references with the receiver's Vault settings (`SECRETS_BACKEND`, `VAULT_*`).
//!
//! Exit codes: 0 after SIGINT/SIGTERM (and for `--help`), 1 when the flags or settings are
//! invalid or startup fails (an unreadable webhooks file, etcd unreachable, bad TLS files).
#![forbid(unsafe_code)]

#[path = "../../common/vault_args.rs"]
mod vault_args;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches};
use cwm_config::ProcessEnv;
use cwm_connector::{Cli, ConnectorConfig, config::log_filter};
use vault_args::VaultArgs;

/// The connector's own flags, then the Vault ones (under their own heading).
fn parse() -> Result<(Cli, VaultArgs), clap::Error> {
    let command = Cli::command().next_help_heading("Vault");
    let matches = VaultArgs::augment_args(command).try_get_matches()?;
    Ok((
        Cli::from_arg_matches(&matches)?,
        VaultArgs::from_arg_matches(&matches)?,
    ))
}

fn main() -> ExitCode {
    let (cli, vault) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            // `--help` and `--version` print and exit 0; a bad flag is a startup failure (1).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cwm-connector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, vault))
}

async fn run(cli: Cli, vault: VaultArgs) -> ExitCode {
    if cli.token.is_some() {
        eprintln!(
            "cwm-connector: warning: --token is visible to other users in the process list; prefer CONNECTOR_TOKEN"
        );
    }
    let config = match ConnectorConfig::load(&cli, &ProcessEnv).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cwm-connector: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config);
    let secrets = match vault.resolver() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cwm-connector: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();
    tracing::debug!(config = %config.to_json(), "settings");
    match cwm_connector::run(config, secrets, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("cwm-connector: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &ConnectorConfig) {
    // Validation has checked the level already.
    let level = log_filter(&config.log_level).unwrap_or("info");
    let mut filter = tracing_subscriber::EnvFilter::new(level);
    for quiet in vault_args::quiet_client_logs(level) {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_format.eq_ignore_ascii_case("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed before this returns, so a signal
/// that arrives during startup is not lost (nor fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let (mut term, mut int) = match (term, int) {
                (Ok(t), Ok(i)) => (t, i),
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
}
