//! Configuration for cwm.
//!
//! Typed webhook and connection configs ([`model`]), `{$VAR}` substitution ([`subst`]), the name
//! rules of routes and etcd keys ([`names`]), lock-free snapshots ([`snapshot`]) and the two
//! backends behind the [`ConfigProvider`] trait: [`file::FileProvider`] and [`etcd::EtcdProvider`].
//!
//! Invariant: this crate is the only one that reads configuration sources (files, etcd). Everything
//! else reads a [`Snapshot`], which never blocks.
//!
//! # Example
//!
//! Validate one webhook entry as every backend does (with the [`PassThrough`] compiler, which
//! serves the [`WebhookConfig`] itself), publish it in a [`Store`] and look it up:
//!
//! ```rust
//! use std::sync::Arc;
//!
//! use cwm_config::{Ack, PassThrough, Snapshot, Store, WebhookConfig, compile_webhook};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), cwm_config::CompileError> {
//! // Variables come from an `Env`: the process environment (`ProcessEnv`) or, here, a closure.
//! let env = |name: &str| (name == "ORDERS_TOKEN").then(|| "s3cret".to_owned());
//! let entry = json!({"module": "log", "authorization": "{$ORDERS_TOKEN}", "ack": "receive"});
//! let config: WebhookConfig = compile_webhook(&PassThrough, &env, "orders", entry)?;
//! assert_eq!(config.authorization.as_deref(), Some("s3cret"));
//! assert_eq!(config.ack, Ack::Receive);
//!
//! // An entry that breaks the rules is refused with a reason, never a secret value.
//! assert!(compile_webhook(&PassThrough, &env, "stats", json!({"module": "log"})).is_err());
//!
//! let store = Store::new(Snapshot::empty("default", true));
//! store.update(|snap| snap.put_webhook("default", "orders", Arc::new(config)));
//! store.mark_loaded();
//! let snap = store.load();
//! let found = snap.webhook(None, "orders").ok_or("orders is not served")?;
//! assert_eq!(found.module.as_deref(), Some("log"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod etcd;
pub mod file;
pub mod keys;
pub mod migrate;
pub mod model;
pub mod names;
pub mod provider;
pub mod secrets;
pub mod snapshot;
pub mod subst;

pub use error::{CompileError, ConfigError};
pub use etcd::{EtcdProvider, EtcdSettings, EtcdTls};
pub use model::{Ack, ConnectionConfig, DataType, EntryError, RetryPolicy, WebhookConfig};
pub use provider::{
    BackendState, Compiler, ConfigProvider, Diff, PassThrough, ProviderStatus, ReloadReport,
    ReloadRequest, Resync, StaticProvider, compile_webhook, compile_webhook_json, parse_connection,
};
pub use secrets::{SecretResolver, SecretStore};
pub use snapshot::{CATCH_ALL_ID, Found, Rejection, Snapshot, Store};
pub use subst::{Env, ProcessEnv};
