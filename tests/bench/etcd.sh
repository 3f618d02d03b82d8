#!/usr/bin/env bash
# etcd benchmarks (issue: etcd backend). Figures are printed next to their targets, never asserted.
#  1. tests/examples/etcd_bench.rs: a private etcd, 25,000 then 250,000 seeded webhook keys, the
#     release cwm-receiver started against it: start-to-serving time and RSS, then the latency from
#     an acknowledged put to the new webhook being served (p50/p99 over 300 puts).
#  2. benches/ (package cwm-benches): criterion timings of one watch event applied to a 250,000-key
#     snapshot (snapshot part and full parse+compile+update path) and of a lookup; plus an
#     allocation count of the lookup.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Two builds: `--example` selects only the example, so the receiver binary it starts is built first.
cargo build --release --locked -q -p cwm-receiver
cargo build --release --locked -q -p cwm-tests --example etcd_bench
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/release/examples/etcd_bench"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo
echo "== cwm-benches: cwm-config snapshot benchmarks (criterion, 250,000 webhooks) =="
cargo bench --locked -q -p cwm-benches --bench lookup_allocs
# Criterion's own report goes to a file; a summary follows. CRITERION_HOME keeps its data out of
# target/ so no stale baseline is compared against.
CRITERION_HOME="$work/criterion" cargo bench --locked -q -p cwm-benches --bench snapshot \
  >"$work/criterion.out" 2>&1 || { cat "$work/criterion.out"; exit 1; }
python3 - "$work/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
rows = [
    ("watch_event/put_webhook_250k", "Store::update + put_webhook (one watch event, snapshot part)", "< 50 us"),
    ("watch_event/remove_webhook_250k", "Store::update + remove_webhook", "< 50 us"),
    ("watch_event/full_put_250k", "full put event: parse key + JSON + compile (log) + update", "< 50 us"),
    ("lookup/hit_250k", "Store::load + webhook(Some(ns), id), scattered keys", "no lock, no alloc"),
    ("lookup/hit_hot_250k", "same, one hot key", "no lock, no alloc"),
    ("lookup/miss_250k", "unknown id (catch-all tried too)", "no lock, no alloc"),
]
def fmt(ns):
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"
print(f"{'benchmark':<34}{'median':>10}{'95% CI of mean':>24}   {'target':<18} what")
for name, what, target in rows:
    path = os.path.join(root, name, "new", "estimates.json")
    if not os.path.exists(path):
        print(f"{name:<34}{'missing':>10}")
        continue
    e = json.load(open(path))
    med = e["median"]["point_estimate"]
    ci = e["mean"]["confidence_interval"]
    print(f"{name:<34}{fmt(med):>10}{fmt(ci['lower_bound']) + ' .. ' + fmt(ci['upper_bound']):>24}   {target:<18} {what}")
PY
