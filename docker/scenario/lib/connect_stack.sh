# shellcheck shell=bash
# Helpers of the Webhook Connect scenarios (02_connector, 04_connector_advanced), sourced by their
# run_test.sh. The same test steps run in two modes:
#
#   SCENARIO_MODE=docker (default)  services are the compose services of the scenario folder;
#                                   `svc_up NAME` is `docker compose up -d --wait NAME`.
#   SCENARIO_MODE=local             run_local.sh starts each service as a local process on free
#                                   loopback ports; it defines `local_up NAME` and `local_dir NAME`
#                                   before sourcing run_test.sh.
#
# A test step only uses: svc_up, svc_down, reset_stack, send_webhook, delivered, wait_delivered,
# request (curl against the cloud receiver), pass/fail/summary (checks.sh).

CONNECT_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=checks.sh
source "${CONNECT_LIB_DIR}/checks.sh"
SCENARIO_MODE="${SCENARIO_MODE:-docker}"
CLOUD_URL="${CLOUD_URL:-http://localhost:8010}"
CLOUD_URL="${CLOUD_URL%/}"
ADMIN_TOKEN="${ADMIN_TOKEN:-admin_secret_123}"
DELIVERY_TIMEOUT="${DELIVERY_TIMEOUT:-60}"
CHECKS_URL="${CLOUD_URL}"
CHECKS_MAX_TIME=70

checks_init
if [[ "${SCENARIO_MODE}" != local ]]; then
  # shellcheck disable=SC2064 # expand now: the file name is fixed
  trap "rm -f '${BODY}'" EXIT
fi # run_local.sh's own exit trap removes it in local mode

say() { echo "---- $*"; }

compose() {
  docker compose -f "${SCENARIO_DIR}/docker-compose.yaml" "$@"
}

# svc_up NAME...: start services (and wait until they are healthy).
svc_up() {
  local s
  for s in "$@"; do
    if [[ "${SCENARIO_MODE}" == local ]]; then
      local_up "${s}"
    else
      compose up -d --wait "${s}" >/dev/null
    fi
  done
}

# svc_down NAME...: stop services (SIGTERM; the buffer keeps what they left).
svc_down() {
  local s
  for s in "$@"; do
    if [[ "${SCENARIO_MODE}" == local ]]; then
      local_down "${s}"
    else
      compose stop "${s}" >/dev/null
    fi
  done
}

# reset_stack: stop everything and forget all state (buffer, delivered files).
reset_stack() {
  if [[ "${SCENARIO_MODE}" == local ]]; then
    local_reset
  else
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}

# admin METHOD PATH [JSON]: request with the admin token.
admin() {
  request "$1" "/admin/webhook-connect$2" "${3:-}" -H "Authorization: Bearer ${ADMIN_TOKEN}"
}

# send_webhook WEBHOOK_ID SEQUENCE: POST one event to the cloud; prints the status.
send_webhook() {
  local id="$1" seq="$2"
  request POST "/webhook/${id}" \
    "{\"event\":\"test_event\",\"sequence\":${seq},\"timestamp\":\"$(date -u +%FT%TZ)\",\"data\":{\"scenario\":\"$(basename "${SCENARIO_DIR}")\",\"n\":${seq}}}"
}

# send_many WEBHOOK_ID COUNT [FIRST]: send COUNT events; sets SENT_OK (200/202 answers).
send_many() {
  local id="$1" count="$2" first="${3:-1}" i code
  SENT_OK=0
  for ((i = first; i < first + count; i++)); do
    code="$(send_webhook "${id}" "${i}")"
    if [[ "${code}" == 200 || "${code}" == 202 ]]; then
      SENT_OK=$((SENT_OK + 1))
    fi
  done
}

# delivered SERVICE: how many events the local processor SERVICE wrote (one file each).
delivered() {
  if [[ "${SCENARIO_MODE}" == local ]]; then
    local dir
    dir="$(local_dir "$1")"
    # A missing folder is not "nothing delivered": the service never ran.
    [[ -d "${dir}" ]] || {
      echo ERR
      return
    }
    find "${dir}" -maxdepth 1 -type f \( -name '*.json' -o -name '*.txt' \) 2>/dev/null | wc -l
  else
    compose exec -T "$1" bash -c \
      'find /app/logs/webhooks -maxdepth 1 -type f \( -name "*.json" -o -name "*.txt" \) 2>/dev/null | wc -l' \
      2>/dev/null || echo ERR
  fi
}

# wait_delivered SERVICE EXPECTED [TIMEOUT]: wait until SERVICE wrote at least EXPECTED events;
# true if it did in time. Leaves the last count in $COUNT.
wait_delivered() {
  local svc="$1" expected="$2" timeout="${3:-${DELIVERY_TIMEOUT}}" deadline
  deadline=$(($(now_ms) + timeout * 1000))
  while :; do
    COUNT="$(delivered "${svc}")"
    COUNT="${COUNT//[[:space:]]/}"
    ((COUNT >= expected)) && return 0
    (($(now_ms) >= deadline)) && return 1
    sleep 0.2
  done
}

# check_delivered SERVICE EXPECTED WHAT: PASS/FAIL on wait_delivered.
check_delivered() {
  if wait_delivered "$1" "$2"; then
    pass "$3: $1 received ${COUNT} (>= $2)"
  else
    fail "$3: $1 received ${COUNT}, expected >= $2 within ${DELIVERY_TIMEOUT} s"
  fi
}
