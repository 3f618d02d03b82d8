//! Sink plugins for cwm, request validators, and their registry.
//!
//! A sink receives an [`Event`] (payload and headers of one accepted webhook request) and reports
//! whether its destination accepted it. A validator ([`validators`]) judges a request before it
//! becomes an event. The [`Registry`] maps module names from webhook configs to sink constructors
//! and, as a [`cwm_config::Compiler`], builds each webhook's sink and validators once at load.
//!
//! Invariant: sinks know nothing about HTTP requests or config sources; validators see a request
//! head and body, never a connection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
pub mod cleanup;
pub mod connection;
pub mod context;
mod event;
pub mod fake;
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
pub use payload::JsonPayload;
pub use registry::{CompiledWebhook, Registry};
pub use retry::Retry;
pub use sink::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};
pub use validators::{Denial, RequestHead, Validator, Validators};
