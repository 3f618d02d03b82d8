//! The counters behind `GET /stats`, kept in memory with the upstream's JSON shape, and the small
//! per-client-IP rate limiter that guards `/stats` and `GET /`.
//!
//! The upstream keeps these counters in Redis; here they are per process (a deployment with many
//! instances sums them in its metrics system: `/metrics` has the same counts).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Counts per time slot; a slot is reused once its period has passed.
struct Ring<const N: usize> {
    stamps: [AtomicU64; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> Ring<N> {
    fn new() -> Self {
        Self {
            stamps: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, period: u64) {
        let i = (period % N as u64) as usize;
        let stamp = self.stamps[i].load(Ordering::Acquire);
        if stamp != period
            && self.stamps[i]
                .compare_exchange(stamp, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.counts[i].store(0, Ordering::Release);
        }
        self.counts[i].fetch_add(1, Ordering::AcqRel);
    }

    /// Sum of the `k` most recent periods up to `now`, the current one included.
    fn sum(&self, now: u64, k: u64) -> u64 {
        (0..k.min(N as u64))
            .filter_map(|back| now.checked_sub(back))
            .map(|p| {
                let i = (p % N as u64) as usize;
                if self.stamps[i].load(Ordering::Acquire) == p {
                    self.counts[i].load(Ordering::Acquire)
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Accepted requests of one webhook: the total and per-minute, -hour and -day windows.
pub(crate) struct Counter {
    total: AtomicU64,
    minutes: Ring<60>,
    hours: Ring<24>,
    days: Ring<30>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Counter {
    pub fn new() -> Self {
        Self {
            total: AtomicU64::new(0),
            minutes: Ring::new(),
            hours: Ring::new(),
            days: Ring::new(),
        }
    }

    /// Count one accepted request.
    pub fn record(&self) {
        let now = unix_now();
        self.total.fetch_add(1, Ordering::AcqRel);
        self.minutes.add(now / 60);
        self.hours.add(now / 3600);
        self.days.add(now / 86_400);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// The upstream shape: `{"total","minute","5_minutes",...,"month"}`.
    pub fn render(&self) -> Value {
        let now = unix_now();
        let (m, h, d) = (now / 60, now / 3600, now / 86_400);
        json!({
            "total": self.total(),
            "minute": self.minutes.sum(m, 1),
            "5_minutes": self.minutes.sum(m, 5),
            "15_minutes": self.minutes.sum(m, 15),
            "30_minutes": self.minutes.sum(m, 30),
            "hour": self.minutes.sum(m, 60),
            "day": self.hours.sum(h, 24),
            "week": self.days.sum(d, 7),
            "month": self.days.sum(d, 30),
        })
    }
}

/// `webhook_` + the first 16 hex digits of SHA-256(key).
pub(crate) fn sanitized(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut s = String::from("webhook_");
    for b in &digest[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Most clients a limiter tracks within one minute.
const MAX_CLIENTS: usize = 65_536;

/// Fixed one-minute windows per client key. Bounded: entries of past windows are swept whenever
/// the map has doubled since the last sweep (amortised O(1) per request), and past
/// [`MAX_CLIENTS`] clients seen within the minute a new client is refused.
pub(crate) struct RateLimiter {
    per_minute: u32,
    windows: Mutex<Windows>,
}

struct Windows {
    clients: HashMap<IpAddr, (Instant, u32)>,
    /// Sweep when the map reaches this size...
    next_sweep: usize,
    /// ... and the last sweep is at least a second old (at most one full scan per second).
    last_sweep: Option<Instant>,
}

/// The first sweep happens at this size.
const FIRST_SWEEP: usize = 4096;

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(Windows {
                clients: HashMap::new(),
                next_sweep: FIRST_SWEEP,
                last_sweep: None,
            }),
        }
    }

    pub fn limit(&self) -> u32 {
        self.per_minute
    }

    /// Whether one more request from `client` is allowed now.
    pub fn allow(&self, client: IpAddr) -> bool {
        let now = Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let mut guard = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Windows {
            clients,
            next_sweep,
            last_sweep,
        } = &mut *guard;
        if !clients.contains_key(&client) {
            if clients.len() >= *next_sweep
                && last_sweep
                    .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1))
            {
                clients.retain(|_, (start, _)| now.duration_since(*start) < minute);
                *next_sweep = (clients.len() * 2).clamp(FIRST_SWEEP, MAX_CLIENTS);
                *last_sweep = Some(now);
            }
            // Full of clients seen this minute (many addresses, e.g. IPv6): a new one is refused
            // rather than let the map grow with what clients choose.
            if clients.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= minute {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_windows() {
        let c = Counter::new();
        c.record();
        c.record();
        let v = c.render();
        assert_eq!(v["total"], 2);
        assert_eq!(v["minute"], 2);
        assert_eq!(v["hour"], 2);
        assert_eq!(v["month"], 2);
        let key = sanitized("ns/b");
        assert!(key.starts_with("webhook_") && key.len() == 8 + 16, "{key}");
    }

    #[test]
    fn ring_forgets_old_periods() {
        let r: Ring<3> = Ring::new();
        r.add(10);
        r.add(11);
        r.add(11);
        assert_eq!(r.sum(11, 2), 3);
        assert_eq!(r.sum(11, 1), 2);
        r.add(13); // reuses the slot of period 10, whose count is dropped
        assert_eq!(r.sum(13, 1), 1);
        assert_eq!(r.sum(13, 3), 3); // periods 13 and 11 (12 had none)
        assert_eq!(r.sum(10, 1), 0);
    }

    #[test]
    fn rate_limit_per_client() {
        let l = RateLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow(a) && l.allow(a));
        assert!(!l.allow(a));
        assert!(l.allow(b));
    }

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let l = RateLimiter::new(5);
        let mut refused = 0;
        for i in 0..(MAX_CLIENTS as u32 + 100) {
            if !l.allow(IpAddr::from(std::net::Ipv4Addr::from(i))) {
                refused += 1;
            }
        }
        assert_eq!(refused, 100);
        let len = l.windows.lock().unwrap().clients.len();
        assert_eq!(len, MAX_CLIENTS);
    }
}
