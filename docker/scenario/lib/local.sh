# shellcheck shell=bash
# Process management shared by the scenarios' run_local.sh (sourced, not run): every service is a
# local process on a free loopback port, its files in a temp dir WORK removed on exit.
#
# The sourcing script sets WORK (and creates it) before starting anything, and may set:
#   LOG_FILES   the logs whose last lines are shown when the run fails (default: WORK/logs/*.err)
#   LOG_TAIL    how many lines of each (default 25)
# Processes are registered in PIDS[NAME]; local_cleanup (the EXIT trap set by local_traps) stops
# them all. KEEP_SCENARIO_DIR=1 keeps WORK after the run.

declare -A PIDS=()
LOG_FILES=()
LOG_TAIL=25

lrun() { echo "run_local: $*"; }
ldie() {
  echo "run_local: error: $*" >&2
  exit 1
}

now_ms() { date +%s%3N; }

# need_commands "CMD|DESCRIPTION"...: die (listing each missing one) unless every CMD is installed.
need_commands() {
  local spec missing=()
  for spec in "$@"; do
    command -v "${spec%%|*}" >/dev/null 2>&1 || missing+=("${spec#*|}")
  done
  if ((${#missing[@]} > 0)); then
    for spec in "${missing[@]}"; do
      echo "run_local: error: ${spec} is not installed" >&2
    done
    ldie "run \`make deps-test\` (installs them with apt-get), then try again"
  fi
}

# build_if_missing BIN CARGO_BUILD_ARGS...: `cargo build ARGS` in the repository when BIN is not
# there; die if it still is not.
build_if_missing() {
  local bin="$1"
  shift
  [[ -x "${bin}" ]] && return 0
  lrun "${bin} is missing: building it"
  (cd "${REPO_ROOT}" && cargo build "$@")
  [[ -x "${bin}" ]] || ldie "cargo build did not produce ${bin}"
}

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

# pick_ports VAR...: set each VAR to a port from pick_port.
pick_ports() {
  local var
  for var in "$@"; do
    pick_port
    printf -v "${var}" '%s' "${PORT_PICKED}"
  done
}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
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

# local_down NAME: stop the registered process NAME (SIGTERM, SIGKILL after 5 s).
local_down() {
  local pid="${PIDS[$1]:-}"
  [[ -n "${pid}" ]] || return 0
  unset "PIDS[$1]"
  stop_pid "${pid}"
}

# local_kill NAME: SIGKILL at once (a crash).
local_kill() {
  local pid="${PIDS[$1]:-}"
  [[ -n "${pid}" ]] || return 0
  unset "PIDS[$1]"
  kill -KILL "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
}

# wait_http_ok PID URL TIMEOUT_MS: wait until GET URL answers 200. Returns 0 then, 1 if the
# process PID exited first, 2 on timeout.
wait_http_ok() {
  local pid="$1" url="$2" deadline code
  deadline=$(($(now_ms) + $3))
  while (($(now_ms) < deadline)); do
    kill -0 "${pid}" 2>/dev/null || return 1
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${url}" 2>/dev/null)" || code=000
    [[ "${code}" == 200 ]] && return 0
    sleep 0.1
  done
  return 2
}

# start_etcd NAME: a single-member etcd cluster NAME on free client and peer ports, data and log
# (etcd.log) in WORK; registered as PIDS[etcd], its client port in ETCD_PORT. Retried on a port
# race.
start_etcd() {
  local name="$1" attempt client peer deadline
  for attempt in 1 2 3; do
    pick_port
    ETCD_PORT="${PORT_PICKED}"
    pick_port
    peer="http://127.0.0.1:${PORT_PICKED}"
    client="http://127.0.0.1:${ETCD_PORT}"
    rm -rf "${WORK}/etcd-data"
    etcd --name="${name}" \
      --data-dir="${WORK}/etcd-data" \
      --listen-client-urls="${client}" \
      --advertise-client-urls="${client}" \
      --listen-peer-urls="${peer}" \
      --initial-advertise-peer-urls="${peer}" \
      --initial-cluster="${name}=${peer}" \
      --initial-cluster-state=new \
      --logger=zap \
      --log-level=warn \
      >/dev/null 2>"${WORK}/etcd.log" &
    PIDS[etcd]=$!
    deadline=$(($(now_ms) + 20000))
    while (($(now_ms) < deadline)); do
      if ! kill -0 "${PIDS[etcd]}" 2>/dev/null; then
        break
      fi
      if ETCDCTL_API=3 etcdctl --endpoints="${client}" --dial-timeout=1s --command-timeout=2s \
        get /__ready >/dev/null 2>&1; then
        lrun "etcd $(etcd --version | head -n 1 | awk '{print $NF}') ready on ${client} (peer ${peer})"
        return 0
      fi
      sleep 0.1
    done
    local_down etcd
    lrun "etcd did not start on ${client} (attempt ${attempt}); see below"
    tail -n 5 "${WORK}/etcd.log" >&2 || true
  done
  ldie "etcd did not start"
}

# start_receiver [READY_NOTE]: run `receiver_exec` (defined by the caller: exec cwm-receiver on
# RX_PORT) in WORK on a free port (RX_PORT), stdout/stderr in WORK/receiver.out / receiver.err;
# registered as PIDS[receiver]; waits for /health 200. Retried when the port was taken.
start_receiver() {
  local attempt
  for attempt in 1 2 3; do
    pick_port
    RX_PORT="${PORT_PICKED}"
    (
      cd "${WORK}"
      receiver_exec
    ) >"${WORK}/receiver.out" 2>"${WORK}/receiver.err" &
    PIDS[receiver]=$!
    if wait_http_ok "${PIDS[receiver]}" "http://127.0.0.1:${RX_PORT}/health" 20000; then
      lrun "cwm-receiver ready on http://127.0.0.1:${RX_PORT}${1:-}"
      return 0
    fi
    local_down receiver
    if ! grep -q "cannot listen" "${WORK}/receiver.err"; then
      ldie "cwm-receiver did not become ready on port ${RX_PORT}"
    fi
    lrun "port ${RX_PORT} was taken (attempt ${attempt}); retrying"
  done
  ldie "cwm-receiver could not listen"
}

# shellcheck disable=SC2317 # the EXIT trap
local_cleanup() {
  local rc=$? name f
  trap - EXIT INT TERM
  # The receiver first: it should not see its backends go away.
  local_down receiver
  for name in "${!PIDS[@]}"; do
    local_down "${name}"
  done
  rm -f "${BODY:-}"
  if ((rc != 0)); then
    if ((${#LOG_FILES[@]} == 0)); then
      LOG_FILES=("${WORK}"/logs/*.err)
    fi
    for f in "${LOG_FILES[@]}"; do
      [[ -s "${f}" ]] || continue
      echo "----- last lines of ${f##*/} -----" >&2
      tail -n "${LOG_TAIL}" "${f}" >&2
    done
  fi
  if [[ "${KEEP_SCENARIO_DIR:-}" == 1 ]]; then
    lrun "kept ${WORK}"
  else
    rm -rf "${WORK}"
  fi
  exit "${rc}"
}

# exec_receiver_etcd [VAR=VALUE...]: exec cwm-receiver (RECEIVER_BIN) on RX_PORT with
# CONFIG_BACKEND=etcd against the local etcd (ETCD_PORT), short reconnect delays, the given
# variables, and none of the caller's etcd / Vault connection variables.
exec_receiver_etcd() {
  exec env -u ETCD_ENDPOINTS -u ETCD_USERNAME -u ETCD_PASSWORD -u ETCD_CA_CERT \
    -u ETCD_CERT -u ETCD_KEY -u ETCD_PREFIX -u ETCD_NAMESPACE \
    -u VAULT_ROLE_ID -u VAULT_SECRET_ID -u VAULT_NAMESPACE -u VAULT_ENABLED \
    HOST=127.0.0.1 \
    PORT="${RX_PORT}" \
    CONFIG_BACKEND=etcd \
    ETCD_HOST=127.0.0.1 \
    ETCD_PORT="${ETCD_PORT}" \
    ETCD_RECONNECT_INITIAL_MS=100 \
    ETCD_RECONNECT_MAX_MS=500 \
    SHUTDOWN_TIMEOUT_SECONDS=2 \
    LOG_LEVEL=info \
    LOG_FORMAT=text \
    "$@" \
    "${RECEIVER_BIN}"
}

# export_test_env: what run_test.sh reads: CWM_URL (the receiver on RX_PORT), READY_TIMEOUT
# (default 20 s), PROPAGATION_TIMEOUT (default 5 s); with an etcd (ETCD_PORT), also the local
# etcdctl's settings (ETCDCTL_ENDPOINTS, no ETCDCTL_CMD or credentials) and ETCD_PREFIX=/cwm/.
export_test_env() {
  export CWM_URL="http://127.0.0.1:${RX_PORT}"
  export READY_TIMEOUT="${READY_TIMEOUT:-20}"
  export PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-5}"
  if [[ -n "${PIDS[etcd]:-}" ]]; then
    unset ETCDCTL_CMD ETCDCTL_USER ETCDCTL_PASSWORD ETCDCTL_CACERT ETCDCTL_CERT ETCDCTL_KEY
    export ETCDCTL_API=3
    export ETCDCTL_ENDPOINTS="http://127.0.0.1:${ETCD_PORT}"
    export ETCD_PREFIX=/cwm/
  fi
}

# run_scenario_test: bash SCENARIO_DIR/run_test.sh, then local_finish with its exit code.
run_scenario_test() {
  local rc=0
  bash "${SCENARIO_DIR}/run_test.sh" || rc=$?
  local_finish "${rc}"
}

# local_finish RC: report the run's time (since START_MS) and exit with RC.
local_finish() {
  lrun "finished in $(($(now_ms) - START_MS)) ms, exit code $1"
  exit "$1"
}

# local_traps: local_cleanup on exit; an interrupt exits 130, a TERM 143 (through local_cleanup).
local_traps() {
  trap local_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
