# shellcheck shell=bash
# Helpers shared by seed_etcd.sh and run_test.sh (sourced, not run).
#
# etcdctl is chosen, in this order, by:
#   ETCDCTL_CMD        the command to run, split on spaces, e.g.
#                      "docker compose exec -T etcd etcdctl"
#   etcdctl on PATH    talks to ETCDCTL_ENDPOINTS (etcdctl reads it itself; default 127.0.0.1:2379)
#   docker             `docker compose exec -T etcd etcdctl` in this folder's compose project

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/checks.sh
source "${SCENARIO_DIR}/../lib/checks.sh"

use_etcdctl "${SCENARIO_DIR}/docker-compose.yaml"
