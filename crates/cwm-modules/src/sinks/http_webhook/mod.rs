//! `http_webhook` sink, with the upstream's SSRF rules: forwards each event to an HTTP(S) URL.
//!
//! `module-config`: `url` (required), `method` (`POST` default, `PUT`, `PATCH`), `headers` (custom
//! headers, they win over forwarded ones), `forward_headers` (default `false`), `allowed_headers`
//! (whitelist for forwarded *and* custom headers; `[]` sends none), `allowed_hosts` (host
//! whitelist that replaces the SSRF checks; tests use `["127.0.0.1"]`), `timeout` (seconds, default
//! 30, for the whole exchange: connect, send, response headers).
//!
//! The URL is checked once, when the webhook loads (V-URL; an unsafe URL rejects the webhook).
//! Beyond upstream, every non-canonical numeric host (`0x7f.1`, `017700000001`, `127.1`) is
//! refused, as are `*.localhost` names, and the host the request goes to is built from the checked
//! host, so parser differences cannot reach another one. Credentials in the URL become a Basic
//! `Authorization` header; they and the query string never appear in error messages, which only
//! name `scheme://host:port`.
//!
//! Body: a JSON payload is sent as the body the sender wrote (compact JSON when credential cleanup
//! changed it) with `Content-Type: application/json`; a blob payload
//! as its raw bytes with `application/octet-stream` (upstream crashed on blobs). A forwarded or custom
//! `content-type` wins. Redirects are not followed: a 3xx is a rejection.
//!
//! Outcomes: 2xx is `Ok`; 5xx, 429 and connection failures are [`SinkError::Unavailable`];
//! the timeout is [`SinkError::Timeout`]; any other status is [`SinkError::Rejected`]; a
//! destination address the connect-time check refuses is [`SinkError::Config`].
//!
//! Requests go through the process's shared client ([`crate::outbound`]: pooling, HTTP/2, TLS,
//! and the connect-time address check that also covers DNS rebinding).
//!
//! [`SinkError::Unavailable`]: crate::SinkError::Unavailable
//! [`SinkError::Timeout`]: crate::SinkError::Timeout
//! [`SinkError::Rejected`]: crate::SinkError::Rejected
//! [`SinkError::Config`]: crate::SinkError::Config

mod config;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::HttpWebhookConfig;

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};
use sink::HttpSink;

/// Builds `http_webhook` sinks.
#[derive(Debug)]
pub struct HttpWebhookBuilder;

impl SinkBuilder for HttpWebhookBuilder {
    fn name(&self) -> &'static str {
        "http_webhook"
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let settings = cx.module_config::<HttpWebhookConfig>()?.resolve()?;
        Ok(Arc::new(HttpSink {
            client: cx.modules.http_client().map_err(BuildError::Invalid)?,
            settings,
        }))
    }
}
