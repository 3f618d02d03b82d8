//! Errors of the configuration layer.

use std::path::PathBuf;

/// Why a configuration source could not be loaded. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path} must hold a JSON object of {{name: config}}")]
    NotAnObject { path: PathBuf },
    /// A configuration file that was loaded before is gone; its previous entries keep serving.
    #[error("{path} was deleted; the previous configuration is kept until the file is back")]
    Deleted { path: PathBuf },
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("file watcher: {0}")]
    Watch(String),
}
