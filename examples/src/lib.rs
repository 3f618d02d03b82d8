//! Examples of embedding the cwm crates in another program. The code is in `examples/`; each one
//! runs by itself, needs no server and exits when it has shown its point:
//!
//! - `embed_axum`: the webhook routes (`cwm_http::Receiver::webhooks`) mounted in an axum
//!   application next to its own routes, on its listener.
//!   `cargo run -p cwm-examples --example embed_axum`
//! - `config_only`: `cwm-config` alone: webhooks read from files with the pass-through compiler,
//!   a snapshot, and a change subscription. `cargo run -p cwm-examples --example config_only`
//! - `custom_sink`: a sink written outside the workspace's crates, registered, compiled into a
//!   webhook and served in process. `cargo run -p cwm-examples --example custom_sink`
#![forbid(unsafe_code)]
