//! The worker's state machine against the in-memory fake, with paused time: resync reasons,
//! re-authentication, backoff growth and reset. No network, no real sleeps.

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::client::Failure;
use super::fake::{Call, FakeEtcd};
use super::io::{WatchEvent, WatchMsg};
use super::*;

use crate::provider::testing::ConnCompiler;

fn no_env(_: &str) -> Option<String> {
    None
}

const HOOK: &str = r#"{"module":"log"}"#;
const SECOND: Duration = Duration::from_secs(1);

struct Harness {
    provider: Arc<EtcdProvider<ConnCompiler>>,
    fake: FakeEtcd,
    calls: UnboundedReceiver<Call>,
}

impl Harness {
    /// A provider on a fake etcd holding `keys`; backoff from 1 s up to 8 s.
    fn start(keys: &[(&str, &str)], refused: usize) -> Self {
        let (fake, calls) = FakeEtcd::new();
        for (k, v) in keys {
            fake.put(k, v);
        }
        fake.refuse_connections(refused);
        let settings = EtcdSettings {
            reconnect_initial: SECOND,
            reconnect_max: 8 * SECOND,
            ..EtcdSettings::default()
        };
        let provider = EtcdProvider::start_with(
            settings,
            Arc::new(ConnCompiler::default()),
            Arc::new(no_env),
            None,
            fake.clone(),
        )
        .unwrap();
        Self {
            provider,
            fake,
            calls,
        }
    }

    /// The next call the worker makes.
    async fn call(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(3600), self.calls.recv())
            .await
            .expect("the worker made no call within an hour")
            .expect("the fake is gone")
    }

    /// Calls up to and including the next watch; returns them all.
    async fn until_watch(&mut self) -> Vec<Call> {
        let mut seen = Vec::new();
        loop {
            let call = self.call().await;
            let done = matches!(call, Call::Watch { .. });
            seen.push(call);
            if done {
                return seen;
            }
        }
    }

    /// Times of the next `n` connection attempts (other calls skipped).
    async fn connects(&mut self, n: usize) -> Vec<(Instant, bool)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Call::Connect { at, ok } = self.call().await {
                out.push((at, ok));
            }
        }
        out
    }

    /// Wait (in paused time) until `cond` holds.
    async fn eventually(&self, what: &str, cond: impl Fn(&EtcdProvider<ConnCompiler>) -> bool) {
        for _ in 0..10_000 {
            if cond(&self.provider) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never: {what}");
    }

    fn resyncs(&self, reason: &str) -> u64 {
        self.provider
            .status()
            .resyncs
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    fn has_webhook(&self, namespace: &str, id: &str) -> bool {
        self.provider
            .snapshot()
            .webhook_exact(namespace, id)
            .is_some()
    }

    fn events(&self, events: Vec<WatchEvent>) {
        assert!(self.fake.send(Ok(WatchMsg {
            events,
            ..WatchMsg::default()
        })));
    }
}

fn is_connect(call: &Call) -> bool {
    matches!(call, Call::Connect { .. })
}

/// `expected` ±10 % jitter (plus the timer's millisecond rounding).
fn within(delay: Duration, expected: Duration) -> bool {
    delay >= expected.mul_f64(0.9) && delay <= expected.mul_f64(1.1) + SLACK
}

/// Timers fire on whole milliseconds.
const SLACK: Duration = Duration::from_millis(2);

#[tokio::test(start_paused = true)]
async fn lists_then_watches_and_applies_events() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    let calls = h.until_watch().await;
    let revision = h.fake.revision();
    assert_eq!(calls.last(), Some(&Call::Watch { from: revision + 1 }));
    assert!(calls.contains(&Call::ReadPrefix), "{calls:?}");
    h.eventually("healthy", |p| p.state() == BackendState::Healthy)
        .await;
    assert!(h.has_webhook("ns", "a"));

    let event = h.fake.put("/cwm/ns/webhooks/b", HOOK);
    h.events(vec![event]);
    h.eventually("b applied", |p| {
        p.snapshot().webhook_exact("ns", "b").is_some()
    })
    .await;
    assert_eq!(h.provider.snapshot().revision(), h.fake.revision());
    assert!(h.provider.status().resyncs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn compaction_relists_with_the_same_client() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    h.until_watch().await;
    // Changes missed while the watch was behind.
    h.fake.put("/cwm/ns/webhooks/b", HOOK);
    h.fake.compact(h.fake.revision());
    assert!(h.fake.send(Ok(WatchMsg {
        canceled: true,
        compact_revision: h.fake.revision(),
        ..WatchMsg::default()
    })));
    let calls = h.until_watch().await;
    assert!(
        !calls.iter().any(is_connect),
        "a resync, not a new session: {calls:?}"
    );
    assert!(calls.contains(&Call::Range { revision: 0 }), "{calls:?}");
    h.eventually("b listed", |p| {
        p.snapshot().webhook_exact("ns", "b").is_some()
    })
    .await;
    assert_eq!(h.resyncs("compacted"), 1);
    assert_eq!(
        h.provider.status().last_resync.map(|r| r.reason).as_deref(),
        Some("compacted")
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_older_than_the_snapshot_relists() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    h.until_watch().await;
    let applied = h.provider.snapshot().revision();
    h.events(vec![WatchEvent {
        kind: etcd_client::EventType::Put,
        kv: Some(super::io::Kv {
            key: b"/cwm/ns/webhooks/old".to_vec(),
            value: HOOK.as_bytes().to_vec(),
            mod_revision: applied - 1,
        }),
    }]);
    let calls = h.until_watch().await;
    assert!(!calls.iter().any(is_connect), "{calls:?}");
    h.eventually("resynced", |_| h.resyncs("revision_regressed") == 1)
        .await;
    assert!(
        !h.has_webhook("ns", "old"),
        "nothing of that response is applied"
    );
}

#[tokio::test(start_paused = true)]
async fn a_listing_below_the_last_seen_revision_is_a_regression() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    h.until_watch().await;
    // A progress notification at revision 100, then etcd comes back restored at revision 3.
    assert!(h.fake.send(Ok(WatchMsg {
        header_revision: Some(100),
        ..WatchMsg::default()
    })));
    h.fake.set_revision(3);
    assert!(h.fake.send(Ok(WatchMsg {
        canceled: true,
        compact_revision: 2,
        ..WatchMsg::default()
    })));
    h.until_watch().await;
    h.eventually("resynced", |_| h.resyncs("revision_regressed") == 1)
        .await;
    assert_eq!(h.resyncs("compacted"), 0, "the regression names the resync");
    assert_eq!(h.provider.snapshot().revision(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_reauthenticates_at_once_then_backs_off() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    assert!(h.connects(1).await[0].1);
    h.until_watch().await;
    let auth = || Failure {
        auth: true,
        message: "Unauthenticated: etcdserver: invalid auth token".into(),
        transport: false,
    };
    // Refused token on the watch: a new session right away (new client, new token), re-listed.
    let broke = Instant::now();
    assert!(h.fake.send(Err(auth())));
    let (again, ok) = h.connects(1).await[0];
    assert!(ok && again == broke, "a second session, without waiting");
    h.until_watch().await;
    h.eventually("auth resync", |_| h.resyncs("auth") == 1)
        .await;
    h.eventually("healthy", |p| p.state() == BackendState::Healthy)
        .await;

    // A good listing re-arms the immediate retry; a second refusal in a row waits the backoff.
    let broke = Instant::now();
    h.fake.fail_next_range(auth());
    assert!(h.fake.send(Err(auth())));
    let attempts = h.connects(2).await;
    assert_eq!(attempts[0].0, broke, "first refusal: at once");
    let waited = attempts[1].0 - attempts[0].0;
    assert!(
        within(waited, SECOND),
        "second refusal: backoff, waited {waited:?}"
    );
    h.until_watch().await;
    h.eventually("auth resyncs", |_| h.resyncs("auth") == 2)
        .await;
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_to_the_maximum_and_resets_after_a_healthy_watch() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 4);
    let attempts = h.connects(5).await;
    let oks: Vec<bool> = attempts.iter().map(|(_, ok)| *ok).collect();
    assert_eq!(oks, [false, false, false, false, true]);
    let delays: Vec<Duration> = attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (delay, expected) in delays.iter().zip([1, 2, 4, 8]) {
        let expected = expected * SECOND;
        assert!(
            within(*delay, expected) && *delay <= 8 * SECOND + SLACK,
            "delays {delays:?}"
        );
    }
    assert_eq!(h.provider.state(), BackendState::Connecting);
    h.until_watch().await;
    h.eventually("healthy", |p| p.state() == BackendState::Healthy)
        .await;
    assert!(h.provider.status().last_error.is_none());

    // The healthy watch reset the backoff: the next outage starts again at 1 s.
    let broke = Instant::now();
    assert!(h.fake.send(Err(Failure::other("the watch stream broke"))));
    h.eventually("disconnected", |p| p.state() == BackendState::Disconnected)
        .await;
    let (at, ok) = h.connects(1).await[0];
    assert!(ok && within(at - broke, SECOND), "waited {:?}", at - broke);
    h.until_watch().await;
    h.eventually("reconnect resync", |_| h.resyncs("reconnect") == 1)
        .await;
}

#[tokio::test(start_paused = true)]
async fn an_admin_reload_relists_and_reports() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 0);
    h.until_watch().await;
    // A change the watch did not deliver: only a re-list sees it.
    h.fake.put("/cwm/ns/webhooks/b", HOOK);
    let report = h
        .provider
        .reload(ReloadRequest {
            webhooks: true,
            connections: false,
        })
        .await
        .unwrap();
    let webhooks = report.webhooks.unwrap();
    assert_eq!((webhooks.added, webhooks.total), (1, 2));
    assert!(report.connections.is_none());
    assert!(h.has_webhook("ns", "b"));
    assert_eq!(h.resyncs("admin"), 1);
    let calls = h.until_watch().await;
    assert!(!calls.iter().any(is_connect), "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn an_admin_reload_cuts_the_backoff_short() {
    let mut h = Harness::start(&[("/cwm/ns/webhooks/a", HOOK)], 3);
    let attempts = h.connects(3).await;
    assert!(attempts.iter().all(|(_, ok)| !ok));
    // Now in a ~4 s wait; the reload tries at once.
    let asked = Instant::now();
    let provider = h.provider.clone();
    let reload = provider.reload(ReloadRequest {
        webhooks: true,
        connections: true,
    });
    let (report, attempt) = tokio::join!(reload, h.connects(1));
    assert!(report.is_ok());
    assert_eq!(attempt[0], (asked, true));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_rejected_webhooks_relists_them() {
    let uses_main = r#"{"module":"log","connection":"main"}"#;
    let mut h = Harness::start(&[("/cwm/ns/webhooks/w1", uses_main)], 0);
    h.until_watch().await;
    let rejected = h.provider.status().rejected;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].reason.contains("connection 'main'"));
    assert!(!h.has_webhook("ns", "w1"));

    // A connection nobody waits for: applied, no resync.
    let other = h.fake.put(
        "/cwm/global/connections/other",
        r#"{"type":"redis","host":"h"}"#,
    );
    h.events(vec![other]);
    h.eventually("other applied", |p| {
        p.snapshot().connection("other").is_some()
    })
    .await;
    assert_eq!(h.resyncs("connection_changed"), 0);

    let main = h.fake.put(
        "/cwm/global/connections/main",
        r#"{"type":"redis","host":"h"}"#,
    );
    h.events(vec![main]);
    let calls = h.until_watch().await;
    assert!(!calls.iter().any(is_connect), "{calls:?}");
    h.eventually("w1 compiled again", |p| {
        p.snapshot().webhook_exact("ns", "w1").is_some()
    })
    .await;
    assert_eq!(h.resyncs("connection_changed"), 1);
    assert!(h.provider.status().rejected.is_empty());
}
