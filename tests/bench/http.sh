#!/usr/bin/env bash
# HTTP benchmark (issue: receiver foundation). wrk posts a 140-byte JSON body to a `log` webhook
# (stdout to /dev/null), 2 threads, 50 connections, 10 s; and the same load on a bare hyper server
# that reads the body and answers 200, alternating, ROUNDS times. Prints req/s, p50, p99, server
# CPU per request and the ratio of each round, the median of each figure over the rounds, and RSS.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}

cargo build --release --locked -q -p cwm-receiver
cargo build --release --locked -q -p cwm-tests --example bare_hyper
BARE=$target_dir/release/examples/bare_hyper

echo '{"bench":{"data_type":"json","module":"log"}}' >"$work/webhooks.json"
echo '{}' >"$work/connections.json"

rport=$(free_port)
(cd "$work" && HOST=127.0.0.1 PORT=$rport LOG_LEVEL=warn exec "$BIN" >/dev/null 2>"$work/receiver.err") &
rpid=$!; pids+=("$rpid")
bport=$(free_port)
PORT=$bport "$BARE" >/dev/null 2>&1 &
bpid=$!; pids+=("$bpid")
wait_port "$rport"; wait_port "$bport"
sleep 1
idle_rss=$(rss_kb "$rpid")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
run() { # url pid -> "rps p50_ms p99_ms non2xx cpu_us_per_request"
  local t0; t0=$(cpu_ticks "$2")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s tests/bench/post.lua "$1" >"$work/wrk.out"
  python3 - "$work/wrk.out" "$t0" "$(cpu_ticks "$2")" "$(getconf CLK_TCK)" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
t0, t1, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", t).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
done = int(re.search(r"(\d+) requests in", t).group(1))
print(rps, p50, p99, non2xx.group(1) if non2xx else 0, (t1 - t0) / hz * 1e6 / max(done, 1))
PY
}
# The machine is shared: alternate baseline and receiver runs and report each round and the
# median round, so a burst of outside load does not land on one side only.
# Warm-up, not counted: connections, allocator pools and the log writer reach a steady state.
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$bport/" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$rport/webhook/bench" >/dev/null
rounds=()
for round in $(seq "$ROUNDS"); do
  read -r b_rps b_p50 b_p99 _ b_cpu < <(run "http://127.0.0.1:$bport/" "$bpid")
  read -r r_rps r_p50 r_p99 r_err r_cpu < <(run "http://127.0.0.1:$rport/webhook/bench" "$rpid")
  rounds+=("$b_rps,$b_p50,$b_p99,$b_cpu,$r_rps,$r_p50,$r_p99,$r_err,$r_cpu")
done
loaded_rss=$(rss_kb "$rpid")

python3 - "$idle_rss" "$loaded_rss" "$THREADS" "$CONNS" "$DURATION" "${rounds[@]}" <<'PY'
import statistics, sys
idle, loaded = int(sys.argv[1]), int(sys.argv[2])
threads, conns, duration = sys.argv[3:6]
rows = [list(map(float, r.split(","))) for r in sys.argv[6:]]
print(f"== HTTP: wrk -t{threads} -c{conns} -d{duration}, 140-byte JSON POST, {len(rows)} alternating rounds ==")
print(f"{'round':<7}{'server':<26}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'ratio':>8}")
ratios = []
for i, (b_rps, b_p50, b_p99, b_cpu, r_rps, r_p50, r_p99, r_err, r_cpu) in enumerate(rows, 1):
    ratio = r_rps / b_rps
    ratios.append((ratio, r_p99, int(r_err), b_cpu, r_cpu))
    print(f"{i:<7}{'bare hyper (baseline)':<26}{b_rps:>10.0f}{b_p50:>9.3f}{b_p99:>9.3f}{b_cpu:>12.1f}")
    print(f"{'':<7}{'cwm-receiver, log sink':<26}{r_rps:>10.0f}{r_p50:>9.3f}{r_p99:>9.3f}{r_cpu:>12.1f}{ratio:>8.2f}")
med = statistics.median(r[0] for r in ratios)
p99 = statistics.median(r[1] for r in ratios)
print(f"receiver/bare req/s ratio, median of the rounds: {med:.2f}   (target >= 0.60)")
print(f"receiver p99, median of the rounds: {p99:.3f} ms       (target < 5 ms)")
print(f"receiver non-2xx responses: {sum(r[2] for r in ratios)}")
b_cpu = statistics.median(r[3] for r in ratios)
r_cpu = statistics.median(r[4] for r in ratios)
print(f"server CPU (user + system) per request, median of the rounds: receiver {r_cpu:.1f} us, bare {b_cpu:.1f} us")
print(f"receiver RSS idle: {idle / 1024:.1f} MiB (target < 30 MiB), after load: {loaded / 1024:.1f} MiB")
PY
