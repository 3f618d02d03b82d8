//! Counts the heap allocations of the request path's lookup, `Store::load()` +
//! `Snapshot::webhook(Some(ns), id)`, on a 250,000-webhook store, and prints them (expected: 0).
//!
//! A separate bench target because the counting global allocator (allocation-counter) would slow
//! every allocation of the timed benchmarks in `snapshot.rs`.
//!
//! `cargo bench -p cwm-benches --bench lookup_allocs`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use cwm_config::{Snapshot, Store};

fn main() {
    let mut snap = Snapshot::empty("default", false);
    let mut keys = Vec::new();
    for i in 0..50_000 {
        let ns = format!("ns{i:05}");
        for j in 1..=5 {
            let id = format!("hook{j}");
            snap.put_webhook(&ns, &id, Arc::new(i * 5 + j));
            keys.push((ns.clone(), id));
        }
    }
    let store = Store::new(snap);
    // The first load on a thread registers it with arc-swap (a one-time allocation); warm up
    // outside the measurement, as a long-running worker thread would be.
    black_box(store.load().webhook(Some("ns00000"), "hook1").is_some());

    let lookups = keys.len() as u64;
    let mut found = 0u64;
    let hits = allocation_counter::measure(|| {
        for (ns, id) in &keys {
            let snap = store.load();
            found += u64::from(snap.webhook(Some(black_box(ns)), black_box(id)).is_some());
        }
    });
    let misses = allocation_counter::measure(|| {
        for (ns, _) in &keys {
            let snap = store.load();
            found += u64::from(
                snap.webhook(Some(black_box(ns)), black_box("nope"))
                    .is_some(),
            );
        }
    });
    assert_eq!(found, lookups, "every seeded key is found, no miss is");
    // The counter is live (a zero above is not vacuous): one owned key allocates once.
    let control = allocation_counter::measure(|| {
        black_box(black_box("ns00000").to_owned());
    });
    assert_eq!(
        control.count_total, 1,
        "the counting allocator is not active"
    );
    println!(
        "lookup allocations: {} over {lookups} hits, {} over {lookups} misses (catch-all tried); \
         target 0",
        hits.count_total, misses.count_total
    );
}
