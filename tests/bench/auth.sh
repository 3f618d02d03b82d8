#!/usr/bin/env bash
# Authentication benchmark (issue: webhook authentication). wrk posts the same 1 KiB JSON body to
# a `log` webhook without authentication and to one with Bearer + HMAC-SHA256 (GitHub style
# `X-Hub-Signature-256: sha256=<hex>`), alternating, ROUNDS times. Prints req/s per round, the
# medians and their ratio (target: authentication costs < 10% of throughput). Asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}

cargo build --release --locked -q -p cwm-receiver
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/cwm-receiver
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cat >"$work/webhooks.json" <<'JSON'
{
  "plain":  {"module": "log"},
  "signed": {"module": "log", "authorization": "Bearer bench-token",
             "hmac": {"secret": "bench-secret", "header": "X-Hub-Signature-256", "algorithm": "sha256"}}
}
JSON
# A 1 KiB JSON body and the Lua scripts that post it, with and without credentials.
python3 - "$work" <<'PY'
import hashlib, hmac, json, sys
work = sys.argv[1]
frame = '{"event":"push","pad":""}'
body = frame[:-2] + "x" * (1024 - len(frame)) + '"}'
assert len(body.encode()) == 1024
sig = hmac.new(b"bench-secret", body.encode(), hashlib.sha256).hexdigest()
lua_body = body.replace("\\", "\\\\").replace("'", "\\'")
for name, extra in [("plain", ""), ("signed",
        f'wrk.headers["Authorization"] = "Bearer bench-token"\n'
        f'wrk.headers["X-Hub-Signature-256"] = "sha256={sig}"\n')]:
    with open(f"{work}/{name}.lua", "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(extra)
        f.write(f"wrk.body = '{lua_body}'\n")
print(f"body: {len(body.encode())} bytes")
PY
port=$(free_port)
(cd "$work" && HOST=127.0.0.1 PORT=$port LOG_LEVEL=warn exec "$BIN" >/dev/null 2>"$work/receiver.err") &
pid=$!
wait_port "$port"
rps() { # lua path -> req/s (and non-2xx count)
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$1" "http://127.0.0.1:$port$2" >"$work/wrk.out"
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1), non.group(1) if non else 0)
PY
}
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$work/plain.lua" "http://127.0.0.1:$port/webhook/plain" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$work/signed.lua" "http://127.0.0.1:$port/webhook/signed" >/dev/null
rows=()
for _ in $(seq "$ROUNDS"); do
  read -r p perr < <(rps "$work/plain.lua" /webhook/plain)
  read -r s serr < <(rps "$work/signed.lua" /webhook/signed)
  rows+=("$p,$perr,$s,$serr")
done
python3 - "$THREADS" "$CONNS" "$DURATION" "${rows[@]}" <<'PY'
import statistics, sys
threads, conns, duration = sys.argv[1:4]
rows = [r.split(",") for r in sys.argv[4:]]
print(f"== Authentication: wrk -t{threads} -c{conns} -d{duration}, 1 KiB JSON POST to a log webhook, {len(rows)} alternating rounds ==")
print(f"{'round':<7}{'no authentication':>20}{'Bearer + HMAC-SHA256':>24}{'ratio':>8}")
ratios = []
for i, (p, perr, s, serr) in enumerate(rows, 1):
    p, s = float(p), float(s)
    ratios.append(s / p)
    print(f"{i:<7}{p:>20.0f}{s:>24.0f}{s / p:>8.2f}   non-2xx: {perr} / {serr}")
med = statistics.median(ratios)
print(f"authenticated/plain req/s ratio, median of the rounds: {med:.2f}   (target >= 0.90: authentication costs < 10%)")
PY
