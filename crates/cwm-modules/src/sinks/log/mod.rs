//! `log` sink: prints each event on stdout.
//!
//! `module-config` ([`LogConfig`]): `pretty_print` (default `false`), `redact_sensitive` (default
//! `true`); both read any value with Python truthiness (`"false"`, `"0"` are false).
//!
//! Standard output is one JSON object per line:
//! `{"received_at":"<RFC 3339, ms, UTC>","namespace":<string|null>,"webhook_id":"..","headers":{..},"payload":..}`.
//! Pretty output is a multi-line block framed by 80 `=` with the headers and the payload as
//! indented JSON; the payload text is cut at 10000 characters followed by `... [truncated]`.
//!
//! Redaction: a header or payload key whose lower-cased name *contains* one of the sensitive words
//! (password, secret, token, auth, cookie, session, ...) has its value or whole subtree replaced by
//! `"[REDACTED]"`. Words with `_` are also matched with `-` (`x-api-key` matches `api_key`), for
//! header names and payload keys alike.
//!
//! Sanitizing (standard form only, as upstream): nesting deeper than 10 levels becomes
//! `"[Max depth exceeded]"`; in strings CR and LF become `[NL]` and other control characters
//! `[CTRL]`; strings over 10000 characters are cut and end in `... [truncated]`.
//!
//! Blob payloads are logged as `{"length":N,"truncated":bool,"base64":"..."}`: base64 of at most the
//! first 7500 bytes (10000 characters), so binary bodies never corrupt the log stream.
//!
//! A JSON payload kept as the request's text ([`JsonPayload`]) is formatted straight from the text:
//! serde_json's deserializer drives the serializer, so no `Value` is built. The standard line
//! copies such a text byte for byte when formatting would not change it (compact, no escapes,
//! integers only, at most 10 levels, no sensitive key). The output is the same as for the parsed
//! document, except that a key the sender repeated in one object is printed each time (a parsed
//! document keeps only the last).
//!
//! Writes never block the runtime: `deliver` formats the line and queues it on a bounded channel
//! to the process's single writer thread ([`writer`]); `Ok` means queued. The queue is bounded
//! in lines and in bytes (`LOG_QUEUE_MAX_BYTES`, the lines' allocations until they are written):
//! when stdout does not keep up (a blocked pipe) and the queue is full, `deliver` fails at once
//! with a retryable [`SinkError::Unavailable`], so the sender gets 503 and retries; no line is
//! dropped silently and memory stays bounded.
//!
//! Layout: [`transcode`] formats (the payload transcoder and redaction), [`writer`] owns stdout,
//! `sink.rs` joins them.
//!
//! [`SinkError::Unavailable`]: crate::SinkError::Unavailable
//! [`JsonPayload`]: crate::JsonPayload

mod config;
mod sink;
#[cfg(test)]
mod tests;
pub(crate) mod transcode;
pub(crate) mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use config::LogConfig;
pub use transcode::format_event;

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};
use sink::LogSink;
use transcode::LogFormat;

/// Builds `log` sinks. All of them share the process's one stdout writer, started by the first.
#[derive(Debug)]
pub struct LogBuilder;

impl SinkBuilder for LogBuilder {
    fn name(&self) -> &'static str {
        "log"
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let config: LogConfig = cx.module_config()?;
        Ok(Arc::new(LogSink {
            format: LogFormat {
                pretty: config.pretty_print,
                redact: config.redact_sensitive,
            },
            writer: cx.modules.log_writer().map_err(BuildError::Invalid)?,
            size_hint: AtomicUsize::new(256),
        }))
    }
}
