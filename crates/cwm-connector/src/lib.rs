//! The cwm relay client ("Webhook Connect" connector).
//!
//! A public receiver buffers webhooks on a channel; this connector, running behind a firewall,
//! holds an outbound stream to it (WebSocket, SSE or long-poll, see [`config::Protocol`]),
//! delivers each event locally and acknowledges it only after the delivery succeeded:
//!
//! - HTTP mode (`default_target` / `targets`): an HTTP request per event, with retries;
//! - module mode (`webhooks_config`): the gateway's own sink modules, configs read from a file
//!   in the receiver's `webhooks.json` format;
//! - etcd mode (`etcd_host`): the same sinks, configs from etcd with the receiver's cache and
//!   watch.
//!
//! Settings come from [`config::ConnectorConfig::load`]; [`run`] runs until its shutdown future
//! resolves. The crate speaks the wire protocol of `cwm_relay::protocol` and never depends on
//! `cwm-http`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod http_mode;
mod module_mode;
mod process;
mod sse;
#[cfg(test)]
mod tests;
pub mod tls;
mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cwm_config::secrets::SecretResolver;
use cwm_config::{EtcdSettings, ProcessEnv};
use cwm_modules::ModuleContext;

pub use config::{Cli, ConfigError, ConnectorConfig, DeliveryMode, Protocol, Target};
pub use module_mode::StartError;
pub use tls::TlsError;

use crate::http_mode::HttpDelivery;
use crate::module_mode::ModuleDelivery;
use crate::process::{Delivery, Processor};

/// How long sinks may take to flush at shutdown.
const SINK_SHUTDOWN: Duration = Duration::from_secs(10);

/// Why the connector could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Module or etcd mode could not load its webhook configs.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Run the connector with `config` (validated) until `shutdown` resolves. Module and etcd modes
/// fetch `{$vault:...}` references through `secrets` (`None`: Vault off, references take their
/// defaults).
///
/// Fails before streaming when the TLS files, the module-mode files or etcd (not loaded within
/// `connection_timeout`) cannot be used. On shutdown it stops taking messages, closes the stream
/// and abandons deliveries still running without acking them (the receiver redelivers them).
pub async fn run(
    config: ConnectorConfig,
    secrets: Option<Arc<SecretResolver>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let config = Arc::new(config);
    let tls = tls::TlsConfigs::load(&config).await?;
    let delivery = match config.mode() {
        DeliveryMode::Http => Delivery::Http(Box::new(HttpDelivery::new(
            tls::http_client(tls.targets.clone()),
            config.default_target.clone(),
            config.targets.clone(),
        ))),
        DeliveryMode::Module => {
            let path = config
                .webhooks_config
                .as_deref()
                .ok_or_else(|| ConfigError::Invalid(vec!["webhooks_config is not set".into()]))?;
            let m = ModuleDelivery::from_files(
                path,
                config.connections_config.as_deref(),
                ModuleContext::new(),
                &ProcessEnv,
                secrets.as_deref(),
            )
            .await?;
            Delivery::Modules(m)
        }
        DeliveryMode::Etcd => {
            let host = config.etcd_host.as_deref().unwrap_or_default();
            let settings = EtcdSettings::new(
                vec![format!("{host}:{}", config.etcd_port)],
                &config.etcd_prefix,
                config.etcd_namespace(),
            )
            .map_err(|e| StartError::Etcd(e.to_string()))?;
            let wait = protocol_seconds(config.connection_timeout);
            let m = ModuleDelivery::from_etcd(
                settings,
                ModuleContext::new(),
                Arc::new(ProcessEnv),
                secrets,
                wait,
            )
            .await?;
            Delivery::Modules(m)
        }
    };
    let processor = Processor::new(delivery, config.max_concurrent_requests);
    let ctx = transport::Ctx {
        cloud: tls::http_client(tls.cloud.clone()),
        tls,
        config: config.clone(),
        processor: processor.clone(),
        stop: tokio_util::sync::CancellationToken::new(),
    };
    tracing::info!(
        cloud_url = %config.cloud_url,
        channel = %config.channel,
        protocol = %config.protocol,
        mode = ?config.mode(),
        "connector starting"
    );
    {
        let streaming = transport::run(&ctx);
        tokio::pin!(streaming);
        tokio::select! {
            () = &mut streaming => {}
            () = shutdown => {
                tracing::info!("stopping");
                ctx.stop.cancel();
                streaming.await;
            }
        }
    }
    processor.stop().await;
    processor.shutdown_sinks(SINK_SHUTDOWN).await;
    tracing::info!("connector stopped");
    Ok(())
}

fn protocol_seconds(s: f64) -> Duration {
    cwm_relay::protocol::seconds(s).unwrap_or(Duration::from_secs(30))
}
