# shellcheck shell=bash
# Helpers shared by seed.sh and run_test.sh (sourced, not run).
#
# etcdctl is chosen, in this order, by:
#   ETCDCTL_CMD        the command to run, split on spaces
#   etcdctl on PATH    talks to ETCDCTL_ENDPOINTS (default 127.0.0.1:2379)
#   docker             `docker compose exec -T etcd etcdctl` in this folder's compose project
# Vault is reached over its HTTP API with curl: VAULT_ADDR (default http://127.0.0.1:8200) and
# VAULT_TOKEN (default root-token-06, the dev server's root token in docker-compose.yaml).

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/checks.sh
source "${SCENARIO_DIR}/../lib/checks.sh"
VAULT_ADDR="${VAULT_ADDR:-http://127.0.0.1:8200}"
VAULT_ADDR="${VAULT_ADDR%/}"
VAULT_TOKEN="${VAULT_TOKEN:-root-token-06}"
VAULT_MOUNT="${VAULT_MOUNT:-webhooks}"

command -v curl >/dev/null 2>&1 || die "curl not found (Debian package curl)"

use_etcdctl "${SCENARIO_DIR}/docker-compose.yaml"

# vault_api METHOD PATH [JSON]: one Vault API call (PATH after /v1/); prints the HTTP status.
vault_api() {
  local method="$1" path="$2" data="${3:-}"
  local args=(-sS -o /dev/null -w '%{http_code}' --max-time 5 -X "${method}"
    -H "X-Vault-Token: ${VAULT_TOKEN}")
  if [[ -n "${data}" ]]; then
    args+=(-H 'Content-Type: application/json' --data "${data}")
  fi
  curl "${args[@]}" "${VAULT_ADDR}/v1/${path}" 2>/dev/null || echo 000
}

# vault_put PATH JSON_FIELDS: write a KV v2 secret (all its fields) under the mount.
vault_put() {
  local code
  code="$(vault_api POST "${VAULT_MOUNT}/data/$1" "{\"data\":$2}")"
  [[ "${code}" == 200 || "${code}" == 204 ]] || die "writing secret $1 to Vault failed (HTTP ${code})"
}

# The secret's values, shared by seed.sh and run_test.sh.
TOKEN_V1=vault_auth_token_v1
TOKEN_V2=vault_auth_token_v2
TOKEN_V3=vault_auth_token_v3
HMAC_V1=vault_hmac_secret_v1
HMAC_V2=vault_hmac_secret_v2
LEGACY_TOKEN=legacy_env_token_789
