#!/usr/bin/env bash
# End-to-end tests of the Cloudflare Workers relay (atp-worker) in workerd through Miniflare:
# the built worker (the domain's Durable Object on SQLite storage, cron via scheduled()) exchanges
# mail with a native `atp server` on loopback; discovery goes through BIND (DoH for the worker, via an HTTP/1.1 -> h2c
# bridge in the harness; UDP/TCP for the native server). Prints the worker's wasm size and its cold
# start in Miniflare.
#
#   tests/worker/run.sh               install tools if missing, build worker + atp-native, run
# Env: ATP_SKIP_WORKER_BUILD=1   use the existing atp-worker/build (and target/debug/atp)
#      ATP_WORKER_DEV=1          build the worker with scripts/build-worker.sh --dev (faster, bigger)
#      CARGO_TARGET_DIR          as for cargo
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TD=${CARGO_TARGET_DIR:-target}

scripts/install-worker-tools.sh --if-missing
if [[ -z "${ATP_SKIP_WORKER_BUILD:-}" ]]; then
  scripts/build-worker.sh ${ATP_WORKER_DEV:+--dev}
  cargo build -p atp-native
fi
ATP_BIN="$TD/debug/atp" ATP_WORKER_BUILD=atp-worker/build timeout 600 node tests/worker/e2e.mjs
