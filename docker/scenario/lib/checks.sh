# shellcheck shell=bash
# Check helpers shared by the scenarios' run_test.sh (sourced, not run): PASS/FAIL counting, HTTP
# requests with the body kept in $BODY, polling, JSON, and the choice of etcdctl.
#
# The sourcing script calls checks_init (counters, $BODY) and sets CHECKS_URL, the base URL every
# `request` path is appended to; CHECKS_MAX_TIME is curl's --max-time (default 5 s).

CHECKS_MAX_TIME=5

now_ms() { date +%s%3N; }

die() {
  echo "error: $*" >&2
  exit 2
}

# checks_init: zero the counters and make $BODY (the caller removes it on exit).
checks_init() {
  PASSED=0
  FAILED=0
  BODY="$(mktemp)"
}

pass() {
  PASSED=$((PASSED + 1))
  echo "PASS  $*"
}

fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL  $*"
}

# summary: print the counts; true when nothing failed.
summary() {
  echo "RESULT: ${PASSED} passed, ${FAILED} failed"
  ((FAILED == 0))
}

# request METHOD PATH [JSON] [curl args...]: the HTTP status of CHECKS_URL/PATH (000 when nothing
# answered); the body is left in $BODY.
request() {
  local method="$1" path="$2" data="${3:-}" code
  shift 3 2>/dev/null || shift $#
  local args=(-sS -o "${BODY}" -w '%{http_code}' --max-time "${CHECKS_MAX_TIME}" -X "${method}")
  if [[ -n "${data}" ]]; then
    args+=(-H 'Content-Type: application/json' --data "${data}")
  fi
  code="$(curl "${args[@]}" "$@" "${CHECKS_URL}${path}" 2>/dev/null)" || code=000
  echo "${code}"
}

# json_get EXPR: evaluate a Python expression on the JSON in $BODY (bound to `d`).
json_get() {
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "${BODY}" 2>/dev/null
}

# check WANT GOT DESCRIPTION: PASS when GOT is WANT (else FAIL, with the start of $BODY).
check() {
  if [[ "$2" == "$1" ]]; then
    pass "$3 -> $2"
  else
    fail "$3 -> $2, want $1 (body: $(head -c 200 "${BODY}"))"
  fi
}

# poll_until WANT DESCRIPTION COMMAND...: COMMAND prints a status; run it until it prints WANT
# (PASS) or PROPAGATION_TIMEOUT seconds have passed (FAIL).
poll_until() {
  local want="$1" desc="$2" got start deadline
  shift 2
  start="$(now_ms)"
  deadline=$((start + PROPAGATION_TIMEOUT * 1000))
  while :; do
    got="$("$@")"
    if [[ "${got}" == "${want}" ]]; then
      pass "${desc} -> ${got} after $(($(now_ms) - start)) ms"
      return
    fi
    if (($(now_ms) >= deadline)); then
      fail "${desc} -> ${got}, want ${want} within ${PROPAGATION_TIMEOUT}s (body: $(head -c 200 "${BODY}"))"
      return
    fi
    sleep 0.05
  done
}

# wait_ready: wait up to READY_TIMEOUT seconds for GET /health 200 (PASS); else FAIL, the summary
# and exit 1.
wait_ready() {
  local deadline
  deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
  until [[ "$(request GET /health)" == 200 ]]; do
    if (($(now_ms) >= deadline)); then
      fail "receiver ready: GET ${CHECKS_URL}/health did not answer 200 within ${READY_TIMEOUT}s"
      summary || true
      exit 1
    fi
    sleep 0.2
  done
  pass "receiver ready: GET /health -> 200"
}

# use_etcdctl COMPOSE_FILE: set ETCDCTL (the etcdctl command) from, in this order: ETCDCTL_CMD
# (split on spaces), etcdctl on PATH (it reads ETCDCTL_ENDPOINTS itself), or `docker compose exec
# -T etcd etcdctl` in COMPOSE_FILE's project.
use_etcdctl() {
  export ETCDCTL_API=3
  ETCDCTL=()
  if [[ -n "${ETCDCTL_CMD:-}" ]]; then
    read -r -a ETCDCTL <<<"${ETCDCTL_CMD}"
  elif command -v etcdctl >/dev/null 2>&1; then
    ETCDCTL=(etcdctl)
  elif command -v docker >/dev/null 2>&1; then
    ETCDCTL=(docker compose -f "$1" exec -T -e ETCDCTL_API=3 etcd etcdctl)
  else
    die "etcdctl not found: install it (Debian package etcd-client) or set ETCDCTL_CMD"
  fi
}

# ctl ARGS...: run etcdctl with bounded timeouts, so a dead etcd fails fast instead of hanging.
ctl() {
  "${ETCDCTL[@]}" --dial-timeout=3s --command-timeout=5s "$@"
}
