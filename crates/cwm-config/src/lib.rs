//! Configuration for cwm.
//!
//! Typed webhook and connection configs ([`model`]), `{$VAR}` substitution ([`subst`]), the name
//! rules of routes and etcd keys ([`names`]), lock-free snapshots ([`snapshot`]) and the two
//! backends behind the [`ConfigProvider`] trait: [`file::FileProvider`] and [`etcd::EtcdProvider`].
//!
//! Invariant: this crate is the only one that reads configuration sources (files, etcd). Everything
//! else reads a [`Snapshot`], which never blocks.
#![forbid(unsafe_code)]

pub mod error;
pub mod etcd;
pub mod file;
pub mod keys;
pub mod migrate;
pub mod model;
pub mod names;
pub mod provider;
pub mod snapshot;
pub mod subst;

pub use error::ConfigError;
pub use etcd::{EtcdProvider, EtcdSettings, EtcdTls};
pub use model::{Ack, ConnectionConfig, DataType, EntryError, RetryPolicy, WebhookConfig};
pub use provider::{
    BackendState, Compiler, ConfigProvider, Diff, PassThrough, ProviderStatus, ReloadReport,
    ReloadRequest, Resync, compile_webhook, compile_webhook_json, parse_connection,
};
pub use snapshot::{CATCH_ALL_ID, Found, Rejection, Snapshot, Store};
pub use subst::{Env, ProcessEnv};
