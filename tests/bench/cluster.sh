#!/usr/bin/env bash
# SQLite vs PostgreSQL with 1 node vs PostgreSQL with 2 nodes serving one domain (docs/design.md §5d),
# side by side on this machine (by hand, not in CI). Needs Debian's postgresql server binaries
# (scripts/install-test-deps.sh); a throwaway cluster is made in a temporary directory (initdb, a free
# port, as the `postgres` user under root) and stopped at the end.
#
#   tests/bench/cluster.sh                     # LEVELS=16,64 DURATION=10 E2E_LEVEL=32 E2E_DURATION=10
#   DURATION=5 E2E_DURATION=5 tests/bench/cluster.sh --no-build
#
# Per setup: local submissions (`atp-bench`, LEVELS concurrent TLS connections in total; with two
# nodes, two atp-bench processes with half the connections each, one per node, rates summed) and
# cross-domain delivery alpha.bench → beta.bench (alpha on the setup's store; beta one SQLite server;
# E2E_LEVEL connections in total, split the same way). The load generator runs on the same machine:
# on 2 cores, a second node adds no CPU, so the figures show the cost of the store, not scaling.
# Output: a Markdown table on stdout, raw JSON lines in $OUT (default $CARGO_TARGET_DIR/bench-cluster).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/bench-cluster}
LEVELS=${LEVELS:-16,64}
DURATION=${DURATION:-10}
E2E_LEVEL=${E2E_LEVEL:-32}
E2E_DURATION=${E2E_DURATION:-10}
[[ ${1:-} == --no-build ]] || cargo build --release -q -p atp-native -p atp-bench
ATP=$TARGET/release/atp
BENCH=$TARGET/release/atp-bench
mkdir -p "$OUT"
: >"$OUT/results.jsonl"

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-bench-cluster.XXXXXX")
pids=()
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdata=$work/pg
as_pg=()
if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); chown postgres "$work"; fi
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -f $pgdata/postmaster.pid ]] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() { # port
  for _ in $(seq 600); do
    curl -sk --max-time 1 "https://127.0.0.1:$1/.well-known/atp/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on $1 did not start" >&2; exit 1
}
start() { # home domain port [args…]
  local home=$1 domain=$2 port=$3; shift 3
  "$ATP" server start --domain "$domain" --host 127.0.0.1 --port "$port" --home "$home" --log-level warn "$@" \
    >>"$work/$domain-$port.log" 2>&1 &
  pids+=($!)
  wait_health "$port"
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
limits() { # home
  mkdir -p "$1"
  printf '[limits]\nquota_messages = 1000000000\nquota_bytes = 1000000000000\nmax_connections_per_ip = 1024\n' \
    >"$1/config.toml"
}

pgport=$(free_port)
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
  -o "-p $pgport -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
new_db() { # name -> its URL
  "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -qc "CREATE DATABASE $1"
  echo "postgres://postgres@127.0.0.1:$pgport/$1"
}

# bench LABEL NODES MODE CONCURRENCY PORTS… -> one JSON line per process in $OUT/results.jsonl
bench() {
  local label=$1 nodes=$2 mode=$3 c=$4; shift 4
  local per=$((c / nodes)) bpids=() i=0
  for port in "$@"; do
    i=$((i + 1))
    if [[ $mode == submit ]]; then
      "$BENCH" --server "127.0.0.1:$port" --domain alpha.bench --label "$label" --concurrency "$per" \
        --duration "$DURATION" --warmup 2 >"$work/$label-$mode-$c-$i.json" 2>>"$work/bench.log" &
    else
      "$BENCH" --server "127.0.0.1:$port" --domain alpha.bench --to "bench$i@beta.bench" --to-server "127.0.0.1:$BETA" \
        --label "$label" --concurrency "$per" --duration "$E2E_DURATION" --warmup 1 --drain 60 \
        >"$work/$label-$mode-$c-$i.json" 2>>"$work/bench.log" &
    fi
    bpids+=($!)
  done
  wait "${bpids[@]}"
  for f in "$work/$label-$mode-$c"-*.json; do
    python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); r["mode"]=sys.argv[2]; r["total_concurrency"]=int(sys.argv[3]); print(json.dumps(r))' \
      "$f" "$mode" "$c" >>"$OUT/results.jsonl"
  done
}

run_setup() { # label nodes [database url]
  local label=$1 nodes=$2 url=${3:-} home=$work/$1 ports=()
  limits "$home"
  BETA=$(free_port)
  start "$home" beta.bench "$BETA"
  for _ in $(seq "$nodes"); do
    local p; p=$(free_port)
    if [[ -n $url ]]; then start "$home" alpha.bench "$p" --database "$url"; else start "$home" alpha.bench "$p"; fi
    ports+=("$p")
  done
  echo "== $label: submit at $LEVELS, e2e at $E2E_LEVEL" >&2
  IFS=, read -ra levels <<<"$LEVELS"
  for c in "${levels[@]}"; do bench "$label" "$nodes" submit "$c" "${ports[@]}"; done
  bench "$label" "$nodes" e2e "$E2E_LEVEL" "${ports[@]}"
  stop_all
}

run_setup sqlite 1
run_setup pg-1-node 1 "$(new_db one_node)"
run_setup pg-2-nodes 2 "$(new_db two_nodes)"

python3 - "$OUT/results.jsonl" "$LEVELS" "$E2E_LEVEL" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
levels = [int(x) for x in sys.argv[2].split(",")]
labels = ["sqlite", "pg-1-node", "pg-2-nodes"]
def agg(label, mode, c):
    rs = [r for r in rows if r["label"] == label and r["mode"] == mode and r["total_concurrency"] == c]
    if not rs: return None
    return {"rate": sum(r["throughput"] for r in rs), "p99": max(r["p99_ms"] for r in rs),
            "lost": sum(r.get("lost", 0) for r in rs), "dup": sum(r.get("duplicates", 0) for r in rs),
            "errors": sum(r.get("errors", 0) for r in rs)}
print("| metric | SQLite, 1 node | PostgreSQL, 1 node | PostgreSQL, 2 nodes |")
print("|---|---:|---:|---:|")
for c in levels:
    cells = [agg(l, "submit", c) for l in labels]
    print(f"| submit, {c} connections (msgs/s) | " + " | ".join(f"{a['rate']:,.0f}" if a else "–" for a in cells) + " |")
    print(f"| submit p99, {c} connections (ms) | " + " | ".join(f"{a['p99']:.2f}" if a else "–" for a in cells) + " |")
c = int(sys.argv[3])
cells = [agg(l, "e2e", c) for l in labels]
print(f"| cross-domain delivery, {c} connections (delivered/s) | " + " | ".join(f"{a['rate']:,.0f}" if a else "–" for a in cells) + " |")
print(f"| submit→readable p99 (ms) | " + " | ".join(f"{a['p99']:.1f}" if a else "–" for a in cells) + " |")
print(f"| lost / duplicates / errors | " + " | ".join(f"{a['lost']} / {a['dup']} / {a['errors']}" if a else "–" for a in cells) + " |")
EOF
