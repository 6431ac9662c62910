#!/usr/bin/env bash
# Installs everything scripts/test.sh needs on a fresh Debian 12 machine. Idempotent: a second run only
# checks. apt needs root.
#   - apt: chromium + chromium-driver (browser tests), bind9 + bind9-dnsutils (DNS tests), postgresql (the
#     PostgreSQL store's tests start throwaway clusters from its binaries), nodejs if no
#     `node` is on PATH (Node tests), systemd if no `systemd-analyze` (scripts/check-systemd-unit.sh)
#   - the wasm32 toolchain: scripts/setup-wasm-toolchain.sh (rustup target, else Debian's rustc-web)
#   - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock (wasm-bindgen-test-runner)
#   - Python venvs under target/: the reference ATP (scripts/install-reference.sh) and the MCP SDK
#     (scripts/install-mcp-client.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# apt and the Debian toolchain route need root: use sudo when not root.
SUDO=()
((EUID == 0)) || SUDO=(sudo)

# rustfmt and clippy for `cargo fmt --check` and `cargo clippy` (normally part of rustup's default profile).
# rust-src for the size-optimised npm build (scripts/build-npm.sh rebuilds std with panic=immediate-abort).
for c in rustfmt clippy rust-src; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

apt_pkgs=()
for p in chromium chromium-driver bind9 bind9-dnsutils postgresql; do
  dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
done
command -v node >/dev/null || apt_pkgs+=(nodejs)
command -v npm >/dev/null || apt_pkgs+=(npm)
command -v systemd-analyze >/dev/null || apt_pkgs+=(systemd)
if ((${#apt_pkgs[@]})); then
  echo "apt-get install ${apt_pkgs[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

scripts/setup-wasm-toolchain.sh prebuilt

# The Python reference implementation, the interop peer of atp-native/tests/reference_cli.rs.
scripts/install-reference.sh

# The Python MCP SDK, the client of `atp mcp` in atp-native/tests/mcp.rs.
scripts/install-mcp-client.sh

# The CLI must equal the wasm-bindgen crate version exactly (the runner refuses other schema versions).
WB=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n "$WB" ]] || { echo "wasm-bindgen is not in Cargo.lock" >&2; exit 1; }
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WB" ||
      "$(wasm-bindgen-test-runner --version 2>/dev/null)" != "wasm-bindgen-test-runner $WB" ]]; then
  echo "cargo install wasm-bindgen-cli --version $WB"
  # --locked can fail when a locked transitive version is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$WB" --force || cargo install wasm-bindgen-cli --version "$WB" --locked --force
fi
echo "$(wasm-bindgen --version), $(wasm-bindgen-test-runner --version), node $(node --version)," \
  "$(chromium --version 2>/dev/null | head -1), $(chromedriver --version | cut -d' ' -f1-2)"

# The Workers relay's tools (npm: miniflare/workerd, wrangler, binaryen, esbuild; pinned by
# atp-worker/package-lock.json).
scripts/install-worker-tools.sh
