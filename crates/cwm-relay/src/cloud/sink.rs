//! The `webhook_connect` module: buffer each event for the channel's connectors.
//!
//! ```json
//! {"stripe_relay": {"module": "webhook_connect",
//!                   "module-config": {"channel": "stripe-payments", "channel_token": "{$TOKEN}"}}}
//! ```
//!
//! `module-config`: `channel` and `channel_token` (required strings; the channel name is
//! `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`, at most 64 characters, no `..`), `ttl_seconds` (86400),
//! `max_queue_size` (10000), `max_connections` (10), `max_in_flight` (100) and
//! `ack_timeout_seconds` (30). Numbers may also be numeric strings; other keys are ignored.
//! Unlike the Python gateway, a missing or bad key rejects the webhook at load.
//!
//! The channel is registered when the webhook loads. A delivery succeeds once the buffer holds
//! the event: a full queue or an unreachable buffer fails it retryably (the sender gets 503);
//! an event larger than the message size limit is rejected. JSON payloads are buffered as
//! documents, `data_type: blob` payloads as base64 text.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use cwm_modules::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

use super::BufferError;
use super::manager::{ChannelManager, ChannelSpec, PublishError};
use crate::protocol::is_valid_channel;

/// The module name.
const MODULE: &str = "webhook_connect";

/// Builds `webhook_connect` sinks: registers the webhook's channel with the manager at config
/// load, and publishes each event to the buffer before the sender gets its answer.
pub struct WebhookConnectSink {
    manager: ChannelManager,
    channel: Arc<str>,
}

impl WebhookConnectSink {
    /// The `webhook_connect` [`SinkBuilder`] over `manager`, for the module registry.
    pub fn builder(manager: ChannelManager) -> impl SinkBuilder {
        Builder { manager }
    }
}

struct Builder {
    manager: ChannelManager,
}

/// `module-config` of a `webhook_connect` webhook.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default, deserialize_with = "opt_string")]
    channel: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    channel_token: Option<String>,
    #[serde(default, deserialize_with = "opt_number")]
    ttl_seconds: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    max_queue_size: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    max_connections: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    max_in_flight: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    ack_timeout_seconds: Option<f64>,
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(D::Error::custom("must be a string")),
    }
}

fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let bad = || D::Error::custom("must be a number");
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or_else(bad),
        Value::String(s) => s.trim().parse::<f64>().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A positive whole number option.
fn count(key: &str, value: Option<f64>, default: u64) -> Result<u64, BuildError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v <= u32::MAX as f64 => {
            Ok(v as u64)
        }
        Some(_) => Err(BuildError::option(key, "must be a positive whole number")),
    }
}

/// A positive duration option, in seconds.
fn seconds(key: &str, value: Option<f64>, default: u64) -> Result<Duration, BuildError> {
    match value {
        None => Ok(Duration::from_secs(default)),
        Some(v) => crate::protocol::seconds(v)
            .filter(|d| d.as_secs() <= 10 * 365 * 86_400)
            .ok_or_else(|| BuildError::option(key, "must be a positive number of seconds")),
    }
}

/// A required, non-empty string option.
fn required(key: &str, value: Option<String>) -> Result<String, BuildError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| BuildError::option(key, "is required"))
}

impl Builder {
    fn spec(cx: &SinkContext<'_>) -> Result<ChannelSpec, BuildError> {
        let c: Config = cx.module_config()?;
        let channel = required("channel", c.channel)?;
        if !is_valid_channel(&channel) {
            return Err(BuildError::option(
                "channel",
                format!(
                    "'{channel}' is not a valid channel name (letters, digits, '.', '_' and '-', \
                     starting with a letter or digit, at most 64 characters, no '..')"
                ),
            ));
        }
        let token = required("channel_token", c.channel_token)?;
        let usize_count = |key: &str, v, default| {
            count(key, v, default).and_then(|n| {
                usize::try_from(n).map_err(|_| BuildError::option(key, "is too large"))
            })
        };
        Ok(ChannelSpec {
            name: channel.into(),
            webhook_id: cx.webhook_id.into(),
            token,
            ttl: seconds("ttl_seconds", c.ttl_seconds, 86_400)?,
            max_queue_size: count("max_queue_size", c.max_queue_size, 10_000)?,
            max_connections: usize_count("max_connections", c.max_connections, 10)?,
            max_in_flight: usize_count("max_in_flight", c.max_in_flight, 100)?,
            ack_timeout: seconds("ack_timeout_seconds", c.ack_timeout_seconds, 30)?,
        })
    }
}

impl SinkBuilder for Builder {
    fn name(&self) -> &'static str {
        MODULE
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let spec = Self::spec(cx)?;
        let channel = spec.name.clone();
        self.manager.register(spec);
        Ok(Arc::new(WebhookConnectSink {
            manager: self.manager.clone(),
            channel,
        }))
    }
}

#[async_trait]
impl Sink for WebhookConnectSink {
    fn module(&self) -> &'static str {
        MODULE
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let headers: BTreeMap<String, String> = event.headers.iter().cloned().collect();
        let (payload, blob) = match &event.payload {
            Payload::Json(json) => (json.value().clone(), false),
            Payload::Blob(bytes) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                true,
            ),
        };
        self.manager
            .publish(&self.channel, &event.webhook_id, headers, payload, blob)
            .await
            .map(drop)
            .map_err(|e| match e {
                PublishError::TooLarge { .. } => SinkError::Rejected(e.to_string()),
                PublishError::UnknownChannel(_)
                | PublishError::Buffer(
                    BufferError::QueueFull { .. }
                    | BufferError::Unavailable(_)
                    | BufferError::UnknownDelivery,
                ) => SinkError::Unavailable(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use cwm_modules::{ModuleContext, Registry};
    use serde_json::json;

    use super::*;
    use crate::cloud::{Buffer, ManagerSettings, MemoryBuffer, QueueKey};
    use crate::protocol::PayloadEncoding;

    fn setup() -> (Registry, ChannelManager, Arc<MemoryBuffer>) {
        let buffer = Arc::new(MemoryBuffer::new());
        let manager = ChannelManager::new(buffer.clone(), ManagerSettings::default());
        let mut registry = Registry::new(ModuleContext::new());
        registry.register(WebhookConnectSink::builder(manager.clone()));
        (registry, manager, buffer)
    }

    fn build(registry: &Registry, module_config: Value) -> Result<Arc<dyn Sink>, BuildError> {
        let config: cwm_config::WebhookConfig = serde_json::from_value(json!({
            "module": "webhook_connect",
            "module-config": module_config,
        }))
        .unwrap();
        registry.build("hook", &config)
    }

    #[tokio::test]
    async fn config_is_checked_at_load() {
        let (r, m, _) = setup();
        for (config, key) in [
            (json!({"channel_token": "t"}), "channel"),
            (json!({"channel": "c"}), "channel_token"),
            (
                json!({"channel": "c", "channel_token": ""}),
                "channel_token",
            ),
            (json!({"channel": "a..b", "channel_token": "t"}), "channel"),
            (json!({"channel": "-x", "channel_token": "t"}), "channel"),
            (json!({"channel": 5, "channel_token": "t"}), "channel"),
            (
                json!({"channel": "c", "channel_token": "t", "max_queue_size": 0}),
                "max_queue_size",
            ),
            (
                json!({"channel": "c", "channel_token": "t", "ttl_seconds": "soon"}),
                "ttl_seconds",
            ),
            (
                json!({"channel": "c", "channel_token": "t", "max_in_flight": 1.5}),
                "max_in_flight",
            ),
        ] {
            let e = build(&r, config.clone()).err().expect("rejected");
            assert!(e.to_string().contains(key), "{config}: {e}");
        }
        assert!(m.channels().as_array().unwrap().is_empty());
        build(
            &r,
            json!({"channel": "c.1", "channel_token": "t", "ttl_seconds": "60",
                   "max_connections": "3", "max_in_flight": 5, "ack_timeout_seconds": 2.5,
                   "max_queue_size": 7, "unknown_key": true}),
        )
        .unwrap();
        // Registered eagerly, before any request.
        let channels = m.channels();
        assert_eq!(channels[0]["name"], "c.1");
        assert_eq!(channels[0]["webhook_id"], "hook");
        assert_eq!(channels[0]["ttl_seconds"], 60);
        assert_eq!(channels[0]["max_connections"], 3);
        assert_eq!(channels[0]["max_queue_size"], 7);
        let detail = m.channel_detail("c.1").await.unwrap();
        assert_eq!(detail["config"]["max_in_flight"], 5);
        assert_eq!(detail["config"]["ack_timeout_seconds"], 2.5);
        assert_eq!(m.authenticate("c.1", "t"), Ok(()));
    }

    #[tokio::test]
    async fn deliver_buffers_the_event() {
        let (r, _m, buffer) = setup();
        let sink = build(
            &r,
            json!({"channel": "c", "channel_token": "t", "max_queue_size": 2}),
        )
        .unwrap();
        assert_eq!(sink.module(), "webhook_connect");
        let event = cwm_modules::fake::event_with(
            Payload::Json(json!({"a": 1}).into()),
            &[("content-type", "application/json"), ("x-n", "1")],
        );
        sink.deliver(&event).await.unwrap();
        let blob = cwm_modules::fake::event_with(
            Payload::Blob(bytes::Bytes::from_static(&[0, 1, 2])),
            &[],
        );
        sink.deliver(&blob).await.unwrap();
        assert!(matches!(
            sink.deliver(&event).await,
            Err(SinkError::Unavailable(_))
        ));
        let key = QueueKey::new("c", "hook");
        let got = buffer.fetch(&[key], 10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2);
        let json_msg = &got[0].envelope;
        assert_eq!(json_msg.payload, json!({"a": 1}));
        assert_eq!(json_msg.headers["x-n"], "1");
        assert_eq!(json_msg.sequence, 1);
        assert_eq!(json_msg.payload_encoding, None);
        let blob_msg = got[1].envelope.to_wire();
        assert_eq!(blob_msg.payload_encoding, Some(PayloadEncoding::Base64));
        assert_eq!(blob_msg.body_bytes().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn too_large_is_rejected() {
        let buffer = Arc::new(MemoryBuffer::new());
        let settings = ManagerSettings {
            max_message_size: 400,
            ..ManagerSettings::default()
        };
        let manager = ChannelManager::new(buffer, settings);
        let mut r = Registry::new(ModuleContext::new());
        r.register(WebhookConnectSink::builder(manager));
        let sink = build(&r, json!({"channel": "c", "channel_token": "t"})).unwrap();
        let event = cwm_modules::fake::event(json!({"big": "x".repeat(500)}));
        assert!(matches!(
            sink.deliver(&event).await,
            Err(SinkError::Rejected(_))
        ));
    }
}
