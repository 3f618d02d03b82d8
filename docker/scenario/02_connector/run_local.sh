#!/usr/bin/env bash
# Scenario 02 without Docker: Redis, the cloud receiver, the local processor and the connector as
# local processes on free loopback ports, driven by the same run_test.sh. Part of `make test`.
#
#   bash run_local.sh [basic|resilience|all]
#
# KEEP_SCENARIO_DIR=1 keeps the logs; CWM_RECEIVER_BIN / CWM_CONNECTOR_BIN pick the binaries.
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/connect_local.sh
source "${SCENARIO_DIR}/../lib/connect_local.sh"
local_traps

pick_ports REDIS_PORT CLOUD_PORT LOCAL_PORT

local_port() {
  case "$1" in
    redis) echo "${REDIS_PORT}" ;;
    cloud) echo "${CLOUD_PORT}" ;;
    local-processor) echo "${LOCAL_PORT}" ;;
  esac
}

# The services of docker-compose.yaml, with the same settings.
local_cmd() {
  case "$1" in
    redis) redis_cmd "${REDIS_PORT}" ;;
    cloud) cloud_cmd "${CLOUD_PORT}" "${REDIS_PORT}" "${SCENARIO_DIR}/config/cloud-webhooks.json" ;;
    local-processor)
      receiver_cmd "${LOCAL_PORT}" \
        WEBHOOKS_CONFIG_FILE="${SCENARIO_DIR}/config/local-webhooks.json" \
        CONNECTIONS_CONFIG_FILE="${PWD}/connections.json"
      ;;
    connector)
      connector_cmd CONNECTOR_CLOUD_URL="http://127.0.0.1:${CLOUD_PORT}" \
        CONNECTOR_CHANNEL=test-channel CONNECTOR_TOKEN=channel_secret_token_123 \
        CONNECTOR_PROTOCOL=sse \
        CONNECTOR_TARGET_URL="http://127.0.0.1:${LOCAL_PORT}/webhook/local-receiver"
      ;;
  esac
}

export CLOUD_URL="http://127.0.0.1:${CLOUD_PORT}"
START_MS="$(now_ms)"
rc=0
# shellcheck source=run_test.sh
source "${SCENARIO_DIR}/run_test.sh" "$@" || rc=$?
local_finish "${rc}"
