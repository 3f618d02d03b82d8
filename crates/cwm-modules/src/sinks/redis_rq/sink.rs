//! The `redis_rq` sink: one MULTI/EXEC transaction per event.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::config::Resolved;
use super::job;
use crate::connection::Connection;
use crate::sink::{Event, Sink, SinkError};
use crate::sinks::redis::RedisClient;

/// RQ's default job timeout, in seconds.
const JOB_TIMEOUT: &str = "180";

/// Enqueues each event as an RQ job through its connection's [`RedisClient`].
pub struct RedisRqSink {
    pub(crate) connection: Arc<Connection>,
    pub(crate) function: String,
    pub(crate) queue_name: String,
    /// `rq:queue:<queue_name>`
    pub(crate) queue_key: String,
}

impl std::fmt::Debug for RedisRqSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRqSink")
            .field("connection", &self.connection.name())
            .field("function", &self.function)
            .field("queue_name", &self.queue_name)
            .finish()
    }
}

impl RedisRqSink {
    pub(crate) fn new(connection: Arc<Connection>, config: Resolved) -> Self {
        Self {
            connection,
            queue_key: format!("rq:queue:{}", config.queue_name),
            function: config.function,
            queue_name: config.queue_name,
        }
    }

    /// The transaction that enqueues `event` as job `id`: what `Queue.enqueue` writes, in one
    /// MULTI/EXEC so a job is either fully enqueued or not at all.
    pub(crate) fn transaction(
        &self,
        id: &str,
        event: &Event,
    ) -> Result<redis::Pipeline, SinkError> {
        let data = job::data(&self.function, &event.payload, &event.headers)
            .map_err(SinkError::Rejected)?;
        let description = job::description(&self.function, &event.payload, &event.headers);
        let created_at = job::timestamp(event.received_at);
        let enqueued_at = job::timestamp(SystemTime::now());
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SADD")
            .arg("rq:queues")
            .arg(&self.queue_key)
            .ignore();
        // The fields and their order are those of RQ's `Job.to_dict`; the empty ones are
        // written as RQ writes them.
        pipe.cmd("HSET")
            .arg(format!("rq:job:{id}"))
            .arg("status")
            .arg("queued")
            .arg("created_at")
            .arg(created_at)
            .arg("data")
            .arg(data)
            .arg("success_callback_name")
            .arg("")
            .arg("failure_callback_name")
            .arg("")
            .arg("stopped_callback_name")
            .arg("")
            .arg("started_at")
            .arg("")
            .arg("ended_at")
            .arg("")
            .arg("last_heartbeat")
            .arg("")
            .arg("worker_name")
            .arg("")
            .arg("group_id")
            .arg("")
            .arg("origin")
            .arg(&self.queue_name)
            .arg("description")
            .arg(description)
            .arg("enqueued_at")
            .arg(enqueued_at)
            .arg("timeout")
            .arg(JOB_TIMEOUT)
            .ignore();
        pipe.cmd("RPUSH").arg(&self.queue_key).arg(id).ignore();
        Ok(pipe)
    }
}

#[async_trait]
impl Sink for RedisRqSink {
    fn module(&self) -> &'static str {
        "redis_rq"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let client = self.connection.client::<RedisClient>()?;
        // A version 4 UUID from the thread's CSPRNG (no system call per job).
        let id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        let pipe = self.transaction(&id, event)?;
        let result = client.exec(&pipe).await;
        Connection::report(&client, &result);
        result
    }
}
