#!/usr/bin/env bash
# Run scenario 01 (live config reload, file backend) without Docker: the debug cwm-receiver on a
# free loopback port, in a temp directory holding its webhooks.json / connections.json, with the
# settings of docker-compose.yaml; then the same run_test.sh, editing those files. Everything (the
# process, the temp dir) is removed on exit. Exit code: run_test.sh's, or 1 if the scenario could
# not be set up.
#
# Needs curl (`make deps-test` installs it). Run from anywhere; `make scenario` runs it after
# `make build`.
#
# Environment: CWM_RECEIVER_BIN (default target/debug/cwm-receiver, built if missing),
# CARGO_TARGET_DIR, KEEP_SCENARIO_DIR=1 to keep the logs and files after the run.
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCENARIO_DIR}/../../.." && pwd)"
# shellcheck source=../lib/local.sh
source "${SCENARIO_DIR}/../lib/local.sh"
ADMIN_TOKEN=scenario-admin-token # CONFIG_RELOAD_ADMIN_TOKEN, as in docker-compose.yaml

command -v curl >/dev/null 2>&1 ||
  ldie "curl (Debian package curl) is not installed: run \`make deps-test\` (installs it with apt-get), then try again"

RECEIVER_BIN="${CWM_RECEIVER_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/cwm-receiver}"
build_if_missing "${RECEIVER_BIN}" -p cwm-receiver

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-scenario01.XXXXXX")"
CONFIG="${WORK}/config"
mkdir -p "${CONFIG}"
LOG_FILES=("${WORK}/receiver.err")

local_traps

# receiver_exec: exec cwm-receiver with the file backend on RX_PORT, watching ${CONFIG};
# start_receiver runs it in the temp dir (so no stray .env is read) and waits for /health 200.
receiver_exec() {
  exec env HOST=127.0.0.1 \
    PORT="${RX_PORT}" \
    CONFIG_BACKEND=file \
    WEBHOOKS_CONFIG_FILE="${CONFIG}/webhooks.json" \
    CONNECTIONS_CONFIG_FILE="${CONFIG}/connections.json" \
    CONFIG_FILE_WATCHING_ENABLED=true \
    CONFIG_RELOAD_DEBOUNCE_SECONDS=0.2 \
    CONFIG_RELOAD_ADMIN_TOKEN="${ADMIN_TOKEN}" \
    SHUTDOWN_TIMEOUT_SECONDS=2 \
    LOG_LEVEL=info \
    LOG_FORMAT=text \
    "${RECEIVER_BIN}"
}

START_MS="$(now_ms)"
printf '{}\n' >"${CONFIG}/webhooks.json"
printf '{}\n' >"${CONFIG}/connections.json"
start_receiver " (watching ${CONFIG})"

export_test_env
export CONFIG_DIR="${CONFIG}"
export ADMIN_TOKEN

run_scenario_test
