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
SCENARIO_MODE=local
export SCENARIO_MODE

lrun() { echo "run_local: $*"; }
ldie() {
  echo "run_local: error: $*" >&2
  exit 1
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=("redis-server (Debian package redis-server)")
command -v curl >/dev/null 2>&1 || missing+=("curl (Debian package curl)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 (Debian package python3)")
if ((${#missing[@]} > 0)); then
  for m in "${missing[@]}"; do
    echo "run_local: error: ${m} is not installed" >&2
  done
  ldie "run \`make deps-test\` (installs them with apt-get), then try again"
fi

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
declare -A PIDS=()

# local_down NAME: SIGTERM, SIGKILL after 5 s.
local_down() {
  local pid="${PIDS[$1]:-}" i
  [[ -n "${pid}" ]] || return 0
  unset "PIDS[$1]"
  kill -TERM "${pid}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
}

# local_kill NAME: SIGKILL at once (a crash).
local_kill() {
  local pid="${PIDS[$1]:-}"
  [[ -n "${pid}" ]] || return 0
  unset "PIDS[$1]"
  kill -KILL "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
}

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
  deadline=$(($(now_ms) + 30000))
  while (($(now_ms) < deadline)); do
    kill -0 "${PIDS[${name}]}" 2>/dev/null || {
      tail -n 20 "${WORK}/logs/${name}.err" >&2
      ldie "${name} exited at start"
    }
    if [[ -z "${port}" ]]; then
      sleep 0.3
      return 0
    fi
    if [[ "${name}" == redis ]]; then
      (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && return 0
    elif [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${port}/health" 2>/dev/null)" == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
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

# shellcheck disable=SC2317 # the EXIT trap
local_cleanup() {
  local rc=$? name f
  trap - EXIT INT TERM
  for name in "${!PIDS[@]}"; do
    local_down "${name}"
  done
  rm -f "${BODY:-}"
  if ((rc != 0)); then
    for f in "${WORK}"/logs/*.err; do
      [[ -s "${f}" ]] || continue
      echo "----- last lines of ${f##*/} -----" >&2
      tail -n 15 "${f}" >&2
    done
  fi
  if [[ "${KEEP_SCENARIO_DIR:-}" == 1 ]]; then
    lrun "kept ${WORK}"
  else
    rm -rf "${WORK}"
  fi
  exit "${rc}"
}

# pick_port: set PORT_PICKED to a free loopback port below the ephemeral range, not yet handed out.
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
