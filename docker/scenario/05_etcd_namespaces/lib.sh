# shellcheck shell=bash
# Helpers shared by seed_etcd.sh and run_test.sh (sourced, not run).
#
# etcdctl is chosen, in this order, by:
#   ETCDCTL_CMD        the command to run, split on spaces, e.g.
#                      "docker compose exec -T etcd etcdctl"
#   etcdctl on PATH    talks to ETCDCTL_ENDPOINTS (etcdctl reads it itself; default 127.0.0.1:2379)
#   docker             `docker compose exec -T etcd etcdctl` in this folder's compose project

SCENARIO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ETCDCTL_API=3

die() {
  echo "error: $*" >&2
  exit 2
}

ETCDCTL=()
if [[ -n "${ETCDCTL_CMD:-}" ]]; then
  read -r -a ETCDCTL <<<"${ETCDCTL_CMD}"
elif command -v etcdctl >/dev/null 2>&1; then
  ETCDCTL=(etcdctl)
elif command -v docker >/dev/null 2>&1; then
  ETCDCTL=(docker compose -f "${SCENARIO_DIR}/docker-compose.yaml" exec -T -e ETCDCTL_API=3 etcd etcdctl)
else
  die "etcdctl not found: install it (Debian package etcd-client) or set ETCDCTL_CMD"
fi

# ctl ARGS...: run etcdctl with bounded timeouts, so a dead etcd fails fast instead of hanging.
ctl() {
  "${ETCDCTL[@]}" --dial-timeout=3s --command-timeout=5s "$@"
}
