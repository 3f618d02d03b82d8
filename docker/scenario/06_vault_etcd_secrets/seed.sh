#!/usr/bin/env bash
# Seed the scenario: Vault first (KV v2 mount `webhooks`, secret app/auth with webhook_token and
# hmac_secret at v1), then the etcd keys that reference it:
#
#   /cwm/default/webhooks/vault_auth    authorization "Bearer {$vault:app/auth#webhook_token}"
#   /cwm/default/webhooks/vault_hmac    hmac.secret "{$vault:app/auth#hmac_secret}"
#   /cwm/default/webhooks/legacy_env    authorization "Bearer {$LEGACY_ENV_TOKEN}"
#   /cwm/default/webhooks/with_default  "{$vault:missing/path#f:dflt}"  (missing, has a default)
#   /cwm/default/webhooks/broken        "{$vault:missing/path#f}"       (missing, no default)
#
# Idempotent: it resets the secret to v1 and the keys, so `seed.sh && run_test.sh` repeats.
#
# Environment: VAULT_ADDR, VAULT_TOKEN, ETCDCTL_ENDPOINTS / ETCDCTL_CMD (see lib.sh);
# ETCD_PREFIX (default /cwm/).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PREFIX="${ETCD_PREFIX:-/cwm/}"

echo "Seeding Vault (${VAULT_ADDR})"
# 204 when enabled now, 400 when the mount already exists.
code="$(vault_api POST "sys/mounts/${VAULT_MOUNT}" '{"type":"kv","options":{"version":"2"}}')"
case "${code}" in
  200 | 204 | 400) echo "  KV v2 mount ${VAULT_MOUNT}/ ready" ;;
  *) die "enabling the KV v2 mount ${VAULT_MOUNT} failed (HTTP ${code})" ;;
esac
# KV v2 needs a moment after mounting before it accepts writes.
for _ in $(seq 1 50); do
  if [[ "$(vault_api POST "${VAULT_MOUNT}/data/app/auth" \
    "{\"data\":{\"webhook_token\":\"${TOKEN_V1}\",\"hmac_secret\":\"${HMAC_V1}\"}}")" == 200 ]]; then
    break
  fi
  sleep 0.2
done
vault_put app/auth "{\"webhook_token\":\"${TOKEN_V1}\",\"hmac_secret\":\"${HMAC_V1}\"}"
echo "  ${VAULT_MOUNT}/app/auth: webhook_token, hmac_secret (v1)"

put() {
  ctl put "${PREFIX}$1" "$2" >/dev/null
  echo "  put ${PREFIX}$1"
}

echo "Seeding etcd (${ETCDCTL_ENDPOINTS:-${ETCDCTL[*]}})"
# shellcheck disable=SC2016 # the placeholders are literal
{
  put default/webhooks/vault_auth '{"module":"log","authorization":"Bearer {$vault:app/auth#webhook_token}"}'
  put default/webhooks/vault_hmac '{"module":"log","hmac":{"secret":"{$vault:app/auth#hmac_secret}","header":"X-HMAC-Signature","algorithm":"sha256"}}'
  put default/webhooks/legacy_env '{"module":"log","authorization":"Bearer {$LEGACY_ENV_TOKEN}"}'
  put default/webhooks/with_default '{"module":"log","authorization":"Bearer {$vault:missing/path#f:dflt}"}'
  put default/webhooks/broken '{"module":"log","authorization":"Bearer {$vault:missing/path#f}"}'
}
echo "Seeded: vault_auth, vault_hmac, legacy_env, with_default, broken"
