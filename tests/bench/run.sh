#!/usr/bin/env bash
# `make bench`: every benchmark, figures printed. Timings are compared within one run, never asserted.
set -euo pipefail
cd "$(dirname "$0")"
bash http.sh
bash edge.sh
bash auth.sh
bash etcd.sh
bash redis.sh
bash kafka.sh
bash connect.sh
