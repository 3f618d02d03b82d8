//! The cwm relay client ("Webhook Connect" connector).
//!
//! A public receiver queues webhooks on a channel; this connector, running behind a firewall,
//! pulls them and delivers them to local sinks. It will reuse `cwm-config` for its
//! webhook configs (the same cache, watch and reconnect machinery as the receiver)
//! and `cwm-modules` for delivery, and never depends on `cwm-http`.
//!
//! Not implemented yet: this crate only reserves its place in the workspace until its own issue.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
