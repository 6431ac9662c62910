#!/usr/bin/env bash
# The browser app (www/) end to end: builds it against the packed atp-wasm package, builds atp-native
# and installs it with `cargo install --path atp-native` (the app embedded), installs Playwright from
# npm (playwright-core; no browser download: Debian's /usr/bin/chromium is driven through
# `executablePath`) and runs tests/www/app.test.mjs: two servers (alpha.test: the installed binary
# copied into an empty directory, --web alone; beta.test: --web-dir), BIND for DNS over HTTPS,
# headless Chromium. Screenshots land in
# $ATP_WWW_SCREENSHOTS (default <target>/www-screenshots).
# Usage: tests/www/run.sh [atp-wasm-<version>.tgz]   (without an argument: scripts/build-npm.sh)
# Needs node/npm, chromium (CHROMIUM=path to override), bind9 for the DoH checks (skipped without).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TD=$(realpath -m "${CARGO_TARGET_DIR:-target}")
PLAYWRIGHT=playwright-core@1.65.1

TGZ=${1:-${ATP_WWW_TGZ:-}}
if [[ -z "$TGZ" ]]; then
  TGZ=$(scripts/build-npm.sh | tail -1)
fi
TGZ=$(realpath "$TGZ")
[[ -f "$TGZ" ]] || { echo "no tarball $TGZ" >&2; exit 1; }

echo "== www: npm install $(basename "$TGZ"), npm run build"
(cd www && npm install --no-save --no-audit --no-fund --silent "$TGZ" && npm run build --silent)

echo "== cargo build -p atp-native"
cargo build -q -p atp-native

# The operator's path (README "Running in production"): `cargo install --path atp-native` embeds
# www/dist (atp-native/build.rs); app.test.mjs copies the installed binary into an empty directory
# and serves the app from it with --web alone. Same target directory and profile as the build
# above, so this only links and copies.
echo "== cargo install --path atp-native --debug (embeds www/dist)"
INSTALL_ROOT="$TD/www-install"
cargo install -q --locked --debug --force --path atp-native --target-dir "$TD" --root "$INSTALL_ROOT"

RUNNER="$TD/www-test"
mkdir -p "$RUNNER"
[[ -f "$RUNNER/package.json" ]] || echo '{ "private": true, "type": "module" }' > "$RUNNER/package.json"
if [[ "$(node -p "try { require('$RUNNER/node_modules/playwright-core/package.json').version } catch { '' }")" != "${PLAYWRIGHT#*@}" ]]; then
  echo "== npm install $PLAYWRIGHT (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$RUNNER" --no-audit --no-fund --silent "$PLAYWRIGHT"
fi
cp tests/www/app.test.mjs "$RUNNER/"

export ATP_BIN="$TD/debug/atp"
export ATP_INSTALLED_BIN="$INSTALL_ROOT/bin/atp"
export ATP_WWW_DIST="$ROOT/www/dist"
export ATP_WASM_NODE="$ROOT/www/node_modules/atp-wasm/node.mjs"
export ATP_WWW_SCREENSHOTS=${ATP_WWW_SCREENSHOTS:-$TD/www-screenshots}
rm -rf "$ATP_WWW_SCREENSHOTS"
echo "== node app.test.mjs (headless Chromium)"
node "$RUNNER/app.test.mjs"
echo "== www tests passed"
