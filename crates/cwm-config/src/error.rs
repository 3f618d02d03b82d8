//! Errors of the configuration layer.

use std::path::PathBuf;

/// Why a configuration source could not be loaded. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid JSON.
    #[error("{path} is not valid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column).
        message: String,
    },
    /// A configuration file holds JSON that is not an object.
    #[error("{path} must hold a JSON object of {{name: config}}")]
    NotAnObject {
        /// The file.
        path: PathBuf,
    },
    /// A configuration file that was loaded before is gone; its previous entries keep serving.
    #[error("{path} was deleted; the previous configuration is kept until the file is back")]
    Deleted {
        /// The file.
        path: PathBuf,
    },
    /// A backend setting is invalid (etcd endpoints, prefix, TLS files, ...).
    #[error("invalid setting: {0}")]
    Setting(String),
    /// An etcd request failed (only where a caller waits for etcd: a reload, `cwmctl`).
    #[error("etcd: {0}")]
    Etcd(String),
    /// The file watcher could not start.
    #[error("file watcher: {0}")]
    Watch(String),
}

/// Why one webhook or connection entry was refused at load. Its `Display` is the reason
/// `/admin/config-status` shows; it never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The webhook id or connection name breaks the naming rules.
    #[error("{0}")]
    Name(String),
    /// The document is not a valid entry (JSON, shape, substitution, connection host rules).
    #[error(transparent)]
    Entry(#[from] crate::model::EntryError),
    /// The compiler refused it: an unknown module, a check or option that cannot work, a
    /// connection that is missing or of the wrong type, an invalid chain.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for CompileError {
    fn from(reason: String) -> Self {
        Self::Refused(reason)
    }
}

impl From<&str> for CompileError {
    fn from(reason: &str) -> Self {
        Self::Refused(reason.to_owned())
    }
}
