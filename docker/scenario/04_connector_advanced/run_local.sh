#!/usr/bin/env bash
# Scenario 04 without Docker: Redis, the cloud receiver, two local processors and three connectors
# as local processes on free loopback ports, driven by the same run_test.sh. Part of `make test`.
#
#   bash run_local.sh [SUB-TEST|all]
#
# KEEP_SCENARIO_DIR=1 keeps the logs; CWM_RECEIVER_BIN / CWM_CONNECTOR_BIN pick the binaries.
set -euo pipefail

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/connect_local.sh
source "${SCENARIO_DIR}/../lib/connect_local.sh"
local_traps

pick_ports REDIS_PORT CLOUD_PORT LOCAL_A_PORT LOCAL_B_PORT
CLOUD="http://127.0.0.1:${CLOUD_PORT}"

local_port() {
  case "$1" in
    redis) echo "${REDIS_PORT}" ;;
    cloud) echo "${CLOUD_PORT}" ;;
    local-a) echo "${LOCAL_A_PORT}" ;;
    local-b) echo "${LOCAL_B_PORT}" ;;
  esac
}

# The services of docker-compose.yaml, with the same settings.
local_cmd() {
  local conf="${SCENARIO_DIR}/config"
  case "$1" in
    redis) redis_cmd "${REDIS_PORT}" ;;
    cloud) cloud_cmd "${CLOUD_PORT}" "${REDIS_PORT}" "${conf}/cloud-webhooks.json" ;;
    local-a | local-b)
      receiver_cmd "$(local_port "$1")" WEBHOOKS_CONFIG_FILE="${conf}/local-webhooks.json" \
        CONNECTIONS_CONFIG_FILE="${PWD}/connections.json"
      ;;
    connector-sse)
      connector_cmd CONNECTOR_CLOUD_URL="${CLOUD}" CONNECTOR_CHANNEL=channel-alpha \
        CONNECTOR_TOKEN=alpha_secret_token_123 CONNECTOR_PROTOCOL=sse CONNECTOR_ID=connector-sse \
        CONNECTOR_TARGET_URL="http://127.0.0.1:${LOCAL_A_PORT}/webhook/local-receiver"
      ;;
    connector-ws)
      connector_cmd CONNECTOR_CLOUD_URL="${CLOUD}" CONNECTOR_CHANNEL=channel-beta \
        CONNECTOR_TOKEN=beta_secret_token_456 CONNECTOR_PROTOCOL=websocket \
        CONNECTOR_ID=connector-ws \
        CONNECTOR_TARGET_URL="http://127.0.0.1:${LOCAL_B_PORT}/webhook/local-receiver"
      ;;
    connector-module)
      # The compose file's config file; the environment points it at this run's paths (the
      # environment wins over the file).
      connector_cmd CONNECTOR_CLOUD_URL="${CLOUD}" \
        CONNECTOR_WEBHOOKS_CONFIG="${conf}/module-webhooks.json" \
        -- --config "${conf}/connector-module.json"
      ;;
  esac
}

export CLOUD_URL="${CLOUD}"
START_MS="$(now_ms)"
rc=0
# shellcheck source=run_test.sh
source "${SCENARIO_DIR}/run_test.sh" "$@" || rc=$?
local_finish "${rc}"
