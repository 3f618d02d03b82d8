//! The `save_to_disk` sink: one new file per event, written on the blocking pool.

use std::sync::Arc;

use async_trait::async_trait;

use super::jail::Jail;
use crate::sink::{Event, Payload, Sink, SinkError};

/// Writes each event into its jail.
pub(super) struct DiskSink {
    pub(super) jail: Arc<Jail>,
}

#[async_trait]
impl Sink for DiskSink {
    fn module(&self) -> &'static str {
        "save_to_disk"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let (data, ext) = match &event.payload {
            Payload::Json(v) => (
                v.to_json_bytes()
                    .map_err(|e| SinkError::Rejected(e.to_string()))?,
                "json",
            ),
            Payload::Blob(b) => (b.clone(), "bin"),
        };
        let jail = Arc::clone(&self.jail);
        tokio::task::spawn_blocking(move || jail.write(&data, ext))
            .await
            .map_err(|_| SinkError::Unavailable("file write task failed".into()))?
    }
}
