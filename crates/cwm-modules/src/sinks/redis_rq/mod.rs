//! `redis_rq`: enqueue each event as a Python RQ job, `function(payload, headers)`, that a stock
//! RQ worker runs.
//!
//! ```json
//! {"orders": {"module": "redis_rq", "connection": "redis_main",
//!             "module-config": {"function": "tasks.process_order", "queue_name": "orders"}}}
//! ```
//!
//! `module-config`:
//! - `function` (required): the dotted path of the Python callable (`function`,
//!   `module.function` or `package.module.function`). Trimmed; 1 to 255 characters; no NUL,
//!   `..`, `/`, `\` or any of ``; | & $ ` ( ) [ ] { } < > ? * !``; not `os.*`, `subprocess.*`, a
//!   dunder name (`__x__`) or one of the builtins eval, exec, compile, `__import__`, open, file,
//!   input, raw_input, execfile, reload, getattr, setattr, delattr, hasattr, globals, locals,
//!   vars, dir, help, breakpoint. A bad or missing function rejects the webhook at load.
//! - `queue_name` (default `default`): 1 to 255 characters of letters, digits, `_`, `.`, `:`
//!   and `-`.
//!
//! The webhook must name a connection of type `redis-rq` or `redis` (see
//! [`crate::sinks::redis`] for its keys).
//!
//! Each event is written exactly as `rq.Queue(queue_name).enqueue(function, payload, headers)`
//! writes a job, in one MULTI/EXEC transaction (a job is either fully enqueued or not at all):
//!
//! - `SADD rq:queues rq:queue:<queue_name>`;
//! - `HSET rq:job:<uuid4>` with `status` `queued`, `created_at` (when the request arrived) and
//!   `enqueued_at` (UTC, `%Y-%m-%dT%H:%M:%S.%fZ`), `data` = zlib(pickle of
//!   `(function, None, (payload, headers), {})`, protocol 3), `origin` = the queue name,
//!   `description` = `function(repr(payload), repr(headers))` (each argument cut at 75
//!   characters, as RQ does), `timeout` 180, and RQ's empty callback, timing and worker fields;
//! - `RPUSH rq:queue:<queue_name> <uuid4>`.
//!
//! The payload is pickled as Python's `json.loads` would give it: object → dict (key order
//! kept), array → list, string → str, integer → int, other numbers → float, true/false → bool,
//! null → None. (A JSON integer beyond 64 bits becomes a float.) A `data_type: blob` payload is
//! pickled as `bytes`. The headers are a `dict[str, str]` of lower-case names.
//!
//! The delivery succeeds once Redis answered the EXEC: the job is in the queue. Redis down,
//! slow or in a passing error state fails it retryably (the sender gets 503 and retries); an
//! error reply such as WRONGTYPE (a key of the queue's name holds something else) or NOAUTH
//! fails it for good.

mod config;
mod job;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::{DEFAULT_QUEUE, RedisRqConfig, Resolved, validate_function, validate_queue_name};
pub use sink::RedisRqSink;

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};

/// Builds `redis_rq` sinks.
#[derive(Debug)]
pub struct RedisRqBuilder;

impl SinkBuilder for RedisRqBuilder {
    fn name(&self) -> &'static str {
        "redis_rq"
    }

    fn connection_types(&self) -> &'static [&'static str] {
        &["redis-rq", "redis"]
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let connection = cx.require_connection()?;
        let config = RedisRqConfig::resolve(cx)?;
        // The registry's slot for that name (the same `Connection`, shared).
        let connection = cx.modules.connections().get(connection.name());
        Ok(Arc::new(RedisRqSink::new(connection, config)))
    }
}
