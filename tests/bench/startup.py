#!/usr/bin/env python3
"""Start-up time of an ATP server (used by tests/bench/run.sh).

Spawns the server command, polls `GET /.well-known/atp/v1/health` over TLS (certificate not checked)
every 5 ms, and records the time from spawning to the first 200; then stops the server (SIGTERM, SIGKILL
after 10 s) and starts again. The first start is a warm-up that creates the server's state (keys, TLS
certificate, database) and is reported separately; the median of the next --runs starts is the figure.

    startup.py --label atp --runs 5 -- atp server start --port {port} ...

`{port}` in the command is replaced by a free loopback port. Prints one JSON line.
"""
import argparse
import http.client
import json
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port, ctx):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx)
    try:
        conn.request("GET", "/.well-known/atp/v1/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def one_start(cmd, log, ctx, timeout):
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                sys.exit(f"startup.py: the server exited with {proc.returncode}; see {log.name}")
            if healthy(port, ctx):
                return (time.perf_counter() - t0) * 1000
            time.sleep(0.005)
        sys.exit(f"startup.py: not healthy after {timeout} s; see {log.name}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--log", default="/dev/null")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with open(a.log, "a") as log:
        first = one_start(cmd, log, ctx, a.timeout)
        runs = [one_start(cmd, log, ctx, a.timeout) for _ in range(a.runs)]
    row = {"label": a.label, "mode": "startup", "first_ms": first, "runs_ms": runs,
           "median_ms": statistics.median(runs)}
    print(f"{a.label:<10} start-up: median {row['median_ms']:.0f} ms "
          f"(runs {', '.join(f'{r:.0f}' for r in runs)} ms; first start {first:.0f} ms)", file=sys.stderr)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
