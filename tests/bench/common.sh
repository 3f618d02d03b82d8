# Sourced by the benchmark scripts: the workspace root as working directory, the release
# receiver's path, a work directory removed at exit, and processes in `pids` killed at exit.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/cwm-receiver
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# One wrk run of post.lua against a URL (THREADS, CONNS, DURATION) -> "rps p99_ms non2xx".
wrk_rps_p99() {
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s tests/bench/post.lua "$1" >"$work/wrk.out"
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(rps, p99, non2xx.group(1) if non2xx else 0)
PY
}
