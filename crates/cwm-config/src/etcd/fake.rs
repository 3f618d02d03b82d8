//! An in-memory etcd for the worker's unit tests: one key space at one revision, scripted
//! connection failures, and watches the test feeds by hand. Every call is logged, with the
//! (paused) time it was made.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::EventType;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::Failure;
use super::io::{
    EtcdIo, Kv, RangeError, RangePage, RangeRead, Session, WatchEvent, WatchEvents, WatchMsg,
};
use super::settings::EtcdSettings;
use crate::error::ConfigError;

/// What the worker asked the fake for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// A connection attempt; whether it succeeded.
    Connect { at: Instant, ok: bool },
    /// A range request at this revision (0: current).
    Range { revision: i64 },
    /// The read of `global/connections/` before a listing.
    ReadPrefix,
    /// A watch from this revision.
    Watch { from: i64 },
}

#[derive(Default)]
struct State {
    kvs: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
    revision: i64,
    compacted: i64,
    /// Connection attempts to refuse, oldest first (the message).
    refuse: VecDeque<String>,
    /// Failures for the next range requests, oldest first.
    fail_ranges: VecDeque<Failure>,
    /// The open watch, if any.
    watch: Option<mpsc::UnboundedSender<Result<WatchMsg, Failure>>>,
}

/// The fake etcd. Clones share the same state.
#[derive(Clone)]
pub(crate) struct FakeEtcd {
    state: Arc<Mutex<State>>,
    calls: mpsc::UnboundedSender<Call>,
}

impl FakeEtcd {
    /// A fake and the log of the calls made to it.
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Call>) {
        let (calls, log) = mpsc::unbounded_channel();
        let fake = Self {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                ..State::default()
            })),
            calls,
        };
        (fake, log)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, call: Call) {
        let _ = self.calls.send(call);
    }

    /// Put a key (a new revision); returns the put event, not sent to any watch.
    pub(crate) fn put(&self, key: &str, value: &str) -> WatchEvent {
        let mut state = self.state();
        state.revision += 1;
        let revision = state.revision;
        state.kvs.insert(
            key.as_bytes().to_vec(),
            (value.as_bytes().to_vec(), revision),
        );
        WatchEvent {
            kind: EventType::Put,
            kv: Some(Kv {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                mod_revision: revision,
            }),
        }
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> i64 {
        self.state().revision
    }

    /// Move the key space to `revision` (etcd restored from an older backup).
    pub(crate) fn set_revision(&self, revision: i64) {
        self.state().revision = revision;
    }

    /// Compact every revision below `revision`.
    pub(crate) fn compact(&self, revision: i64) {
        self.state().compacted = revision;
    }

    /// Refuse the next `n` connection attempts.
    pub(crate) fn refuse_connections(&self, n: usize) {
        let mut state = self.state();
        for i in 0..n {
            state
                .refuse
                .push_back(format!("connect: refused ({})", i + 1));
        }
    }

    /// Fail the next range request with `failure`.
    pub(crate) fn fail_next_range(&self, failure: Failure) {
        self.state().fail_ranges.push_back(failure);
    }

    /// Send a message on the open watch; false when none is open.
    pub(crate) fn send(&self, msg: Result<WatchMsg, Failure>) -> bool {
        self.state()
            .watch
            .as_ref()
            .is_some_and(|w| w.send(msg).is_ok())
    }
}

impl EtcdIo for FakeEtcd {
    type Session = FakeEtcd;

    async fn connect(&self, _settings: &EtcdSettings) -> Result<FakeEtcd, ConfigError> {
        let refused = self.state().refuse.pop_front();
        self.log(Call::Connect {
            at: Instant::now(),
            ok: refused.is_none(),
        });
        match refused {
            Some(message) => Err(ConfigError::Etcd(message)),
            None => Ok(self.clone()),
        }
    }

    async fn tls_hint(&self, _settings: &EtcdSettings) -> Option<String> {
        None
    }
}

impl Session for FakeEtcd {
    type Reader = FakeEtcd;
    type Watch = FakeWatch;

    fn reader(&self) -> FakeEtcd {
        self.clone()
    }

    async fn read_prefix(&self, prefix: &[u8]) -> Result<Vec<Kv>, Failure> {
        self.log(Call::ReadPrefix);
        let state = self.state();
        Ok(state
            .kvs
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| Kv {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *r,
            })
            .collect())
    }

    async fn watch(&self, _prefix: &[u8], start_revision: i64) -> Result<FakeWatch, Failure> {
        self.log(Call::Watch {
            from: start_revision,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let revision = self.revision();
        // etcd confirms a new watch at once.
        let _ = tx.send(Ok(WatchMsg {
            created: true,
            header_revision: Some(revision),
            ..WatchMsg::default()
        }));
        self.state().watch = Some(tx);
        Ok(FakeWatch { rx })
    }
}

impl RangeRead for FakeEtcd {
    async fn range(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<RangePage, RangeError> {
        self.log(Call::Range { revision });
        let mut state = self.state();
        if let Some(failure) = state.fail_ranges.pop_front() {
            return Err(RangeError::Other(failure));
        }
        if revision != 0 && revision < state.compacted {
            return Err(RangeError::Compacted(Failure::other(
                "etcdserver: mvcc: required revision has been compacted",
            )));
        }
        let in_range: Vec<Kv> = state
            .kvs
            .range(start.to_vec()..)
            .take_while(|(k, _)| end == [0] || k.as_slice() < end)
            .map(|(k, (v, r))| Kv {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *r,
            })
            .collect();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(RangePage {
            header_revision: Some(if revision != 0 {
                revision
            } else {
                state.revision
            }),
            more: in_range.len() > limit,
            count: i64::try_from(in_range.len()).unwrap_or(i64::MAX),
            kvs: in_range.into_iter().take(limit).collect(),
        })
    }
}

/// A watch fed by [`FakeEtcd::send`]; dropping the sender ends it.
pub(crate) struct FakeWatch {
    rx: mpsc::UnboundedReceiver<Result<WatchMsg, Failure>>,
}

impl WatchEvents for FakeWatch {
    async fn message(&mut self) -> Result<Option<WatchMsg>, Failure> {
        match self.rx.recv().await {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(failure)) => Err(failure),
        }
    }
}
