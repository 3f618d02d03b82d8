#!/usr/bin/env bash
# Webhook Connect benchmark: events per second and latency from the sender's 200 to the local
# target, through a Redis buffer and one WebSocket connector, at a fixed rate (RATE, default
# 1000/s) and at full speed (CONCURRENCY senders, default 64), SECONDS each (default 10). The
# `connect_bench` example starts Redis, the release receiver and connector, and the target.
# Prints figures; asserts nothing.
set -euo pipefail
source "$(dirname "$0")/common.sh"

cargo build --release --locked -q -p cwm-receiver -p cwm-connector-bin
cargo build --release --locked -q -p cwm-tests --example connect_bench
"$target_dir/release/examples/connect_bench"
