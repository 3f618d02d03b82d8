#!/usr/bin/env bash
# Edge benchmark (issue: hardening the HTTP edge): slowloris and idle-connection flood against the
# default limits, and 10 s of requests to random webhook ids. Prints figures, asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p cwm-receiver
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 tests/bench/edge.py "$target_dir/release/cwm-receiver" "$work"
