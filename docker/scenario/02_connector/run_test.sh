#!/usr/bin/env bash
# Scenario 02 (Webhook Connect): PASS/FAIL per check; exit 1 if any failed.
#
#   bash run_test.sh [basic|resilience|all]     (default all)
#
# basic:       one webhook is buffered before any connector exists, then a connector (SSE) starts
#              and nine more are sent live: all ten reach the local processor.
# resilience:  ten webhooks are sent while nothing local runs; the channel shows them queued; the
#              local processor and the connector start and drain the backlog.
#
# Docker by default (services from docker-compose.yaml); run_local.sh runs the same steps with
# local processes. Environment: CLOUD_URL (default http://localhost:8010), DELIVERY_TIMEOUT (60 s).
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/connect_stack.sh
source "${SCENARIO_DIR}/../lib/connect_stack.sh"

WEBHOOK=cloud-webhook

test_basic() {
  say "basic"
  reset_stack
  svc_up redis cloud local-processor
  local code
  code="$(send_webhook "${WEBHOOK}" 1)"
  if [[ "${code}" == 200 ]]; then pass "basic: first webhook buffered (200)"; else fail "basic: first webhook answered ${code}"; fi
  svc_up connector
  sleep 2
  send_many "${WEBHOOK}" 9 2
  if ((SENT_OK == 9)); then pass "basic: 9 live webhooks accepted"; else fail "basic: ${SENT_OK}/9 live webhooks accepted"; fi
  check_delivered local-processor 10 "basic"
}

test_resilience() {
  say "resilience"
  reset_stack
  svc_up redis cloud
  send_many "${WEBHOOK}" 10
  if ((SENT_OK == 10)); then pass "resilience: 10 webhooks buffered with no connector"; else fail "resilience: ${SENT_OK}/10 accepted"; fi
  local code queued
  code="$(admin GET /channels/test-channel/stats)"
  queued="$(json_get 'd["messages_queued"]')"
  if [[ "${code}" == 200 && "${queued}" == 10 ]]; then
    pass "resilience: channel stats show 10 queued"
  else
    fail "resilience: channel stats ${code}, messages_queued=${queued:-?}"
  fi
  svc_up local-processor connector
  check_delivered local-processor 10 "resilience"
}

case "${1:-all}" in
  basic) test_basic ;;
  resilience) test_resilience ;;
  all)
    test_basic
    test_resilience
    ;;
  *)
    echo "usage: $0 [basic|resilience|all]" >&2
    exit 2
    ;;
esac
reset_stack
summary
