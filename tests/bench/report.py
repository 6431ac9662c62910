#!/usr/bin/env python3
"""Writes the Markdown summary of a tests/bench/run.sh run to stdout.

    report.py OUT_DIR CRITERION_DIR

Reads the JSON lines that run.sh and atp-bench left in OUT_DIR (`<label>.jsonl` local submissions,
`<label>-e2e.jsonl`, `<label>-recv.jsonl`, `<label>-startup.jsonl`, `<label>-rss.json`,
`<label>-e2e-rss.json`, for the labels `atp` and `reference`; `atp-push.jsonl`, `atp-streams.jsonl`), the run's facts from the BENCH_META_*
environment variables, and criterion's `new/estimates.json` files written since BENCH_META_CRITERION_SINCE.
"""
import json
import math
import os
import pathlib
import sys

OUT = pathlib.Path(sys.argv[1])
CRITERION = pathlib.Path(sys.argv[2])
LABELS = ("atp", "reference")


def rows(name):
    p = OUT / name
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def one(name):
    r = rows(name)
    return r[0] if r else {}


def num(v, d=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{d}f}"


def ratio(a, r, higher_is_better):
    """Stated so that >1 means atp is better."""
    if a is None or r is None or a != a or r != r or a <= 0 or r <= 0:
        return "–"
    x = a / r if higher_is_better else r / a
    return f"{x:,.1f}×" if x >= 10 else f"{x:,.2f}×"


def meta(key, default="?"):
    return os.environ.get(f"BENCH_META_{key}", default) or default


out = []
p = out.append

p("# atp benchmark results\n")
p(f"* date: {meta('DATE')}; total run time {meta('TOTAL')} s "
  f"({', '.join(f'{k} {v} s' for k, v in (x.split('=') for x in meta('PHASES', '').split()))})")
p(f"* machine: {os.cpu_count()} CPUs (`nproc` {os.popen('nproc').read().strip()}), {meta('CPU', 'CPU model unknown')}; "
  f"kernel {meta('KERNEL')}")
p(f"* load average (1/5/15 min): {meta('LOAD_START')} at the start, {meta('LOAD_END')} at the end "
  "(the machine is shared; the load generator runs on it too)")
p(f"* atp: {meta('ATP')}; reference: {meta('REF')}")
p(f"* settings: `{meta('SETTINGS')}`")
p("")

sub = {lab: {r["concurrency"]: r for r in rows(f"{lab}.jsonl")} for lab in LABELS}
e2e = {lab: {r["concurrency"]: r for r in rows(f"{lab}-e2e.jsonl")} for lab in LABELS}
recv = {lab: one(f"{lab}-recv.jsonl") for lab in LABELS}
start = {lab: one(f"{lab}-startup.jsonl") for lab in LABELS}
rss = {lab: one(f"{lab}-rss.json") for lab in LABELS}
rss2 = {lab: one(f"{lab}-e2e-rss.json") for lab in LABELS}
push = rows("atp-push.jsonl")
streams = one("atp-streams.jsonl")

p("| metric | atp | reference | ratio (>1: atp better) |")
p("|---|---:|---:|---:|")


def row(metric, a, r, higher, d=1):
    p(f"| {metric} | {num(a, d)} | {num(r, d)} | {ratio(a, r, higher)} |")


for c in sorted(set(sub["atp"]) | set(sub["reference"])):
    a, r = sub["atp"].get(c, {}), sub["reference"].get(c, {})
    row(f"submit throughput, {c} connection{'s' if c > 1 else ''} (msgs/s)", a.get("throughput"),
        r.get("throughput"), True)
for c in sorted(set(sub["atp"]) | set(sub["reference"])):
    a, r = sub["atp"].get(c, {}), sub["reference"].get(c, {})
    row(f"submit latency p99, {c} connection{'s' if c > 1 else ''} (ms)", a.get("p99_ms"), r.get("p99_ms"),
        False, 2)


def best(d):
    return max(d.values(), key=lambda x: x.get("throughput") or 0, default={})


ba, br = best(e2e["atp"]), best(e2e["reference"])
if ba or br:
    row(f"end-to-end sustained delivery, cross-domain (delivered/s; best level: atp c={ba.get('concurrency', '–')}, "
        f"reference c={br.get('concurrency', '–')})", ba.get("throughput"), br.get("throughput"), True)
    a1, r1 = e2e["atp"].get(1, {}), e2e["reference"].get(1, {})
    row("submit→readable latency p50, 1 connection (ms)", a1.get("p50_ms"), r1.get("p50_ms"), False, 2)
    row("submit→readable latency p99, 1 connection (ms)", a1.get("p99_ms"), r1.get("p99_ms"), False, 2)
    lost = [f"{lab} {sum(x.get('lost', 0) for x in e2e[lab].values())} lost / "
            f"{sum(x.get('duplicates', 0) for x in e2e[lab].values())} duplicates" for lab in LABELS if e2e[lab]]
if recv["atp"] or recv["reference"]:
    a, r = recv["atp"], recv["reference"]
    row(f"recv drain, GET messages in pages of {a.get('page', r.get('page', '?'))} (msgs/s; inbox of "
        f"{num(a.get('messages'), 0)} / {num(r.get('messages'), 0)} messages)", a.get("throughput"),
        r.get("throughput"), True)
row("start-up, spawn → first GET health 200 over TLS (ms, median)", start["atp"].get("median_ms"),
    start["reference"].get("median_ms"), False, 0)


def mib(d, k):
    return d[k] / 1024 if k in d else None


row("idle RSS after start-up (MiB)", mib(rss["atp"], "idle_kb"), mib(rss["reference"], "idle_kb"), False)
row("peak RSS after submissions and recv drain, VmHWM (MiB)", mib(rss["atp"], "hwm_kb"),
    mib(rss["reference"], "hwm_kb"), False)
if rss2["atp"] or rss2["reference"]:
    row("peak RSS of the two end-to-end servers, summed VmHWM (MiB)", mib(rss2["atp"], "hwm_kb"),
        mib(rss2["reference"], "hwm_kb"), False)
p("")
if e2e["atp"] or e2e["reference"]:
    p(f"End to end: {'; '.join(lost)}.")
if rss["reference"].get("processes", 1) > 1 or rss["atp"].get("processes", 1) > 1:
    p(f"RSS summed over the process tree ({rss['atp'].get('processes')} / {rss['reference'].get('processes')} "
      "processes).")
p("")

# ---- details ----
if sub["atp"] or sub["reference"]:
    p("### Local submissions\n")
    p("POST message with the agent's Basic credential, one TLS 1.3 keep-alive connection per client.\n")
    p("| concurrency | atp msgs/s | atp p50 ms | atp p99 ms | reference msgs/s | reference p50 ms | reference p99 ms | ratio |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in sorted(set(sub["atp"]) | set(sub["reference"])):
        a, r = sub["atp"].get(c, {}), sub["reference"].get(c, {})
        err = lambda x: f" ({x['errors']} err)" if x.get("errors") else ""
        p(f"| {c} | {num(a.get('throughput'))}{err(a)} | {num(a.get('p50_ms'), 2)} | {num(a.get('p99_ms'), 2)} "
          f"| {num(r.get('throughput'))}{err(r)} | {num(r.get('p50_ms'), 2)} | {num(r.get('p99_ms'), 2)} "
          f"| {ratio(a.get('throughput'), r.get('throughput'), True)} |")
    p("")

if e2e["atp"] or e2e["reference"]:
    p("### End to end across domains\n")
    p("Submit to alpha; alpha signs and transfers to beta; the generator polls beta's inbox.\n")
    p("| server | concurrency | accepted | delivered | lost | duplicates | delivered/s | submit→readable p50 ms | p99 ms |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lab in LABELS:
        for c, r in sorted(e2e[lab].items()):
            p(f"| {lab} | {c} | {r['accepted']:,} | {r['delivered']:,} | {r['lost']:,} | {r['duplicates']} "
              f"| {num(r['throughput'])} | {num(r['p50_ms'], 2)} | {num(r['p99_ms'], 2)} |")
    p("")

if push or streams:
    p("### Push delivery (atp only, docs/protocol.md §6.5)\n")
    p("Submit → event on the recipient's open inbox stream, one message at a time, beside polling "
      "`GET messages` (each message submitted at another point of the polling interval).\n")
    p("| servers | messages | stream p50 ms | stream p99 ms | polling every | polled | polling p50 ms | polling p99 ms |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in push:
        p(f"| {r['servers']} | {r['rounds']} | {num(r['p50_ms'], 2)} | {num(r['p99_ms'], 2)} | {r['poll_ms']} ms "
          f"| {r['poll_rounds']} | {num(r['poll_p50_ms'])} | {num(r['poll_p99_ms'])} |")
    if streams:
        p(f"\n{streams['streams']:,} open streams (one TLS connection each): server RSS "
          f"{num(streams['rss_before_kb'] / 1024)} → {num(streams['rss_after_kb'] / 1024)} MiB "
          f"(+{num(streams['extra_mib'])} MiB); one message reached all {streams['reached']:,} in "
          f"{num(streams['fanout_ms'], 0)} ms.")
    p("")

if recv["atp"] or recv["reference"] or start["atp"] or start["reference"]:
    p("### Recv drain and start-up\n")
    p("| server | messages | pages | read passes (s) | msgs/s (median pass) | preload msgs/s (in flight) "
      "| start-up runs (ms) | first start (ms, creates state) |")
    p("|---|---:|---:|---|---:|---:|---|---:|")
    for lab in LABELS:
        r, s = recv[lab], start[lab]
        if not (r or s):
            continue
        p(f"| {lab} | {num(r.get('messages'), 0)} | {num(r.get('pages'), 0)} "
          f"| {', '.join(f'{x:.3f}' for x in r.get('passes_s', []))} | {num(r.get('throughput'))} "
          f"| {num(r.get('preload_per_s'))} ({r.get('preload_concurrency', '–')}) "
          f"| {', '.join(f'{x:.0f}' for x in s.get('runs_ms', []))} | {num(s.get('first_ms'), 0)} |")
    p("")

# ---- criterion ----
since = float(meta("CRITERION_SINCE", "0"))
benches = []
if since > 0 and CRITERION.is_dir():
    for est in CRITERION.glob("**/new/estimates.json"):
        if est.stat().st_mtime + 1 < since:
            continue  # an earlier run's
        info = json.loads((est.parent / "benchmark.json").read_text())
        median_ns = json.loads(est.read_text())["median"]["point_estimate"]
        tp = (info.get("throughput") or {}).get("Bytes")
        benches.append((info["full_id"], median_ns, tp))
if benches:
    p("### Criterion micro-benchmarks (atp-wasm, native, `cargo bench -p atp-wasm --bench protocol`)\n")
    p("| benchmark | median | per second | MB/s |")
    p("|---|---:|---:|---:|")
    order = ["canonicalize", "sign", "verify", "inbound_pipeline"]
    key = lambda b: (order.index(b[0].split("/")[0]) if b[0].split("/")[0] in order else 99,
                     b[0].rsplit("/", 1)[0], b[0].endswith("10k"), b[0])
    for name, ns, tp in sorted(benches, key=key):
        t = f"{ns / 1000:,.2f} µs" if ns < 1e6 else f"{ns / 1e6:,.2f} ms"
        p(f"| {name} | {t} | {1e9 / ns:,.0f} | {num(tp / ns * 1000) if tp else '–'} |")
    p("")

print("\n".join(out))
