#!/usr/bin/env bash
# THE test command of atp (README "Quick start"; CI runs it through .ci/run). It installs what it needs
# (scripts/install-test-deps.sh: apt packages, the wasm32 toolchain, wasm-bindgen-cli; root on Debian 12),
# then runs, stopping at the first failure:
#   cargo fmt --check, cargo clippy -D warnings, cargo test (native, rustup stable), the systemd unit
#   contrib/atp.service (scripts/check-systemd-unit.sh: systemd-analyze verify), the conformance kit
#   against atp-native (tests/conformance), the short reliability run (tests/reliability/run.sh --short),
#   a short cargo fuzz run (scripts/fuzz.sh),
#   cargo clippy for wasm32 (the JS bindings included: feature atp-wasm/js), the wasm32 release build of
#   atp-wasm with its JS bindings (--features js) and its JS API from Node
#   (scripts/js-api-test.mjs), and the wasm-bindgen tests (atp-wasm/tests/web.rs) under Node and in
#   headless Chromium, the npm package's tarball tests (scripts/test-npm.sh), the browser app
#   (tests/www/run.sh), then the Workers relay end to end in workerd (tests/worker/run.sh) and the
#   conformance kit against it (tests/conformance/run-worker.sh).
# Each phase prints its time; a summary follows at the end (also after a failure).
#
# Local shortcuts (any non-empty value):
#   ATP_SKIP_INSTALL  don't run install-test-deps.sh     ATP_SKIP_LINT     no fmt / clippy
#   ATP_SKIP_NATIVE   no native cargo test               ATP_SKIP_WASM     no wasm32 phases at all
#   ATP_SKIP_BROWSER  no Chromium run                    ATP_SKIP_WORKER   no workerd run
#   ATP_SKIP_NPM      no npm package phase               ATP_SKIP_WWW      no browser-app phase
#   ATP_SKIP_FUZZ     no short fuzz run                  ATP_FUZZ_SECONDS  its seconds per target (10)
#   ATP_SKIP_CONFORMANCE  no conformance kit runs        ATP_SKIP_RELIABILITY  no short reliability run
#   ATP_WASM_TOOLCHAIN=<name>, ATP_FORCE_DEBIAN_WASM=1   choose the wasm toolchain (scripts/wasm-toolchain)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

summary=()
current=""
chromedriver_pid=""
t_start=$(date +%s%N)

secs() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

finish() {
  local rc=$?
  if [[ -n "$chromedriver_pid" ]]; then
    kill "$chromedriver_pid" 2>/dev/null || true
    wait "$chromedriver_pid" 2>/dev/null || true
  fi
  [[ -n "$current" ]] && summary+=("$(printf '%-44s FAILED' "$current")")
  echo
  echo "== summary (total $(secs "$t_start") s)"
  printf '   %s\n' "${summary[@]}"
  if ((rc == 0)); then echo "== all tests passed"; else echo "== FAILED (exit $rc)" >&2; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# phase NAME CMD...: runs CMD, prints and records its time. A failure ends the script (set -e).
phase() {
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  current=$name
  echo
  echo "== $name: $*"
  "$@"
  current=""
  summary+=("$(printf '%-44s ok %7s s' "$name" "$(secs "$t0")")")
  echo "== $name: ok ($(secs "$t0") s)"
}
skip() {
  summary+=("$(printf '%-44s skipped (%s)' "$1" "$2")")
  echo
  echo "== $1: skipped ($2)"
}

# wasm_tests node|browser: the wasm-bindgen tests (runner: .cargo/config.toml), checking that
# tests/web.rs really ran some (the runner reports "no tests to run!" with success when it finds none).
wasm_tests() {
  local log; log=$(mktemp "${TMPDIR:-/tmp}/atp-wasm-test.XXXXXX")
  local envs=(-u WASM_BINDGEN_USE_BROWSER)
  if [[ $1 == browser ]]; then
    # The runner adds --headless, --no-sandbox and --disable-dev-shm-usage itself (so root works);
    # webdriver.json adds the Chromium binary and quieter flags. Its web server takes a free port.
    envs=(WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER_REMOTE="$CHROMEDRIVER_REMOTE")
    # webdriver.json names Debian's Chromium binary; elsewhere the driver finds its browser itself.
    [[ -x /usr/lib/chromium/chromium ]] && envs+=(WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/webdriver.json")
  fi
  env "${envs[@]}" cargo +"$TC" test --target wasm32-unknown-unknown -p atp-wasm --features js --tests 2>&1 | tee "$log"
  local n
  n=$(awk '/Running tests\/web\.rs/ { web = 1 } web && /test result: ok\./ { print $4; exit }' "$log")
  rm -f "$log"
  [[ "${n:-0}" -gt 0 ]] || { echo "tests/web.rs ran no wasm-bindgen tests" >&2; return 1; }
  echo "tests/web.rs: $n passed"
}

# The release build through wasm-bindgen (--target nodejs), called from JavaScript: export names,
# plain objects and thrown Errors as a JS user sees them (scripts/js-api-test.mjs).
js_api_test() {
  local td=${CARGO_TARGET_DIR:-target}
  local out="$td/atp-wasm-js-api"
  rm -rf "$out"
  wasm-bindgen --target nodejs --out-dir "$out" "$td/wasm32-unknown-unknown/release/atp_wasm.wasm"
  node scripts/js-api-test.mjs "$out/atp_wasm.js"
}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

start_chromedriver() {
  local port log
  port=$(free_port)
  log="${TMPDIR:-/tmp}/atp-chromedriver.$$.log"
  chromedriver_log=$log
  chromedriver --port="$port" --allowed-ips=127.0.0.1 >"$log" 2>&1 &
  chromedriver_pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      CHROMEDRIVER_REMOTE="http://127.0.0.1:$port"
      echo "chromedriver pid $chromedriver_pid on port $port (log $log)"
      return 0
    fi
    kill -0 "$chromedriver_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "chromedriver did not start; its log ($log):" >&2
  cat "$log" >&2
  return 1
}

if [[ -z "${ATP_SKIP_INSTALL:-}" ]]; then
  phase "install test dependencies" scripts/install-test-deps.sh
else
  skip "install test dependencies" ATP_SKIP_INSTALL
fi

if [[ -z "${ATP_SKIP_LINT:-}" ]]; then
  phase "cargo fmt --check" cargo fmt --all -- --check
  phase "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
else
  skip "cargo fmt --check, cargo clippy" ATP_SKIP_LINT
fi

if [[ -z "${ATP_SKIP_NATIVE:-}" ]]; then
  phase "cargo test" cargo test --workspace --exclude atp-conformance
else
  skip "cargo test" ATP_SKIP_NATIVE
fi

# contrib/atp.service: systemd-analyze verify (any message fails), its offline security score, the
# sysusers file (scripts/check-systemd-unit.sh; no systemd as PID 1 needed).
if [[ -z "${ATP_SKIP_LINT:-}" ]]; then
  phase "systemd unit (systemd-analyze verify)" scripts/check-systemd-unit.sh
else
  skip "systemd unit (systemd-analyze verify)" ATP_SKIP_LINT
fi

# The conformance kit against atp-native (one SQLite server, then each node of a two-node PostgreSQL
# pair): every case must pass; its table is printed (--nocapture).
if [[ -n "${ATP_SKIP_NATIVE:-}" || -n "${ATP_SKIP_CONFORMANCE:-}" ]]; then
  skip "conformance kit vs atp-native" "ATP_SKIP_NATIVE / ATP_SKIP_CONFORMANCE"
else
  phase "conformance kit vs atp-native" cargo test -p atp-conformance -- --nocapture
fi

# kill -9 under load, a peer down then back, full and read-only disks, two nodes of one domain on
# PostgreSQL (issues 9, 16; the long run is tests/reliability/run.sh without --short).
if [[ -n "${ATP_SKIP_NATIVE:-}" || -n "${ATP_SKIP_RELIABILITY:-}" ]]; then
  skip "reliability (short)" "ATP_SKIP_NATIVE / ATP_SKIP_RELIABILITY"
else
  phase "reliability (short)" tests/reliability/run.sh --short
fi

# A short cargo-fuzz run of every target (fuzz/README.md): stable toolchain with RUSTC_BOOTSTRAP.
if [[ -z "${ATP_SKIP_FUZZ:-}" ]]; then
  phase "cargo fuzz (${ATP_FUZZ_SECONDS:-10} s per target)" scripts/fuzz.sh "${ATP_FUZZ_SECONDS:-10}"
else
  skip "cargo fuzz" ATP_SKIP_FUZZ
fi

if [[ -n "${ATP_SKIP_WASM:-}" ]]; then
  skip "wasm32 phases" ATP_SKIP_WASM
  exit 0
fi

TC=$(scripts/wasm-toolchain)
echo
echo "== wasm toolchain: $TC ($(rustc +"$TC" -V)), $(wasm-bindgen-test-runner --version)"

if [[ -n "${ATP_SKIP_LINT:-}" ]]; then
  skip "cargo clippy (wasm32)" ATP_SKIP_LINT
elif cargo +"$TC" clippy --version >/dev/null 2>&1; then
  phase "cargo clippy (wasm32)" \
    cargo +"$TC" clippy --target wasm32-unknown-unknown -p atp-wasm -p atp-worker --all-targets --features atp-wasm/js \
    -- -D warnings
else
  skip "cargo clippy (wasm32)" "no clippy for toolchain $TC; on Debian: apt-get install rust-web-clippy"
fi

phase "wasm32 build (release)" cargo +"$TC" build --target wasm32-unknown-unknown -p atp-wasm --features js --release
phase "JS API test (Node, release build)" js_api_test

# Node is the runner's default mode (no wasm_bindgen_test_configure! in the tests).
phase "wasm-bindgen tests (Node)" wasm_tests node

if [[ -n "${ATP_SKIP_BROWSER:-}" ]]; then
  skip "wasm-bindgen tests (headless Chromium)" ATP_SKIP_BROWSER
else
  start_chromedriver
  phase "wasm-bindgen tests (headless Chromium)" wasm_tests browser
  kill "$chromedriver_pid" 2>/dev/null || true
  wait "$chromedriver_pid" 2>/dev/null || true
  chromedriver_pid=""
  rm -f "$chromedriver_log"
fi

# The npm package: built size-optimised (budget checked), packed, and the tarball used from JS and
# TypeScript against real servers, in Chromium and in workerd (scripts/test-npm.sh).
if [[ -n "${ATP_SKIP_NPM:-}" ]]; then
  skip "npm package (tarball tests)" ATP_SKIP_NPM
else
  phase "npm package (tarball tests)" env ATP_NPM_BUILD="${ATP_NPM_BUILD:-small}" scripts/test-npm.sh
fi

# The browser app (www/) in headless Chromium through Playwright, against two real servers and BIND's
# DoH, with the tarball the npm phase packed (tests/www/run.sh builds one when there is none).
www_test() {
  local tgz
  tgz=$(ls "${CARGO_TARGET_DIR:-target}"/npm/atp-wasm-*.tgz 2>/dev/null | head -1 || true)
  tests/www/run.sh ${tgz:+"$tgz"}
}
if [[ -n "${ATP_SKIP_WWW:-}" ]]; then
  skip "www in headless Chromium (Playwright)" ATP_SKIP_WWW
else
  phase "www in headless Chromium (Playwright)" www_test
fi

# The Workers relay: built to wasm, run in workerd through Miniflare against a native server and
# BIND (tests/worker/run.sh; its tools come from scripts/install-worker-tools.sh).
if [[ -n "${ATP_SKIP_WORKER:-}" ]]; then
  skip "atp-worker in workerd (Miniflare)" ATP_SKIP_WORKER
else
  phase "atp-worker in workerd (Miniflare)" tests/worker/run.sh
fi

# The conformance kit against atp-worker in workerd (TLS cases N/A: the platform terminates TLS),
# reusing the worker the phase above built.
if [[ -n "${ATP_SKIP_CONFORMANCE:-}" ]]; then
  skip "conformance kit vs atp-worker" ATP_SKIP_CONFORMANCE
elif [[ -n "${ATP_SKIP_WORKER:-}" ]]; then
  phase "conformance kit vs atp-worker" tests/conformance/run-worker.sh
else
  phase "conformance kit vs atp-worker" env ATP_SKIP_WORKER_BUILD=1 tests/conformance/run-worker.sh
fi
