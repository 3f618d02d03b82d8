//! The `webhook_connect` module: buffer each event for the channel's connectors.
//!
//! STUB: to be written.

/// Builds `webhook_connect` sinks: registers the webhook's channel with the manager at config
/// load, and publishes each event to the buffer before the sender gets its answer.
pub struct WebhookConnectSink {}
