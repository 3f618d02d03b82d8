#!/usr/bin/env bash
# Black-box checks of a cwm-receiver running with CONFIG_BACKEND=etcd and ETCD_NAMESPACE=ns_alpha,
# after seed_etcd.sh: namespace routing, live add/delete through etcd, the non-namespaced route's
# fallback to ETCD_NAMESPACE, namespace validation and /health. Prints PASS/FAIL per check; exits
# 1 if any check failed, 2 on a setup error (no curl or etcdctl).
#
# Environment:
#   CWM_URL              receiver base URL                        (default http://localhost:8000)
#   ETCD_PREFIX          the receiver's ETCD_PREFIX               (default /cwm/)
#   ETCDCTL_ENDPOINTS / ETCDCTL_CMD   how to reach etcd, see lib.sh
#   READY_TIMEOUT        seconds to wait for /health 200          (default 60)
#   PROPAGATION_TIMEOUT  seconds an etcd change may take to serve (default 10)
#   RECEIVER_LOG         optional: a file with the receiver's stdout; if set, also check what the
#                        log sink wrote (run_local.sh sets it)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CWM_URL="${CWM_URL:-http://localhost:8000}"
CWM_URL="${CWM_URL%/}"
DEFAULT_NAMESPACE=ns_alpha # the receiver's ETCD_NAMESPACE in docker-compose.yaml and run_local.sh
PREFIX="${ETCD_PREFIX:-/cwm/}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-10}"
RECEIVER_LOG="${RECEIVER_LOG:-}"

command -v curl >/dev/null 2>&1 || die "curl not found (Debian package curl)"

RUN_ID="run-$$-${RANDOM}"
CHECKS_URL="${CWM_URL}"
checks_init
trap 'rm -f "${BODY}"' EXIT

# post PATH: POST a small JSON event tagged with this run's id and the path.
post() {
  request POST "$1" "{\"event\":\"scenario\",\"run\":\"${RUN_ID}\",\"path\":\"$1\"}"
}

# expect WANT PATH DESCRIPTION: one POST, now.
expect() {
  check "$1" "$(post "$2")" "$3: POST $2"
}

# eventually WANT PATH DESCRIPTION: POST until the answer is WANT or PROPAGATION_TIMEOUT passes.
eventually() {
  poll_until "$1" "$3: POST $2" post "$2"
}

# in_log DESCRIPTION COMMAND...: COMMAND (a grep of RECEIVER_LOG) succeeds within 2 s.
in_log() {
  local desc="$1" deadline
  shift
  deadline=$(($(now_ms) + 2000))
  until "$@"; do
    if (($(now_ms) >= deadline)); then
      fail "${desc}: not found in ${RECEIVER_LOG}"
      return
    fi
    sleep 0.05
  done
  pass "${desc}"
}

# pretty_print true: the payload is printed as indented JSON, one field per line.
pretty_event() {
  grep -A 1 -F "\"run\": \"${RUN_ID}\"" "${RECEIVER_LOG}" 2>/dev/null |
    grep -qF '"path": "/webhook/ns_alpha/hook1"'
}

# pretty_print false: the event is one compact JSON line.
compact_event() {
  grep -qF "\"run\":\"${RUN_ID}\",\"path\":\"/webhook/ns_beta/hook1\"" "${RECEIVER_LOG}" 2>/dev/null
}

echo "Receiver ${CWM_URL}, default namespace ${DEFAULT_NAMESPACE}, run ${RUN_ID}"

# 0. The receiver is up and has loaded its configuration (/health answers 503 before that).
wait_ready

# 1. Seeded webhooks are served in their namespace (polled: the seed may still be propagating).
eventually 200 /webhook/ns_alpha/hook1 "seeded alpha/hook1"
eventually 200 /webhook/ns_alpha/hook2 "seeded alpha/hook2"
eventually 200 /webhook/ns_beta/hook1 "seeded beta/hook1"

# 2. Namespaces are isolated.
expect 404 /webhook/ns_beta/hook2 "beta has no hook2"
expect 404 /webhook/ns_gamma/hook1 "unknown namespace"

# 3. The non-namespaced route uses ETCD_NAMESPACE (ns_alpha).
expect 200 /webhook/hook1 "fallback to ${DEFAULT_NAMESPACE}/hook1"
expect 200 /webhook/hook2 "fallback to ${DEFAULT_NAMESPACE}/hook2"

# 4. Invalid namespaces are refused before any lookup.
expect 400 "/webhook/bad%20namespace/hook1" "namespace with a space"
expect 400 "/webhook/$(printf 'a%.0s' {1..65})/hook1" "namespace of 65 characters"
expect 400 "/webhook/ns.alpha/hook1" "namespace with a dot"

# 5. Live add: a new key is served without a restart.
ctl put "${PREFIX}ns_beta/webhooks/hook_new" '{"data_type":"json","module":"log"}' >/dev/null
eventually 200 /webhook/ns_beta/hook_new "live add beta/hook_new"
expect 404 /webhook/hook_new "flat route does not see ns_beta/hook_new"

# 6. Live delete: a deleted key stops being served; the rest of the namespace keeps serving.
ctl del "${PREFIX}ns_alpha/webhooks/hook2" >/dev/null
eventually 404 /webhook/ns_alpha/hook2 "live delete alpha/hook2"
expect 404 /webhook/hook2 "flat route after the delete"
expect 200 /webhook/ns_alpha/hook1 "alpha/hook1 still served"

# 7. /health reports etcd as healthy.
code="$(request GET /health)"
health="$(tr -d ' \n' <"${BODY}")"
if [[ "${code}" == 200 && "${health}" == *'"status":"healthy"'* && "${health}" == *'"etcd":"healthy"'* ]]; then
  pass "GET /health -> 200 with \"etcd\":\"healthy\""
else
  fail "GET /health -> ${code} ${health}, want 200 with \"status\":\"healthy\" and \"etcd\":\"healthy\""
fi

# 8. Optional: what the log sink wrote (pretty_print true for alpha/hook1, false for beta/hook1).
if [[ -n "${RECEIVER_LOG}" ]]; then
  in_log "log sink: alpha/hook1 event pretty-printed" pretty_event
  in_log "log sink: beta/hook1 event on one line" compact_event
fi

summary
