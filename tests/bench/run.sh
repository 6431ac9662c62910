#!/usr/bin/env bash
# Benchmarks (run by hand, not in CI), atp-native versus the reference Python server on this machine in
# one run, summarised in one Markdown table with the ratio ($OUT/results.md, default
# $CARGO_TARGET_DIR/bench/results.md):
#
#   * start-up time: spawn → first 200 from GET health over TLS, median of $STARTUP_RUNS starts;
#   * local-submission throughput and latency at several concurrency levels ($LEVELS);
#   * recv drain: $RECV_N messages preloaded into one inbox, read back with GET messages in pages;
#   * idle RSS (VmRSS after start-up and $IDLE_SECONDS idle) and peak RSS (VmHWM after the load);
#   * end to end across two domains: sustained delivered/s, submit→readable p50/p99, loss, duplicates;
#   * push delivery (atp only, docs/protocol.md §6.5): submit → stream event p50/p99 at light load on one
#     server and across two, beside polling every second; the server's extra RSS for $STREAMS open
#     streams and one message's fan-out to all of them;
#   * criterion micro-benchmarks of atp-wasm (canonicalize, sign, verify, the inbound pipeline).
#
#   tests/bench/run.sh                                    # everything, default durations (~5 min)
#   DURATION=3 LEVELS=1,16 E2E_DURATION=5 SKIP_CRITERION=1 tests/bench/run.sh      # a short run
#   SKIP_REFERENCE=1 tests/bench/run.sh                   # atp only
#
# Knobs (environment): DURATION (10) and WARMUP (2) seconds per submission level, LEVELS (1,16,64);
# E2E_LEVELS (1,32), E2E_DURATION (10), REF_E2E_DURATION (5), REF_E2E_DRAIN (120); PUSH_N (200),
# POLL_ROUNDS (10), STREAMS (1000); RECV_N (5000),
# REF_RECV_N (300), RECV_PAGE (100); STARTUP_RUNS (5); IDLE_SECONDS (5); SKIP_REFERENCE, SKIP_CRITERION;
# CRITERION_ARGS (passed to criterion, e.g. "--warm-up-time 1 --measurement-time 2"); OUT.
#
# All servers run on loopback with TLS (atp: its self-signed certificate; the reference: one made with
# openssl, since it cannot make its own), log at warning level, and keep their state in a temporary
# directory. A 202 from either means the message is stored (atp: committed to SQLite with
# synchronous=FULL before the answer). The raw JSON lines are kept in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
LEVELS=${LEVELS:-1,16,64}
E2E_LEVELS=${E2E_LEVELS:-1,32}
E2E_DURATION=${E2E_DURATION:-10}
RECV_N=${RECV_N:-5000}
PUSH_N=${PUSH_N:-200}
POLL_ROUNDS=${POLL_ROUNDS:-10}
STREAMS=${STREAMS:-1000}
REF_RECV_N=${REF_RECV_N:-300}
RECV_PAGE=${RECV_PAGE:-100}
STARTUP_RUNS=${STARTUP_RUNS:-5}
IDLE_SECONDS=${IDLE_SECONDS:-5}
DOMAIN=bench.test
OUT=${OUT:-$TARGET/bench}
VENV=${ATP_REF_VENV:-$ROOT/target/atp-ref-venv}
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.json "$OUT/results.md"

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-bench.XXXXXX")
pids=()
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_servers
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() { # port name
  for _ in $(seq 1 300); do
    if curl -sk --max-time 1 "https://127.0.0.1:$1/.well-known/atp/v1/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not start; its log:" >&2
  cat "$work/$2.log" >&2
  return 1
}

# A process and all its descendants (the reference might fork workers).
tree_pids() {
  echo "$1"
  local c
  for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done
}
# Sum of one /proc/<pid>/status field (kB) over a process tree: mem_kb PID VmRSS|VmHWM
mem_kb() {
  local sum=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

phase_start=$(date +%s)
phases=()
phase() { # name: records the seconds since the previous phase ended
  local now
  now=$(date +%s)
  phases+=("$1=$((now - phase_start))")
  phase_start=$now
}
run_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== building (release)" >&2
cargo build --release -q -p atp-native -p atp-bench
# criterion builds in a target directory of its own: atp-wasm is also a cdylib, so its artifacts carry no
# hash in their names, and the bench build's feature set (criterion's dependencies) would otherwise
# overwrite the release build's atp-wasm and force atp-native to be rebuilt on every run.
CRIT_TARGET=$TARGET/criterion-build
[[ -n "${SKIP_CRITERION:-}" ]] || CARGO_TARGET_DIR=$CRIT_TARGET cargo bench -q -p atp-wasm --bench protocol --no-run
ATP=$TARGET/release/atp
BENCH=$TARGET/release/atp-bench
phase build

if [[ -z "${SKIP_REFERENCE:-}" ]]; then
  scripts/install-reference.sh >&2
  make_cert() { # dir
    mkdir -p "$1/.atp/certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$1/.atp/certs/server.key" -out "$1/.atp/certs/server.crt" 2>/dev/null
  }
  phase install-reference
fi

# ---- one server of each: start-up, idle RSS, local submissions, recv drain, peak RSS ----
# server_cmd LABEL HOME -> the argv (with {port}) on stdout, one word per line
server_cmd() {
  case $1 in
    atp) printf '%s\n' "$ATP" server start --domain "$DOMAIN" --host 127.0.0.1 --port '{port}' \
      --home "$2" --log-level warn ;;
    reference) printf '%s\n' env "HOME=$2" "$VENV/bin/atp" server start --domain "$DOMAIN" --host 127.0.0.1 \
      --port '{port}' --cert "$2/.atp/certs/server.crt" --key "$2/.atp/certs/server.key" --log-level WARNING ;;
  esac
}

# atp's limits that protect a real server (docs/design.md §5b) would stop the benchmark: it sends
# every message to one agent, opens up to 64 connections from one address, and $STREAMS streams for
# one agent.
bench_limits() {
  mkdir -p "$1"
  printf '[limits]\nquota_messages = 1000000000\nquota_bytes = 1000000000000\nmax_connections_per_ip = %s\nstreams_per_agent = %s\n' \
    "$((STREAMS + 1024))" "$((STREAMS + 8))" >"$1/config.toml"
}
# $STREAMS client connections: the generator needs as many descriptors (the server raises its own).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_server() { # label recv_n
  local label=$1 home=$work/$1 port pid
  mkdir -p "$home"
  [[ $label == reference ]] && make_cert "$home"
  [[ $label == atp ]] && bench_limits "$home"
  mapfile -t cmd < <(server_cmd "$label" "$home")
  echo "== $label: start-up ($STARTUP_RUNS starts after a first one)" >&2
  python3 tests/bench/startup.py --label "$label" --runs "$STARTUP_RUNS" --log "$work/$label-startup.log" \
    -- "${cmd[@]}" | tee "$OUT/$label-startup.jsonl" >/dev/null
  phase "$label-startup"

  port=$(free_port)
  "${cmd[@]//\{port\}/$port}" >"$work/$label.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_healthy "$port" "$label"
  sleep "$IDLE_SECONDS"
  local idle procs
  idle=$(mem_kb "$pid" VmRSS)
  procs=$(tree_pids "$pid" | wc -l)
  echo "== $label: local submissions (idle RSS $((idle / 1024)) MiB, $procs process(es))" >&2
  "$BENCH" --server "127.0.0.1:$port" --domain "$DOMAIN" --label "$label" \
    --concurrency "$LEVELS" --duration "$DURATION" --warmup "$WARMUP" | tee "$OUT/$label.jsonl" >/dev/null
  phase "$label-submit"
  echo "== $label: recv drain ($2 messages)" >&2
  "$BENCH" --server "127.0.0.1:$port" --domain "$DOMAIN" --label "$label" --recv "$2" --page "$RECV_PAGE" |
    tee "$OUT/$label-recv.jsonl" >/dev/null
  phase "$label-recv"
  if [[ $label == atp ]]; then
    echo "== atp: push delivery ($PUSH_N messages; polling $POLL_ROUNDS) and $STREAMS open streams" >&2
    "$BENCH" --server "127.0.0.1:$port" --domain "$DOMAIN" --label "$label" --push "$PUSH_N" \
      --poll-rounds "$POLL_ROUNDS" | tee "$OUT/$label-push.jsonl" >/dev/null
    "$BENCH" --server "127.0.0.1:$port" --domain "$DOMAIN" --label "$label" --streams "$STREAMS" \
      --server-pid "$pid" | tee "$OUT/$label-streams.jsonl" >/dev/null
    phase "$label-push"
  fi
  printf '{"label":"%s","mode":"rss","idle_kb":%s,"hwm_kb":%s,"after_load_kb":%s,"processes":%s}\n' \
    "$label" "$idle" "$(mem_kb "$pid" VmHWM)" "$(mem_kb "$pid" VmRSS)" "$procs" >"$OUT/$label-rss.json"
  stop_servers
}

bench_server atp "$RECV_N"
[[ -z "${SKIP_REFERENCE:-}" ]] && bench_server reference "$REF_RECV_N"

# ---- end to end: alpha -> beta across domains (submit to alpha, read from beta's inbox) ----
run_e2e() { # label alpha_port beta_port levels duration drain
  "$BENCH" --server "127.0.0.1:$2" --domain alpha.bench --to bench@beta.bench --to-server "127.0.0.1:$3" \
    --label "$1" --concurrency "$4" --duration "$5" --warmup 1 --drain "$6" | tee "$OUT/$1-e2e.jsonl" >/dev/null
}
e2e_rss() { # label: peak RSS of the two servers, summed
  printf '{"label":"%s","mode":"rss-e2e","hwm_kb":%s}\n' "$1" \
    "$(($(mem_kb "${pids[0]}" VmHWM) + $(mem_kb "${pids[1]}" VmHWM)))" >"$OUT/$1-e2e-rss.json"
}

echo "== atp-native end to end (two servers in one home: zero-config local discovery)" >&2
pa=$(free_port)
pb=$(free_port)
bench_limits "$work/e2e"
for d in alpha:$pa beta:$pb; do
  "$ATP" server start --domain "${d%%:*}.bench" --host 127.0.0.1 --port "${d##*:}" \
    --home "$work/e2e" --log-level warn >"$work/atp-${d%%:*}.log" 2>&1 &
  pids+=($!)
  wait_healthy "${d##*:}" "atp-${d%%:*}"
done
run_e2e atp "$pa" "$pb" "$E2E_LEVELS" "$E2E_DURATION" 60
e2e_rss atp
echo "== atp: push delivery across the two servers ($PUSH_N messages; polling $POLL_ROUNDS)" >&2
"$BENCH" --server "127.0.0.1:$pa" --domain alpha.bench --to push@beta.bench --to-server "127.0.0.1:$pb" \
  --label atp --push "$PUSH_N" --poll-rounds "$POLL_ROUNDS" | tee -a "$OUT/atp-push.jsonl" >/dev/null
stop_servers
phase atp-e2e

if [[ -z "${SKIP_REFERENCE:-}" ]]; then
  echo "== reference end to end (two servers, docs/protocol.md §11.1 overrides)" >&2
  pa=$(free_port)
  pb=$(free_port)
  mkdir -p "$work/rs"
  for s in alpha beta; do
    make_cert "$work/r-$s"
    HOME=$work/r-$s "$VENV/bin/atp" keys generate >/dev/null
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
  run_e2e reference "$pa" "$pb" 1 "${REF_E2E_DURATION:-5}" "${REF_E2E_DRAIN:-120}"
  e2e_rss reference
  stop_servers
  phase reference-e2e
fi

if [[ -z "${SKIP_CRITERION:-}" ]]; then
  echo "== criterion micro-benchmarks (atp-wasm)" >&2
  criterion_start=$(date +%s)
  # shellcheck disable=SC2086 # CRITERION_ARGS is a list of words
  CARGO_TARGET_DIR=$CRIT_TARGET cargo bench -q -p atp-wasm --bench protocol -- ${CRITERION_ARGS:-} 2>&1 |
    grep -E '^[a-z_0-9]+/|time:' >&2 || true
  phase criterion
fi

# ---- the summary ----
ref_version=–
if [[ -z "${SKIP_REFERENCE:-}" ]]; then
  ref_version="agent-transfer-protocol $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("agent-transfer-protocol"))'), $("$VENV/bin/python" --version)"
fi
export BENCH_META_DATE BENCH_META_CPU BENCH_META_LOAD_START BENCH_META_LOAD_END BENCH_META_KERNEL \
  BENCH_META_ATP BENCH_META_REF BENCH_META_SETTINGS BENCH_META_TOTAL BENCH_META_PHASES BENCH_META_CRITERION_SINCE
BENCH_META_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
BENCH_META_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
BENCH_META_LOAD_START=$load_start
BENCH_META_LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
BENCH_META_KERNEL=$(uname -srm)
BENCH_META_ATP="$("$ATP" --version) ($(git describe --always --dirty 2>/dev/null || echo '?'))"
BENCH_META_REF=$ref_version
BENCH_META_SETTINGS="DURATION=$DURATION WARMUP=$WARMUP LEVELS=$LEVELS E2E_LEVELS=$E2E_LEVELS E2E_DURATION=$E2E_DURATION \
REF_E2E_DURATION=${REF_E2E_DURATION:-5} PUSH_N=$PUSH_N POLL_ROUNDS=$POLL_ROUNDS STREAMS=$STREAMS RECV_N=$RECV_N REF_RECV_N=$REF_RECV_N RECV_PAGE=$RECV_PAGE \
STARTUP_RUNS=$STARTUP_RUNS IDLE_SECONDS=$IDLE_SECONDS${CRITERION_ARGS:+ CRITERION_ARGS='$CRITERION_ARGS'}\
${SKIP_REFERENCE:+ SKIP_REFERENCE=1}${SKIP_CRITERION:+ SKIP_CRITERION=1}"
BENCH_META_TOTAL=$(($(date +%s) - run_start))
BENCH_META_PHASES="${phases[*]}"
BENCH_META_CRITERION_SINCE=${criterion_start:-0}
python3 tests/bench/report.py "$OUT" "$CRIT_TARGET/criterion" >"$OUT/results.md"
cat "$OUT/results.md"
echo "(written to $OUT/results.md)" >&2
