#!/usr/bin/env bash
# Runs the atp-conformance kit against atp-worker in workerd through Miniflare (HTTPS), with BIND
# serving the kit's foreign ATS/ATK records to the worker over DoH (see run-worker.mjs and
# tests/worker/harness.mjs). The TLS cases are N/A (the platform terminates TLS); every other case
# must pass. Exit 0 iff no unexpected failure.
#
#   tests/conformance/run-worker.sh [extra atp-conformance run options]
# Env: ATP_SKIP_WORKER_BUILD=1   reuse the existing atp-worker/build
#      ATP_WORKER_DEV=1          build the worker with scripts/build-worker.sh --dev (faster, bigger)
#      ATP_CONFORMANCE_BIN       use this kit binary instead of building it
#      CARGO_TARGET_DIR          as for cargo
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TD=${CARGO_TARGET_DIR:-target}

scripts/install-worker-tools.sh --if-missing
if [[ -z "${ATP_SKIP_WORKER_BUILD:-}" ]]; then
  scripts/build-worker.sh ${ATP_WORKER_DEV:+--dev}
fi
if [[ -z "${ATP_CONFORMANCE_BIN:-}" ]]; then
  cargo build --quiet -p atp-conformance --bin atp-conformance
  export ATP_CONFORMANCE_BIN="$TD/debug/atp-conformance"
fi
ATP_WORKER_BUILD=atp-worker/build timeout 600 node tests/conformance/run-worker.mjs "$@"
