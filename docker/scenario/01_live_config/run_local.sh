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
ADMIN_TOKEN=scenario-admin-token # CONFIG_RELOAD_ADMIN_TOKEN, as in docker-compose.yaml

log() { echo "run_local: $*"; }
die() {
  echo "run_local: error: $*" >&2
  exit 1
}

command -v curl >/dev/null 2>&1 ||
  die "curl (Debian package curl) is not installed: run \`make deps-test\` (installs it with apt-get), then try again"

RECEIVER_BIN="${CWM_RECEIVER_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/cwm-receiver}"
if [[ ! -x "${RECEIVER_BIN}" ]]; then
  log "${RECEIVER_BIN} is missing: building it"
  (cd "${REPO_ROOT}" && cargo build -p cwm-receiver)
  [[ -x "${RECEIVER_BIN}" ]] || die "cargo build did not produce ${RECEIVER_BIN}"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-scenario01.XXXXXX")"
CONFIG="${WORK}/config"
mkdir -p "${CONFIG}"
RX_PID=""

# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
  local pid="$1" i
  [[ -n "${pid}" ]] || return 0
  kill -TERM "${pid}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop "${RX_PID}"
  if ((rc != 0)) && [[ -s "${WORK}/receiver.err" ]]; then
    echo "----- last lines of receiver.err -----" >&2
    tail -n 25 "${WORK}/receiver.err" >&2
  fi
  if [[ "${KEEP_SCENARIO_DIR:-}" == 1 ]]; then
    log "kept ${WORK}"
  else
    rm -rf "${WORK}"
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }

# pick_port: set PORT_PICKED to a loopback port nobody listens on, below the kernel's ephemeral
# range (so it does not collide with ports the Rust tests get from bind(0)).
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then
      PORT_PICKED="${p}"
      return
    fi
  done
}

# start_receiver: cwm-receiver with the file backend on a free port, in the temp dir (so no stray
# .env is read), watching ${CONFIG}; waits for /health 200.
start_receiver() {
  local attempt deadline code
  printf '{}\n' >"${CONFIG}/webhooks.json"
  printf '{}\n' >"${CONFIG}/connections.json"
  for attempt in 1 2 3; do
    pick_port
    RX_PORT="${PORT_PICKED}"
    (
      cd "${WORK}"
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
    ) >"${WORK}/receiver.out" 2>"${WORK}/receiver.err" &
    RX_PID=$!
    deadline=$(($(now_ms) + 20000))
    while (($(now_ms) < deadline)); do
      if ! kill -0 "${RX_PID}" 2>/dev/null; then
        break
      fi
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${RX_PORT}/health" 2>/dev/null)" || code=000
      if [[ "${code}" == 200 ]]; then
        log "cwm-receiver ready on http://127.0.0.1:${RX_PORT} (watching ${CONFIG})"
        return 0
      fi
      sleep 0.1
    done
    stop "${RX_PID}"
    RX_PID=""
    if ! grep -q "cannot listen" "${WORK}/receiver.err"; then
      die "cwm-receiver did not become ready on port ${RX_PORT}"
    fi
    log "port ${RX_PORT} was taken (attempt ${attempt}); retrying"
  done
  die "cwm-receiver could not listen"
}

START_MS="$(now_ms)"
start_receiver

export CWM_URL="http://127.0.0.1:${RX_PORT}"
export CONFIG_DIR="${CONFIG}"
export ADMIN_TOKEN
export READY_TIMEOUT="${READY_TIMEOUT:-20}"
export PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-5}"

rc=0
bash "${SCENARIO_DIR}/run_test.sh" || rc=$?
log "finished in $(($(now_ms) - START_MS)) ms, exit code ${rc}"
exit "${rc}"
