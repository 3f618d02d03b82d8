//! The `log` sink: format each event and queue the line on the process's stdout writer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::transcode::LogFormat;
use super::writer::LogWriter;
use crate::sink::{Event, Sink, SinkError};

/// Prints events on stdout through the shared [`LogWriter`].
pub(crate) struct LogSink {
    pub(crate) format: LogFormat,
    pub(crate) writer: LogWriter,
    /// Length of the last line, so the next buffer is usually allocated once.
    pub(crate) size_hint: AtomicUsize,
}

#[async_trait]
impl Sink for LogSink {
    fn module(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let hint = self.size_hint.load(Ordering::Relaxed);
        let mut line = Vec::with_capacity(hint + hint / 8);
        self.format.render(event, &mut line);
        self.size_hint
            .store(line.len().min(64 * 1024), Ordering::Relaxed);
        // Retryable: the sender gets 503 and tries again once stdout keeps up.
        self.writer
            .send(line)
            .map_err(|e| SinkError::Unavailable(e.to_string()))
    }

    async fn shutdown(&self) {
        // The process-wide flush with a deadline is `ModuleContext::shutdown`.
        self.writer.flush(Duration::MAX).await;
    }
}
