#!/usr/bin/env bash
# Run scenario 05 (etcd namespaces) without Docker: a throwaway etcd and the debug cwm-receiver on
# free loopback ports, then the same seed_etcd.sh and run_test.sh the Docker scenario uses.
# Everything (both processes, the temp dir) is removed on exit. Exit code: run_test.sh's, or 1 if
# the scenario could not be set up.
#
# Needs etcd, etcdctl (Debian: etcd-server, etcd-client) and curl; `make deps-test` installs them.
# Run from anywhere; `make scenario` runs it after `make build`.
#
# Environment: CWM_RECEIVER_BIN (default target/debug/cwm-receiver, built if missing),
# CARGO_TARGET_DIR, KEEP_SCENARIO_DIR=1 to keep the logs and etcd data after the run.
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCENARIO_DIR}/../../.." && pwd)"
# shellcheck source=../lib/local.sh
source "${SCENARIO_DIR}/../lib/local.sh"
NAMESPACE=ns_alpha # ETCD_NAMESPACE, as in docker-compose.yaml; run_test.sh relies on it

need_commands "etcd|etcd (Debian package etcd-server)" "etcdctl|etcdctl (Debian package etcd-client)" \
  "curl|curl (Debian package curl)"

RECEIVER_BIN="${CWM_RECEIVER_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/cwm-receiver}"
build_if_missing "${RECEIVER_BIN}" -p cwm-receiver

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-scenario05.XXXXXX")"
LOG_FILES=("${WORK}/receiver.err" "${WORK}/etcd.log")

local_traps

# receiver_exec: exec cwm-receiver with CONFIG_BACKEND=etcd on RX_PORT; start_receiver runs it in
# the temp dir (so no stray .env or JSON files are read) and waits for /health 200 (first full
# load from etcd).
receiver_exec() {
  exec_receiver_etcd ETCD_NAMESPACE="${NAMESPACE}"
}

START_MS="$(now_ms)"
start_etcd scenario05
start_receiver " (ETCD_NAMESPACE=${NAMESPACE})"

# seed_etcd.sh and run_test.sh talk to these, through the local etcdctl.
export_test_env
export RECEIVER_LOG="${WORK}/receiver.out"

bash "${SCENARIO_DIR}/seed_etcd.sh"
run_scenario_test
