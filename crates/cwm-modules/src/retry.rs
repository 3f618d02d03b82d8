//! Delivering with the webhook's (or chain step's) `retry` policy, inside the request's deadline.
//!
//! Only retryable errors ([`SinkError::retryable`]) are tried again, unless the policy's
//! `retryable_errors` / `non_retryable_errors` lists say otherwise. The lists hold the upstream's
//! Python exception names; each [`SinkError`] answers to the names in [`SinkError::kinds`], and a
//! list entry matches when it equals or is a substring of one of them, non-retryable first.
//! The wait after failed attempt `n` (from 0) is `min(initial_delay * multiplier^n, max_delay)`
//! with ±20 % jitter; a wait that would end past the deadline is not started.

use std::time::{Duration, Instant};

use cwm_config::{RetryPolicy, WebhookConfig};
use rand::Rng;
use serde_json::Value;

use crate::sink::{Event, Sink, SinkError};

/// A retry policy with its error classification, built once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts and delays.
    pub policy: RetryPolicy,
    retryable: Option<Vec<String>>,
    non_retryable: Option<Vec<String>>,
}

impl Retry {
    /// The webhook's retry policy, or `None` when `retry.enabled` is not set.
    pub fn from_config(config: &WebhookConfig) -> Option<Self> {
        let policy = config.retry_policy()?;
        let list = |key: &str| {
            let items = config.retry.as_ref()?.get(key)?.as_array()?;
            let names: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_owned())
                .collect();
            Some(names)
        };
        Some(Self {
            policy,
            retryable: list("retryable_errors"),
            non_retryable: list("non_retryable_errors"),
        })
    }

    /// Whether `err` is worth another attempt under this policy.
    pub fn retries(&self, err: &SinkError) -> bool {
        let matches = |list: &Option<Vec<String>>| {
            list.as_ref().is_some_and(|names| {
                names
                    .iter()
                    .any(|n| err.kinds().iter().any(|k| k.contains(n.as_str())))
            })
        };
        if matches(&self.non_retryable) {
            return false;
        }
        if matches(&self.retryable) {
            return true;
        }
        err.retryable()
    }

    /// The wait after failed attempt `n` (from 0), with jitter.
    fn delay(&self, n: u32) -> Duration {
        let p = &self.policy;
        let base = (p.initial_delay * p.backoff_multiplier.powi(n as i32)).min(p.max_delay);
        let jitter = rand::rng().random_range(0.8..=1.2);
        Duration::from_secs_f64((base * jitter).clamp(0.0, 60.0))
    }
}

/// Deliver `event` to `sink`, retrying as `retry` allows, never past `deadline` (an attempt still
/// running then fails with [`SinkError::Timeout`]). `observe` sees every attempt: module, success,
/// time taken.
pub async fn deliver(
    sink: &dyn Sink,
    event: &Event,
    retry: Option<&Retry>,
    deadline: tokio::time::Instant,
    observe: &(dyn Fn(&'static str, bool, Duration) + Send + Sync),
) -> Result<(), SinkError> {
    let attempts = retry.map_or(1, |r| r.policy.max_attempts.max(1));
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        let result = match tokio::time::timeout_at(deadline, sink.deliver(event)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout),
        };
        observe(sink.module(), result.is_ok(), started.elapsed());
        let err = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(policy) = retry.filter(|r| attempt + 1 < attempts && r.retries(&err)) else {
            return Err(err);
        };
        let wake = tokio::time::Instant::now() + policy.delay(attempt);
        if wake >= deadline {
            return Err(err);
        }
        tracing::debug!(module = sink.module(), attempt = attempt + 1, error = %err, "delivery failed; retrying");
        tokio::time::sleep_until(wake).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSink, Outcome};
    use serde_json::json;

    fn retry(doc: Value) -> Retry {
        let config =
            WebhookConfig::from_value(json!({"module":"log","retry":doc}), &|_: &str| None)
                .unwrap();
        Retry::from_config(&config).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_inside_the_deadline() {
        let sink = FakeSink::new();
        sink.push([
            Outcome::Fail(SinkError::Timeout),
            Outcome::Fail(SinkError::Unavailable("x".into())),
        ]);
        let r = retry(
            json!({"enabled":true,"max_attempts":5,"initial_delay":1,"backoff_multiplier":2}),
        );
        let event = crate::fake::event(json!({"a":1}));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(30);
        deliver(&sink, &event, Some(&r), deadline, &|_, _, _| {})
            .await
            .unwrap();
        assert_eq!(sink.attempts(), 3);
        let waited = start.elapsed().as_secs_f64();
        assert!(
            (2.4..=3.6).contains(&waited),
            "1 s + 2 s with jitter, got {waited}"
        );

        // A rejected event is not retried.
        sink.push([Outcome::Fail(SinkError::Rejected("bad".into()))]);
        let e = deliver(&sink, &event, Some(&r), deadline, &|_, _, _| {})
            .await
            .unwrap_err();
        assert_eq!(e, SinkError::Rejected("bad".into()));
        assert_eq!(sink.attempts(), 4);

        // No wait past the deadline: the last error is returned at once.
        sink.push(vec![Outcome::Fail(SinkError::Timeout); 5]);
        let short = tokio::time::Instant::now() + Duration::from_millis(1500);
        let e = deliver(&sink, &event, Some(&r), short, &|_, _, _| {})
            .await
            .unwrap_err();
        assert_eq!(e, SinkError::Timeout);
        assert_eq!(
            sink.attempts(),
            6,
            "one attempt, one retry after ~1 s, then the deadline"
        );

        // An attempt that hangs ends at the deadline.
        sink.push([Outcome::Hang]);
        let e = deliver(
            &sink,
            &event,
            None,
            tokio::time::Instant::now() + Duration::from_secs(2),
            &|_, _, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(e, SinkError::Timeout);
    }

    #[test]
    fn error_lists_override_the_flag() {
        let r = retry(
            json!({"enabled":true,"non_retryable_errors":["Timeout"],"retryable_errors":["ValueError"]}),
        );
        assert!(!r.retries(&SinkError::Timeout));
        assert!(r.retries(&SinkError::Rejected("x".into())));
        assert!(r.retries(&SinkError::Unavailable("x".into())));
        let plain = retry(json!({"enabled":true}));
        assert!(plain.retries(&SinkError::Unavailable("x".into())));
        assert!(!plain.retries(&SinkError::Config("x".into())));
    }
}
