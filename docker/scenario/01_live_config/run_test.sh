#!/usr/bin/env bash
# Black-box checks of live configuration reload with the file backend: this script edits the
# webhooks.json / connections.json a running cwm-receiver watches, and checks what it serves after
# each edit: a webhook added, changed (its authorization), removed; a file that does not parse and
# a file with one invalid entry (the last good configuration keeps serving, /admin/config-status
# shows the problem); then mended. A sender posts to an untouched webhook all along: every one of
# its requests must get 200. Prints PASS/FAIL per check; exits 1 if any check failed, 2 on a setup
# error.
#
# The receiver must run with CONFIG_BACKEND=file, the two files in CONFIG_DIR, the file watcher on
# with a short CONFIG_RELOAD_DEBOUNCE_SECONDS (docker-compose.yaml: 0.2) and
# CONFIG_RELOAD_ADMIN_TOKEN=ADMIN_TOKEN.
#
# Environment:
#   CWM_URL              receiver base URL                          (default http://localhost:8000)
#   CONFIG_DIR           the directory holding the receiver's files (default ./live next to this)
#   ADMIN_TOKEN          the receiver's CONFIG_RELOAD_ADMIN_TOKEN   (default scenario-admin-token)
#   READY_TIMEOUT        seconds to wait for /health 200            (default 60)
#   PROPAGATION_TIMEOUT  seconds a file change may take to serve    (default 10)
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/checks.sh
source "${SCENARIO_DIR}/../lib/checks.sh"
CWM_URL="${CWM_URL:-http://localhost:8000}"
CWM_URL="${CWM_URL%/}"
CONFIG_DIR="${CONFIG_DIR:-${SCENARIO_DIR}/live}"
ADMIN_TOKEN="${ADMIN_TOKEN:-scenario-admin-token}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-10}"

command -v curl >/dev/null 2>&1 || die "curl not found (Debian package curl)"
[[ -d "${CONFIG_DIR}" && -w "${CONFIG_DIR}" ]] || die "CONFIG_DIR ${CONFIG_DIR} is not a writable directory"

RUN_ID="run-$$-${RANDOM}"
CHECKS_URL="${CWM_URL}"
checks_init
SENDER_LOG="$(mktemp)"
SENDER_PID=""

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
  if [[ -n "${SENDER_PID}" ]]; then
    kill "${SENDER_PID}" 2>/dev/null || true
    wait "${SENDER_PID}" 2>/dev/null || true
  fi
  rm -f "${BODY}" "${SENDER_LOG}"
}
trap cleanup EXIT

# post ID [AUTHORIZATION]: POST a small JSON event to /webhook/ID.
post() {
  request POST "/webhook/$1" "{\"event\":\"scenario01\",\"run\":\"${RUN_ID}\",\"id\":\"$1\"}" ${2:+-H "Authorization: $2"}
}

describe() {
  if [[ -n "$2" ]]; then echo "POST /webhook/$1 ($2)"; else echo "POST /webhook/$1"; fi
}

# expect WANT ID AUTH DESCRIPTION: one POST, now.
expect() {
  check "$1" "$(post "$2" "$3")" "$4: $(describe "$2" "$3")"
}

# eventually WANT ID AUTH DESCRIPTION: POST until the answer is WANT or PROPAGATION_TIMEOUT passes.
eventually() {
  poll_until "$1" "$4: $(describe "$2" "$3")" post "$2" "$3"
}

# status: GET /admin/config-status; sets STATUS_CODE and STATUS (the body without spaces and
# newlines). Succeeds when the code is 200. Not to be called in $(...), which would lose both.
STATUS=""
STATUS_CODE=""
status() {
  STATUS_CODE="$(request GET /admin/config-status "" -H "Authorization: Bearer ${ADMIN_TOKEN}")"
  STATUS="$(tr -d ' \n' <"${BODY}")"
  [[ "${STATUS_CODE}" == 200 ]]
}

# status_has TEXT: the last config-status body contains TEXT.
status_has() { [[ "${STATUS}" == *"$1"* ]]; }

# rejection KEY: the config-status entry of a rejected key (`{"key":"webhooks/x",...}`), or nothing.
rejection() { grep -o "{\"key\":\"$1\"[^}]*}" <<<"${STATUS}" || true; }

# status_eventually DESCRIPTION COMMAND...: poll config-status until COMMAND succeeds.
status_eventually() {
  local desc="$1" start deadline
  shift
  start="$(now_ms)"
  deadline=$((start + PROPAGATION_TIMEOUT * 1000))
  while :; do
    if status && "$@"; then
      pass "${desc} after $(($(now_ms) - start)) ms"
      return
    fi
    if (($(now_ms) >= deadline)); then
      fail "${desc}: not seen within ${PROPAGATION_TIMEOUT}s (config-status ${STATUS_CODE}: ${STATUS:0:600})"
      return
    fi
    sleep 0.05
  done
}

# write_in_place FILE CONTENT: truncate and rewrite (what `>` and most programs do).
write_in_place() {
  printf '%s\n' "$2" >"${CONFIG_DIR}/$1"
}

# write_atomic FILE CONTENT: write a temp file in the same directory and rename it over FILE
# (what editors and Kubernetes ConfigMap volumes do).
write_atomic() {
  local tmp="${CONFIG_DIR}/.$1.tmp.$$"
  printf '%s\n' "$2" >"${tmp}"
  mv -f "${tmp}" "${CONFIG_DIR}/$1"
}

# reload: POST /admin/reload-config; prints the status code, body in $BODY.
reload() {
  request POST /admin/reload-config '{}' -H "Authorization: Bearer ${ADMIN_TOKEN}"
}

STABLE='"stable": {"data_type": "json", "module": "log"}'
hooks() {
  local IFS=,
  echo "{$*}"
}
live_hook() { echo "\"live_hook\": {\"data_type\": \"json\", \"module\": \"$1\", \"authorization\": \"Bearer $2\"}"; }

echo "Receiver ${CWM_URL}, config dir ${CONFIG_DIR}, run ${RUN_ID}"

# 0. The receiver is up and has loaded its configuration.
wait_ready

# 1. Start from a known configuration, loaded through the admin API (not the watcher).
write_in_place connections.json '{}'
write_in_place webhooks.json "$(hooks "${STABLE}")"
code="$(reload)"
if [[ "${code}" == 200 ]] && grep -q '"status":"success"' "${BODY}"; then
  pass "POST /admin/reload-config -> 200 success"
else
  fail "POST /admin/reload-config -> ${code} $(head -c 300 "${BODY}"), want 200 success"
fi
expect 200 stable "" "initial config"
expect 404 live_hook "" "live_hook not configured yet"
if status && status_has '"file_watching_enabled":true' && status_has '"last_error":null'; then
  pass "GET /admin/config-status -> 200, file watching on, no error"
else
  fail "GET /admin/config-status -> ${STATUS_CODE}: want 200 with file_watching_enabled true and last_error null (got ${STATUS:0:400})"
fi

# A sender posting to the untouched webhook every 100 ms for the rest of the run: no edit below,
# good or bad, may make it miss a request.
(
  while :; do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 -X POST \
      -H 'Content-Type: application/json' --data '{"event":"steady"}' \
      "${CWM_URL}/webhook/stable" 2>/dev/null || echo 000
    sleep 0.1
  done
) >>"${SENDER_LOG}" &
SENDER_PID=$!

# 2. Add a webhook (file rewritten in place; the watcher reloads it).
write_in_place webhooks.json "$(hooks "${STABLE}" "$(live_hook log token-one)")"
eventually 200 live_hook "Bearer token-one" "added by the watcher"
expect 401 live_hook "" "its authorization is enforced"

# 3. Change its authorization (atomic rename).
write_atomic webhooks.json "$(hooks "${STABLE}" "$(live_hook log token-two)")"
eventually 200 live_hook "Bearer token-two" "changed: new token accepted"
expect 401 live_hook "Bearer token-one" "changed: old token refused"

# 4. Remove it.
write_in_place webhooks.json "$(hooks "${STABLE}")"
eventually 404 live_hook "Bearer token-two" "removed"
expect 200 stable "" "the rest still served"

# 5. A file that does not parse: the last good configuration keeps serving, the error is shown.
write_in_place webhooks.json "$(hooks "${STABLE}" "$(live_hook log token-three)" | head -c 60)"
status_eventually "invalid JSON: config-status shows last_error" \
  eval '! status_has "\"last_error\":null" && status_has "\"last_error\":\""'
expect 200 stable "" "invalid JSON: last good config still served"
expect 404 live_hook "Bearer token-three" "invalid JSON: nothing of the broken file served"
code="$(reload)"
if [[ "${code}" == 400 ]] && grep -q '"status":"error"' "${BODY}"; then
  pass "invalid JSON: POST /admin/reload-config -> 400 error"
else
  fail "invalid JSON: POST /admin/reload-config -> ${code} $(head -c 300 "${BODY}"), want 400 error"
fi
code="$(request GET /health)"
if [[ "${code}" == 200 ]] && grep -q '"status":"healthy"' "${BODY}"; then
  pass "invalid JSON: GET /health -> 200 healthy"
else
  fail "invalid JSON: GET /health -> ${code} $(head -c 300 "${BODY}"), want 200 healthy"
fi

# 6. Mend it, and load it at once through the admin API.
write_atomic webhooks.json "$(hooks "${STABLE}" "$(live_hook log token-three)")"
code="$(reload)"
if [[ "${code}" == 200 ]] && grep -q '"status":"success"' "${BODY}"; then
  pass "mended: POST /admin/reload-config -> 200 success"
else
  fail "mended: POST /admin/reload-config -> ${code} $(head -c 300 "${BODY}"), want 200 success"
fi
expect 200 live_hook "Bearer token-three" "mended: served right after the reload"
if status && status_has '"last_error":null'; then
  pass "mended: config-status last_error is null again"
else
  fail "mended: config-status still shows an error: ${STATUS:0:400}"
fi

# 7. One invalid entry (an existing webhook given an unknown module, and a new bad one) next to a
#    new good one: the good one is served, the changed one keeps its previous version, the bad
#    one is not served, and config-status lists both rejections.
write_in_place webhooks.json "$(hooks "${STABLE}" "$(live_hook no_such_module token-four)" \
  '"broken": {"data_type": "json", "module": "no_such_module"}' \
  '"extra": {"data_type": "json", "module": "log"}')"
eventually 200 extra "" "one invalid entry: the good new entry is served"
expect 404 broken "" "one invalid entry: the bad new entry is not served"
expect 200 live_hook "Bearer token-three" "one invalid entry: the changed entry keeps its last good version"
expect 401 live_hook "Bearer token-four" "one invalid entry: its new version is not served"
expect 200 stable "" "one invalid entry: the rest still served"
status_eventually "one invalid entry: config-status lists webhooks/broken and webhooks/live_hook" \
  eval '[[ -n "$(rejection webhooks/broken)" && -n "$(rejection webhooks/live_hook)" ]]'
if [[ "$(rejection webhooks/live_hook)" == *'"serving_previous":true'* &&
  "$(rejection webhooks/broken)" == *'"serving_previous":false'* ]]; then
  pass "one invalid entry: live_hook serving_previous true, broken false"
else
  fail "one invalid entry: rejections $(rejection webhooks/live_hook) $(rejection webhooks/broken)"
fi

# 8. Mend the entries.
write_atomic webhooks.json "$(hooks "${STABLE}" "$(live_hook log token-four)" \
  '"broken": {"data_type": "json", "module": "log"}' \
  '"extra": {"data_type": "json", "module": "log"}')"
eventually 200 broken "" "entries mended: broken served"
expect 200 live_hook "Bearer token-four" "entries mended: live_hook's new version served"
expect 401 live_hook "Bearer token-three" "entries mended: live_hook's old token refused"
status_eventually "entries mended: config-status lists no rejection and no error" \
  eval 'status_has "\"rejected\":[]" && status_has "\"last_error\":null"'

# 9. The sender: every request to the untouched webhook got 200 through all of the above.
kill "${SENDER_PID}" 2>/dev/null || true
wait "${SENDER_PID}" 2>/dev/null || true
SENDER_PID=""
total="$(grep -c . "${SENDER_LOG}" || true)"
bad="$(grep -vc '^200$' "${SENDER_LOG}" || true)"
if ((total > 0 && bad == 0)); then
  pass "steady sender: ${total}/${total} POST /webhook/stable -> 200 during the edits"
else
  fail "steady sender: ${bad} of ${total} requests to /webhook/stable did not get 200 ($(sort "${SENDER_LOG}" | uniq -c | tr '\n' ' '))"
fi

# 10. Still healthy.
code="$(request GET /health)"
if [[ "${code}" == 200 ]] && grep -q '"status":"healthy"' "${BODY}"; then
  pass "GET /health -> 200 healthy"
else
  fail "GET /health -> ${code} $(head -c 300 "${BODY}")"
fi

summary
