//! What one etcd watch event costs on a 250,000-webhook snapshot, and what a lookup costs.
//!
//! `cargo bench -p cwm-benches --bench snapshot` (tests/bench/etcd.sh runs it as part of
//! `make bench`). Figures are printed, never asserted.
//!
//! * `watch_event/put_webhook_250k`: `Store::update` with `Snapshot::put_webhook`, replacing one
//!   existing webhook: the snapshot part of a watch event (clone the snapshot roots, copy the path
//!   to the key, publish with one `ArcSwap::store`, drop the superseded path).
//! * `watch_event/remove_webhook_250k`: `Store::update` with `Snapshot::remove_webhook` (only the
//!   removal is timed; the key is put back untimed so the map keeps 250,000 entries).
//! * `watch_event/full_put_250k`: the whole put path of `EtcdProvider`'s watch task for one event,
//!   without etcd, through public APIs only: `keys::parse_key`, `compile_webhook_json` (the JSON
//!   text read straight into the typed config, then compiled) with the receiver's real compiler
//!   (`cwm_modules::Registry`, `log` module), `Store::update(put_webhook)`,
//!   `Store::clear_rejection`, plus the provider's private revision tracker, re-created here as
//!   the same `HashMap<Box<[u8]>, (kind, i64)>` of 250,000 keys.
//! * `lookup/*`: `Store::load()` + `Snapshot::webhook(Some(ns), id)`, as the request path does:
//!   `hit_250k` walks the keys in a scattered order (mostly cache misses on a 250k map),
//!   `hit_hot_250k` repeats one key, `miss_250k` asks for an unknown id (the catch-all is tried).
//!   The lookup allocates nothing: `lookup_allocs.rs` counts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cwm_config::keys::{KeyRef, parse_key, webhook_key};
use cwm_config::{ProcessEnv, Snapshot, Store, compile_webhook_json};
use cwm_modules::{ModuleContext, Registry};

const NAMESPACES: usize = 50_000;
const PER_NAMESPACE: usize = 5;
const PREFIX: &str = "/cwm/";

fn ns(i: usize) -> String {
    format!("ns{i:05}")
}

fn hook(j: usize) -> String {
    format!("hook{}", j + 1)
}

/// Every (namespace, id) of the 250k layout, in a scattered order so consecutive iterations do
/// not walk neighbouring trie paths.
fn keys() -> Vec<(String, String)> {
    let n = NAMESPACES * PER_NAMESPACE;
    // 7919 is prime and does not divide n: a permutation of 0..n.
    (0..n)
        .map(|k| (k * 7919) % n)
        .map(|k| (ns(k / PER_NAMESPACE), hook(k % PER_NAMESPACE)))
        .collect()
}

/// A realistic etcd value, about 250 bytes (the same shape `etcd_bench` seeds).
fn value(ns: &str, id: &str) -> String {
    format!(
        concat!(
            r#"{{"data_type":"json","module":"log","#,
            r#""module-config":{{"pretty_print":false,"redact_sensitive":true}},"#,
            r#""authorization":"Bearer tok-{ns}-{id}-5f2c9a7e","ack":"delivery","#,
            r#""retry":{{"enabled":true,"max_attempts":3,"initial_delay":1,"max_delay":30}},"#,
            r#""description":"orders events for {ns}/{id}"}}"#
        ),
        ns = ns,
        id = id
    )
}

/// A store holding all 250k webhooks. Every entry shares one value: what a put costs does not
/// depend on the value, and building 250k real sinks would only slow the setup.
fn store_250k<W>(w: Arc<W>) -> Store<W> {
    let mut snap = Snapshot::empty("default", false);
    for i in 0..NAMESPACES {
        let n = ns(i);
        for j in 0..PER_NAMESPACE {
            snap.put_webhook(&n, &hook(j), w.clone());
        }
    }
    let store = Store::new(snap);
    store.mark_loaded();
    store
}

fn registry() -> Registry {
    Registry::with_builtin_sinks(ModuleContext::new())
}

fn watch_event(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("watch_event");

    let store = store_250k(Arc::new(0u64));
    assert_eq!(store.load().webhook_count(), 250_000);
    let w = Arc::new(1u64);
    let mut i = 0usize;
    g.bench_function("put_webhook_250k", |b| {
        b.iter(|| {
            let (n, id) = &keys[i % keys.len()];
            i += 1;
            store.update(|s| s.put_webhook(black_box(n), black_box(id), w.clone()));
        });
    });

    let mut i = 0usize;
    g.bench_function("remove_webhook_250k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (n, id) = &keys[i % keys.len()];
                i += 1;
                let t = Instant::now();
                let existed = store.update(|s| s.remove_webhook(black_box(n), black_box(id)));
                total += t.elapsed();
                assert!(existed);
                store.update(|s| s.put_webhook(n, id, w.clone()));
            }
            total
        });
    });
    drop(store);

    // The full put path. 4096 distinct events, cycled.
    let registry = registry();
    let env = ProcessEnv;
    let events: Vec<(Vec<u8>, Vec<u8>)> = keys
        .iter()
        .take(4096)
        .map(|(n, id)| {
            (
                webhook_key(PREFIX, n, id).into_bytes(),
                value(n, id).into_bytes(),
            )
        })
        .collect();
    let template = {
        let (n, id) = &keys[0];
        Arc::new(compile_webhook_json(&registry, &env, id, value(n, id).as_bytes()).unwrap())
    };
    let store = store_250k(template);
    let mut tracker: HashMap<Box<[u8]>, (u8, i64)> = keys
        .iter()
        .map(|(n, id)| (webhook_key(PREFIX, n, id).into_bytes().into(), (0, 1)))
        .collect();
    let mut i = 0usize;
    let mut revision = 2i64;
    g.bench_function("full_put_250k", |b| {
        b.iter(|| {
            let (key, val) = &events[i % events.len()];
            i += 1;
            revision += 1;
            let Ok(KeyRef::Webhook { namespace, id }) = parse_key(PREFIX, black_box(key)) else {
                unreachable!("bench keys are webhook keys");
            };
            let compiled = compile_webhook_json(&registry, &env, id, black_box(val)).unwrap();
            tracker.insert(key.as_slice().into(), (0, revision));
            store.update(|s| {
                s.put_webhook(namespace, id, Arc::new(compiled));
                s.set_revision(revision);
            });
            store.clear_rejection(&String::from_utf8_lossy(key));
        });
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let store = store_250k(Arc::new(0u64));
    let mut g = c.benchmark_group("lookup");
    let mut i = 0usize;
    g.bench_function("hit_250k", |b| {
        b.iter(|| {
            let (n, id) = &keys[i % keys.len()];
            i += 1;
            let snap = store.load();
            black_box(snap.webhook(Some(black_box(n)), black_box(id)).is_some())
        });
    });
    // One key over and over: the CPU cost without cache misses (a hot webhook).
    g.bench_function("hit_hot_250k", |b| {
        let (n, id) = &keys[0];
        b.iter(|| {
            let snap = store.load();
            black_box(snap.webhook(Some(black_box(n)), black_box(id)).is_some())
        });
    });
    let mut i = 0usize;
    g.bench_function("miss_250k", |b| {
        // A known namespace, an unknown id: the lookup also tries the catch-all `default`.
        b.iter(|| {
            let (n, _) = &keys[i % keys.len()];
            i += 1;
            let snap = store.load();
            black_box(
                snap.webhook(Some(black_box(n)), black_box("nope"))
                    .is_some(),
            )
        });
    });
    g.finish();
}

fn config() -> Criterion {
    // Short runs: `make bench` must stay quick on a shared 2-core machine.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = watch_event, lookup
}
criterion_main!(benches);
