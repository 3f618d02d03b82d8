//! Webhook Connect, shared by its two halves.
//!
//! A public receiver accepts webhooks for services behind a firewall and buffers each event per
//! channel; a connector inside the private network holds an outbound stream (WebSocket, SSE or
//! long-poll), delivers each event locally and acknowledges it. Delivery is at-least-once: an
//! event leaves the buffer only when a connector acknowledged it.
//!
//! - [`protocol`]: the wire format both halves speak (frames, messages, paths, close codes).
//!   Always built; it is all the connector uses.
//! - `cloud` (feature `cloud`): the receiver's half: the channel manager (registration,
//!   connections, dispatch, in-flight tracking, ack timeouts, eviction), the buffers behind one
//!   trait (`memory`, `redis`, `rabbitmq`) and the `webhook_connect` sink.
//!
//! Invariants: the protocol module has no I/O and no async runtime; the cloud half is the only
//! code that talks to a buffer; a sender's 200 means the event is in the buffer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod protocol;

#[cfg(feature = "cloud")]
pub mod cloud;
