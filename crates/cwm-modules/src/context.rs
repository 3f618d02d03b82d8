//! Resources shared by every sink of a process (one HTTP client, one stdout writer, ...).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::http::HttpClient;
use crate::log::LogWriter;

/// Shared resources handed to sink factories.
///
/// Build one per process and clone it: clones share the stdout writer and the HTTP client. Both
/// are created on first use, so a process without `log` or `http_webhook` sinks starts neither.
#[derive(Clone)]
pub struct ModuleContext {
    /// Default jail root of `save_to_disk` (the working directory).
    pub base_dir: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    log: OnceLock<Result<LogWriter, String>>,
    http: OnceLock<Result<HttpClient, String>>,
}

impl ModuleContext {
    pub fn new() -> Self {
        Self {
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            shared: Arc::default(),
        }
    }

    /// Flush what sinks buffer in the process (queued `log` lines). Call once at exit, after the
    /// last delivery; sinks stay usable afterwards.
    pub async fn shutdown(&self) {
        if let Some(Ok(writer)) = self.shared.log.get() {
            writer.flush().await;
        }
    }

    /// The stdout writer thread, started on first use.
    pub(crate) fn log_writer(&self) -> Result<LogWriter, String> {
        self.shared
            .log
            .get_or_init(|| {
                LogWriter::stdout().map_err(|e| format!("cannot start the log writer: {e}"))
            })
            .clone()
    }

    /// The process's HTTP(S) client, built on first use.
    pub(crate) fn http_client(&self) -> Result<HttpClient, String> {
        self.shared
            .http
            .get_or_init(crate::http::build_client)
            .clone()
    }

    /// A context whose `log` sinks write to `target` instead of stdout.
    #[cfg(test)]
    pub(crate) fn with_log_target(target: Box<dyn std::io::Write + Send>) -> Self {
        let ctx = Self::new();
        let _ = ctx
            .shared
            .log
            .set(LogWriter::spawn(target).map_err(|e| e.to_string()));
        ctx
    }
}

impl Default for ModuleContext {
    fn default() -> Self {
        Self::new()
    }
}
