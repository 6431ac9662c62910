#!/usr/bin/env bash
# Load benchmark (run by hand, not in CI): local-submission throughput and latency of atp-native
# versus the reference Python server, on this machine, at several concurrency levels; then
# end-to-end delivery across two domains (sustained delivered/s, submit→readable latency, loss)
# for two atp servers and for two reference servers.
#
#   tests/bench/run.sh                      # 1,16,64 concurrent connections, 10 s each (+2 s warm-up)
#   DURATION=5 LEVELS=1,16 tests/bench/run.sh
#   SKIP_REFERENCE=1 tests/bench/run.sh     # atp only
#   E2E_LEVELS=1,32 E2E_DURATION=10         # end-to-end levels (atp); the reference runs one light level
#
# Both servers run on loopback with TLS (atp: its self-signed certificate; the reference: one made with
# openssl, since it cannot make its own), log at warning level, and keep their state in a temporary
# directory. A 202 from either means the message is stored (atp: committed to SQLite with
# synchronous=FULL before the answer). The bench agent sends to itself, so every message is a local
# delivery. Prints a Markdown table; the raw JSON lines are kept in $OUT (default target/bench/).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
LEVELS=${LEVELS:-1,16,64}
DOMAIN=bench.test
OUT=${OUT:-$ROOT/target/bench}
VENV=${ATP_REF_VENV:-$ROOT/target/atp-ref-venv}
mkdir -p "$OUT"

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() { # port name
  for _ in $(seq 1 150); do
    if curl -sk --max-time 1 "https://127.0.0.1:$1/.well-known/atp/v1/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not start; its log:" >&2
  cat "$work/$2.log" >&2
  return 1
}

echo "== building (release)" >&2
cargo build --release -q -p atp-native -p atp-bench
BENCH=$ROOT/target/release/atp-bench

run_bench() { # label port
  "$BENCH" --server "127.0.0.1:$2" --domain "$DOMAIN" --label "$1" \
    --concurrency "$LEVELS" --duration "$DURATION" --warmup "$WARMUP" | tee "$OUT/$1.jsonl"
}

echo "== atp-native" >&2
port=$(free_port)
"$ROOT/target/release/atp" server start --domain "$DOMAIN" --host 127.0.0.1 --port "$port" \
  --home "$work/atp" --log-level warn >"$work/atp.log" 2>&1 &
pids+=($!)
wait_healthy "$port" atp
run_bench atp "$port" >/dev/null
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

if [[ -z "${SKIP_REFERENCE:-}" ]]; then
  echo "== reference (Python, agent-transfer-protocol 1.0.0a8)" >&2
  scripts/install-reference.sh >&2
  mkdir -p "$work/ref/.atp/certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/ref/.atp/certs/server.key" -out "$work/ref/.atp/certs/server.crt" 2>/dev/null
  port=$(free_port)
  HOME=$work/ref "$VENV/bin/atp" server start --domain "$DOMAIN" --host 127.0.0.1 --port "$port" \
    --cert "$work/ref/.atp/certs/server.crt" --key "$work/ref/.atp/certs/server.key" \
    --log-level WARNING >"$work/reference.log" 2>&1 &
  pids+=($!)
  wait_healthy "$port" reference
  run_bench reference "$port" >/dev/null
else
  : >"$OUT/reference.jsonl"
fi

# ---- end to end: alpha -> beta across domains (submit to alpha, read from beta's inbox) ----
E2E_LEVELS=${E2E_LEVELS:-1,32}
E2E_DURATION=${E2E_DURATION:-10}
run_e2e() { # label alpha_port beta_port levels duration drain
  "$BENCH" --server "127.0.0.1:$2" --domain alpha.bench --to bench@beta.bench --to-server "127.0.0.1:$3" \
    --label "$1" --concurrency "$4" --duration "$5" --warmup 1 --drain "$6" | tee "$OUT/$1-e2e.jsonl"
}
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()

echo "== atp-native end to end (two servers in one home: zero-config local discovery)" >&2
pa=$(free_port); pb=$(free_port)
for d in alpha:$pa beta:$pb; do
  "$ROOT/target/release/atp" server start --domain "${d%%:*}.bench" --host 127.0.0.1 --port "${d##*:}" \
    --home "$work/e2e" --log-level warn >"$work/atp-${d%%:*}.log" 2>&1 &
  pids+=($!)
  wait_healthy "${d##*:}" "atp-${d%%:*}"
done
run_e2e atp "$pa" "$pb" "$E2E_LEVELS" "$E2E_DURATION" 60 >/dev/null
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()

if [[ -z "${SKIP_REFERENCE:-}" ]]; then
  echo "== reference end to end (two servers, protocol.md §11.1 overrides)" >&2
  pa=$(free_port); pb=$(free_port)
  mkdir -p "$work/rs"
  for s in alpha beta; do
    mkdir -p "$work/r-$s/.atp/certs"
    HOME=$work/r-$s "$VENV/bin/atp" keys generate >/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$work/r-$s/.atp/certs/server.key" -out "$work/r-$s/.atp/certs/server.crt" 2>/dev/null
  done
  raw_key() { openssl pkey -pubin -in "$1" -outform DER | tail -c 32 | base64; }
  printf '["alpha.bench"]\nhost = "127.0.0.1"\nport = %s\n\n["beta.bench"]\nhost = "127.0.0.1"\nport = %s\n' \
    "$pa" "$pb" >"$work/rs/peers.toml"
  printf '["ats._atp.alpha.bench"]\nrecord = "v=atp1 allow=ip:127.0.0.1 deny=all"\n\n["default.atk._atp.alpha.bench"]\nrecord = "v=atp1 k=ed25519 p=%s"\n' \
    "$(raw_key "$work/r-alpha/.atp/keys/default.pub")" >"$work/rs/dns.toml"
  for d in alpha:$pa beta:$pb; do
    s=${d%%:*}
    printf 'local_mode = true\npeers_file = "%s"\ndns_override_file = "%s"\n' "$work/rs/peers.toml" "$work/rs/dns.toml" \
      >"$work/r-$s/.atp/config.toml"
    HOME=$work/r-$s "$VENV/bin/atp" server start --domain "$s.bench" --host 127.0.0.1 --port "${d##*:}" \
      --cert "$work/r-$s/.atp/certs/server.crt" --key "$work/r-$s/.atp/certs/server.key" \
      --log-level WARNING >"$work/reference-$s.log" 2>&1 &
    pids+=($!)
    wait_healthy "${d##*:}" "reference-$s"
  done
  # The reference delivers ~4 messages/s (a 5 s loop, 20 at a time), so it gets one light level.
  run_e2e reference "$pa" "$pb" 1 "${REF_E2E_DURATION:-5}" "${REF_E2E_DRAIN:-120}" >/dev/null
else
  : >"$OUT/reference-e2e.jsonl"
fi

python3 - "$OUT/atp-e2e.jsonl" "$OUT/reference-e2e.jsonl" <<'EOF'
import json, sys
def load(p):
    try:
        return [json.loads(l) for l in open(p) if l.strip()]
    except FileNotFoundError:
        return []
fmt = lambda v, d=1: "–" if v is None or v != v else f"{v:,.{d}f}"
print("\nEnd to end across domains (submit to alpha, alpha signs and transfers, read from beta's inbox):\n")
print("| server | concurrency | accepted | delivered | lost | duplicates | delivered/s | submit→readable p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in load(sys.argv[1]) + load(sys.argv[2]):
    print(f"| {r['label']} | {r['concurrency']} | {r['accepted']:,} | {r['delivered']:,} | {r['lost']:,} | {r['duplicates']} "
          f"| {fmt(r['throughput'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} |")
EOF

python3 - "$OUT/atp.jsonl" "$OUT/reference.jsonl" "$(nproc)" <<'EOF'
import json, sys
def load(p):
    try:
        return {r["concurrency"]: r for r in map(json.loads, filter(str.strip, open(p)))}
    except FileNotFoundError:
        return {}
atp, ref, cpus = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
fmt = lambda v, d=1: "–" if v is None or v != v else f"{v:,.{d}f}"
print(f"\nLocal submissions (POST message, Basic credential, TLS 1.3 keep-alive), {cpus} CPUs, "
      "load generator on the same machine:\n")
print("| concurrency | atp msgs/s | atp p50 ms | atp p99 ms | reference msgs/s | reference p50 ms | reference p99 ms | ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted(set(atp) | set(ref)):
    a, r = atp.get(c, {}), ref.get(c, {})
    ratio = a.get("throughput", 0) / r["throughput"] if r.get("throughput") else None
    errs = f" ({a['errors']} err)" if a.get("errors") else ""
    rerrs = f" ({r['errors']} err)" if r.get("errors") else ""
    print(f"| {c} | {fmt(a.get('throughput'))}{errs} | {fmt(a.get('p50_ms'), 2)} | {fmt(a.get('p99_ms'), 2)} "
          f"| {fmt(r.get('throughput'))}{rerrs} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} "
          f"| {fmt(ratio) + '×' if ratio else '–'} |")
EOF
