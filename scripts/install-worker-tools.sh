#!/usr/bin/env bash
# Installs what building and testing the Workers relay (atp-worker) needs. Idempotent; needs only
# the package registries (crates.io, npm, Debian apt), nothing from GitHub.
#   - the wasm32 toolchain (scripts/setup-wasm-toolchain.sh: rustup target, else Debian's rustc-web)
#   - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock (cargo install)
#   - npm, into atp-worker/node_modules (pinned by atp-worker/package-lock.json): miniflare (workerd)
#     for the tests, wrangler for deploying, binaryen (wasm-opt 132) and esbuild
#   - apt: bind9 (the test DNS server with DoH), nodejs if no `node` is on PATH
# The build itself is scripts/build-worker.sh (wasm-bindgen + wasm-opt + a hand-written entry
# module), so worker-build is not needed. To use worker-build 0.8.7 instead, install it with
# `cargo install worker-build --version 0.8.7 --locked` and run it with WASM_BINDGEN_BIN=$(which
# wasm-bindgen) WASM_OPT_BIN=atp-worker/node_modules/.bin/wasm-opt (see atp-worker/README.md).
#
#   scripts/install-worker-tools.sh [--if-missing]   --if-missing: do nothing when Miniflare (in
#                                                    atp-worker/node_modules) and BIND are installed
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [[ "${1:-}" == --if-missing && -x atp-worker/node_modules/.bin/miniflare ]] &&
  { command -v named >/dev/null || [[ -x /usr/sbin/named ]]; }; then
  exit 0
fi
SUDO=()
((EUID == 0)) || SUDO=(sudo)

apt_pkgs=()
for p in bind9 bind9-dnsutils; do
  dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
done
command -v node >/dev/null || apt_pkgs+=(nodejs npm)
if ((${#apt_pkgs[@]})); then
  echo "apt-get install ${apt_pkgs[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

scripts/setup-wasm-toolchain.sh prebuilt

WB=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n "$WB" ]] || { echo "wasm-bindgen is not in Cargo.lock" >&2; exit 1; }
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WB" ]]; then
  echo "cargo install wasm-bindgen-cli --version $WB"
  cargo install wasm-bindgen-cli --version "$WB" --force || cargo install wasm-bindgen-cli --version "$WB" --locked --force
fi

# npm 11 does not run dependency install scripts by default; workerd, esbuild and binaryen work without them.
(cd atp-worker && npm ci --no-audit --no-fund)
echo "worker tools: $(wasm-bindgen --version), wasm-opt $(atp-worker/node_modules/.bin/wasm-opt --version | cut -d' ' -f3)," \
  "miniflare $(node -p 'require("./atp-worker/node_modules/miniflare/package.json").version')," \
  "wrangler $(node -p 'require("./atp-worker/node_modules/wrangler/package.json").version'), node $(node --version)"
