//! State kept per configured webhook: request counts by status (`/metrics`), accepted-request
//! windows (`/stats`) and the webhook's share of the `"ack": "receive"` queue.
//!
//! Keys are the configured namespace and id as the snapshot names them, never what a client asked
//! for: requests that matched no webhook share one `unknown` entry, and a catch-all `default`
//! webhook has one entry however many ids it answers. So no sender can grow this map.
//! Entries of webhooks that left the configuration are dropped at the next scrape, or as soon
//! as the map holds clearly more entries than the configuration has webhooks.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use cwm_config::Snapshot;
use serde_json::{Map, Value};

use crate::stats::{Counter, sanitized};

/// Statuses counted under their own label; anything else is counted as `other`.
const STATUSES: [u16; 16] = [
    200, 202, 307, 400, 401, 403, 404, 405, 408, 413, 415, 429, 500, 501, 503, 504,
];

/// What is kept for one configured webhook.
pub(crate) struct HookState {
    statuses: [AtomicU64; STATUSES.len() + 1],
    /// Accepted (200) requests, for `/stats`.
    pub accepted: Counter,
    /// Events of this webhook accepted with `"ack": "receive"` and not yet delivered.
    pub queued: AtomicUsize,
}

impl HookState {
    fn new() -> Self {
        Self {
            statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            accepted: Counter::new(),
            queued: AtomicUsize::new(0),
        }
    }

    /// Count one answer.
    pub fn answered(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.statuses[i].fetch_add(1, Ordering::Relaxed);
        if status == 200 {
            self.accepted.record();
        }
    }

    /// Take one place of this webhook's share of the receive queue.
    pub fn try_enqueue(&self, share: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < share).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Namespace ("" when the route named none) to id to state.
type Map2 = HashMap<Arc<str>, HashMap<Arc<str>, Arc<HookState>>>;

/// The per-webhook state of a receiver.
pub(crate) struct Hooks {
    map: RwLock<Map2>,
    len: AtomicUsize,
    unknown: Arc<HookState>,
    /// The snapshot the map was last pruned against: a scrape of an unchanged configuration
    /// prunes nothing. (A `Weak` keeps the address from being reused by a later snapshot.)
    pruned_at: Mutex<Option<Weak<dyn Any + Send + Sync>>>,
}

/// The label of requests that matched no configured webhook.
const UNKNOWN: &str = "unknown";

impl Hooks {
    pub fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
            unknown: Arc::new(HookState::new()),
            pruned_at: Mutex::new(None),
        }
    }

    /// Requests that matched no configured webhook.
    pub fn unknown(&self) -> &Arc<HookState> {
        &self.unknown
    }

    /// The state of a configured webhook, created on its first request. The common case (a known
    /// webhook) takes a read lock and allocates nothing.
    pub fn get<W>(
        &self,
        namespace: Option<&Arc<str>>,
        id: &Arc<str>,
        snapshot: &Snapshot<W>,
    ) -> Arc<HookState> {
        let ns: &str = namespace.map_or("", |n| n);
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = map.get(ns).and_then(|ids| ids.get(&**id)) {
                return state.clone();
            }
        }
        let state = {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            let ids = map
                .entry(namespace.cloned().unwrap_or_else(|| Arc::from("")))
                .or_default();
            ids.entry(id.clone())
                .or_insert_with(|| {
                    self.len.fetch_add(1, Ordering::Relaxed);
                    Arc::new(HookState::new())
                })
                .clone()
        };
        if self.overgrown(snapshot) {
            self.prune_now(snapshot);
        }
        state
    }

    /// Clearly more entries than the configuration has webhooks.
    fn overgrown<W>(&self, snapshot: &Snapshot<W>) -> bool {
        self.len.load(Ordering::Relaxed) > 2 * snapshot.webhook_count() + 64
    }

    /// Drop the entries of webhooks that are no longer configured, unless the map was last
    /// pruned against this very snapshot.
    pub fn prune<W: Send + Sync + 'static>(&self, snapshot: &Arc<Snapshot<W>>) {
        {
            let mut last = self
                .pruned_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let same = last
                .as_ref()
                .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(snapshot)));
            if same && !self.overgrown(snapshot) {
                return;
            }
            let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(snapshot) as _;
            *last = Some(weak);
        }
        self.prune_now(snapshot);
    }

    fn prune_now<W>(&self, snapshot: &Snapshot<W>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let default_ns = snapshot.default_namespace();
        let mut len = 0;
        map.retain(|ns, ids| {
            let ns = if ns.is_empty() { default_ns } else { &**ns };
            ids.retain(|id, _| snapshot.webhook_exact(ns, id).is_some());
            len += ids.len();
            !ids.is_empty()
        });
        self.len.store(len, Ordering::Relaxed);
    }

    /// Visit every configured webhook's state.
    fn for_each(&self, mut f: impl FnMut(&str, &str, &HookState)) {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        for (ns, ids) in map.iter() {
            for (id, state) in ids {
                f(ns, id, state);
            }
        }
    }

    /// `cwm_http_requests_total{webhook,status}` lines, one per webhook and status seen.
    pub fn render_metrics(&self, out: &mut String) {
        out.push_str(
            "# HELP cwm_http_requests Webhook requests by configured webhook and HTTP status \
             (`unknown`: matched no webhook).\n# TYPE cwm_http_requests counter\n",
        );
        let mut line = |ns: &str, id: &str, state: &HookState| {
            for (i, n) in state.statuses.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                out.push_str("cwm_http_requests_total{webhook=\"");
                if !ns.is_empty() {
                    escape_label(out, ns);
                    out.push('/');
                }
                escape_label(out, id);
                let _ = writeln!(out, "\",status=\"{status}\"}} {n}");
            }
        };
        self.for_each(&mut line);
        line("", UNKNOWN, &self.unknown);
    }

    /// The `/stats` body: accepted requests per configured webhook (`id` or `namespace/id`).
    pub fn render_stats(&self, sanitize_ids: bool) -> Value {
        let mut out = Map::new();
        self.for_each(|ns, id, state| {
            if state.accepted.total() == 0 {
                return;
            }
            let key = if ns.is_empty() {
                id.to_owned()
            } else {
                format!("{ns}/{id}")
            };
            let key = if sanitize_ids { sanitized(&key) } else { key };
            out.insert(key, state.accepted.render());
        });
        Value::Object(out)
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(entries: &[(&str, &str)]) -> Snapshot<()> {
        let mut s = Snapshot::empty("default", false);
        for (ns, id) in entries {
            s.put_webhook(ns, id, Arc::new(()));
        }
        s
    }

    #[test]
    fn counts_per_configured_webhook_and_forgets_removed_ones() {
        let snap = snapshot(&[("default", "a"), ("team", "b")]);
        let hooks = Hooks::new();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let team: Arc<str> = "team".into();
        hooks.get(None, &a, &snap).answered(200);
        hooks.get(None, &a, &snap).answered(401);
        hooks.get(Some(&team), &b, &snap).answered(200);
        hooks.unknown().answered(404);
        let mut text = String::new();
        hooks.render_metrics(&mut text);
        for line in [
            "cwm_http_requests_total{webhook=\"a\",status=\"200\"} 1",
            "cwm_http_requests_total{webhook=\"a\",status=\"401\"} 1",
            "cwm_http_requests_total{webhook=\"team/b\",status=\"200\"} 1",
            "cwm_http_requests_total{webhook=\"unknown\",status=\"404\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let stats = hooks.render_stats(false);
        assert_eq!(stats["a"]["total"], 1);
        assert_eq!(stats["team/b"]["total"], 1);
        assert!(stats.get("unknown").is_none());

        hooks.prune(&Arc::new(snapshot(&[("default", "a")])));
        let stats = hooks.render_stats(false);
        assert!(stats.get("team/b").is_none(), "{stats}");
        assert_eq!(stats["a"]["total"], 1);
    }

    #[test]
    fn the_map_never_outgrows_the_configuration() {
        let snap = snapshot(&[("default", "a")]);
        let hooks = Hooks::new();
        for i in 0..10_000 {
            let id: Arc<str> = format!("gone-{i}").into();
            hooks.get(None, &id, &snap);
        }
        assert!(hooks.len.load(Ordering::Relaxed) <= 2 * snap.webhook_count() + 64 + 1);
    }

    #[test]
    fn queue_share_is_bounded_per_webhook() {
        let s = HookState::new();
        assert!(s.try_enqueue(2) && s.try_enqueue(2));
        assert!(!s.try_enqueue(2));
        s.dequeued();
        assert!(s.try_enqueue(2));
    }
}
