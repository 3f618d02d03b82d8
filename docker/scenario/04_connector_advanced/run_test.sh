#!/usr/bin/env bash
# Scenario 04 (Webhook Connect in depth): PASS/FAIL per check; exit 1 if any failed.
#
#   bash run_test.sh [SUB-TEST|all]     (default all)
#
# Sub-tests: admin-api long-poll token-rotation queue-overflow multi-channel websocket
#            target-routing retry-delivery module-mode
#
# Each sub-test starts from an empty stack. Docker by default (docker-compose.yaml); run_local.sh
# runs the same steps with local processes. Environment: CLOUD_URL (default
# http://localhost:8010), DELIVERY_TIMEOUT (60 s).
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/connect_stack.sh
source "${SCENARIO_DIR}/../lib/connect_stack.sh"

ALPHA=cloud-webhook-alpha
BETA=cloud-webhook-beta
ALPHA_TOKEN=alpha_secret_token_123

# expect NAME WANT GOT: PASS when GOT is one of the space-separated WANT values.
expect() {
  if [[ " $2 " == *" $3 "* ]]; then
    pass "$1 ($3)"
  else
    fail "$1: got ${3:-nothing}, expected $2"
  fi
}

# poll TOKEN TIMEOUT [MAX]: long-poll channel-alpha; prints the status, body in $BODY.
poll() {
  request GET "/connect/stream/channel-alpha/poll?timeout=$2&max_messages=${3:-5}" "" \
    -H "Authorization: Bearer $1"
}

start_cloud() {
  reset_stack
  svc_up redis cloud
}

test_admin_api() {
  say "admin-api"
  start_cloud
  send_webhook "${ALPHA}" 1 >/dev/null
  send_webhook "${BETA}" 1 >/dev/null
  expect "admin-api: health without auth" 200 "$(request GET /admin/webhook-connect/health)"
  expect "admin-api: health status" healthy "$(json_get 'd["status"]')"
  expect "admin-api: channels" 200 "$(admin GET /channels)"
  expect "admin-api: at least 2 channels" True "$(json_get 'len(d) >= 2')"
  expect "admin-api: channel detail" 200 "$(admin GET /channels/channel-alpha)"
  expect "admin-api: channel name" channel-alpha "$(json_get 'd["name"]')"
  expect "admin-api: stats" 200 "$(admin GET /channels/channel-alpha/stats)"
  expect "admin-api: stats has messages_queued" 1 "$(json_get 'd["messages_queued"]')"
  expect "admin-api: dead letters" 200 "$(admin GET /channels/channel-alpha/dead-letters)"
  expect "admin-api: dead letters list" True "$(json_get 'isinstance(d["messages"], list)')"
  expect "admin-api: overview" 200 "$(admin GET /overview)"
  expect "admin-api: overview counts channels" True "$(json_get 'd["total_channels"] >= 2')"
  expect "admin-api: channels without auth" 401 "$(request GET /admin/webhook-connect/channels)"
  expect "admin-api: channels with a wrong token" 401 \
    "$(request GET /admin/webhook-connect/channels "" -H 'Authorization: Bearer nope')"
}

# The Python scenario expected 204 on the first poll although a message was waiting; here the
# waiting message is delivered (200), acknowledged, and only then is the channel empty (204).
test_long_poll() {
  say "long-poll"
  start_cloud
  send_webhook "${ALPHA}" 1 >/dev/null
  expect "long-poll: the buffered message" 200 "$(poll "${ALPHA_TOKEN}" 2)"
  local id conn
  id="$(json_get 'd["messages"][0]["message_id"]')"
  conn="$(json_get 'd["connection_id"]')"
  expect "long-poll: one message" 1 "$(json_get 'len(d["messages"])')"
  expect "long-poll: ack after the poll" 200 \
    "$(request POST "/connect/ack?message_id=${id}&status=ack" "" \
      -H "Authorization: Bearer ${ALPHA_TOKEN}" -H "X-Connection-ID: ${conn}")"
  expect "long-poll: empty channel" 204 "$(poll "${ALPHA_TOKEN}" 2)"
  send_many "${ALPHA}" 3 2
  # A message that arrived while the previous poll was ending goes back to the queue first
  # (within half a second); give it that time so all three are waiting.
  sleep 1
  expect "long-poll: three new messages, max_messages honoured" 200 "$(poll "${ALPHA_TOKEN}" 5 5)"
  expect "long-poll: all three in one answer" 3 "$(json_get 'len(d["messages"])')"
  expect "long-poll: timeout out of range" 422 "$(poll "${ALPHA_TOKEN}" 61)"
  expect "long-poll: wrong token" 401 "$(poll totally_wrong_token 1)"
}

test_token_rotation() {
  say "token-rotation"
  start_cloud
  send_webhook "${ALPHA}" 1 >/dev/null
  expect "token-rotation: rotate" 200 \
    "$(admin POST /channels/channel-alpha/rotate-token '{"grace_period_seconds":3600}')"
  local new
  new="$(json_get 'd["new_token"]')"
  if [[ -n "${new}" && "${new}" != "${ALPHA_TOKEN}" ]]; then pass "token-rotation: new token issued"; else fail "token-rotation: no new token"; fi
  # The buffered registration message goes to the first poll; it is then in flight, so the
  # second poll finds nothing: both tokens were accepted.
  expect "token-rotation: old token in grace gets the waiting message" 200 "$(poll "${ALPHA_TOKEN}" 1)"
  expect "token-rotation: new token accepted" 204 "$(poll "${new}" 1)"
  expect "token-rotation: wrong token" 401 "$(poll totally_wrong_token 1)"
  expect "token-rotation: rotate again, no grace" 200 \
    "$(admin POST /channels/channel-alpha/rotate-token '{"grace_period_seconds":0}')"
  expect "token-rotation: first token now refused" 401 "$(poll "${ALPHA_TOKEN}" 1)"
}

# max_queue_size 3: three are buffered, the rest are refused with 503 (the sender retries).
test_queue_overflow() {
  say "queue-overflow"
  start_cloud
  local i code ok=0 full=0
  for i in 1 2 3 4 5 6 7; do
    code="$(send_webhook cloud-webhook-overflow "${i}")"
    case "${code}" in
      200) ok=$((ok + 1)) ;;
      503) full=$((full + 1)) ;;
    esac
  done
  expect "queue-overflow: accepted" 3 "${ok}"
  expect "queue-overflow: refused with 503" 4 "${full}"
}

test_multi_channel() {
  say "multi-channel"
  start_cloud
  send_webhook "${ALPHA}" 1 >/dev/null
  send_webhook "${BETA}" 1 >/dev/null
  svc_up local-a local-b connector-sse connector-ws
  send_many "${ALPHA}" 5 2
  send_many "${BETA}" 5 2
  check_delivered local-a 6 "multi-channel alpha"
  check_delivered local-b 6 "multi-channel beta"
}

test_websocket() {
  say "websocket"
  start_cloud
  send_webhook "${BETA}" 1 >/dev/null
  svc_up local-b connector-ws
  send_many "${BETA}" 5 2
  check_delivered local-b 6 "websocket"
}

test_target_routing() {
  say "target-routing"
  start_cloud
  svc_up local-a local-b
  send_webhook "${ALPHA}" 1 >/dev/null
  svc_up connector-sse
  send_many "${ALPHA}" 5 2
  check_delivered local-a 6 "target-routing"
  local other
  other="$(delivered local-b)"
  expect "target-routing: nothing at the other target" 0 "${other//[[:space:]]/}"
}

# The connector starts while its target is down: deliveries fail, are nacked for retry, and
# arrive once the target is up.
test_retry_delivery() {
  say "retry-delivery"
  start_cloud
  send_many "${ALPHA}" 6
  expect "retry-delivery: buffered" 6 "${SENT_OK}"
  svc_up connector-sse
  sleep 3
  svc_up local-a
  check_delivered local-a 6 "retry-delivery"
}

test_module_mode() {
  say "module-mode"
  start_cloud
  send_webhook cloud-webhook-module-mode 1 >/dev/null
  svc_up connector-module
  send_many cloud-webhook-module-mode 4 2
  check_delivered connector-module 5 "module-mode"
}

ALL=(admin-api long-poll token-rotation queue-overflow multi-channel websocket target-routing
  retry-delivery module-mode)
selected=("${1:-all}")
[[ "${selected[0]}" == all ]] && selected=("${ALL[@]}")
for t in "${selected[@]}"; do
  case "${t}" in
    admin-api | long-poll | token-rotation | queue-overflow | multi-channel | websocket | \
      target-routing | retry-delivery | module-mode) "test_${t//-/_}" ;;
    *)
      echo "usage: $0 [${ALL[*]}|all]" >&2
      exit 2
      ;;
  esac
done
reset_stack
summary
