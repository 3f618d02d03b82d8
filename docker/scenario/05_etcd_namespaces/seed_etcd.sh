#!/usr/bin/env bash
# Seed etcd with the scenario's configuration: two namespaces and one global connection.
#
#   /cwm/ns_alpha/webhooks/hook1      log, pretty_print true
#   /cwm/ns_alpha/webhooks/hook2      log
#   /cwm/ns_beta/webhooks/hook1       log, pretty_print false
#   /cwm/global/connections/redis_main
#
# Idempotent: it also removes the key run_test.sh adds live (ns_beta/hook_new), so
# `seed_etcd.sh && run_test.sh` can be repeated against the same etcd.
#
# Environment: ETCDCTL_ENDPOINTS (default 127.0.0.1:2379) or ETCDCTL_CMD, see lib.sh;
# ETCD_PREFIX (default /cwm/).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PREFIX="${ETCD_PREFIX:-/cwm/}"

put() {
  ctl put "${PREFIX}$1" "$2" >/dev/null
  echo "  put ${PREFIX}$1"
}

echo "Seeding etcd (${ETCDCTL_ENDPOINTS:-${ETCDCTL[*]}})"
put ns_alpha/webhooks/hook1 '{"data_type":"json","module":"log","module-config":{"pretty_print":true}}'
put ns_alpha/webhooks/hook2 '{"data_type":"json","module":"log"}'
put ns_beta/webhooks/hook1 '{"data_type":"json","module":"log","module-config":{"pretty_print":false}}'
put global/connections/redis_main '{"type":"redis-rq","host":"localhost","port":6379}'
ctl del "${PREFIX}ns_beta/webhooks/hook_new" >/dev/null
echo "Seeded: ns_alpha {hook1, hook2}, ns_beta {hook1}, global connection redis_main"
