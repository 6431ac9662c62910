#!/usr/bin/env bash
# The npm phase of the tests: build and pack the npm package `atp-wasm` (scripts/build-npm.sh, which
# also checks the gzipped wasm against its size budget), then install the tarball into a scratch
# project and use it from JavaScript and TypeScript against real atp-native servers and the reference
# implementation (tests/npm/run.sh). Needs what scripts/install-test-deps.sh installs, plus node/npm
# and network access to the npm registry (binaryen, typescript, @types/node).
#
# The wasm-bindgen tests of the same bindings (atp-wasm/tests/web_sdk.rs, Node and Chromium) run in
# scripts/test.sh's wasm phases.
#
# Environment: CARGO_TARGET_DIR; ATP_NPM_BUILD=small|stable|auto (scripts/build-npm.sh);
# ATP_REF_PYTHON; ATP_NPM_WORKERD=0 (no Miniflare); ATP_NPM_REQUIRE_DELIVERY=0 skips instead of
# failing the two-server test when the atp build does not deliver across domains.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

secs() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

t0=$(date +%s%N)
echo "== build and pack the npm package (scripts/build-npm.sh)"
TGZ=$(scripts/build-npm.sh | tail -1)
echo "== packed $TGZ ($(secs "$t0") s)"
OUT=$(dirname "$TGZ")
[[ -f "$OUT/size.json" ]] && echo "== size: $(cat "$OUT/size.json")"

t1=$(date +%s%N)
echo "== tarball tests (tests/npm/run.sh)"
tests/npm/run.sh "$TGZ"
echo "== npm phase passed (build $(secs "$t0") s total, tests $(secs "$t1") s)"
