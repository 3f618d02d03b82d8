//! The sink contract: set up once, deliver events, shut down.

use std::sync::Arc;

pub use crate::event::{Event, Payload, SinkError};
use async_trait::async_trait;

/// A destination for webhook events. Built once per webhook config version (at load time), shared
/// by every request to that webhook, and told to shut down when the process stops.
///
/// `deliver` returns `Ok` only once the destination has accepted the event (file written, HTTP 2xx,
/// broker acknowledged): the receiver answers 200 on that promise.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The module name this sink was built for.
    fn module(&self) -> &'static str;
    /// Deliver one event; `Ok` only once the destination accepted it.
    async fn deliver(&self, event: &Event) -> Result<(), SinkError>;
    /// Whether [`shutdown`](Sink::shutdown) has work to do (a buffer to flush). Sinks that
    /// return false are dropped without a shutdown task when their webhook is replaced.
    fn needs_shutdown(&self) -> bool {
        false
    }
    /// Flush and release resources. Called once, when the webhook this sink serves was replaced
    /// or removed and its last request finished, or at process exit. The default does nothing.
    async fn shutdown(&self) {}
}

/// Why a sink could not be built from its config. Rejects that webhook at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A `module-config` key is missing or has a value the sink cannot use.
    #[error("'module-config.{key}': {message}")]
    Option {
        /// The key, as a path inside `module-config`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The webhook names no connection, an unknown one, or one of a type this module cannot use.
    #[error("{0}")]
    Connection(String),
    /// Any other reason the config cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    /// A bad `module-config` key.
    pub fn option(key: &str, message: impl Into<String>) -> Self {
        Self::Option {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl From<String> for BuildError {
    fn from(message: String) -> Self {
        Self::Invalid(message)
    }
}

impl From<&str> for BuildError {
    fn from(message: &str) -> Self {
        Self::Invalid(message.to_owned())
    }
}

/// What a [`SinkBuilder`] is given: the webhook's config (for a chain item, the item's view of
/// it), its resolved connection, and the process's shared clients.
#[derive(Clone, Copy)]
pub struct SinkContext<'a> {
    /// The configured webhook id.
    pub webhook_id: &'a str,
    /// The webhook config; `module`, `connection` and `module-config` are the chain item's when
    /// building a chain step.
    pub config: &'a cwm_config::WebhookConfig,
    /// The connection the config names, resolved in the connection registry.
    pub connection: Option<&'a crate::connection::Connection>,
    /// Clients shared by every sink of the process.
    pub modules: &'a crate::context::ModuleContext,
}

impl SinkContext<'_> {
    /// `module-config` read into the sink's typed config. Errors name the key that did not fit.
    pub fn module_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, BuildError> {
        let value = serde_json::Value::Object(self.config.module_config.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { String::new() } else { path };
            let message = e.into_inner().to_string();
            if key.is_empty() {
                BuildError::Invalid(format!("'module-config': {message}"))
            } else {
                BuildError::Option { key, message }
            }
        })
    }

    /// The connection, or an error when the webhook names none.
    pub fn require_connection(&self) -> Result<&crate::connection::Connection, BuildError> {
        self.connection.ok_or_else(|| {
            BuildError::Connection(format!(
                "module '{}' needs a 'connection'",
                self.config.module.as_deref().unwrap_or_default()
            ))
        })
    }
}

/// Builds one kind of sink. Registered once per module name in the [`Registry`](crate::Registry);
/// `build` runs at config load for every webhook naming the module, so it must not block: network
/// clients connect lazily or come from the connection registry.
pub trait SinkBuilder: Send + Sync + 'static {
    /// The module name webhooks use, e.g. `kafka`.
    fn name(&self) -> &'static str;
    /// The connection types this sink can use. Empty: the sink takes no connection (a webhook
    /// naming one is still accepted, as upstream, and the connection is ignored).
    fn connection_types(&self) -> &'static [&'static str] {
        &[]
    }
    /// Build the sink for one webhook (or chain step).
    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError>;
}
