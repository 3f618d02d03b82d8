//! The background task: sessions of list-then-watch, resyncs and backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use etcd_client::EventType;
use tokio::sync::mpsc;

use super::build::{BuildTask, Built, Entry, Kind, Tracker};
use super::client::Failure;
use super::io::{EtcdIo, Kv, Session, WatchEvent, WatchEvents};
use super::listing::Listing;
use super::settings::EtcdSettings;
use super::{Cmd, ReloadReply, STATE_DISCONNECTED, STATE_HEALTHY, Shared};
use crate::error::ConfigError;
use crate::keys::{KeyRef, parse_key};
use crate::provider::{Compiler, ReloadReport, ReloadRequest};
use crate::secrets::Secrets;
use crate::snapshot::{Snapshot, now_rfc3339};

pub(crate) fn new_backoff(settings: &EtcdSettings) -> ExponentialBackoff {
    ExponentialBackoff {
        current_interval: settings.reconnect_initial,
        initial_interval: settings.reconnect_initial,
        randomization_factor: 0.1,
        multiplier: 2.0,
        max_interval: settings.reconnect_max,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// How a watch ended without a connection failure: list again with the same client.
struct Relist(&'static str);

/// The background task's state. Owned by the task alone: no locks on the event path.
pub(crate) struct Worker<C: Compiler, B> {
    /// How etcd is reached (the real client, or a fake in unit tests).
    pub(crate) io: B,
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) cmds: mpsc::Receiver<Cmd>,
    pub(crate) backoff: ExponentialBackoff,
    /// Mod revision and kind of every recognised key currently in etcd (valid or not), to count
    /// added, removed and modified keys of a re-list. Shared (read-only) with the thread that
    /// builds the next listing; the watch changes it copy-on-write, which never copies in
    /// practice because no listing runs while watching.
    pub(crate) tracker: Arc<Tracker>,
    /// Admin reloads waiting for the next full listing.
    pub(crate) waiting: Vec<(ReloadRequest, ReloadReply)>,
    /// Why the next full listing happens; `None` for the first load.
    pub(crate) next_reason: Option<&'static str>,
    /// Highest revision seen from etcd; a lower one means etcd was restored or wiped.
    pub(crate) last_seen: i64,
    /// Whether an auth failure may rebuild the client without waiting (once per good listing).
    pub(crate) auth_retry: bool,
}

impl<C: Compiler, B: EtcdIo> Worker<C, B> {
    /// Sessions forever; only the stop signal (or an abort) ends the task.
    pub(crate) async fn run(mut self) {
        loop {
            let failure = match self.io.connect(&self.shared.settings).await {
                Ok(client) => {
                    let failure = self.session(&client).await;
                    // The client (and any stream on it) is dropped here, before a new one exists.
                    drop(client);
                    failure
                }
                // Authentication happens while connecting: a transport failure is possible.
                Err(ConfigError::Etcd(message)) => Failure {
                    transport: true,
                    ..Failure::other(message)
                },
                Err(e) => Failure::other(e.to_string()),
            };
            let auth = failure.auth;
            let mut message = failure.message;
            if failure.transport
                && let Some(hint) = self.io.tls_hint(&self.shared.settings).await
            {
                message = format!("{message}; {hint}");
            }
            let message = self.shared.settings.redact(message);
            let loaded = self.shared.store.is_loaded();
            if loaded {
                self.shared.set_state(STATE_DISCONNECTED);
                self.next_reason = Some(if auth { "auth" } else { "reconnect" });
            }
            self.shared.record_error(&message);
            if auth && self.auth_retry {
                // An expired token: a new client authenticates afresh. Pending admin reloads are
                // served by that attempt.
                self.auth_retry = false;
                tracing::warn!(error = %message, "etcd auth token refused; authenticating again");
                continue;
            }
            for (_, reply) in self.waiting.drain(..) {
                let _ = reply.send(Err(message.clone()));
            }
            let delay = self
                .backoff
                .next_backoff()
                .unwrap_or(self.shared.settings.reconnect_max)
                .min(self.shared.settings.reconnect_max);
            if loaded {
                tracing::warn!(error = %message, retry_in = ?delay, "etcd unavailable; serving the last configuration");
            } else {
                tracing::warn!(error = %message, retry_in = ?delay, "etcd unavailable; no configuration loaded yet");
            }
            self.pause(delay).await;
        }
    }

    /// Wait `delay`, or less when an admin reload asks for an attempt now.
    async fn pause(&mut self, delay: Duration) {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => {}
            cmd = self.cmds.recv() => match cmd {
                Some(Cmd::Reload(request, reply)) => self.waiting.push((request, reply)),
                None => sleep.await,
            },
        }
    }

    /// List, then watch; list again on resync triggers. Returns only on a failure.
    async fn session(&mut self, client: &B::Session) -> Failure {
        loop {
            let started = Instant::now();
            let built = match self.list(client).await {
                Ok(built) => built,
                Err(failure) => return failure,
            };
            let revision = built.revision;
            let mut reason = self.next_reason.take();
            if self.shared.store.is_loaded() && revision < self.last_seen {
                tracing::warn!(
                    revision,
                    last_seen = self.last_seen,
                    "etcd revision went backwards (restored or wiped)"
                );
                reason = Some("revision_regressed");
            }
            let report = self.apply_full(built, reason, started);
            self.last_seen = revision;
            self.auth_retry = true;
            for (request, reply) in self.waiting.drain(..) {
                let _ = reply.send(Ok(ReloadReport {
                    webhooks: request.webhooks.then(|| report.webhooks.clone()).flatten(),
                    connections: request
                        .connections
                        .then(|| report.connections.clone())
                        .flatten(),
                }));
            }
            match self.watch(client, revision).await {
                Ok(Relist(reason)) => self.next_reason = Some(reason),
                Err(failure) => return failure,
            }
        }
    }

    /// Watch from `listed + 1` until a resync trigger (`Ok`) or a failure (`Err`).
    async fn watch(&mut self, client: &B::Session, listed: i64) -> Result<Relist, Failure> {
        let settings = &self.shared.settings;
        let mut stream = match tokio::time::timeout(
            settings.request_timeout,
            client.watch(settings.prefix.as_bytes(), listed + 1),
        )
        .await
        {
            Err(_) => return Err(Failure::other("creating the watch timed out")),
            Ok(Err(failure)) => return Err(failure),
            Ok(Ok(stream)) => stream,
        };
        let confirm_by = tokio::time::Instant::now() + settings.request_timeout;
        let mut confirmed = false;
        loop {
            let resp = tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Reload(request, reply)) => {
                        self.waiting.push((request, reply));
                        return Ok(Relist("admin"));
                    }
                    // The handle is gone; the stop signal ends the task.
                    None => std::future::pending().await,
                },
                () = tokio::time::sleep_until(confirm_by), if !confirmed => {
                    return Err(Failure::other("etcd did not confirm the watch in time"));
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Err(Failure::other("the watch stream ended")),
                    Err(failure) => return Err(failure),
                },
            };
            if resp.created && !confirmed {
                confirmed = true;
                self.shared.set_state(STATE_HEALTHY);
                self.shared.info().last_error = None;
                self.backoff.reset();
                tracing::debug!(from_revision = listed + 1, "etcd watch established");
            }
            if resp.compact_revision != 0 {
                tracing::warn!(
                    compact_revision = resp.compact_revision,
                    applied = self.shared.store.load().revision(),
                    "etcd watch cancelled by compaction; resyncing"
                );
                return Ok(Relist("compacted"));
            }
            if resp.canceled {
                let why = &resp.cancel_reason;
                return Err(Failure {
                    auth: why.contains("permission denied") || why.contains("auth token"),
                    message: format!("etcd cancelled the watch: {why}"),
                    transport: false,
                });
            }
            // A follower's header may lag the linearizable listing a little, so headers only
            // raise `last_seen`; going backwards is judged on listings and events.
            if let Some(revision) = resp.header_revision {
                self.last_seen = self.last_seen.max(revision);
            }
            if resp.events.is_empty() {
                continue;
            }
            // Vault references of the values put are fetched before the events are applied.
            let secrets = self
                .shared
                .prefetch(
                    resp.events
                        .iter()
                        .filter(|e| matches!(e.kind, EventType::Put))
                        .filter_map(|e| e.kv.as_ref())
                        .map(|kv| kv.value.as_slice()),
                )
                .await;
            if let Some(reason) = self.apply_events(&resp.events, listed, secrets.as_ref()) {
                return Ok(Relist(reason));
            }
        }
    }

    /// List the whole prefix and build the next snapshot from it, without publishing anything.
    ///
    /// Pages are parsed, compiled and put into the snapshot on a blocking thread while the next
    /// page is on its way from etcd (at most [`super::build::PAGES_QUEUED`] page waits in between); the async
    /// runtime only receives pages.
    async fn list(&self, client: &B::Session) -> Result<Built<C::Webhook>, Failure> {
        let settings = &self.shared.settings;
        let mut listing = Listing::new(
            client.reader(),
            settings.prefix.as_bytes(),
            settings.page_size,
            settings.request_timeout,
        );
        let started = Instant::now();
        self.sync_connections_first(client).await?;
        let mut builder = BuildTask::spawn(&self.shared, &self.tracker);
        let mut pages = 0usize;
        while let Some(page) = listing.next().await? {
            pages = if page.restarted { 1 } else { pages + 1 };
            if page.restarted {
                // The old builder stops after the page at hand; its work is dropped.
                builder = BuildTask::spawn(&self.shared, &self.tracker);
            }
            let secrets = self
                .shared
                .prefetch(page.kvs.iter().map(|kv| kv.value.as_slice()))
                .await;
            builder.send(page, secrets).await?;
        }
        let listed = started.elapsed();
        let mut built = builder.finish().await?;
        built.pages = pages;
        built.listed = listed;
        Ok(built)
    }

    /// Hand the compiler the connections before the listing compiles webhooks against them
    /// (keys are listed in order, and `global/connections/` sorts among the namespaces). A
    /// connection that changes between this read and the listing is corrected when the listing
    /// is published.
    async fn sync_connections_first(&self, client: &B::Session) -> Result<(), Failure> {
        let settings = &self.shared.settings;
        let prefix = crate::keys::connection_key(&settings.prefix, "");
        let kvs = tokio::time::timeout(
            settings.request_timeout,
            client.read_prefix(prefix.as_bytes()),
        )
        .await
        .map_err(|_| Failure::other("reading the connections timed out"))??;
        let secrets = self
            .shared
            .prefetch(kvs.iter().map(|kv| kv.value.as_slice()))
            .await;
        let mut connections = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            if let Entry::Connection {
                name,
                result: Ok(c),
            } = self.shared.evaluate(&kv.key, &kv.value, secrets.as_ref())
            {
                connections.push((Arc::from(name), Arc::new(c)));
            }
        }
        self.shared.compiler.sync_connections(&connections);
        Ok(())
    }

    /// Publish a complete listing with [`Store::replace`]. A key present with an invalid
    /// value keeps its previous good value; keys no longer present disappear.
    fn apply_full(
        &mut self,
        built: Built<C::Webhook>,
        reason: Option<&'static str>,
        started: Instant,
    ) -> ReloadReport {
        let shared = &*self.shared;
        let store = &shared.store;
        let mut rejected: HashSet<String> = HashSet::with_capacity(built.rejected.len());
        for (key, why, serving_previous) in built.rejected {
            store.reject(&key, why, serving_previous);
            rejected.insert(key);
        }
        for r in store.rejections() {
            if !rejected.contains(&r.key) {
                store.clear_rejection(&r.key);
            }
        }
        let namespaces = built.snapshot.namespace_count();
        shared
            .compiler
            .sync_connections(&built.snapshot.connections());
        let superseded = store.replace(built.snapshot);
        let old_tracker = std::mem::replace(&mut self.tracker, Arc::new(built.tracker));
        // The superseded snapshot and tracker hold every key of the previous listing: free them
        // off the runtime (readers may still hold the snapshot; the last one frees it).
        tokio::task::spawn_blocking(move || drop((superseded, old_tracker)));
        shared.loaded.send_replace(true);
        shared.info().last_reload = Some(now_rfc3339());
        if let Some(reason) = reason {
            shared.record_resync(reason);
        }
        let (webhooks, connections) = (built.webhooks, built.connections);
        tracing::info!(
            reason = reason.unwrap_or("initial"),
            revision = built.revision,
            keys = built.keys,
            namespaces,
            webhooks = webhooks.total,
            connections = connections.total,
            rejected = webhooks.rejected + connections.rejected,
            ignored = built.ignored,
            pages = built.pages,
            listed_ms = built.listed.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "etcd configuration loaded"
        );
        ReloadReport {
            webhooks: Some(webhooks),
            connections: Some(connections),
        }
    }

    /// Apply one watch response with a single [`Store::update`]. Events at or below the
    /// listing revision are already reflected and skipped. Returns why the whole prefix must be
    /// listed again instead:
    /// - `revision_regressed` (nothing applied): an event is older than what the snapshot
    ///   reflects (etcd went backwards);
    /// - `connection_changed`: a connection that rejected webhooks name was added or changed, so
    ///   those webhooks are compiled again.
    ///
    /// Connection events are applied before webhook events, and the compiler sees the new set of
    /// connections before any webhook of the response is compiled.
    fn apply_events(
        &mut self,
        events: &[WatchEvent],
        listed: i64,
        secrets: Option<&Secrets>,
    ) -> Option<&'static str> {
        let shared = &*self.shared;
        let applied = shared.store.load().revision();
        if events
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .any(|kv| kv.mod_revision < applied)
        {
            tracing::warn!(
                applied,
                "etcd sent an event older than the snapshot; resyncing"
            );
            return Some("revision_regressed");
        }
        let prefix = shared.settings.prefix.as_str();
        let is_connection = |e: &&WatchEvent| {
            e.kv.as_ref().is_some_and(|kv| {
                matches!(parse_key(prefix, &kv.key), Ok(KeyRef::Connection { .. }))
            })
        };
        let changed: Vec<String> = events
            .iter()
            .filter(is_connection)
            .filter_map(|e| e.kv.as_ref().filter(|kv| kv.mod_revision > listed))
            .filter_map(|kv| match parse_key(prefix, &kv.key) {
                Ok(KeyRef::Connection { name }) => Some(name.to_owned()),
                _ => None,
            })
            .collect();
        let ordered = events
            .iter()
            .filter(is_connection)
            .chain(events.iter().filter(|e| !is_connection(e)));
        let tracker = Arc::make_mut(&mut self.tracker);
        shared.store.update(|snap| {
            let mut revision = snap.revision();
            let mut synced = changed.is_empty();
            for event in ordered {
                let Some(kv) = &event.kv else { continue };
                if kv.mod_revision <= listed {
                    continue;
                }
                if !synced && !is_connection(&event) {
                    shared.compiler.sync_connections(&snap.connections());
                    synced = true;
                }
                revision = revision.max(kv.mod_revision);
                let key = &kv.key;
                match event.kind {
                    EventType::Put => Self::put_event(shared, tracker, snap, kv, secrets),
                    EventType::Delete => Self::delete_event(shared, tracker, snap, key),
                }
            }
            if !synced {
                shared.compiler.sync_connections(&snap.connections());
            }
            snap.set_revision(revision);
        });
        if let Some(last) = events.iter().filter_map(|e| e.kv.as_ref()).next_back() {
            self.last_seen = self.last_seen.max(last.mod_revision);
        }
        let waiting = |name: &str| {
            let needle = format!("connection '{name}'");
            shared
                .store
                .rejections()
                .iter()
                .any(|r| r.key.contains("/webhooks/") && r.reason.contains(&needle))
        };
        if changed.iter().any(|name| waiting(name)) {
            tracing::info!("a connection that rejected webhooks name changed; resyncing");
            return Some("connection_changed");
        }
        None
    }

    fn put_event(
        shared: &Shared<C>,
        tracker: &mut Tracker,
        snap: &mut Snapshot<C::Webhook>,
        kv: &Kv,
        secrets: Option<&Secrets>,
    ) {
        let key = &kv.key;
        let store = &shared.store;
        match shared.evaluate(key, &kv.value, secrets) {
            Entry::Ignored => {
                tracing::debug!(key = %String::from_utf8_lossy(key), "ignoring key outside the layout");
            }
            Entry::BadKey(reason) => store.reject(&Shared::<C>::rejection_key(key), reason, false),
            Entry::Webhook {
                namespace,
                id,
                result,
            } => {
                tracker.insert(key.as_slice().into(), (Kind::Webhook, kv.mod_revision));
                match result {
                    Ok(w) => {
                        snap.put_webhook(namespace, id, Arc::new(w));
                        store.clear_rejection(&Shared::<C>::rejection_key(key));
                        tracing::debug!(namespace, id, "webhook updated from etcd");
                    }
                    Err(reason) => {
                        let serving = snap.webhook_exact(namespace, id).is_some();
                        store.reject(&Shared::<C>::rejection_key(key), reason, serving);
                    }
                }
            }
            Entry::Connection { name, result } => {
                tracker.insert(key.as_slice().into(), (Kind::Connection, kv.mod_revision));
                match result {
                    Ok(c) => {
                        snap.put_connection(name, Arc::new(c));
                        store.clear_rejection(&Shared::<C>::rejection_key(key));
                        tracing::debug!(name, "connection updated from etcd");
                    }
                    Err(reason) => {
                        let serving = snap.connection(name).is_some();
                        store.reject(&Shared::<C>::rejection_key(key), reason, serving);
                    }
                }
            }
        }
    }

    fn delete_event(
        shared: &Shared<C>,
        tracker: &mut Tracker,
        snap: &mut Snapshot<C::Webhook>,
        key: &[u8],
    ) {
        tracker.remove(key);
        match parse_key(&shared.settings.prefix, key) {
            Ok(KeyRef::Webhook { namespace, id }) => {
                snap.remove_webhook(namespace, id);
                tracing::debug!(namespace, id, "webhook deleted in etcd");
            }
            Ok(KeyRef::Connection { name }) => {
                snap.remove_connection(name);
                tracing::debug!(name, "connection deleted in etcd");
            }
            Err(_) => {}
        }
        shared
            .store
            .clear_rejection(&Shared::<C>::rejection_key(key));
    }
}
