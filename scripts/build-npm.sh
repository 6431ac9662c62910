#!/usr/bin/env bash
# Builds the npm package `atp-wasm` (atp-wasm/npm/ is its template) and packs it:
#   <out>/package/                 the package directory
#   <out>/atp-wasm-<version>.tgz   `npm pack` of it (what tests/npm/run.sh installs)
# <out> is $ATP_NPM_OUT, default ${CARGO_TARGET_DIR:-target}/npm. The last line printed is the
# tarball's path.
#
# Steps: the wasm32 release build of atp-wasm with its JS bindings (--features js, --profile
# wasm-release), wasm-bindgen for
# `--target web` (ESM: browsers, bundlers, Deno, Workers, Node's import) and `--target nodejs`
# (CommonJS: Node's require) over the same module — one .wasm serves both — then `wasm-opt -Oz`
# from npm's binaryen (never Debian's binaryen 108, whose output does not load), the size check,
# the package files with the workspace version, `npm pack`.
#
# The build (ATP_NPM_BUILD):
#   small   wasm32 std rebuilt with panic=immediate-abort and no panic locations
#           (-Zbuild-std; RUSTC_BOOTSTRAP=1 on a toolchain that has rust-src, e.g. the Debian
#           rust-web toolchain of scripts/setup-wasm-toolchain.sh, or `rustup component add rust-src`).
#           Without a panic hook a wasm panic traps with no message anyway, so nothing observable
#           changes; the module is ~10% smaller. The size budget is checked.
#   stable  the plain stable build (no rust-src needed); the budget is only reported.
#   auto    small when a toolchain with rust-src is found, else stable (default).
# ATP_NPM_TOOLCHAIN names the toolchain for `small`; ATP_NPM_MAX_GZIP the budget in bytes
# (default 163840 = 160 KiB, gzip -9 of the .wasm; 150 KiB until the inbox stream client of issue 18,
# about 10 KB, docs/protocol.md §6.5).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

TD=$(realpath -m "${CARGO_TARGET_DIR:-target}")
OUT=$(realpath -m "${ATP_NPM_OUT:-$TD/npm}")
TOOLS="$TD/npm-tools"
MODE=${ATP_NPM_BUILD:-auto}
MAX_GZIP=${ATP_NPM_MAX_GZIP:-163840}
BINARYEN_VERSION=132.0.0

log() { echo "== build-npm: $*" >&2; }
die() { echo "build-npm: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is needed (Node >= 18)"
command -v npm >/dev/null || die "npm is needed"

# wasm-bindgen must be exactly the version in Cargo.lock.
WB=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ "$(wasm-bindgen --version 2>/dev/null)" == "wasm-bindgen $WB" ]] ||
  die "wasm-bindgen $WB is needed (cargo install wasm-bindgen-cli --version $WB)"

# binaryen from npm, in the target directory.
WASM_OPT="$TOOLS/node_modules/.bin/wasm-opt"
if [[ ! -x "$WASM_OPT" || "$("$WASM_OPT" --version 2>/dev/null)" != *"version ${BINARYEN_VERSION%%.*}"* ]]; then
  log "npm install binaryen@$BINARYEN_VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  [[ -f "$TOOLS/package.json" ]] || echo '{"private": true}' > "$TOOLS/package.json"
  npm install --prefix "$TOOLS" --no-audit --no-fund --silent "binaryen@$BINARYEN_VERSION" >&2
fi

# A toolchain whose sysroot has the std sources (for -Zbuild-std).
has_src() { [[ -f "$(rustc +"$1" --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library/std/Cargo.toml" ]]; }
SMALL_TC=""
if [[ $MODE != stable ]]; then
  for tc in ${ATP_NPM_TOOLCHAIN:-} rust-web nightly "$(rustup show active-toolchain 2>/dev/null | cut -d' ' -f1)"; do
    [[ -n "$tc" ]] && has_src "$tc" && { SMALL_TC=$tc; break; }
  done
  [[ -z "$SMALL_TC" && $MODE == small ]] &&
    die "ATP_NPM_BUILD=small needs a toolchain with rust-src (rustup component add rust-src, or scripts/setup-wasm-toolchain.sh)"
fi

WASM_IN="$TD/wasm32-unknown-unknown/wasm-release/atp_wasm.wasm"
if [[ -n "$SMALL_TC" ]]; then
  MODE=small
  log "cargo +$SMALL_TC build (wasm32, wasm-release, build-std, panic=immediate-abort)"
  RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none" \
    cargo +"$SMALL_TC" build --target wasm32-unknown-unknown -p atp-wasm --features js --profile wasm-release \
    -Zbuild-std=std,panic_abort >&2
else
  MODE=stable
  TC=$(scripts/wasm-toolchain)
  log "cargo +$TC build (wasm32, wasm-release)"
  cargo +"$TC" build --target wasm32-unknown-unknown -p atp-wasm --features js --profile wasm-release >&2
fi

PKG="$OUT/package"
rm -rf "$PKG" "$OUT/bindgen"
mkdir -p "$PKG/wasm" "$OUT/bindgen"
cp "$WASM_IN" "$OUT/bindgen/atp_wasm.wasm" # the next cargo build may overwrite the original
log "wasm-bindgen --target web / nodejs"
wasm-bindgen --target web --out-dir "$OUT/bindgen/web" "$OUT/bindgen/atp_wasm.wasm"
wasm-bindgen --target nodejs --out-dir "$OUT/bindgen/node" "$OUT/bindgen/atp_wasm.wasm"
cmp -s "$OUT/bindgen/web/atp_wasm_bg.wasm" "$OUT/bindgen/node/atp_wasm_bg.wasm" ||
  die "the web and nodejs targets produced different .wasm files; one file cannot serve both"

log "wasm-opt -Oz --converge (binaryen $("$WASM_OPT" --version | awk '{print $3}'))"
"$WASM_OPT" -Oz --converge --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$OUT/bindgen/web/atp_wasm_bg.wasm" -o "$PKG/wasm/atp_wasm_bg.wasm"
cp "$OUT/bindgen/web/atp_wasm.js" "$PKG/wasm/atp_wasm.js"
cp "$OUT/bindgen/web/atp_wasm.d.ts" "$PKG/wasm/atp_wasm.d.ts"
cp "$OUT/bindgen/web/atp_wasm.d.ts" "$PKG/wasm/atp_wasm.d.cts"
# The nodejs glue is CommonJS; .cjs because the package is "type": "module".
sed 's#/\* @ts-self-types="./atp_wasm.d.ts" \*/#/* @ts-self-types="./atp_wasm.d.cts" */#' \
  "$OUT/bindgen/node/atp_wasm.js" > "$PKG/wasm/atp_wasm.cjs"
grep -q '__dirname}/atp_wasm_bg.wasm' "$PKG/wasm/atp_wasm.cjs" || die "unexpected nodejs glue (wasm path)"

VERSION=$(awk -F'"' '/^\[workspace.package\]/ { ws = 1 } ws && /^version *=/ { print $2; exit }' Cargo.toml)
[[ -n "$VERSION" ]] || die "no workspace version in Cargo.toml"
cp atp-wasm/npm/README.md atp-wasm/npm/node.cjs atp-wasm/npm/node.mjs atp-wasm/npm/web.js \
  atp-wasm/npm/worker.js atp-wasm/npm/error.js atp-wasm/npm/index.d.ts "$PKG/"
sed "s#'./wasm/atp_wasm.js'#'./wasm/atp_wasm.cjs'#g" atp-wasm/npm/index.d.ts > "$PKG/index.d.cts"
node -e '
  const fs = require("fs");
  const [src, dst, version] = process.argv.slice(1);
  const p = JSON.parse(fs.readFileSync(src, "utf8"));
  p.version = version;
  fs.writeFileSync(dst, JSON.stringify(p, null, 2) + "\n");
' atp-wasm/npm/package.json "$PKG/package.json" "$VERSION"

# Both entry points load and agree.
node -e "
  const a = require('$PKG/node.cjs');
  if (a.canonicalize('{\"b\":1,\"a\":2}') !== '{\"a\":2,\"b\":1}') throw new Error('node.cjs broken');
" || die "the CommonJS entry does not work"
node --input-type=module -e "
  const a = await import('$PKG/node.mjs');
  if (a.canonicalize('{\"b\":1,\"a\":2}') !== '{\"a\":2,\"b\":1}') throw new Error('node.mjs broken');
" || die "the ESM entry does not work"

RAW=$(stat -c %s "$PKG/wasm/atp_wasm_bg.wasm")
GZ=$(gzip -9c "$PKG/wasm/atp_wasm_bg.wasm" | wc -c)
echo "atp-wasm $VERSION ($MODE build): atp_wasm_bg.wasm $RAW bytes, $GZ bytes gzip -9 (budget $MAX_GZIP)" >&2
echo "{\"version\":\"$VERSION\",\"build\":\"$MODE\",\"wasm_bytes\":$RAW,\"wasm_gzip_bytes\":$GZ,\"budget_gzip_bytes\":$MAX_GZIP}" \
  > "$OUT/size.json"
if ((GZ > MAX_GZIP)); then
  if [[ $MODE == small ]]; then
    die "the wasm is over the size budget: $GZ > $MAX_GZIP bytes gzipped"
  fi
  log "WARNING: over the size budget ($GZ > $MAX_GZIP bytes gzipped); the small build (rust-src) meets it"
fi

rm -f "$OUT"/atp-wasm-*.tgz
(cd "$PKG" && npm pack --silent --pack-destination "$OUT" >/dev/null)
TGZ="$OUT/atp-wasm-$VERSION.tgz"
[[ -f "$TGZ" ]] || die "npm pack did not produce $TGZ"
log "packed $(tar tzf "$TGZ" | wc -l) files, $(stat -c %s "$TGZ") bytes"
echo "$TGZ"
