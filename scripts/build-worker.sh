#!/usr/bin/env bash
# Builds the Cloudflare Workers relay (atp-worker) offline into atp-worker/build/:
#   cargo (wasm32-unknown-unknown) -> wasm-bindgen --target web (+ reset-state function)
#   -> wasm-opt -Oz (npm binaryen) -> + atp-worker/js/entry.mjs (the Workers entry module).
# wrangler.toml's `main = "build/entry.mjs"` points at the result; `wrangler deploy` bundles it.
# Needs scripts/install-worker-tools.sh once (wasm32 toolchain, wasm-bindgen-cli, npm tools).
#
#   scripts/build-worker.sh          size-optimised (profile wasm-release: opt-level z, fat LTO)
#   scripts/build-worker.sh --dev    faster build for iterating (profile release, no wasm-opt)
# Env: CARGO_TARGET_DIR (default target), ATP_WORKER_OUT (default atp-worker/build),
#      ATP_WORKER_WASM_BUDGET (default 300000).
# Prints the .wasm size, raw and gzipped, and fails when the size-optimised .wasm is more than the
# budget gzipped (`gzip -9`; docs/design.md §4), so that the module cannot grow past it unnoticed.
# A --dev build is not checked.
set -euo pipefail
# Most bytes the gzipped .wasm may take (docs/design.md §4).
BUDGET=${ATP_WORKER_WASM_BUDGET:-300000}
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "ATP_WORKER_WASM_BUDGET must be a number of bytes, got '$BUDGET'" >&2; exit 1; }
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PROFILE=wasm-release
OPT=1
if [[ "${1:-}" == --dev ]]; then PROFILE=release; OPT=; fi
OUT=${ATP_WORKER_OUT:-atp-worker/build}
TD=${CARGO_TARGET_DIR:-target}
TOOLS=atp-worker/node_modules/.bin
TC=$(scripts/wasm-toolchain)

WB=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ "$(wasm-bindgen --version 2>/dev/null)" == "wasm-bindgen $WB" ]] ||
  { echo "wasm-bindgen $WB is needed (scripts/install-worker-tools.sh)" >&2; exit 1; }

cargo +"$TC" build --target wasm32-unknown-unknown -p atp-worker --profile "$PROFILE"
WASM="$TD/wasm32-unknown-unknown/$PROFILE/atp_worker.wasm"

rm -rf "$OUT"
mkdir -p "$OUT"
wasm-bindgen --target web --experimental-reset-state-function --no-typescript \
  --out-dir "$OUT" --out-name atp_worker "$WASM"
if [[ -n "$OPT" ]]; then
  [[ -x "$TOOLS/wasm-opt" ]] || { echo "$TOOLS/wasm-opt missing (scripts/install-worker-tools.sh)" >&2; exit 1; }
  # npm binaryen (never Debian's binaryen 108, whose output fails to load)
  "$TOOLS/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$OUT/atp_worker_bg.wasm" -o "$OUT/atp_worker_bg.opt.wasm"
  mv "$OUT/atp_worker_bg.opt.wasm" "$OUT/atp_worker_bg.wasm"
fi
cp atp-worker/js/entry.mjs "$OUT/entry.mjs"
raw=$(stat -c %s "$OUT/atp_worker_bg.wasm")
gz=$(gzip -9 -c "$OUT/atp_worker_bg.wasm" | wc -c)
echo "built $OUT (profile $PROFILE): atp_worker_bg.wasm $raw bytes, $gz bytes gzipped"
if [[ -n "$OPT" ]] && ((gz > BUDGET)); then
  echo "atp_worker_bg.wasm is $gz bytes gzipped, $((gz - BUDGET)) over the budget of $BUDGET" \
    "(ATP_WORKER_WASM_BUDGET; docs/design.md §4: find what grew, e.g. with twiggy)" >&2
  exit 1
fi
