#!/usr/bin/env bash
# Redis benchmark (issue: Redis sinks). One release receiver serves a `redis_rq` webhook (a local
# redis-server, no persistence) and a `log` webhook (stdout to /dev/null); wrk posts the same
# 140-byte JSON body to each, alternating, ROUNDS times. Prints req/s and p99 of each per round,
# the medians and the ratio rq/log (target >= 0.5: a job in Redis costs at most twice a log line).
# Asserts nothing. Redis is flushed after every redis_rq run so memory stays flat.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}

for bin in wrk redis-server redis-cli; do
  command -v "$bin" >/dev/null || { echo "$bin is missing: run \`make deps-test\` (Debian packages wrk, redis-server, redis-tools)" >&2; exit 1; }
done
cargo build --release --locked -q -p cwm-receiver

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --daemonize no --logfile "$work/redis.log" &
pids+=("$!")
wait_port "$redis_port"
cat >"$work/webhooks.json" <<'JSON'
{
  "rq":  {"module": "redis_rq", "connection": "redis_bench",
          "module-config": {"function": "tasks.process", "queue_name": "bench"}},
  "log": {"module": "log"}
}
JSON
echo "{\"redis_bench\": {\"type\": \"redis-rq\", \"host\": \"127.0.0.1\", \"port\": $redis_port}}" >"$work/connections.json"

port=$(free_port)
(cd "$work" && HOST=127.0.0.1 PORT=$port LOG_LEVEL=warn exec "$BIN" >/dev/null 2>"$work/receiver.err") &
pids+=("$!")
wait_port "$port"

run() { wrk_rps_p99 "http://127.0.0.1:$port$1"; } # path -> "rps p99_ms non2xx"
# Warm-up, not counted: connections, the Redis connection and the log writer reach a steady state.
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$port/webhook/rq" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$port/webhook/log" >/dev/null
jobs=$(redis-cli -p "$redis_port" llen rq:queue:bench)
[ "$jobs" -gt 0 ] || { echo "no job reached Redis; see $work/receiver.err" >&2; cat "$work/receiver.err" >&2; exit 1; }
redis-cli -p "$redis_port" flushall >/dev/null
rows=()
for _ in $(seq "$ROUNDS"); do
  read -r q q99 qerr < <(run /webhook/rq)
  jobs=$(redis-cli -p "$redis_port" llen rq:queue:bench)
  redis-cli -p "$redis_port" flushall >/dev/null
  read -r l l99 lerr < <(run /webhook/log)
  rows+=("$q,$q99,$qerr,$jobs,$l,$l99,$lerr")
done
python3 - "$THREADS" "$CONNS" "$DURATION" "${rows[@]}" <<'PY'
import statistics, sys
threads, conns, duration = sys.argv[1:4]
rows = [r.split(",") for r in sys.argv[4:]]
print(f"== Redis: wrk -t{threads} -c{conns} -d{duration}, 140-byte JSON POST, redis_rq vs log webhook, {len(rows)} alternating rounds ==")
print(f"{'round':<7}{'redis_rq req/s':>15}{'p99 ms':>9}{'log req/s':>12}{'p99 ms':>9}{'ratio':>8}   non-2xx rq/log, jobs in Redis")
ratios, q99s, l99s = [], [], []
for i, (q, q99, qerr, jobs, l, l99, lerr) in enumerate(rows, 1):
    q, q99, l, l99 = float(q), float(q99), float(l), float(l99)
    ratios.append(q / l); q99s.append(q99); l99s.append(l99)
    print(f"{i:<7}{q:>15.0f}{q99:>9.2f}{l:>12.0f}{l99:>9.2f}{q / l:>8.2f}   {qerr} / {lerr}, {jobs}")
print(f"p99 median: redis_rq {statistics.median(q99s):.2f} ms, log {statistics.median(l99s):.2f} ms")
print(f"redis_rq/log req/s ratio, median of the rounds: {statistics.median(ratios):.2f}   (target >= 0.50)")
PY
