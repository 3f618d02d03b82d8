#!/usr/bin/env bash
# Kafka sink benchmark. One release receiver serves a `kafka` webhook (producing to librdkafka's
# mock cluster, run by the `kafka_mock` example in its own process; each 200 waits for the
# broker's acknowledgement) and a `log` webhook (stdout to /dev/null). wrk posts the 140-byte
# JSON body of post.lua to each, alternating, ROUNDS times. Prints req/s and p99 per round, the
# medians and the kafka/log req/s ratio (target >= 0.5). Asserts nothing.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}

cargo build --release --locked -q -p cwm-receiver
cargo build --release --locked -q -p cwm-tests --example kafka_mock
MOCK=$target_dir/release/examples/kafka_mock

# The mock cluster runs until its stdin (a FIFO this shell holds open) closes, or it is killed.
mkfifo "$work/mock.in"
exec 3<>"$work/mock.in"
TOPICS=bench PARTITIONS=${PARTITIONS:-1} "$MOCK" <"$work/mock.in" >"$work/mock.out" 2>"$work/mock.err" &
pids+=("$!")
for _ in $(seq 200); do [ -s "$work/mock.out" ] && break; sleep 0.05; done
bootstrap=$(head -n1 "$work/mock.out")
[ -n "$bootstrap" ] || { echo "the mock cluster did not start: $(cat "$work/mock.err")" >&2; exit 1; }

cat >"$work/connections.json" <<JSON
{"bench_kafka": {"type": "kafka", "bootstrap_servers": "$bootstrap"}}
JSON
cat >"$work/webhooks.json" <<'JSON'
{
  "kafka": {"module": "kafka", "connection": "bench_kafka", "module-config": {"topic": "bench"}},
  "log":   {"module": "log"}
}
JSON

port=$(free_port)
(cd "$work" && HOST=127.0.0.1 PORT=$port LOG_LEVEL=warn exec "$BIN" >/dev/null 2>"$work/receiver.err") &
pids+=("$!")
wait_port "$port"

run() { wrk_rps_p99 "http://127.0.0.1:$port$1"; } # path -> "rps p99_ms non2xx"
# Warm-up, not counted: the producer's broker connections, the log writer.
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$port/webhook/log" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s -s tests/bench/post.lua "http://127.0.0.1:$port/webhook/kafka" >/dev/null
rows=()
for _ in $(seq "$ROUNDS"); do
  read -r l_rps l_p99 l_err < <(run /webhook/log)
  read -r k_rps k_p99 k_err < <(run /webhook/kafka)
  rows+=("$l_rps,$l_p99,$l_err,$k_rps,$k_p99,$k_err")
done

python3 - "$THREADS" "$CONNS" "$DURATION" "${rows[@]}" <<'PY'
import statistics, sys
threads, conns, duration = sys.argv[1:4]
rows = [list(map(float, r.split(","))) for r in sys.argv[4:]]
print(f"== Kafka sink: wrk -t{threads} -c{conns} -d{duration}, 140-byte JSON POST, mock cluster, {len(rows)} alternating rounds ==")
print(f"{'round':<7}{'log req/s':>11}{'p99 ms':>9}{'kafka req/s':>13}{'p99 ms':>9}{'ratio':>8}   non-2xx log / kafka")
ratios = []
for i, (l_rps, l_p99, l_err, k_rps, k_p99, k_err) in enumerate(rows, 1):
    ratios.append(k_rps / l_rps)
    print(f"{i:<7}{l_rps:>11.0f}{l_p99:>9.2f}{k_rps:>13.0f}{k_p99:>9.2f}{k_rps / l_rps:>8.2f}   {l_err:.0f} / {k_err:.0f}")
med = lambda i: statistics.median(r[i] for r in rows)
print(f"{'median':<7}{med(0):>11.0f}{med(1):>9.2f}{med(3):>13.0f}{med(4):>9.2f}{statistics.median(ratios):>8.2f}")
print(f"kafka/log req/s ratio, median of the rounds: {statistics.median(ratios):.2f}   (target >= 0.50)")
PY
