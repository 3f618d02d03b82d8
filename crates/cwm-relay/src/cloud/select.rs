//! Which buffer a process uses, from `WEBHOOK_CONNECT_BUFFER` and the broker URLs.

use std::sync::Arc;

use super::{Buffer, MemoryBuffer, RabbitBuffer, RedisBuffer};

/// The buffer settings of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferChoice {
    /// In this process only: lost on restart, one receiver instance.
    Memory,
    /// Redis streams at this URL.
    Redis(String),
    /// RabbitMQ at this AMQP URL.
    Rabbitmq(String),
}

/// A buffer setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `WEBHOOK_CONNECT_BUFFER` names no known buffer.
    #[error("WEBHOOK_CONNECT_BUFFER must be redis, rabbitmq or memory, not '{0}'")]
    Unknown(String),
    /// The buffer could not be opened.
    #[error("{0}")]
    Open(String),
}

impl BufferChoice {
    /// The choice from the settings: `buffer` (`WEBHOOK_CONNECT_BUFFER`) when set; otherwise
    /// redis when `redis_url` (`WEBHOOK_CONNECT_REDIS_URL`) is set, else rabbitmq when
    /// `rabbitmq_url` (`WEBHOOK_CONNECT_RABBITMQ_URL`, then `RABBITMQ_URL`) is set, else memory.
    /// A named broker without its URL uses the Python gateway's default URL.
    pub fn from_settings(
        buffer: Option<&str>,
        redis_url: Option<&str>,
        rabbitmq_url: Option<&str>,
    ) -> Result<Self, SelectError> {
        let set = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let redis = set(redis_url);
        let rabbit = set(rabbitmq_url);
        match set(buffer).map(|b| b.to_ascii_lowercase()).as_deref() {
            Some("redis") => Ok(Self::Redis(
                redis.unwrap_or_else(|| "redis://localhost:6379/0".to_owned()),
            )),
            Some("rabbitmq") => {
                Ok(Self::Rabbitmq(rabbit.unwrap_or_else(|| {
                    "amqp://guest:guest@localhost:5672/".to_owned()
                })))
            }
            Some("memory") => Ok(Self::Memory),
            Some(other) => Err(SelectError::Unknown(other.to_owned())),
            None => Ok(match (redis, rabbit) {
                (Some(url), _) => Self::Redis(url),
                (None, Some(url)) => Self::Rabbitmq(url),
                (None, None) => Self::Memory,
            }),
        }
    }

    /// The buffer's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(_) => "redis",
            Self::Rabbitmq(_) => "rabbitmq",
        }
    }
}

/// Open the chosen buffer. Brokers are connected lazily: an unreachable broker does not stop
/// startup (webhooks answer 503 until it is back); a malformed URL does.
pub fn open_buffer(choice: &BufferChoice) -> Result<Arc<dyn Buffer>, SelectError> {
    Ok(match choice {
        BufferChoice::Memory => Arc::new(MemoryBuffer::new()),
        BufferChoice::Redis(url) => {
            Arc::new(RedisBuffer::new(url).map_err(|e| SelectError::Open(e.to_string()))?)
        }
        BufferChoice::Rabbitmq(url) => {
            Arc::new(RabbitBuffer::new(url).map_err(|e| SelectError::Open(e.to_string()))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_the_documented_order() {
        let pick = |b, r, q| BufferChoice::from_settings(b, r, q).unwrap();
        assert_eq!(pick(None, None, None), BufferChoice::Memory);
        assert_eq!(
            pick(None, Some("redis://r/0"), Some("amqp://q")),
            BufferChoice::Redis("redis://r/0".into())
        );
        assert_eq!(
            pick(None, Some(" "), Some("amqp://q")),
            BufferChoice::Rabbitmq("amqp://q".into())
        );
        assert_eq!(
            pick(Some("RabbitMQ"), Some("redis://r"), None),
            BufferChoice::Rabbitmq("amqp://guest:guest@localhost:5672/".into())
        );
        assert_eq!(
            pick(Some("memory"), Some("redis://r"), None),
            BufferChoice::Memory
        );
        assert!(BufferChoice::from_settings(Some("kafka"), None, None).is_err());
    }
}
