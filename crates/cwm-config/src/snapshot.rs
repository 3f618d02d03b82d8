//! Immutable configuration snapshots and the store that swaps them.
//!
//! A [`Snapshot`] is a persistent (hash array mapped trie) map of namespace to webhooks plus the
//! global connections. Changing one key copies only the path to that key, O(log n), and shares the
//! rest with the previous snapshot, so the etcd watch applies an event without copying 250,000
//! entries. A namespace of up to 8 webhooks is a small array instead of a trie of its own (copied
//! whole on change, a constant bound): most namespaces hold a handful of webhooks, and a trie node
//! per namespace would be most of the snapshot's memory. Readers load the current snapshot from an
//! [`ArcSwap`]: no lock, no allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use serde::Serialize;
use tokio::sync::watch;

use crate::model::ConnectionConfig;

/// Most webhooks a namespace keeps in its small form.
const SMALL_NAMESPACE: usize = 8;

type Entries<W> = Vec<(Arc<str>, Arc<W>)>;

/// The webhooks of one namespace, by id. Persistent: changes return a new value and leave `self`
/// as it was.
enum Ids<W> {
    /// Up to [`SMALL_NAMESPACE`] entries, ids unique, searched linearly.
    Small(Arc<[(Arc<str>, Arc<W>)]>),
    /// More: a hash trie. Stays a trie when it shrinks again, until the next full listing.
    Large(imbl::HashMap<Arc<str>, Arc<W>>),
}

impl<W> Clone for Ids<W> {
    fn clone(&self) -> Self {
        match self {
            Self::Small(entries) => Self::Small(entries.clone()),
            Self::Large(map) => Self::Large(map.clone()),
        }
    }
}

impl<W> Ids<W> {
    /// From entries with unique ids.
    fn from_unique(entries: Entries<W>) -> Self {
        if entries.len() <= SMALL_NAMESPACE {
            Self::Small(entries.into())
        } else {
            Self::Large(entries.into_iter().collect())
        }
    }

    /// From entries in order; a repeated id keeps its last webhook.
    fn from_entries(mut entries: Entries<W>) -> Self {
        if entries.len() <= SMALL_NAMESPACE {
            let mut unique: Entries<W> = Vec::with_capacity(entries.len());
            for (id, w) in entries.drain(..) {
                match unique.iter_mut().find(|(k, _)| *k == id) {
                    Some(slot) => slot.1 = w,
                    None => unique.push((id, w)),
                }
            }
            Self::Small(unique.into())
        } else {
            let map: imbl::HashMap<_, _> = entries.into_iter().collect();
            if map.len() <= SMALL_NAMESPACE {
                Self::Small(map.into_iter().collect::<Entries<W>>().into())
            } else {
                Self::Large(map)
            }
        }
    }

    fn get(&self, id: &str) -> Option<&Arc<W>> {
        match self {
            Self::Small(entries) => entries.iter().find(|(k, _)| **k == *id).map(|(_, w)| w),
            Self::Large(map) => map.get(id),
        }
    }

    fn get_key_value(&self, id: &str) -> Option<(&Arc<str>, &Arc<W>)> {
        match self {
            Self::Small(entries) => entries
                .iter()
                .find(|(k, _)| **k == *id)
                .map(|(k, w)| (k, w)),
            Self::Large(map) => map.get_key_value(id),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Small(entries) => entries.len(),
            Self::Large(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> Entries<W> {
        match self {
            Self::Small(entries) => entries.to_vec(),
            Self::Large(map) => map.iter().map(|(k, w)| (k.clone(), w.clone())).collect(),
        }
    }

    /// With `id` set to `webhook`.
    fn with(&self, id: &str, webhook: Arc<W>) -> Self {
        match self {
            Self::Small(entries) => {
                let mut next = entries.to_vec();
                match next.iter_mut().find(|(k, _)| **k == *id) {
                    Some(slot) => slot.1 = webhook,
                    None => next.push((id.into(), webhook)),
                }
                Self::from_unique(next)
            }
            Self::Large(map) => {
                let mut map = map.clone();
                map.insert(id.into(), webhook);
                Self::Large(map)
            }
        }
    }

    /// Without `id`; `None` when there was no such id.
    fn without(&self, id: &str) -> Option<Self> {
        match self {
            Self::Small(entries) => {
                let at = entries.iter().position(|(k, _)| **k == *id)?;
                let mut next = entries.to_vec();
                next.remove(at);
                Some(Self::Small(next.into()))
            }
            Self::Large(map) => {
                let mut map = map.clone();
                map.remove(id)?;
                Some(Self::Large(map))
            }
        }
    }
}

/// The webhook id that catches unknown ids in its namespace (upstream compatible).
pub const CATCH_ALL_ID: &str = "default";

/// The configured entry that answers a lookup, from [`Snapshot::lookup`].
#[derive(Debug)]
pub struct Found<'a, W> {
    /// The namespace of the entry, when the lookup named one and the snapshot has namespaces
    /// (`None` for the default namespace route and for the file backend, which ignores it).
    pub namespace: Option<&'a Arc<str>>,
    /// The configured id: the requested id, or [`CATCH_ALL_ID`] when the catch-all answered.
    pub id: &'a Arc<str>,
    /// The compiled webhook.
    pub webhook: &'a Arc<W>,
}

/// One consistent view of the configuration. `W` is the compiled webhook type.
pub struct Snapshot<W> {
    default_namespace: Arc<str>,
    flat: bool,
    namespaces: imbl::HashMap<Arc<str>, Ids<W>>,
    connections: imbl::HashMap<Arc<str>, Arc<ConnectionConfig>>,
    revision: i64,
    /// The change channel of the [`Store`] that published this snapshot, so that
    /// [`ConfigProvider::subscribe`](crate::ConfigProvider::subscribe) reaches it through any
    /// provider's snapshot. `None` until a store publishes it.
    changes: Option<Arc<watch::Sender<u64>>>,
}

impl<W> Clone for Snapshot<W> {
    fn clone(&self) -> Self {
        Self {
            default_namespace: self.default_namespace.clone(),
            flat: self.flat,
            namespaces: self.namespaces.clone(),
            connections: self.connections.clone(),
            revision: self.revision,
            changes: self.changes.clone(),
        }
    }
}

impl<W> Snapshot<W> {
    /// An empty snapshot. `flat` snapshots ignore the namespace of a lookup (file backend).
    pub fn empty(default_namespace: &str, flat: bool) -> Self {
        Self {
            default_namespace: default_namespace.into(),
            flat,
            namespaces: imbl::HashMap::new(),
            connections: imbl::HashMap::new(),
            revision: 0,
            changes: None,
        }
    }

    /// A receiver of the changes of the store that published this snapshot (see
    /// [`Store::subscribe`]). A snapshot no store published gives a receiver whose sender is
    /// gone: its `changed()` fails at once.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        match &self.changes {
            Some(changes) => changes.subscribe(),
            None => watch::channel(0).1,
        }
    }

    /// Find the webhook for `id` in `namespace` (the default namespace when `None`), falling back
    /// to that namespace's `default` catch-all entry.
    pub fn webhook(&self, namespace: Option<&str>, id: &str) -> Option<&Arc<W>> {
        let ns = match namespace {
            Some(ns) if !self.flat => ns,
            _ => &self.default_namespace,
        };
        let ids = self.namespaces.get(ns)?;
        ids.get(id).or_else(|| ids.get(CATCH_ALL_ID))
    }

    /// Like [`Snapshot::webhook`], also telling which configured entry answered. The names it
    /// returns are the snapshot's own, so a caller can key state by configured webhook (never by
    /// what a client asked for) without allocating.
    pub fn lookup(&self, namespace: Option<&str>, id: &str) -> Option<Found<'_, W>> {
        let (ns, named) = match namespace {
            Some(ns) if !self.flat => (ns, true),
            _ => (&*self.default_namespace, false),
        };
        let (ns_key, ids) = self.namespaces.get_key_value(ns)?;
        let (id, webhook) = ids
            .get_key_value(id)
            .or_else(|| ids.get_key_value(CATCH_ALL_ID))?;
        Some(Found {
            namespace: named.then_some(ns_key),
            id,
            webhook,
        })
    }

    /// Exact lookup, without the catch-all.
    pub fn webhook_exact(&self, namespace: &str, id: &str) -> Option<&Arc<W>> {
        self.namespaces.get(namespace)?.get(id)
    }

    /// The connection called `name`.
    pub fn connection(&self, name: &str) -> Option<&Arc<ConnectionConfig>> {
        self.connections.get(name)
    }

    /// Namespace of routes without one.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The etcd revision this snapshot reflects (0 for files).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Number of namespaces holding at least one webhook.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Number of webhooks, all namespaces.
    pub fn webhook_count(&self) -> usize {
        self.namespaces.values().map(Ids::len).sum()
    }

    /// Number of connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Namespace names, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.namespaces.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Webhooks of one namespace, sorted by id.
    pub fn webhooks_in(&self, namespace: &str) -> Vec<(Arc<str>, Arc<W>)> {
        let mut v: Vec<_> = self
            .namespaces
            .get(namespace)
            .map(Ids::entries)
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Connections, sorted by name.
    pub fn connections(&self) -> Vec<(Arc<str>, Arc<ConnectionConfig>)> {
        let mut v: Vec<_> = self
            .connections
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Set the etcd revision this snapshot reflects.
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    /// Add or replace webhook `id` of `namespace`.
    pub fn put_webhook(&mut self, namespace: &str, id: &str, webhook: Arc<W>) {
        let (key, ids) = match self.namespaces.get_key_value(namespace) {
            Some((key, ids)) => (key.clone(), ids.with(id, webhook)),
            None => (
                Arc::from(namespace),
                Ids::Small(Arc::new([(Arc::from(id), webhook)])),
            ),
        };
        self.namespaces.insert(key, ids);
    }

    /// Remove a webhook; a namespace left empty disappears. Returns whether it existed.
    pub fn remove_webhook(&mut self, namespace: &str, id: &str) -> bool {
        let Some((key, ids)) = self.namespaces.get_key_value(namespace) else {
            return false;
        };
        let Some(rest) = ids.without(id) else {
            return false;
        };
        if rest.is_empty() {
            self.namespaces.remove(namespace);
        } else {
            let key = key.clone();
            self.namespaces.insert(key, rest);
        }
        true
    }

    /// Add or replace connection `name`.
    pub fn put_connection(&mut self, name: &str, connection: Arc<ConnectionConfig>) {
        self.connections.insert(name.into(), connection);
    }

    /// Remove a connection. Returns whether it existed.
    pub fn remove_connection(&mut self, name: &str) -> bool {
        self.connections.remove(name).is_some()
    }

    /// Replace all webhooks of every namespace at once.
    pub fn clear_webhooks(&mut self) {
        self.namespaces = imbl::HashMap::new();
    }

    /// Remove every connection.
    pub fn clear_connections(&mut self) {
        self.connections = imbl::HashMap::new();
    }
}

/// Builds a [`Snapshot`] from a whole listing at once.
///
/// Consecutive webhooks of one namespace (etcd lists keys sorted, so a namespace's webhooks come
/// one after the other) are collected in that namespace's map, owned by the builder alone, and
/// join the snapshot once: no node is copied on write, no namespace name is allocated twice.
/// Entries may still come in any order; adjacency only makes them cheaper.
pub(crate) struct SnapshotBuilder<W> {
    snap: Snapshot<W>,
    /// The namespace being filled, and its webhooks so far.
    group: Option<(Arc<str>, Entries<W>)>,
}

impl<W> SnapshotBuilder<W> {
    /// An empty builder for a namespaced snapshot; see [`Snapshot::empty`].
    pub(crate) fn new(default_namespace: &str) -> Self {
        Self {
            snap: Snapshot::empty(default_namespace, false),
            group: None,
        }
    }

    pub(crate) fn put_webhook(&mut self, namespace: &str, id: &str, webhook: Arc<W>) {
        match &mut self.group {
            Some((ns, entries)) if **ns == *namespace => {
                entries.push((id.into(), webhook));
            }
            _ => {
                self.flush();
                let (ns, mut entries) = match self.snap.namespaces.remove_with_key(namespace) {
                    Some((ns, ids)) => (ns, ids.entries()),
                    None => (Arc::from(namespace), Vec::new()),
                };
                entries.push((id.into(), webhook));
                self.group = Some((ns, entries));
            }
        }
    }

    pub(crate) fn put_connection(&mut self, name: &str, connection: Arc<ConnectionConfig>) {
        self.snap.put_connection(name, connection);
    }

    /// The snapshot, reflecting `revision`.
    pub(crate) fn build(mut self, revision: i64) -> Snapshot<W> {
        self.flush();
        self.snap.revision = revision;
        self.snap
    }

    fn flush(&mut self) {
        if let Some((ns, entries)) = self.group.take() {
            self.snap.namespaces.insert(ns, Ids::from_entries(entries));
        }
    }
}

/// A config entry that was refused, kept for `/admin/config-status`.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// `webhooks/<id>`, `connections/<name>` (files) or the etcd key.
    pub key: String,
    /// Why it was refused; never a secret value.
    pub reason: String,
    /// RFC 3339 UTC.
    pub since: String,
    /// Whether an older good value of this key is still being served.
    pub serving_previous: bool,
}

/// Holds the current snapshot and the bookkeeping both providers share.
///
/// Writers are serialised by the provider that owns the store (one watch task, or one reload at a
/// time); readers never wait.
pub struct Store<W> {
    current: ArcSwap<Snapshot<W>>,
    loaded: AtomicBool,
    rejected: Mutex<BTreeMap<String, Rejection>>,
    /// Counts the snapshots published since the store was created; see [`Store::subscribe`].
    changes: Arc<watch::Sender<u64>>,
}

impl<W> Store<W> {
    /// A store serving `initial`, not yet loaded ([`Store::mark_loaded`], [`Store::replace`]).
    pub fn new(mut initial: Snapshot<W>) -> Self {
        let changes = Arc::new(watch::Sender::new(0));
        initial.changes = Some(changes.clone());
        Self {
            current: ArcSwap::from_pointee(initial),
            loaded: AtomicBool::new(false),
            rejected: Mutex::new(BTreeMap::new()),
            changes,
        }
    }

    /// A receiver told of every snapshot this store publishes ([`Store::update`] and
    /// [`Store::replace`]): its value counts them. The snapshot is published before the count
    /// moves, so after `changed()` returns, [`Store::load`] gives that snapshot or a later one.
    /// Changes in quick succession may wake a receiver once.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The current snapshot. Lock-free and allocation-free.
    pub fn load(&self) -> Guard<Arc<Snapshot<W>>> {
        self.current.load()
    }

    /// Whether a first full load has completed.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Apply `f` to a copy of the current snapshot and publish it.
    pub fn update<R>(&self, f: impl FnOnce(&mut Snapshot<W>) -> R) -> R {
        let mut next = Snapshot::clone(&self.current.load());
        let r = f(&mut next);
        self.current.store(Arc::new(next));
        self.announce();
        r
    }

    /// Publish a complete snapshot (initial load, resync) and mark the store loaded. Returns the
    /// snapshot it replaced, so that a large one can be dropped off the async runtime.
    pub fn replace(&self, mut next: Snapshot<W>) -> Arc<Snapshot<W>> {
        next.changes = Some(self.changes.clone());
        let previous = self.current.swap(Arc::new(next));
        self.loaded.store(true, Ordering::Release);
        self.announce();
        previous
    }

    /// Mark the first full load done, without publishing a snapshot.
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Record a refused entry; logged once per distinct reason.
    pub fn reject(&self, key: &str, reason: String, serving_previous: bool) {
        let mut map = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|r| r.reason == reason) {
            return;
        }
        tracing::warn!(key, %reason, serving_previous, "config entry rejected");
        map.insert(
            key.to_owned(),
            Rejection {
                key: key.to_owned(),
                reason,
                since: now_rfc3339(),
                serving_previous,
            },
        );
    }

    /// Forget a rejection once the key holds a good value again or is deleted.
    pub fn clear_rejection(&self, key: &str) {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Forget every rejection whose key starts with `prefix` (a full reload re-evaluates them).
    pub fn clear_rejections_with_prefix(&self, prefix: &str) {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| !k.starts_with(prefix));
    }

    /// The entries refused now, sorted by key.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Current time as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_namespaces_and_catch_all() {
        let mut s: Snapshot<&str> = Snapshot::empty("default", false);
        s.put_webhook("default", "a", Arc::new("A"));
        s.put_webhook("staging", "a", Arc::new("SA"));
        s.put_webhook("staging", "default", Arc::new("SD"));
        assert_eq!(**s.webhook(None, "a").unwrap(), "A");
        assert_eq!(**s.webhook(Some("staging"), "a").unwrap(), "SA");
        assert_eq!(**s.webhook(Some("staging"), "zzz").unwrap(), "SD");
        assert!(s.webhook(None, "zzz").is_none());
        assert!(s.webhook(Some("nope"), "a").is_none());
        assert_eq!(s.webhook_count(), 3);
        assert_eq!(s.namespaces(), vec!["default", "staging"]);
    }

    #[test]
    fn flat_snapshots_ignore_namespace() {
        let mut s: Snapshot<u8> = Snapshot::empty("default", true);
        s.put_webhook("default", "h", Arc::new(1));
        assert_eq!(**s.webhook(Some("anything"), "h").unwrap(), 1);
    }

    #[test]
    fn empty_namespace_disappears_and_old_snapshots_are_untouched() {
        let store = Store::new(Snapshot::<u8>::empty("default", false));
        store.update(|s| s.put_webhook("ns", "h", Arc::new(1)));
        let before = store.load_full_for_test();
        assert!(store.update(|s| s.remove_webhook("ns", "h")));
        assert_eq!(store.load().namespace_count(), 0);
        assert_eq!(before.webhook_count(), 1);
        assert!(!store.update(|s| s.remove_webhook("ns", "h")));
    }

    impl<W> Store<W> {
        fn load_full_for_test(&self) -> Arc<Snapshot<W>> {
            self.current.load_full()
        }
    }

    #[test]
    fn small_and_large_namespaces_behave_alike() {
        let store = Store::new(Snapshot::<usize>::empty("default", false));
        let n = SMALL_NAMESPACE + 4;
        let mut history = Vec::new();
        for i in 0..n {
            store.update(|s| s.put_webhook("ns", &format!("h{i}"), Arc::new(i)));
            history.push(store.load_full_for_test());
        }
        // Each step saw exactly the webhooks put so far, across the small-to-large switch.
        for (i, snap) in history.iter().enumerate() {
            assert_eq!(snap.webhook_count(), i + 1);
            assert_eq!(
                snap.webhook(Some("ns"), &format!("h{i}")).map(|w| **w),
                Some(i)
            );
            assert!(snap.webhook(Some("ns"), &format!("h{}", i + 1)).is_none());
        }
        for (i, snap) in history.iter().enumerate() {
            let small = matches!(snap.namespaces.get("ns"), Some(Ids::Small(_)));
            assert_eq!(small, i < SMALL_NAMESPACE, "{} webhooks", i + 1);
        }
        // Replace, catch-all, remove, in the large form; then back down to nothing.
        store.update(|s| s.put_webhook("ns", "h0", Arc::new(100)));
        store.update(|s| s.put_webhook("ns", CATCH_ALL_ID, Arc::new(200)));
        let snap = store.load_full_for_test();
        assert_eq!(snap.webhook(Some("ns"), "h0").map(|w| **w), Some(100));
        assert_eq!(snap.webhook(Some("ns"), "nope").map(|w| **w), Some(200));
        assert_eq!(snap.webhooks_in("ns").len(), n + 1);
        for i in 0..n {
            assert!(store.update(|s| s.remove_webhook("ns", &format!("h{i}"))));
        }
        assert!(!store.update(|s| s.remove_webhook("ns", "h0")));
        assert_eq!(
            store.load().webhook(Some("ns"), "h0").map(|w| **w),
            Some(200)
        );
        assert!(store.update(|s| s.remove_webhook("ns", CATCH_ALL_ID)));
        assert_eq!(store.load().namespace_count(), 0);
        assert_eq!(snap.webhook_count(), n + 1, "older snapshots are untouched");
    }

    #[test]
    fn builder_groups_namespaces_in_any_order() {
        let mut b: SnapshotBuilder<u32> = SnapshotBuilder::new("default");
        b.put_webhook("a", "1", Arc::new(1));
        b.put_webhook("a", "2", Arc::new(2));
        b.put_webhook("b", "1", Arc::new(3));
        // Not adjacent, and a repeated id: merged into "a", the last value wins.
        b.put_webhook("a", "3", Arc::new(4));
        b.put_webhook("a", "1", Arc::new(5));
        b.put_connection(
            "c",
            Arc::new(ConnectionConfig {
                kind: "kafka".into(),
                host: None,
                port: None,
                extra: serde_json::Map::new(),
            }),
        );
        let s = b.build(42);
        assert_eq!(s.revision(), 42);
        assert_eq!(s.namespaces(), vec!["a", "b"]);
        assert_eq!(s.webhook_count(), 4);
        assert_eq!(s.connection_count(), 1);
        assert_eq!(**s.webhook_exact("a", "1").unwrap(), 5);
        assert_eq!(**s.webhook_exact("a", "3").unwrap(), 4);
        assert_eq!(**s.webhook_exact("b", "1").unwrap(), 3);
        // The built snapshot is an ordinary one: updates stay per key.
        let store = Store::new(s);
        store.update(|s| s.put_webhook("b", "2", Arc::new(6)));
        assert_eq!(store.load().webhook_count(), 5);
        assert!(
            SnapshotBuilder::<u32>::new("d")
                .build(0)
                .namespaces()
                .is_empty()
        );

        // A namespace over the small size, with a repeated id, built in bulk.
        let mut b: SnapshotBuilder<usize> = SnapshotBuilder::new("default");
        for i in 0..20 {
            b.put_webhook("big", &format!("h{}", i % 15), Arc::new(i));
        }
        let s = b.build(1);
        assert_eq!(s.webhook_count(), 15);
        assert_eq!(s.webhook_exact("big", "h0").map(|w| **w), Some(15));
        assert_eq!(s.webhook_exact("big", "h14").map(|w| **w), Some(14));
    }

    #[test]
    fn subscribers_hear_of_every_published_snapshot() {
        let store = Store::new(Snapshot::<u8>::empty("default", true));
        let mut rx = store.subscribe();
        // The same channel is reachable from any snapshot the store published.
        let mut via_snapshot = store.load().subscribe();
        assert!(!rx.has_changed().unwrap());
        store.update(|s| s.put_webhook("default", "a", Arc::new(1)));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        let mut next = Snapshot::empty("default", true);
        next.put_webhook("default", "b", Arc::new(2));
        store.replace(next);
        assert_eq!(*rx.borrow_and_update(), 2);
        assert_eq!(*via_snapshot.borrow_and_update(), 2);
        // A replaced snapshot carries the channel on.
        let later = store.load().subscribe();
        store.update(|s| s.remove_webhook("default", "b"));
        assert!(later.has_changed().unwrap());
        // A snapshot no store published has a closed channel.
        assert!(
            Snapshot::<u8>::empty("d", true)
                .subscribe()
                .has_changed()
                .is_err()
        );
    }

    #[test]
    fn rejections_are_recorded_once() {
        let store = Store::new(Snapshot::<u8>::empty("default", false));
        store.reject("k", "bad".into(), false);
        store.reject("k", "bad".into(), false);
        assert_eq!(store.rejections().len(), 1);
        store.clear_rejection("k");
        assert!(store.rejections().is_empty());
    }
}
