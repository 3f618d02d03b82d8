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
VAULT_ROOT_TOKEN=root-token-06 # as in docker-compose.yaml
ADMIN=admin-06

log() { echo "run_local: $*"; }
die() {
  echo "run_local: error: $*" >&2
  exit 1
}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=("etcd (Debian package etcd-server)")
command -v etcdctl >/dev/null 2>&1 || missing+=("etcdctl (Debian package etcd-client)")
command -v curl >/dev/null 2>&1 || missing+=("curl (Debian package curl)")
command -v openssl >/dev/null 2>&1 || missing+=("openssl (Debian package openssl)")
if ((${#missing[@]} > 0)); then
  for m in "${missing[@]}"; do
    echo "run_local: error: ${m} is not installed" >&2
  done
  die "run \`make deps-test\` (installs them with apt-get), then try again"
fi

RECEIVER_BIN="${CWM_RECEIVER_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/cwm-receiver}"
if [[ ! -x "${RECEIVER_BIN}" ]]; then
  log "${RECEIVER_BIN} is missing: building it"
  (cd "${REPO_ROOT}" && cargo build -p cwm-receiver)
  [[ -x "${RECEIVER_BIN}" ]] || die "cargo build did not produce ${RECEIVER_BIN}"
fi
FAKE_VAULT_BIN="${FAKE_VAULT_BIN:-${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/fake_vault}"
if [[ ! -x "${FAKE_VAULT_BIN}" ]]; then
  log "${FAKE_VAULT_BIN} is missing: building it"
  (cd "${REPO_ROOT}" && cargo build -p cwm-testkit --bin fake_vault)
  [[ -x "${FAKE_VAULT_BIN}" ]] || die "cargo build did not produce ${FAKE_VAULT_BIN}"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-scenario06.XXXXXX")"
ETCD_PID=""
RX_PID=""
VAULT_PID=""

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

# shellcheck disable=SC2317 # called from the EXIT trap
show_logs() {
  local f
  for f in "${WORK}/receiver.err" "${WORK}/etcd.log" "${WORK}/vault.log"; do
    if [[ -s "${f}" ]]; then
      echo "----- last lines of ${f##*/} -----" >&2
      tail -n 25 "${f}" >&2
    fi
  done
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop "${RX_PID}"
  stop "${ETCD_PID}"
  stop "${VAULT_PID}"
  if ((rc != 0)); then
    show_logs
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
# range (so it does not collide with ports the Rust tests get from bind(0)) and not yet handed out.
PORTS_USED=" "
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    [[ "${PORTS_USED}" == *" ${p} "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then
      PORTS_USED+="${p} "
      PORT_PICKED="${p}"
      return
    fi
  done
}

# start_etcd: a single-member cluster on free client and peer ports; retried on a port race.
start_etcd() {
  local attempt client peer deadline
  for attempt in 1 2 3; do
    pick_port
    ETCD_PORT="${PORT_PICKED}"
    pick_port
    peer="http://127.0.0.1:${PORT_PICKED}"
    client="http://127.0.0.1:${ETCD_PORT}"
    rm -rf "${WORK}/etcd-data"
    etcd --name=scenario06 \
      --data-dir="${WORK}/etcd-data" \
      --listen-client-urls="${client}" \
      --advertise-client-urls="${client}" \
      --listen-peer-urls="${peer}" \
      --initial-advertise-peer-urls="${peer}" \
      --initial-cluster="scenario06=${peer}" \
      --initial-cluster-state=new \
      --logger=zap \
      --log-level=warn \
      >/dev/null 2>"${WORK}/etcd.log" &
    ETCD_PID=$!
    deadline=$(($(now_ms) + 20000))
    while (($(now_ms) < deadline)); do
      if ! kill -0 "${ETCD_PID}" 2>/dev/null; then
        break
      fi
      if ETCDCTL_API=3 etcdctl --endpoints="${client}" --dial-timeout=1s --command-timeout=2s \
        get /__ready >/dev/null 2>&1; then
        log "etcd $(etcd --version | head -n 1 | awk '{print $NF}') ready on ${client} (peer ${peer})"
        return 0
      fi
      sleep 0.1
    done
    stop "${ETCD_PID}"
    ETCD_PID=""
    log "etcd did not start on ${client} (attempt ${attempt}); see below"
    tail -n 5 "${WORK}/etcd.log" >&2 || true
  done
  die "etcd did not start"
}

# start_vault: the fake Vault on a free port (root token as in docker-compose.yaml); seed.sh
# enables the `webhooks` mount and writes the secret as it does against a real Vault.
start_vault() {
  local attempt deadline
  for attempt in 1 2 3; do
    pick_port
    VAULT_PORT="${PORT_PICKED}"
    "${FAKE_VAULT_BIN}" --port "${VAULT_PORT}" --token "${VAULT_ROOT_TOKEN}" \
      >"${WORK}/vault.log" 2>&1 &
    VAULT_PID=$!
    deadline=$(($(now_ms) + 10000))
    while (($(now_ms) < deadline)); do
      kill -0 "${VAULT_PID}" 2>/dev/null || break
      if grep -q "listening on" "${WORK}/vault.log" 2>/dev/null; then
        log "fake Vault ready on http://127.0.0.1:${VAULT_PORT}"
        return 0
      fi
      sleep 0.05
    done
    stop "${VAULT_PID}"
    VAULT_PID=""
    log "fake Vault did not start on port ${VAULT_PORT} (attempt ${attempt})"
  done
  die "the fake Vault did not start"
}

# start_receiver: cwm-receiver with CONFIG_BACKEND=etcd on a free port, in the temp dir (so no
# stray .env or JSON files are read); waits for /health 200 (first full load from etcd).
start_receiver() {
  local attempt deadline code
  for attempt in 1 2 3; do
    pick_port
    RX_PORT="${PORT_PICKED}"
    (
      cd "${WORK}"
      exec env -u ETCD_ENDPOINTS -u ETCD_USERNAME -u ETCD_PASSWORD -u ETCD_CA_CERT \
        -u ETCD_CERT -u ETCD_KEY -u ETCD_PREFIX -u ETCD_NAMESPACE \
        -u VAULT_ROLE_ID -u VAULT_SECRET_ID -u VAULT_NAMESPACE -u VAULT_ENABLED \
        HOST=127.0.0.1 \
        PORT="${RX_PORT}" \
        CONFIG_BACKEND=etcd \
        ETCD_HOST=127.0.0.1 \
        ETCD_PORT="${ETCD_PORT}" \
        SECRETS_BACKEND=vault \
        VAULT_ADDR="http://127.0.0.1:${VAULT_PORT}" \
        VAULT_TOKEN="${VAULT_ROOT_TOKEN}" \
        VAULT_MOUNT_POINT=webhooks \
        VAULT_CACHE_TTL_SECONDS=1 \
        LEGACY_ENV_TOKEN=legacy_env_token_789 \
        CONFIG_RELOAD_ADMIN_TOKEN="${ADMIN}" \
        ETCD_RECONNECT_INITIAL_MS=100 \
        ETCD_RECONNECT_MAX_MS=500 \
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
        log "cwm-receiver ready on http://127.0.0.1:${RX_PORT}"
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
start_etcd
start_vault
start_receiver

# seed_etcd.sh and run_test.sh talk to these, through the local etcdctl.
unset ETCDCTL_CMD ETCDCTL_USER ETCDCTL_PASSWORD ETCDCTL_CACERT ETCDCTL_CERT ETCDCTL_KEY
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS="http://127.0.0.1:${ETCD_PORT}"
export ETCD_PREFIX=/cwm/
export CWM_URL="http://127.0.0.1:${RX_PORT}"
export RECEIVER_ERR="${WORK}/receiver.err"
export VAULT_ADDR="http://127.0.0.1:${VAULT_PORT}"
export VAULT_TOKEN="${VAULT_ROOT_TOKEN}"
export ADMIN_TOKEN="${ADMIN}"
export READY_TIMEOUT="${READY_TIMEOUT:-20}"
export PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-5}"

bash "${SCENARIO_DIR}/seed.sh"
rc=0
bash "${SCENARIO_DIR}/run_test.sh" || rc=$?
log "finished in $(($(now_ms) - START_MS)) ms, exit code ${rc}"
exit "${rc}"
