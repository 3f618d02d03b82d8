//! Sink plugins for cwm, request validators, and their registry.
//!
//! A sink receives an [`Event`] (payload and headers of one accepted webhook request) and reports
//! whether its destination accepted it. A validator ([`validators`]) judges a request before it
//! becomes an event. The [`Registry`] maps module names from webhook configs to sink constructors
//! and, as a [`cwm_config::Compiler`], builds each webhook's sink and validators once at load.
//!
//! Invariant: sinks know nothing about HTTP requests or config sources; validators see a request
//! head and body, never a connection.
//!
//! ```
//! use cwm_modules::fake::{FakeBuilder, FakeSink, event};
//! use cwm_modules::{ModuleContext, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A registry with one module, `audit`, delivering to a scriptable fake destination.
//! let fake = FakeSink::new();
//! let mut registry = Registry::new(ModuleContext::new());
//! registry.register(FakeBuilder { name: "audit", sink: fake.clone() });
//!
//! // Compile a webhook config as a config backend does: checks, validators, sink.
//! let doc = serde_json::json!({"module": "audit", "authorization": "Bearer s3cret"});
//! let hook = cwm_config::compile_webhook(&registry, &|_: &str| None, "orders", doc).unwrap();
//! assert_eq!(hook.validators.names().collect::<Vec<_>>(), ["authorization"]);
//!
//! // Deliver an event to its sink.
//! hook.sink.deliver(&event(serde_json::json!({"order": 42}))).await.unwrap();
//! assert_eq!(fake.delivered().len(), 1);
//!
//! // A module nobody registered rejects the webhook at load.
//! let err = cwm_config::compile_webhook(&registry, &|_: &str| None, "x", serde_json::json!({"module": "nope"}));
//! assert!(err.unwrap_err().to_string().contains("unknown module 'nope'"));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analytics;
pub mod chain;
pub mod cleanup;
pub mod connection;
pub mod context;
mod event;
pub mod fake;
pub mod openapi;
mod opts;
pub(crate) mod outbound;
pub mod payload;
pub mod registry;
pub mod retry;
pub mod sink;
pub mod sinks;
pub use sinks::log;
pub mod validators;
mod words;

pub use cleanup::CredentialCleanup;
pub use connection::{Connection, Connections};
pub use context::ModuleContext;
pub use outbound::client::error_chain;
pub use payload::JsonPayload;
pub use registry::{CompiledWebhook, Registry};
pub use retry::Retry;
pub use sink::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};
pub use validators::{Denial, RequestHead, Validator, Validators};
