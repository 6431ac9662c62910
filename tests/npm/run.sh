#!/usr/bin/env bash
# The npm package `atp-wasm`, installed from its packed tarball into a scratch project, used from
# JavaScript and TypeScript against real atp-native servers:
#   api.mjs          entry points (ESM/CommonJS), AtpError, the reference's signature vectors, tools
#   single.mjs       one server: register, send, recv (cursor, wait), errors; SDK signature <->
#                    atp-native <-> the reference implementation; TLS
#   two-servers.mjs  alpha.test -> beta.test delivery, signature verified by bob
#                    (ATP_NPM_REQUIRE_DELIVERY=0: skipped for an atp build without delivery)
#   doh-bind.mjs     DNS over HTTPS against BIND (named): discovery, records, verify (skipped
#                    without named)
#   browser.mjs      the browser entry (web.js, init()) in headless Chromium, AtpClient against a
#                    server (skipped without Chromium)
#   example.ts       tsc --strict (ESM and CommonJS typings), then run against a server
#   workerd.mjs      the Workers entry in workerd (Miniflare) against a server; ATP_NPM_WORKERD=0 skips
#                    it (it installs miniflare, ~165 MB with workerd)
# Usage: tests/npm/run.sh [atp-wasm-<version>.tgz]   (without an argument: scripts/build-npm.sh)
# Environment: CARGO_TARGET_DIR; ATP_REF_PYTHON (the reference's venv python; default
# <target>/atp-ref-venv/bin/python, else /work/main/target/atp-ref-venv/bin/python if present);
# ATP_NPM_KEEP=1 keeps the scratch project.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TD=$(realpath -m "${CARGO_TARGET_DIR:-target}")
TYPESCRIPT=typescript@5.9.3
TYPES_NODE=@types/node@20.19.43
MINIFLARE=miniflare@4.20260426.0

TGZ=${1:-}
if [[ -z "$TGZ" ]]; then
  TGZ=$(scripts/build-npm.sh | tail -1)
fi
TGZ=$(realpath "$TGZ")
[[ -f "$TGZ" ]] || { echo "no tarball $TGZ" >&2; exit 1; }

echo "== cargo build -p atp-native"
cargo build -q -p atp-native
export ATP_BIN="$TD/debug/atp"
export ATP_VECTORS="$ROOT/atp-wasm/tests/data/reference-signing.json"

if [[ -z "${ATP_REF_PYTHON:-}" ]]; then
  for p in "$TD/atp-ref-venv/bin/python" "$ROOT/target/atp-ref-venv/bin/python" /work/main/target/atp-ref-venv/bin/python; do
    if [[ -x "$p" ]] && "$p" -c 'import atp.core.signature' 2>/dev/null; then
      ATP_REF_PYTHON=$p
      break
    fi
  done
fi
export ATP_REF_PYTHON=${ATP_REF_PYTHON:-}
echo "== reference implementation: ${ATP_REF_PYTHON:-not found (its checks are skipped; scripts/install-reference.sh)}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/atp-npm-project.XXXXXX")
if [[ -z "${ATP_NPM_KEEP:-}" ]]; then trap 'rm -rf "$WORK"' EXIT; else echo "scratch project: $WORK"; fi
cp tests/npm/*.mjs tests/npm/reference.py tests/npm/example.ts tests/npm/example-cjs.cts tests/npm/tsconfig.json \
  tests/npm/workerd-worker.js "$WORK/"
cd "$WORK"
echo '{ "name": "atp-npm-test", "private": true, "type": "module" }' > package.json
DEPS=("$TGZ" "$TYPESCRIPT" "$TYPES_NODE")
[[ "${ATP_NPM_WORKERD:-1}" == 0 ]] || DEPS+=("$MINIFLARE")
echo "== npm install $(basename "$TGZ") ${DEPS[*]:1}"
npm install --no-audit --no-fund --silent "${DEPS[@]}"

echo "== node api.mjs"
node api.mjs
echo "== node single.mjs"
node single.mjs
echo "== node two-servers.mjs (NODE_TLS_REJECT_UNAUTHORIZED=0)"
NODE_TLS_REJECT_UNAUTHORIZED=0 NODE_NO_WARNINGS=1 node two-servers.mjs
echo "== node doh-bind.mjs (BIND)"
node doh-bind.mjs
echo "== node browser.mjs (headless Chromium)"
node browser.mjs
echo "== tsc (strict; example.ts as ESM, example-cjs.cts as CommonJS)"
npx --no-install tsc -p tsconfig.json
echo "== node example-run.mjs"
node example-run.mjs
if [[ "${ATP_NPM_WORKERD:-1}" == 0 ]]; then
  echo "== workerd.mjs: skipped (ATP_NPM_WORKERD=0)"
else
  echo "== node workerd.mjs (Miniflare)"
  node workerd.mjs
fi
echo "== npm package tests passed"
