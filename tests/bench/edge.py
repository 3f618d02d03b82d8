#!/usr/bin/env python3
"""Edge benchmark (issue: hardening the HTTP edge). Prints figures, asserts nothing.

1. Slowloris and idle flood: 1,000 connections that send a request head a few bytes at a time
   and 20,000 connections that send nothing are opened against the receiver (default settings);
   meanwhile normal requests (a new connection each) are timed, and the receiver's RSS and open
   descriptors are read.
2. Random ids: 10 s of POSTs to random webhook ids (wrk); the receiver's RSS and the size of
   /metrics before and after.

usage: edge.py <receiver binary> <work dir>
"""
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

BIN, WORK = sys.argv[1], sys.argv[2]
SLOW, IDLE = 1_000, 20_000
IDLE_PROCS = 2  # the idle sockets are held by helper processes: one process may not hold them all


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def timed_post(port, path="/webhook/bench", timeout=10.0):
    """Seconds for one POST on a new connection, or None when it failed."""
    t0 = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        if not data.startswith(b"HTTP/1.1 200"):
            return None
    except OSError:
        return None
    return time.perf_counter() - t0


def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.partition(b"\r\n\r\n")[2]


def hold(port, count, slow):
    """Child process: open `count` connections (sending a head slowly when `slow`), hold them."""
    raise_nofile()
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            continue
        socks.append(s)
    head = b"POST /webhook/bench HTTP/1.1\r\nHost: b\r\nX-Slow: "
    sent = 0
    end = time.time() + 60
    while time.time() < end:
        if slow and sent < len(head):
            for s in socks:
                try:
                    s.send(head[sent : sent + 4])
                except OSError:
                    pass
            sent += 4
        time.sleep(1)
    for s in socks:
        s.close()


def start_receiver(extra_env=None):
    port = free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="warn")
    env.update(extra_env or {})
    p = subprocess.Popen(
        [BIN], cwd=WORK, env=env, stdout=subprocess.DEVNULL, stderr=open(f"{WORK}/edge.err", "w")
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, port


def flood():
    p, port = start_receiver()
    time.sleep(0.5)
    idle_rss = rss_mib(p.pid)
    quiet = [t for t in (timed_post(port) for _ in range(20)) if t is not None]
    children = []
    me = os.path.abspath(__file__)
    children.append(subprocess.Popen([sys.executable, me, "--hold", str(port), str(SLOW), "slow"]))
    for _ in range(IDLE_PROCS):
        children.append(
            subprocess.Popen([sys.executable, me, "--hold", str(port), str(IDLE // IDLE_PROCS), "idle"])
        )
    time.sleep(8)  # the connections are opened and the slow heads are being sent
    lat, failed = [], 0
    peak_rss, peak_fds = 0.0, 0
    for _ in range(50):
        t = timed_post(port)
        if t is None:
            failed += 1
        else:
            lat.append(t)
        peak_rss = max(peak_rss, rss_mib(p.pid))
        peak_fds = max(peak_fds, fds(p.pid))
        time.sleep(0.05)
    metrics = get(port, "/metrics").decode()
    for c in children:
        c.kill()
        c.wait()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)

    def ms(xs, q):
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    def metric(name):
        for line in metrics.splitlines():
            if line.startswith(name + " "):
                return line.split()[1]
        return "?"

    print(f"== Edge: {SLOW} slow-header and {IDLE} idle connections against the default limits ==")
    print(f"normal POST on a new connection, quiet:        p50 {ms(quiet, .5):7.2f} ms  max {ms(quiet, 1):7.2f} ms")
    print(f"normal POST on a new connection, under attack: p50 {ms(lat, .5):7.2f} ms  p99 {ms(lat, .99):7.2f} ms"
          f"  max {ms(lat, 1):7.2f} ms  failed {failed}/50   (target: answered in < 50 ms)")
    print(f"receiver RSS: idle {idle_rss:.1f} MiB, peak under attack {peak_rss:.1f} MiB   (target < 200 MB)")
    print(f"receiver open descriptors, peak: {peak_fds}; connection limit {metric('cwm_http_connection_limit')}, "
          f"header timeouts {metric('cwm_http_header_timeouts_total')}, "
          f"idle closed at the cap {metric('cwm_http_idle_connections_closed_total')}")


def random_ids():
    p, port = start_receiver()
    time.sleep(0.5)
    for _ in range(100):
        timed_post(port)
    rss0, m0 = rss_mib(p.pid), len(get(port, "/metrics"))
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_ids.lua")
    subprocess.run(
        ["wrk", "-t2", "-c50", "-d10s", "-s", lua, f"http://127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    rss1, m1 = rss_mib(p.pid), len(get(port, "/metrics"))
    stats = json.loads(get(port, "/stats") or b"{}")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    print("== Edge: 10 s of POSTs to random webhook ids (wrk -t2 -c50) ==")
    print(f"receiver RSS: {rss0:.1f} MiB before, {rss1:.1f} MiB after ({(rss1 / rss0 - 1) * 100:+.1f}%)   (target within 10%)")
    print(f"/metrics size: {m0} bytes before, {m1} bytes after ({(m1 / m0 - 1) * 100:+.1f}%)   (target within 10%)")
    print(f"/stats keys after: {len(stats)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--hold":
        hold(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "slow")
        sys.exit(0)
    raise_nofile()
    with open(f"{WORK}/webhooks.json", "w") as f:
        f.write('{"bench":{"data_type":"json","module":"log"}}')
    flood()
    random_ids()
