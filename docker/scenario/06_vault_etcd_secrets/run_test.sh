#!/usr/bin/env bash
# Black-box checks of a cwm-receiver running with CONFIG_BACKEND=etcd and SECRETS_BACKEND=vault
# (KV v2 mount `webhooks`, VAULT_CACHE_TTL_SECONDS=1), after seed.sh: Vault-backed Bearer and
# HMAC secrets in etcd-stored webhooks, an env placeholder beside them, an unresolved reference
# that rejects its webhook alone, rotation (Vault write + etcd re-put, then an admin reload), and
# that no secret value is ever shown. Prints PASS/FAIL per check; exits 1 if any check failed,
# 2 on a setup error.
#
# Environment:
#   CWM_URL              receiver base URL                          (default http://localhost:8000)
#   ADMIN_TOKEN          the receiver's CONFIG_RELOAD_ADMIN_TOKEN   (default admin-06)
#   VAULT_ADDR / VAULT_TOKEN, ETCDCTL_ENDPOINTS / ETCDCTL_CMD       see lib.sh
#   ETCD_PREFIX          the receiver's ETCD_PREFIX                 (default /cwm/)
#   READY_TIMEOUT        seconds to wait for /health 200            (default 60)
#   PROPAGATION_TIMEOUT  seconds a change may take to serve         (default 10)
#   RECEIVER_ERR         optional: a file with the receiver's stderr (diagnostic log); if set,
#                        also check that it holds no secret value (run_local.sh sets it)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CWM_URL="${CWM_URL:-http://localhost:8000}"
CWM_URL="${CWM_URL%/}"
ADMIN_TOKEN="${ADMIN_TOKEN:-admin-06}"
PREFIX="${ETCD_PREFIX:-/cwm/}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-10}"
RECEIVER_ERR="${RECEIVER_ERR:-}"

CHECKS_URL="${CWM_URL}"
checks_init
trap 'rm -f "${BODY}"' EXIT

# bearer ID [TOKEN]: POST {} to /webhook/ID with `Authorization: Bearer TOKEN` (none if empty).
bearer() {
  if [[ -n "${2:-}" ]]; then
    request POST "/webhook/$1" '{}' -H "Authorization: Bearer $2"
  else
    request POST "/webhook/$1" '{}'
  fi
}

HMAC_BODY='{"event":"good_hmac"}'
hmac_hex() {
  printf '%s' "${HMAC_BODY}" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1
}
# signed SIGNATURE: POST the HMAC body to vault_hmac with X-HMAC-Signature.
signed() {
  request POST /webhook/vault_hmac "${HMAC_BODY}" -H "X-HMAC-Signature: $1"
}

# eventually WANT DESCRIPTION COMMAND...: COMMAND prints a status; poll until it is WANT.
eventually() { poll_until "$@"; }

command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian package openssl)"

echo "Receiver ${CWM_URL}, Vault ${VAULT_ADDR} (mount ${VAULT_MOUNT})"

wait_ready

# I01: Bearer from Vault (polled first: the seed may still be propagating).
eventually 200 "I01 vault_auth with ${TOKEN_V1}" bearer vault_auth "${TOKEN_V1}"
check 401 "$(bearer vault_auth)" "I01 vault_auth without a token"
check 401 "$(bearer vault_auth wrong_token)" "I01 vault_auth with a wrong token"
check 200 "$(bearer default/vault_auth "${TOKEN_V1}")" "I01 namespaced route default/vault_auth"

# I02: HMAC secret from Vault.
eventually 200 "I02 vault_hmac with the right signature" signed "$(hmac_hex "${HMAC_V1}")"
check 401 "$(signed deadbeef)" "I02 vault_hmac with signature deadbeef"

# I03: env placeholder beside them.
eventually 200 "I03 legacy_env with ${LEGACY_TOKEN}" bearer legacy_env "${LEGACY_TOKEN}"

# I05: the key with an unresolved reference is left out alone; a reference with a default
# takes it; etcd stays healthy.
eventually 200 "with_default takes its inline default" bearer with_default dflt
check 404 "$(bearer broken x)" "I05 broken (unresolved reference, no default) is not served"
code="$(request GET /admin/config-status '' -H "Authorization: Bearer ${ADMIN_TOKEN}")"
status="$(tr -d ' \n' <"${BODY}")"
if [[ "${code}" == 200 && "${status}" == *'webhooks/broken'* && "${status}" == *'missing/path#f'* ]]; then
  pass "I05 config-status lists ${PREFIX}default/webhooks/broken, naming missing/path#f"
else
  fail "I05 config-status -> ${code}: $(head -c 400 "${BODY}")"
fi
code="$(request GET /health)"
health="$(tr -d ' \n' <"${BODY}")"
if [[ "${code}" == 200 && "${health}" == *'"etcd":"healthy"'* ]]; then
  pass "I05 GET /health -> 200 with \"etcd\":\"healthy\""
else
  fail "I05 GET /health -> ${code} ${health}"
fi

# I04: rotation. Vault gets v2; once the 1 s cache has expired, the keys are put again.
vault_put app/auth "{\"webhook_token\":\"${TOKEN_V2}\",\"hmac_secret\":\"${HMAC_V2}\"}"
sleep 1.2
for id in vault_auth vault_hmac; do
  value="$(ctl get --print-value-only "${PREFIX}default/webhooks/${id}")"
  ctl put "${PREFIX}default/webhooks/${id}" "${value}" >/dev/null
done
eventually 200 "I04 after rotation + re-put: vault_auth with ${TOKEN_V2}" bearer vault_auth "${TOKEN_V2}"
check 401 "$(bearer vault_auth "${TOKEN_V1}")" "I04 after rotation: vault_auth with ${TOKEN_V1}"
eventually 200 "I04 after rotation + re-put: vault_hmac with the v2 signature" signed "$(hmac_hex "${HMAC_V2}")"
check 401 "$(signed "$(hmac_hex "${HMAC_V1}")")" "I04 after rotation: vault_hmac with the v1 signature"

# Rotation through an admin reload: every reference is fetched again, no re-put.
vault_put app/auth "{\"webhook_token\":\"${TOKEN_V3}\",\"hmac_secret\":\"${HMAC_V2}\"}"
check 200 "$(request POST /admin/reload-config '{}' -H "Authorization: Bearer ${ADMIN_TOKEN}")" \
  "POST /admin/reload-config"
check 200 "$(bearer vault_auth "${TOKEN_V3}")" "after an admin reload: vault_auth with ${TOKEN_V3}"
check 401 "$(bearer vault_auth "${TOKEN_V2}")" "after an admin reload: vault_auth with ${TOKEN_V2}"

# No secret value anywhere the receiver reports.
leaks=""
for what in "/admin/config-status" /metrics /health /stats; do
  code="$(request GET "${what}" '' -H "Authorization: Bearer ${ADMIN_TOKEN}")"
  # An error page shows no secret either: only a page really served counts.
  if [[ "${code}" != 200 || ! -s "${BODY}" ]]; then
    leaks+=" ${what}:not-served(${code})"
    continue
  fi
  for secret in "${TOKEN_V1}" "${TOKEN_V2}" "${TOKEN_V3}" "${HMAC_V1}" "${HMAC_V2}" "${VAULT_TOKEN}"; do
    if grep -qF "${secret}" "${BODY}"; then
      leaks+=" ${what}:${secret}"
    fi
  done
done
if [[ -n "${RECEIVER_ERR}" ]]; then
  for secret in "${TOKEN_V1}" "${TOKEN_V2}" "${TOKEN_V3}" "${HMAC_V1}" "${HMAC_V2}" "${VAULT_TOKEN}"; do
    if grep -qF "${secret}" "${RECEIVER_ERR}"; then
      leaks+=" stderr:${secret}"
    fi
  done
fi
if [[ -z "${leaks}" ]]; then
  pass "no secret value in config-status, metrics, health, stats${RECEIVER_ERR:+ or the receiver log}"
else
  fail "secret values shown:${leaks}"
fi

summary
