//! `rate_limit`: at most `max_requests` requests in any `window_seconds`, per webhook.
//!
//! Config: `"rate_limit": {"max_requests": 100, "window_seconds": 60}` (both optional, those are
//! the defaults). `{}` or `null` means no limit, as in the Python gateway; any other value that is
//! not an object, a negative or fractional `max_requests`, or a `window_seconds` that is not a
//! positive number rejects the webhook at load.
//!
//! The limiter is a sliding log like the Python gateway's: the times of the requests accepted in
//! the last window, oldest first. It holds at most `max_requests` entries (capped at
//! [`MAX_REQUESTS_LIMIT`]) whoever sends, so its memory is bounded by the config, never by the
//! number of clients. One limiter per compiled webhook: a config change of that webhook starts a
//! new window. A refusal answers 429 with `Retry-After`: the whole seconds until the oldest
//! request leaves the window (at least 1). Refused requests are not recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{Fields, section};
use super::validator::{
    BuildContext, Denial, Phase, RequestHead, Validator, ValidatorError, Verdict,
};

pub(crate) const KEY: &str = "rate_limit";

const DEFAULT_MAX_REQUESTS: u64 = 100;
const DEFAULT_WINDOW_SECONDS: f64 = 60.0;
/// Largest `max_requests` accepted: the log holds one timestamp per request in the window.
const MAX_REQUESTS_LIMIT: u64 = 1_000_000;
/// Longest window accepted (one year).
const MAX_WINDOW_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

pub(crate) fn build(ctx: &BuildContext<'_>) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
    let Some(fields) = section(ctx, KEY, "must be an object")?.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let config = Config::from_fields(&fields)?;
    Ok(Some(Arc::new(RateLimit::new(config))))
}

/// The typed `rate_limit` object.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Config {
    max_requests: u64,
    window: Duration,
}

impl Config {
    fn from_fields(fields: &Fields<'_>) -> Result<Self, ValidatorError> {
        let max_requests = fields
            .unsigned("max_requests")?
            .unwrap_or(DEFAULT_MAX_REQUESTS);
        if max_requests > MAX_REQUESTS_LIMIT {
            return Err(fields.error(format!(
                "'max_requests' must be at most {MAX_REQUESTS_LIMIT}"
            )));
        }
        let bad_window = || {
            fields.error(format!(
                "'window_seconds' must be a positive number of seconds \
                 (at most {MAX_WINDOW_SECONDS})"
            ))
        };
        let seconds = match fields.number("window_seconds").map_err(|_| bad_window())? {
            None => DEFAULT_WINDOW_SECONDS,
            Some(s) if s > 0.0 && s <= MAX_WINDOW_SECONDS => s,
            Some(_) => return Err(bad_window()),
        };
        let window = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|w| !w.is_zero())
            .ok_or_else(|| fields.error("'window_seconds' must be a positive number of seconds"))?;
        Ok(Self {
            max_requests,
            window,
        })
    }
}

struct RateLimit {
    config: Config,
    /// Times of the accepted requests still in the window, oldest first; never longer than
    /// `max_requests`.
    log: Mutex<VecDeque<Instant>>,
}

impl RateLimit {
    fn new(config: Config) -> Self {
        Self {
            config,
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Admit or refuse a request arriving at `now`.
    fn admit(&self, now: Instant) -> Result<(), Denial> {
        let Config {
            max_requests,
            window,
        } = self.config;
        if max_requests == 0 {
            return Err(Denial::RateLimited {
                message: "Rate limit exceeded. No requests allowed".into(),
                retry_after: whole_seconds(window),
            });
        }
        // A poisoned lock only means another request panicked while holding it; the log is a
        // list of instants and is still consistent.
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            log.pop_front();
        }
        if log.len() as u64 >= max_requests {
            let oldest = log.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.saturating_duration_since(oldest));
            let retry_after = whole_seconds(wait);
            return Err(Denial::RateLimited {
                message: format!("Rate limit exceeded. Retry after {retry_after} seconds").into(),
                retry_after,
            });
        }
        log.push_back(now);
        Ok(())
    }
}

/// `d` in whole seconds, rounded up, at least 1 (a `Retry-After` of 0 invites a retry storm).
fn whole_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl Validator for RateLimit {
    fn name(&self) -> &'static str {
        KEY
    }

    fn phase(&self) -> Phase {
        Phase::Head
    }

    fn check(&self, _head: &RequestHead<'_>, _body: &[u8]) -> Verdict {
        self.admit(Instant::now()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::test_support::{self, object};
    use serde_json::{Value, json};

    fn build_with(value: Value) -> Result<Option<Arc<dyn Validator>>, ValidatorError> {
        test_support::build_with(build, KEY, value)
    }

    fn config(value: Value) -> Config {
        Config::from_fields(&Fields::new(KEY, &object(value))).unwrap()
    }

    fn limited(r: Result<(), Denial>) -> (String, u64) {
        match r {
            Err(Denial::RateLimited {
                message,
                retry_after,
            }) => (message.into_owned(), retry_after),
            other => panic!("not rate limited: {other:?}"),
        }
    }

    #[test]
    fn config_defaults_empties_and_errors() {
        assert!(build_with(Value::Null).unwrap().is_none());
        assert!(build_with(json!({})).unwrap().is_none(), "{{}} is no limit");
        let v = build_with(json!({"max_requests": 5})).unwrap().unwrap();
        assert_eq!((v.name(), v.phase()), (KEY, Phase::Head));
        assert_eq!(
            config(json!({"window_seconds": 10})),
            Config {
                max_requests: 100,
                window: Duration::from_secs(10)
            }
        );
        assert_eq!(
            config(json!({"max_requests": 3, "window_seconds": 0.5})),
            Config {
                max_requests: 3,
                window: Duration::from_millis(500)
            }
        );
        for (bad, why) in [
            (json!([]), "must be an object"),
            (json!(5), "must be an object"),
            (json!("x"), "must be an object"),
            (json!({"max_requests": -1}), "'max_requests'"),
            (json!({"max_requests": 1.5}), "'max_requests'"),
            (json!({"max_requests": "10"}), "'max_requests'"),
            (json!({"max_requests": 1_000_001}), "at most 1000000"),
            (json!({"window_seconds": 0}), "'window_seconds'"),
            (json!({"window_seconds": -5}), "'window_seconds'"),
            (json!({"window_seconds": "60"}), "'window_seconds'"),
            (json!({"window_seconds": 1e12}), "'window_seconds'"),
        ] {
            let e = build_with(bad.clone()).err().unwrap();
            assert_eq!(e.key, KEY);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn sliding_window_admits_max_then_refuses_until_the_oldest_leaves() {
        let limiter = RateLimit::new(config(json!({"max_requests": 3, "window_seconds": 60})));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limiter.admit(at(0)), Ok(()));
        assert_eq!(limiter.admit(at(10)), Ok(()));
        assert_eq!(limiter.admit(at(20)), Ok(()));
        assert_eq!(
            limited(limiter.admit(at(30))),
            ("Rate limit exceeded. Retry after 30 seconds".into(), 30)
        );
        // Refusals are not recorded: the oldest still leaves at 60.
        assert_eq!(limited(limiter.admit(at(59))).1, 1);
        assert_eq!(limiter.admit(at(60)), Ok(()));
        assert_eq!(limited(limiter.admit(at(61))).1, 9);
        assert_eq!(limiter.admit(at(70)), Ok(()));
        // A fraction of a second left still says 1 second.
        let almost = at(79) + Duration::from_millis(900);
        assert_eq!(limited(limiter.admit(almost)).1, 1);
        // The log never holds more than max_requests entries.
        assert!(limiter.log.lock().unwrap().len() <= 3);
        // After a quiet window everything is admitted again.
        for s in 200..203 {
            assert_eq!(limiter.admit(at(s)), Ok(()));
        }
        assert!(limiter.admit(at(203)).is_err());
    }

    #[test]
    fn zero_requests_refuses_everything() {
        let limiter = RateLimit::new(config(json!({"max_requests": 0, "window_seconds": 30})));
        assert_eq!(
            limited(limiter.admit(Instant::now())),
            ("Rate limit exceeded. No requests allowed".into(), 30)
        );
        let short = RateLimit::new(config(json!({"max_requests": 0, "window_seconds": 0.2})));
        assert_eq!(limited(short.admit(Instant::now())).1, 1);
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
