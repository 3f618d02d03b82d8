//! `cwmctl`: the command-line tool that replaces the Python gateway's migration snippet.
//!
//! `import` copies webhooks.json / connections.json into etcd under a namespace, `export` writes a
//! namespace back to files, `validate` checks files or etcd exactly as a receiver would load them,
//! `analytics-stats` fills ClickHouse's `webhook_stats` (the Python analytics processor).
//! The ETCD_* and Vault variables are the receiver's; their flags go before or after the
//! subcommand. With Vault on, `import` and `validate` fetch `{$vault:...}` references as a
//! receiver would (the values written to etcd stay raw). Exit
//! codes: 0 success, 1 invalid entries (misplaced etcd keys included) or failed operation, 2 bad
//! usage (bad flags or settings, TLS files that do not parse).
#![forbid(unsafe_code)]

#[path = "../../common/etcd_args.rs"]
mod etcd_args;
#[path = "../../common/vault_args.rs"]
mod vault_args;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use cwm_config::Compiler;
use cwm_config::etcd::{EtcdSettings, connect, read_all, tls_hint};
use cwm_config::keys::{connection_key, namespace_webhooks_prefix};
use cwm_config::migrate::{self, Action, Entries, ImportOptions, Invalid};
use cwm_config::secrets::{SecretEnv, SecretResolver, prefetch};
use cwm_config::subst::vault_references;
use cwm_config::{ConfigError, ProcessEnv};
use cwm_modules::{ModuleContext, Registry, analytics};

/// Manage cwm configuration: move it between JSON files and etcd, and validate it.
#[derive(Debug, Parser)]
#[command(name = "cwmctl", version)]
struct Cli {
    /// Every etcd flag is global: accepted before or after the subcommand, listed in its --help.
    #[command(flatten, next_help_heading = "etcd")]
    etcd: etcd_args::EtcdArgs,

    /// Vault, for the `{$vault:...}` references `import`, `validate` and `analytics-stats` read
    /// (off by default).
    #[command(flatten, next_help_heading = "Vault")]
    vault: vault_args::VaultArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy webhooks.json and connections.json into etcd (values raw: placeholders stay for the receivers).
    Import {
        #[command(flatten)]
        files: Files,
        /// Namespace of the webhooks (default: ETCD_NAMESPACE).
        #[arg(long)]
        namespace: Option<String>,
        /// Show what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite keys that already exist (otherwise they are skipped).
        #[arg(long)]
        force: bool,
        /// Import even when some entries fail validation (they would be rejected by receivers).
        #[arg(long)]
        allow_invalid: bool,
    },
    /// Write one namespace's webhooks and all connections from etcd to JSON files.
    Export {
        #[command(flatten)]
        files: Files,
        /// Namespace to export (default: ETCD_NAMESPACE).
        #[arg(long)]
        namespace: Option<String>,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Check a configuration without starting a receiver: files (default) or etcd (`--etcd`).
    Validate {
        #[command(flatten)]
        files: Files,
        /// Validate every key under ETCD_PREFIX in etcd instead of files.
        #[arg(long)]
        etcd: bool,
    },
    /// Fill ClickHouse's `webhook_stats` from `webhook_logs` (per webhook id: the total and the
    /// counts of the last minute .. 30 days), every --interval seconds or once: what the Python
    /// gateway's analytics processor did. Run one, not one per receiver.
    AnalyticsStats {
        /// The `clickhouse` connection the receivers log to (their ANALYTICS_CONNECTION).
        #[arg(long, env = "ANALYTICS_CONNECTION")]
        connection: String,
        /// Where the connection is defined: connections.json (default) or etcd (`--etcd`).
        #[arg(
            long,
            env = "CONNECTIONS_CONFIG_FILE",
            default_value = "connections.json"
        )]
        connections: PathBuf,
        /// Read the connection from `{ETCD_PREFIX}global/connections/{name}` instead of a file.
        #[arg(long)]
        etcd: bool,
        /// Seconds between two runs.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Run once and exit (0 when the rows were written, 1 otherwise).
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Files {
    /// Webhooks file.
    #[arg(long, env = "WEBHOOKS_CONFIG_FILE", default_value = "webhooks.json")]
    webhooks: PathBuf,
    /// Connections file.
    #[arg(
        long,
        env = "CONNECTIONS_CONFIG_FILE",
        default_value = "connections.json"
    )]
    connections: PathBuf,
}

/// A failure with the exit code it maps to.
struct Failed(u8, String);

impl From<ConfigError> for Failed {
    fn from(e: ConfigError) -> Self {
        let code = if matches!(e, ConfigError::Setting(_)) {
            2
        } else {
            1
        };
        Failed(code, e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cwmctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(code, msg)) => {
            eprintln!("cwmctl: {msg}");
            ExitCode::from(code)
        }
    }
}

fn registry() -> Arc<Registry> {
    Arc::new(Registry::with_builtin_sinks(ModuleContext::new()))
}

fn print_invalid(invalid: &[Invalid]) {
    for i in invalid {
        println!("  invalid  {}: {}", i.key, i.reason);
    }
}

async fn run(cli: Cli) -> Result<(), Failed> {
    let settings = cli.etcd.settings()?;
    match cli.command {
        Command::Import {
            files,
            namespace,
            dry_run,
            force,
            allow_invalid,
        } => {
            let entries = migrate::read_files(&files.webhooks, &files.connections)?;
            let secrets = cli.vault.resolver().map_err(|e| Failed(2, e))?;
            let invalid =
                migrate::validate_entries(&entries, &*registry(), &ProcessEnv, secrets.as_deref())
                    .await;
            print_invalid(&invalid);
            if !invalid.is_empty() && !allow_invalid {
                return Err(Failed(
                    1,
                    format!(
                        "{} invalid entries; nothing imported (fix them, or pass --allow-invalid)",
                        invalid.len()
                    ),
                ));
            }
            let options = ImportOptions {
                namespace: namespace.unwrap_or_else(|| settings.default_namespace.clone()),
                dry_run,
                force,
            };
            let mut client = etcd_op(&settings, connect(&settings)).await?;
            let report = etcd_op(
                &settings,
                migrate::import(&mut client, &settings.prefix, &entries, &options),
            )
            .await?;
            let verb = if dry_run { "would be " } else { "" };
            for (key, action) in &report.actions {
                let what = match action {
                    Action::Created => "create",
                    Action::Overwritten => "overwrite",
                    Action::Skipped => "skip (exists; --force overwrites)",
                    Action::Unchanged => "unchanged",
                };
                println!("  {what:<10} {key}");
            }
            println!(
                "{}: {} webhooks, {} connections -> namespace {:?}: {} {verb}created, {} {verb}overwritten, {} skipped, {} unchanged",
                if dry_run { "dry run" } else { "imported" },
                entries.webhooks.len(),
                entries.connections.len(),
                options.namespace,
                report.count(Action::Created),
                report.count(Action::Overwritten),
                report.count(Action::Skipped),
                report.count(Action::Unchanged),
            );
            Ok(())
        }
        Command::Export {
            files,
            namespace,
            force,
        } => {
            let namespace = namespace.unwrap_or_else(|| settings.default_namespace.clone());
            for path in [&files.webhooks, &files.connections] {
                if path.exists() && !force {
                    return Err(Failed(
                        1,
                        format!("{} exists (--force replaces it)", path.display()),
                    ));
                }
            }
            let mut client = etcd_op(&settings, connect(&settings)).await?;
            let (entries, invalid) = etcd_op(
                &settings,
                migrate::export(
                    &mut client,
                    &settings.prefix,
                    &namespace,
                    settings.page_size,
                ),
            )
            .await?;
            let webhooks_prefix = namespace_webhooks_prefix(&settings.prefix, &namespace);
            if entries.webhooks.is_empty()
                && !invalid.iter().any(|i| i.key.starts_with(&webhooks_prefix))
            {
                return Err(Failed(
                    1,
                    format!(
                        "namespace {namespace:?} has no webhooks in etcd (no key under \
                         {webhooks_prefix}); nothing written"
                    ),
                ));
            }
            print_invalid(&invalid);
            write_json(&files.webhooks, &entries.webhooks)?;
            write_json(&files.connections, &entries.connections)?;
            println!(
                "exported namespace {namespace:?}: {} webhooks to {}, {} connections to {}{}",
                entries.webhooks.len(),
                files.webhooks.display(),
                entries.connections.len(),
                files.connections.display(),
                if invalid.is_empty() {
                    String::new()
                } else {
                    format!(" ({} keys skipped)", invalid.len())
                }
            );
            Ok(())
        }
        Command::AnalyticsStats {
            connection,
            connections,
            etcd,
            interval,
            once,
        } => {
            let secrets = cli.vault.resolver().map_err(|e| Failed(2, e))?;
            analytics_stats(
                &settings,
                connection.trim(),
                (!etcd).then_some(connections.as_path()),
                interval,
                once,
                secrets.as_deref(),
            )
            .await
        }
        Command::Validate { files, etcd } => {
            let registry = registry();
            let secrets = cli.vault.resolver().map_err(|e| Failed(2, e))?;
            let (checked, invalid) = if etcd {
                validate_etcd(&settings, &registry, secrets.as_deref()).await?
            } else {
                let entries: Entries = migrate::read_files(&files.webhooks, &files.connections)?;
                let n = entries.webhooks.len() + entries.connections.len();
                (
                    n,
                    migrate::validate_entries(
                        &entries,
                        &*registry,
                        &ProcessEnv,
                        secrets.as_deref(),
                    )
                    .await,
                )
            };
            print_invalid(&invalid);
            println!("{checked} entries checked, {} invalid", invalid.len());
            if invalid.is_empty() {
                Ok(())
            } else {
                Err(Failed(1, "configuration has invalid entries".into()))
            }
        }
    }
}

/// `cwmctl analytics-stats`: the connection read once (Vault references fetched), then the
/// statistics written every `interval` (a failed run is reported and the next one tried) or once.
async fn analytics_stats(
    settings: &EtcdSettings,
    name: &str,
    file: Option<&Path>,
    interval: u64,
    once: bool,
    secrets: Option<&SecretResolver>,
) -> Result<(), Failed> {
    let value = match file {
        Some(path) => {
            // Read once, before anything runs.
            #[allow(clippy::disallowed_methods)]
            let text = std::fs::read(path)
                .map_err(|e| Failed(1, format!("cannot read {}: {e}", path.display())))?;
            let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
                .map_err(|e| Failed(1, format!("{}: not a JSON object: {e}", path.display())))?;
            doc.remove(name)
        }
        None => {
            let key = connection_key(&settings.prefix, name);
            let mut client = etcd_op(settings, connect(settings)).await?;
            let (_, kvs) = etcd_op(settings, read_all(&mut client, &key, 2)).await?;
            match kvs.into_iter().find(|(k, _)| k == key.as_bytes()) {
                None => None,
                Some((_, v)) => Some(
                    serde_json::from_slice(&v)
                        .map_err(|e| Failed(1, format!("{key}: not JSON: {e}")))?,
                ),
            }
        }
    };
    let value = value.ok_or_else(|| Failed(1, format!("connection {name:?} is not defined")))?;
    let fetched = prefetch(secrets, |refs| vault_references(&value, refs)).await;
    let env = SecretEnv {
        env: &ProcessEnv,
        secrets: fetched.as_ref(),
    };
    let connection = cwm_config::parse_connection(&env, name, value)
        .map_err(|e| Failed(1, format!("connection {name:?}: {e}")))?;
    let modules = ModuleContext::new();
    Registry::with_builtin_sinks(modules.clone())
        .sync_connections(&[(Arc::from(name), Arc::new(connection))]);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match analytics::refresh_stats(&modules, name).await {
            Ok(()) => println!("webhook_stats written through connection {name:?}"),
            Err(e) if once => return Err(Failed(1, e.to_string())),
            Err(e) => eprintln!("cwmctl: {e}; next try in {interval} s"),
        }
        if once {
            return Ok(());
        }
    }
}

async fn validate_etcd(
    settings: &EtcdSettings,
    registry: &Registry,
    secrets: Option<&SecretResolver>,
) -> Result<(usize, Vec<Invalid>), Failed> {
    let mut client = etcd_op(settings, connect(settings)).await?;
    etcd_op(
        settings,
        migrate::validate_etcd(
            &mut client,
            &settings.prefix,
            settings.page_size,
            registry,
            &ProcessEnv,
            secrets,
        ),
    )
    .await
}

/// Run one etcd operation. When it fails to talk to etcd over plain text, check whether the
/// server speaks TLS and say so.
async fn etcd_op<T>(
    settings: &EtcdSettings,
    op: impl Future<Output = Result<T, ConfigError>>,
) -> Result<T, Failed> {
    match op.await {
        Ok(value) => Ok(value),
        Err(ConfigError::Etcd(message)) => Err(Failed(
            1,
            match tls_hint(settings).await {
                Some(hint) => format!("etcd: {message}; {hint}"),
                None => format!("etcd: {message}"),
            },
        )),
        Err(e) => Err(e.into()),
    }
}

fn write_json(path: &Path, map: &serde_json::Map<String, serde_json::Value>) -> Result<(), Failed> {
    let mut text = serde_json::to_string_pretty(map).map_err(|e| Failed(1, e.to_string()))?;
    text.push('\n');
    // A command-line tool writing its output file; no runtime is serving anything.
    #[allow(clippy::disallowed_methods)]
    std::fs::write(path, text)
        .map_err(|e| Failed(1, format!("cannot write {}: {e}", path.display())))
}
