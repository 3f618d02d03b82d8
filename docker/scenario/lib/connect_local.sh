# shellcheck shell=bash
# The local mode of the Webhook Connect scenarios: every compose service is a process on free
# loopback ports, in a temp dir removed on exit. Sourced by run_local.sh, which then defines, for
# each service NAME of its compose file:
#
#   local_cmd NAME     exec the service in the foreground (run in the service's own directory)
#   local_port NAME    its HTTP port, if it has one (waited on through /health), else nothing
#
# and sources run_test.sh. Needs redis-server (Debian redis-server), curl and python3;
# `make deps-test` installs them. Binaries: CWM_RECEIVER_BIN and CWM_CONNECTOR_BIN (default
# target/debug/cwm-receiver and target/debug/cwm-connector, built when missing).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
# shellcheck source=local.sh
source "${REPO_ROOT}/docker/scenario/lib/local.sh"
SCENARIO_MODE=local
export SCENARIO_MODE

need_commands "redis-server|redis-server (Debian package redis-server)" \
  "curl|curl (Debian package curl)" "python3|python3 (Debian package python3)"

TARGET="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}"
RECEIVER_BIN="${CWM_RECEIVER_BIN:-${TARGET}/debug/cwm-receiver}"
CONNECTOR_BIN="${CWM_CONNECTOR_BIN:-${TARGET}/debug/cwm-connector}"
if [[ ! -x "${RECEIVER_BIN}" || ! -x "${CONNECTOR_BIN}" ]]; then
  lrun "building cwm-receiver and cwm-connector"
  (cd "${REPO_ROOT}" && cargo build -q -p cwm-receiver -p cwm-connector-bin)
fi
[[ -x "${RECEIVER_BIN}" ]] || ldie "${RECEIVER_BIN} is missing"
[[ -x "${CONNECTOR_BIN}" ]] || ldie "${CONNECTOR_BIN} is missing"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cwm-$(basename "${SCENARIO_DIR}").XXXXXX")"
mkdir -p "${WORK}/logs"
LOG_TAIL=15

# local_dir NAME: where the local processor NAME writes its events.
local_dir() {
  echo "${WORK}/$1/logs/webhooks"
}

# local_up NAME: start the service and wait until it answers.
local_up() {
  local name="$1" port deadline
  [[ -z "${PIDS[${name}]:-}" ]] || return 0
  mkdir -p "${WORK}/${name}/logs/webhooks"
  (cd "${WORK}/${name}" && local_cmd "${name}") \
    >>"${WORK}/logs/${name}.out" 2>>"${WORK}/logs/${name}.err" &
  PIDS[${name}]=$!
  port="$(local_port "${name}")"
  if [[ -n "${port}" && "${name}" != redis ]]; then
    wait_http_ok "${PIDS[${name}]}" "http://127.0.0.1:${port}/health" 30000 && return 0
  else
    deadline=$(($(now_ms) + 30000))
    while (($(now_ms) < deadline)); do
      kill -0 "${PIDS[${name}]}" 2>/dev/null || break
      if [[ -z "${port}" ]]; then
        sleep 0.3
        return 0
      fi
      (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && return 0
      sleep 0.1
    done
  fi
  if ! kill -0 "${PIDS[${name}]}" 2>/dev/null; then
    tail -n 20 "${WORK}/logs/${name}.err" >&2
    ldie "${name} exited at start"
  fi
  ldie "${name} did not become ready on port ${port}"
}

# local_reset: stop every service and forget their state.
local_reset() {
  local name
  for name in "${!PIDS[@]}"; do
    local_down "${name}"
  done
  find "${WORK}" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
}

# redis_cmd PORT: exec a throwaway Redis (no persistence) on PORT.
redis_cmd() {
  exec redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "${PWD}"
}

# receiver_cmd PORT [VAR=VALUE...]: exec cwm-receiver on PORT with the given environment only
# (no stray variables or .env of the caller).
receiver_cmd() {
  local port="$1"
  shift
  exec env -i PATH="${PATH}" HOME="${PWD}" HOST=127.0.0.1 PORT="${port}" \
    SHUTDOWN_TIMEOUT_SECONDS=3 LOG_LEVEL=info CONFIG_FILE_WATCHING_ENABLED=false "$@" "${RECEIVER_BIN}"
}

# cloud_cmd PORT REDIS_PORT WEBHOOKS_FILE: exec the cloud receiver of the compose files (Webhook
# Connect on, Redis buffer, admin token admin_secret_123) on PORT.
cloud_cmd() {
  receiver_cmd "$1" WEBHOOK_CONNECT_ENABLED=true \
    WEBHOOK_CONNECT_REDIS_URL="redis://127.0.0.1:$2/0" \
    WEBHOOK_CONNECT_ADMIN_TOKEN=admin_secret_123 \
    WEBHOOKS_CONFIG_FILE="$3" \
    CONNECTIONS_CONFIG_FILE="${PWD}/connections.json"
}

# connector_cmd [VAR=VALUE...] [-- ARGS...]: exec cwm-connector with the given environment only.
connector_cmd() {
  local vars=()
  while (($# > 0)) && [[ "$1" != -- ]]; do
    vars+=("$1")
    shift
  done
  (($# > 0)) && shift
  exec env -i PATH="${PATH}" HOME="${PWD}" CONNECTOR_LOG_LEVEL=INFO "${vars[@]}" "${CONNECTOR_BIN}" "$@"
}
