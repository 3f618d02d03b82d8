#!/usr/bin/env bash
# Run scenario 06 (Vault secrets with etcd) without Docker: a throwaway etcd, the test kit's fake
# Vault (`fake_vault`: the KV v2 HTTP endpoints cwm uses, not a real Vault, which cannot be
# installed here) and the debug cwm-receiver on free loopback ports, then the same seed.sh and
# run_test.sh the Docker scenario uses. Everything (the three processes, the temp dir) is removed
# on exit. Exit code: run_test.sh's, or 1 if the scenario could not be set up.
#
# Needs etcd, etcdctl (Debian: etcd-server, etcd-client), curl and openssl; `make deps-test`
# installs them. Run from anywhere; `make scenario` runs it after `make build`.
#
# Environment: CWM_RECEIVER_BIN (default target/debug/cwm-receiver, built if missing),
# FAKE_VAULT_BIN (default target/debug/fake_vault, built if missing), CARGO_TARGET_DIR,
# KEEP_SCENARIO_DIR=1 to keep the logs and etcd data after the run.
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCENARIO_DIR}/../../.." && pwd)"
# shellcheck source=../lib/local.sh
source "${SCENARIO_DIR}/../lib/local.sh"
VAULT_ROOT_TOKEN=root-token-06 # as in docker-compose.yaml
ADMIN=admin-06

need_commands "etcd|etcd (Debian package etcd-server)" "etcdctl|etcdctl (Debian package etcd-client)" \
  "curl|curl (Debian package curl)" "openssl|openssl (Debian package openssl)"

RECEIVER_BIN="${CWM_RECEIVER_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/cwm-receiver}"
build_if_missing "${RECEIVER_BIN}" -p cwm-receiver
FAKE_VAULT_BIN="${FAKE_VAULT_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/fake_vault}"
build_if_missing "${FAKE_VAULT_BIN}" -p cwm-testkit --bin fake_vault

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-scenario06.XXXXXX")"
LOG_FILES=("${WORK}/receiver.err" "${WORK}/etcd.log" "${WORK}/vault.log")

local_traps

# start_vault: the fake Vault on a free port (PIDS[vault]) (root token as in docker-compose.yaml); seed.sh
# enables the `webhooks` mount and writes the secret as it does against a real Vault.
start_vault() {
  local attempt deadline
  for attempt in 1 2 3; do
    pick_port
    VAULT_PORT="${PORT_PICKED}"
    "${FAKE_VAULT_BIN}" --port "${VAULT_PORT}" --token "${VAULT_ROOT_TOKEN}" \
      >"${WORK}/vault.log" 2>&1 &
    PIDS[vault]=$!
    deadline=$(($(now_ms) + 10000))
    while (($(now_ms) < deadline)); do
      kill -0 "${PIDS[vault]}" 2>/dev/null || break
      if grep -q "listening on" "${WORK}/vault.log" 2>/dev/null; then
        lrun "fake Vault ready on http://127.0.0.1:${VAULT_PORT}"
        return 0
      fi
      sleep 0.05
    done
    local_down vault
    lrun "fake Vault did not start on port ${VAULT_PORT} (attempt ${attempt})"
  done
  ldie "the fake Vault did not start"
}

# receiver_exec: exec cwm-receiver with CONFIG_BACKEND=etcd on RX_PORT; start_receiver runs it in
# the temp dir (so no stray .env or JSON files are read) and waits for /health 200 (first full
# load from etcd).
receiver_exec() {
  exec_receiver_etcd SECRETS_BACKEND=vault \
    VAULT_ADDR="http://127.0.0.1:${VAULT_PORT}" \
    VAULT_TOKEN="${VAULT_ROOT_TOKEN}" \
    VAULT_MOUNT_POINT=webhooks \
    VAULT_CACHE_TTL_SECONDS=1 \
    LEGACY_ENV_TOKEN=legacy_env_token_789 \
    CONFIG_RELOAD_ADMIN_TOKEN="${ADMIN}"
}

START_MS="$(now_ms)"
start_etcd scenario06
start_vault
start_receiver

# seed.sh and run_test.sh talk to these, through the local etcdctl.
export_test_env
export RECEIVER_ERR="${WORK}/receiver.err"
export VAULT_ADDR="http://127.0.0.1:${VAULT_PORT}"
export VAULT_TOKEN="${VAULT_ROOT_TOKEN}"
export ADMIN_TOKEN="${ADMIN}"

bash "${SCENARIO_DIR}/seed.sh"
run_scenario_test
