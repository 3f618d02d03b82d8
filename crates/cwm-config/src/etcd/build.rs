//! Turning keys into a snapshot: the verdict on one key, full listings built off to the side.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::Guard;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use super::client::Failure;
use super::listing::Page;
use crate::keys::{KeyError, KeyRef, parse_key};
use crate::model::ConnectionConfig;
use crate::provider::{Compiler, Diff, compile_webhook_json, parse_connection};
use crate::secrets::Secrets;
use crate::snapshot::{Snapshot, SnapshotBuilder};
use crate::subst::Env;

/// Judge one key and its value as the provider loads them; `cwmctl validate` uses the same
/// verdict.
pub(crate) fn evaluate<'k, C: Compiler>(
    prefix: &str,
    compiler: &C,
    env: &dyn Env,
    key: &'k [u8],
    value: &[u8],
) -> Entry<'k, C::Webhook> {
    match parse_key(prefix, key) {
        Err(KeyError::OutsidePrefix | KeyError::Unrecognised) => Entry::Ignored,
        Err(e) => Entry::BadKey(e.to_string()),
        Ok(KeyRef::Webhook { namespace, id }) => Entry::Webhook {
            namespace,
            id,
            result: compile_webhook_json(compiler, env, id, value).map_err(|e| e.to_string()),
        },
        Ok(KeyRef::Connection { name }) => Entry::Connection {
            name,
            result: serde_json::from_slice(value)
                .map_err(|e| crate::EntryError::Json(e.to_string()).to_string())
                .and_then(|v| parse_connection(env, name, v).map_err(|e| e.to_string())),
        },
    }
}

/// The verdict on one key.
pub(crate) enum Entry<'k, W> {
    /// Not part of the layout (debug log only; `cwmctl validate` reports it).
    Ignored,
    /// In the layout's shape but unusable: not UTF-8, invalid namespace, empty name.
    BadKey(String),
    Webhook {
        namespace: &'k str,
        id: &'k str,
        result: Result<W, String>,
    },
    Connection {
        name: &'k str,
        result: Result<ConnectionConfig, String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Webhook = 0,
    Connection = 1,
}

/// Kind and mod revision of every recognised key, by key.
pub(crate) type Tracker = HashMap<Box<[u8]>, (Kind, i64)>;

/// Pages handed to the builder thread and not yet taken. One is enough to keep it busy while the
/// next page is fetched; each page held costs its size in memory (up to [`super::listing::PAGE_BYTES`]).
const PAGES_QUEUED: usize = 1;

/// The blocking thread building one listing's snapshot, and the queue of pages it reads.
pub(crate) struct BuildTask<C: Compiler> {
    pages: mpsc::Sender<(Page, Option<Secrets>)>,
    task: JoinHandle<Built<C::Webhook>>,
}

impl<C: Compiler> BuildTask<C> {
    pub(crate) fn spawn(shared: &Arc<Shared<C>>, previous: &Arc<Tracker>) -> Self {
        let (pages, mut queue) = mpsc::channel::<(Page, Option<Secrets>)>(PAGES_QUEUED);
        let mut build = FullBuild::new(shared.clone(), previous.clone());
        let task = tokio::task::spawn_blocking(move || {
            while let Some((page, secrets)) = queue.blocking_recv() {
                build.add(page, secrets.as_ref());
            }
            build.finish()
        });
        Self { pages, task }
    }

    /// Hand over one page, with the Vault references of its values fetched.
    pub(crate) async fn send(&self, page: Page, secrets: Option<Secrets>) -> Result<(), Failure> {
        self.pages
            .send((page, secrets))
            .await
            .map_err(|_| Failure::other("the snapshot builder stopped"))
    }

    /// Wait for the last page to be built; the listing is complete.
    pub(crate) async fn finish(self) -> Result<Built<C::Webhook>, Failure> {
        drop(self.pages);
        self.task
            .await
            .map_err(|e| Failure::other(format!("building the snapshot failed: {e}")))
    }
}

/// A complete listing, built and ready to publish.
pub(crate) struct Built<W> {
    pub(crate) revision: i64,
    pub(crate) snapshot: Snapshot<W>,
    pub(crate) tracker: Tracker,
    /// Refused keys: rejection key, reason, whether an older value keeps serving.
    pub(crate) rejected: Vec<(String, String, bool)>,
    pub(crate) webhooks: Diff,
    pub(crate) connections: Diff,
    pub(crate) keys: usize,
    pub(crate) ignored: usize,
    /// Range requests that made the listing, and how long until the last one answered.
    pub(crate) pages: usize,
    pub(crate) listed: Duration,
}

/// One listing being turned into a snapshot, page by page, on the builder thread (every key
/// is judged alone).
struct FullBuild<C: Compiler> {
    shared: Arc<Shared<C>>,
    /// The snapshot being replaced: a key whose value is now refused keeps its value from it.
    current: Arc<Snapshot<C::Webhook>>,
    next: SnapshotBuilder<C::Webhook>,
    tracker: Tracker,
    changes: Changes,
    rejected: Vec<(String, String, bool)>,
    revision: i64,
    keys: usize,
    ignored: usize,
}

impl<C: Compiler> FullBuild<C> {
    fn new(shared: Arc<Shared<C>>, previous: Arc<Tracker>) -> Self {
        Self {
            current: Guard::into_inner(shared.store.load()),
            next: SnapshotBuilder::new(&shared.settings.default_namespace),
            shared,
            tracker: Tracker::new(),
            changes: Changes::new(previous),
            rejected: Vec::new(),
            revision: 0,
            keys: 0,
            ignored: 0,
        }
    }

    fn add(&mut self, page: Page, secrets: Option<&Secrets>) {
        self.revision = page.revision;
        if self.tracker.is_empty() {
            // etcd counts the whole range with every page: size the tracker once.
            self.tracker.reserve(
                usize::try_from(page.count)
                    .unwrap_or(0)
                    .min(MAX_RESERVED_KEYS),
            );
        }
        let shared = self.shared.clone();
        for kv in page.kvs {
            self.keys += 1;
            let super::io::Kv {
                key,
                value,
                mod_revision,
            } = kv;
            let kind = match shared.evaluate(&key, &value, secrets) {
                Entry::Ignored => {
                    self.ignored += 1;
                    tracing::debug!(key = %String::from_utf8_lossy(&key), "ignoring key outside the layout");
                    None
                }
                Entry::BadKey(reason) => {
                    self.changes.rejected(Kind::Webhook);
                    let k = Shared::<C>::rejection_key(&key);
                    self.rejected.push((k, reason, false));
                    None
                }
                Entry::Webhook {
                    namespace,
                    id,
                    result,
                } => {
                    match result {
                        Ok(w) => self.next.put_webhook(namespace, id, Arc::new(w)),
                        Err(reason) => {
                            self.changes.rejected(Kind::Webhook);
                            let previous = self.current.webhook_exact(namespace, id).cloned();
                            let k = Shared::<C>::rejection_key(&key);
                            self.rejected.push((k, reason, previous.is_some()));
                            if let Some(p) = previous {
                                self.next.put_webhook(namespace, id, p);
                            }
                        }
                    }
                    Some(Kind::Webhook)
                }
                Entry::Connection { name, result } => {
                    match result {
                        Ok(c) => self.next.put_connection(name, Arc::new(c)),
                        Err(reason) => {
                            self.changes.rejected(Kind::Connection);
                            let previous = self.current.connection(name).cloned();
                            let k = Shared::<C>::rejection_key(&key);
                            self.rejected.push((k, reason, previous.is_some()));
                            if let Some(p) = previous {
                                self.next.put_connection(name, p);
                            }
                        }
                    }
                    Some(Kind::Connection)
                }
            };
            if let Some(kind) = kind {
                self.changes.key(&key, kind, mod_revision);
                self.tracker
                    .insert(key.into_boxed_slice(), (kind, mod_revision));
            }
        }
    }

    fn finish(self) -> Built<C::Webhook> {
        let (mut webhooks, mut connections) = self.changes.finish();
        let snapshot = self.next.build(self.revision);
        webhooks.total = snapshot.webhook_count();
        connections.total = snapshot.connection_count();
        Built {
            revision: self.revision,
            snapshot,
            tracker: self.tracker,
            rejected: self.rejected,
            webhooks,
            connections,
            keys: self.keys,
            ignored: self.ignored,
            pages: 0,
            listed: Duration::ZERO,
        }
    }
}

/// Added, removed and modified keys of each kind between the previous listing and this one,
/// counted one key of this listing at a time.
struct Changes {
    previous: Arc<Tracker>,
    /// Webhooks, connections.
    diffs: [Diff; 2],
    /// Keys of the previous listing seen again, by kind.
    kept: [usize; 2],
}

impl Changes {
    fn new(previous: Arc<Tracker>) -> Self {
        Self {
            previous,
            diffs: Default::default(),
            kept: [0, 0],
        }
    }

    /// One recognised key of this listing.
    fn key(&mut self, key: &[u8], kind: Kind, mod_revision: i64) {
        let diff = &mut self.diffs[kind as usize];
        match self.previous.get(key) {
            None => diff.added += 1,
            Some((_, old)) => {
                self.kept[kind as usize] += 1;
                if *old != mod_revision {
                    diff.modified += 1;
                }
            }
        }
    }

    /// One key of this listing refused (a bad key counts as a webhook).
    fn rejected(&mut self, kind: Kind) {
        self.diffs[kind as usize].rejected += 1;
    }

    /// Webhook and connection diffs (`total` left at 0).
    fn finish(self) -> (Diff, Diff) {
        let mut before = [0usize; 2];
        for (kind, _) in self.previous.values() {
            before[*kind as usize] += 1;
        }
        let [mut webhooks, mut connections] = self.diffs;
        webhooks.removed = before[0].saturating_sub(self.kept[0]);
        connections.removed = before[1].saturating_sub(self.kept[1]);
        (webhooks, connections)
    }
}

/// Upper bound of the tracker's first reservation (etcd's count is only a hint).
const MAX_RESERVED_KEYS: usize = 4_000_000;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn diffs_count_by_kind_and_revision() {
        let old: Tracker = [
            (b"a".as_slice(), (Kind::Webhook, 1)),
            (b"b", (Kind::Webhook, 2)),
            (b"c", (Kind::Connection, 3)),
        ]
        .into_iter()
        .map(|(k, v)| (Box::from(k), v))
        .collect();
        let mut changes = Changes::new(Arc::new(old));
        changes.key(b"a", Kind::Webhook, 1);
        changes.key(b"b", Kind::Webhook, 5);
        changes.key(b"d", Kind::Webhook, 6);
        let (w, c) = changes.finish();
        assert_eq!((w.added, w.removed, w.modified), (1, 0, 1));
        assert_eq!((c.added, c.removed, c.modified), (0, 1, 0));
    }
}
