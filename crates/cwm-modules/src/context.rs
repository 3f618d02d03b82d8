//! Resources shared by every sink of a process (one HTTP client, one stdout writer, ...).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::connection::{ClientDeps, ClientFactory, Connections, HttpSource};
use crate::outbound::HttpClient;
use crate::sinks::log::writer::{DEFAULT_QUEUE_BYTES, LogWriter};

/// Shared resources handed to sink factories.
///
/// Build one per process and clone it: clones share the stdout writer and the HTTP client. Both
/// are created on first use, so a process without `log` or `http_webhook` sinks starts neither.
#[derive(Clone)]
pub struct ModuleContext {
    /// Default jail root of `save_to_disk` (the working directory).
    pub base_dir: PathBuf,
    /// Byte budget of the `log` sink's queue, read when the writer starts (first `log` load).
    log_queue_max_bytes: usize,
    shared: Arc<Shared>,
}

struct Shared {
    log: OnceLock<Result<LogWriter, String>>,
    http: OnceLock<Result<HttpClient, String>>,
    connections: Connections,
    observer: OnceLock<Observer>,
}

/// Sees every delivery attempt of every sink (chain steps included): module, success, time taken.
pub type Observer = Arc<dyn Fn(&'static str, bool, Duration) + Send + Sync>;

impl ModuleContext {
    /// Default of [`with_log_queue_max_bytes`](Self::with_log_queue_max_bytes): 64 MiB.
    pub const DEFAULT_LOG_QUEUE_MAX_BYTES: usize = DEFAULT_QUEUE_BYTES;

    /// A context whose connection registry builds clients with `factories`, keyed by connection
    /// `type`. [`ModuleContext::new`] (defined next to the list of the crate's clients, in
    /// `sinks/mod.rs`) passes every client this build ships.
    pub(crate) fn with_client_factories(
        factories: impl IntoIterator<Item = (&'static str, ClientFactory)>,
    ) -> Self {
        Self {
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            log_queue_max_bytes: Self::DEFAULT_LOG_QUEUE_MAX_BYTES,
            shared: Arc::new(Shared {
                log: OnceLock::new(),
                http: OnceLock::new(),
                connections: Connections::new(factories),
                observer: OnceLock::new(),
            }),
        }
    }

    /// What connection clients may use of this context, for [`Connections::sync`].
    pub(crate) fn client_deps(&self) -> ClientDeps<'_> {
        ClientDeps::new(self)
    }

    /// At most `bytes` of `log` lines wait for stdout; beyond that `deliver` fails at once with a
    /// retryable error (the sender gets 503). A single line larger than the budget is still
    /// taken when the queue is empty. Set it before the context builds its first sink.
    #[must_use]
    pub fn with_log_queue_max_bytes(mut self, bytes: usize) -> Self {
        self.log_queue_max_bytes = bytes;
        self
    }

    /// Flush what sinks buffer in the process (connection clients, queued `log` lines), waiting
    /// at most `timeout`.
    /// Returns true once everything is written, false when the time ran out first (stdout is
    /// blocked: the lines still queued are given up). Call once at exit, after the last
    /// delivery; sinks stay usable afterwards.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.connections.close_all(timeout).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.shared.log.get() {
            Some(Ok(writer)) => writer.flush(left).await,
            _ => true,
        }
    }

    /// The connection registry: one client per configured connection.
    pub fn connections(&self) -> &Connections {
        &self.shared.connections
    }

    /// Report every delivery attempt to `observer` (metrics). Only the first call takes effect.
    pub fn set_observer(&self, observer: Observer) {
        let _ = self.shared.observer.set(observer);
    }

    /// The delivery observer (one that ignores everything when none was set).
    pub(crate) fn observer(&self) -> Observer {
        self.shared
            .observer
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::new(|_, _, _| {}))
    }

    /// The stdout writer thread, started on first use.
    pub(crate) fn log_writer(&self) -> Result<LogWriter, String> {
        self.shared
            .log
            .get_or_init(|| {
                LogWriter::stdout(self.log_queue_max_bytes)
                    .map_err(|e| format!("cannot start the log writer: {e}"))
            })
            .clone()
    }

    /// The process's HTTP(S) client, built on first use.
    pub(crate) fn http_client(&self) -> Result<HttpClient, String> {
        self.shared
            .http
            .get_or_init(crate::outbound::build_client)
            .clone()
    }

    /// A context whose `log` sinks write to `target` instead of stdout.
    #[cfg(test)]
    pub(crate) fn with_log_target(target: Box<dyn std::io::Write + Send>) -> Self {
        Self::with_log_target_and_budget(target, Self::DEFAULT_LOG_QUEUE_MAX_BYTES)
    }

    /// A context whose `log` sinks write to `target`, queueing at most `max_bytes`.
    #[cfg(test)]
    pub(crate) fn with_log_target_and_budget(
        target: Box<dyn std::io::Write + Send>,
        max_bytes: usize,
    ) -> Self {
        let ctx = Self::new().with_log_queue_max_bytes(max_bytes);
        let _ = ctx
            .shared
            .log
            .set(LogWriter::spawn(target, max_bytes).map_err(|e| e.to_string()));
        ctx
    }

    /// A context whose HTTP client resolves names with `lookup` instead of the system resolver.
    #[cfg(test)]
    pub(crate) fn with_http_lookup(lookup: Arc<dyn crate::outbound::Lookup>) -> Self {
        let ctx = Self::new();
        let _ = ctx
            .shared
            .http
            .set(crate::outbound::build_client_with(lookup));
        ctx
    }
}

impl HttpSource for ModuleContext {
    fn http_client(&self) -> Result<HttpClient, String> {
        ModuleContext::http_client(self)
    }
}

impl Default for ModuleContext {
    fn default() -> Self {
        Self::new()
    }
}
