//! Immutable configuration snapshots and the store that swaps them.
//!
//! A [`Snapshot`] is a persistent (hash array mapped trie) map of namespace to webhooks plus the
//! global connections. Changing one key copies only the path to that key, O(log n), and shares the
//! rest with the previous snapshot, so the etcd watch applies an event without copying 250,000
//! entries. Readers load the current snapshot from an [`ArcSwap`]: no lock, no allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use serde::Serialize;

use crate::model::ConnectionConfig;

type Ids<W> = imbl::HashMap<Arc<str>, Arc<W>>;

/// The webhook id that catches unknown ids in its namespace (upstream compatible).
pub const CATCH_ALL_ID: &str = "default";

/// One consistent view of the configuration. `W` is the compiled webhook type.
pub struct Snapshot<W> {
    default_namespace: Arc<str>,
    flat: bool,
    namespaces: imbl::HashMap<Arc<str>, Ids<W>>,
    connections: imbl::HashMap<Arc<str>, Arc<ConnectionConfig>>,
    revision: i64,
}

impl<W> Clone for Snapshot<W> {
    fn clone(&self) -> Self {
        Self {
            default_namespace: self.default_namespace.clone(),
            flat: self.flat,
            namespaces: self.namespaces.clone(),
            connections: self.connections.clone(),
            revision: self.revision,
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

    /// Exact lookup, without the catch-all.
    pub fn webhook_exact(&self, namespace: &str, id: &str) -> Option<&Arc<W>> {
        self.namespaces.get(namespace)?.get(id)
    }

    pub fn connection(&self, name: &str) -> Option<&Arc<ConnectionConfig>> {
        self.connections.get(name)
    }

    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The etcd revision this snapshot reflects (0 for files).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    pub fn webhook_count(&self) -> usize {
        self.namespaces.values().map(imbl::HashMap::len).sum()
    }

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
            .map(|ids| ids.iter().map(|(k, w)| (k.clone(), w.clone())).collect())
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

    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    pub fn put_webhook(&mut self, namespace: &str, id: &str, webhook: Arc<W>) {
        let mut ids = self.namespaces.get(namespace).cloned().unwrap_or_default();
        ids.insert(id.into(), webhook);
        self.namespaces.insert(namespace.into(), ids);
    }

    /// Remove a webhook; a namespace left empty disappears. Returns whether it existed.
    pub fn remove_webhook(&mut self, namespace: &str, id: &str) -> bool {
        let Some(ids) = self.namespaces.get(namespace) else {
            return false;
        };
        let mut ids = ids.clone();
        let existed = ids.remove(id).is_some();
        if ids.is_empty() {
            self.namespaces.remove(namespace);
        } else if existed {
            self.namespaces.insert(namespace.into(), ids);
        }
        existed
    }

    pub fn put_connection(&mut self, name: &str, connection: Arc<ConnectionConfig>) {
        self.connections.insert(name.into(), connection);
    }

    pub fn remove_connection(&mut self, name: &str) -> bool {
        self.connections.remove(name).is_some()
    }

    /// Replace all webhooks of every namespace at once.
    pub fn clear_webhooks(&mut self) {
        self.namespaces = imbl::HashMap::new();
    }

    pub fn clear_connections(&mut self) {
        self.connections = imbl::HashMap::new();
    }
}

/// A config entry that was refused, kept for `/admin/config-status`.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub key: String,
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
}

impl<W> Store<W> {
    pub fn new(initial: Snapshot<W>) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            loaded: AtomicBool::new(false),
            rejected: Mutex::new(BTreeMap::new()),
        }
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
        r
    }

    /// Publish a complete snapshot (initial load, resync) and mark the store loaded.
    pub fn replace(&self, next: Snapshot<W>) {
        self.current.store(Arc::new(next));
        self.loaded.store(true, Ordering::Release);
    }

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
    fn rejections_are_recorded_once() {
        let store = Store::new(Snapshot::<u8>::empty("default", false));
        store.reject("k", "bad".into(), false);
        store.reject("k", "bad".into(), false);
        assert_eq!(store.rejections().len(), 1);
        store.clear_rejection("k");
        assert!(store.rejections().is_empty());
    }
}
