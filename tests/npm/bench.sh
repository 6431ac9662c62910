#!/usr/bin/env bash
# Benchmark of the npm package in Node against pure-JS @noble/ed25519 + canonicalize (and node:crypto),
# run by hand, not in CI: tests/npm/bench.sh [atp-wasm-<version>.tgz]   (default: scripts/build-npm.sh)
# BENCH_SECONDS per case (default 2). The native Rust figures: cargo run --release -p atp-wasm --example bench
set -euo pipefail
cd "$(dirname "$0")/../.."
TGZ=${1:-$(scripts/build-npm.sh | tail -1)}
TGZ=$(realpath "$TGZ")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/atp-npm-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cp tests/npm/bench.mjs "$WORK/"
cd "$WORK"
echo '{ "name": "atp-npm-bench", "private": true, "type": "module" }' > package.json
npm install --no-audit --no-fund --silent "$TGZ" @noble/ed25519@3.2.0 canonicalize@4.0.0
node bench.mjs
