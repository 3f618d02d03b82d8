//! The `redis_publish` sink: one PUBLISH per event.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::connection::Connection;
use crate::sink::{Event, Payload, Sink, SinkError};
use crate::sinks::redis::RedisClient;

/// Where the sink publishes: through a configured connection, or its own server (the
/// top-level `redis` form).
pub(crate) enum Target {
    Connection(Arc<Connection>),
    Own(Box<RedisClient>),
}

/// Publishes each event on a Redis channel.
pub struct RedisPublishSink {
    pub(crate) target: Target,
    pub(crate) channel: String,
}

impl std::fmt::Debug for RedisPublishSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::Connection(c) => format!("connection '{}'", c.name()),
            Target::Own(c) => format!("{c:?}"),
        };
        f.debug_struct("RedisPublishSink")
            .field("target", &target)
            .field("channel", &self.channel)
            .finish()
    }
}

/// The message: `{"payload": <payload>, "headers": {...}}`; a blob payload is base64 text with
/// `"encoding": "base64"`.
pub fn message(event: &Event) -> Result<Vec<u8>, SinkError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"payload\":");
    match &event.payload {
        Payload::Json(json) => {
            let text = json
                .to_json_bytes()
                .map_err(|e| SinkError::Rejected(format!("cannot encode the payload: {e}")))?;
            out.extend_from_slice(&text);
        }
        Payload::Blob(bytes) => {
            out.push(b'"');
            let start = out.len();
            out.resize(
                start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
                0,
            );
            let written = STANDARD
                .encode_slice(bytes, &mut out[start..])
                .map_err(|e| SinkError::Rejected(format!("cannot encode the payload: {e}")))?;
            out.truncate(start + written);
            out.extend_from_slice(b"\",\"encoding\":\"base64\"");
        }
    }
    out.extend_from_slice(b",\"headers\":");
    serde_json::to_writer(&mut out, &Headers(&event.headers))
        .map_err(|e| SinkError::Rejected(format!("cannot encode the headers: {e}")))?;
    out.push(b'}');
    Ok(out)
}

struct Headers<'a>(&'a [(String, String)]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[async_trait]
impl Sink for RedisPublishSink {
    fn module(&self) -> &'static str {
        "redis_publish"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let message = message(event)?;
        match &self.target {
            Target::Connection(connection) => {
                let client = connection.client::<RedisClient>()?;
                let result = client.publish(&self.channel, &message).await;
                Connection::report(&client, &result);
                result
            }
            Target::Own(client) => client.publish(&self.channel, &message).await,
        }
    }
}
