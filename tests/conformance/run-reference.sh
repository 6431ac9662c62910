#!/usr/bin/env bash
# Runs the atp-conformance kit against the Python reference server (agent-transfer-protocol 1.0.0a8,
# docs/protocol.md §11.1): a venv from scripts/install-reference.sh, a HOME of its own with config.toml
# (`local_mode = true`, `dns_override_file` holding the kit's foreign ATS/ATK records), a
# self-signed certificate and an admin token. The reference's known bugs (docs/protocol.md §12) are
# expected failures (tests/conformance/expect/reference.txt) and are reported as XFAIL.
# Exit 0 when only expected failures occur.
#
#   tests/conformance/run-reference.sh [extra atp-conformance run options, e.g. --only transfer.]
# Env: ATP_REF_VENV (default <repo>/target/atp-ref-venv; installed if missing)
#      ATP_CONFORMANCE_BIN (use this kit binary instead of building it)
#      CARGO_TARGET_DIR    as for cargo
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TD=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${ATP_REF_VENV:-$ROOT/target/atp-ref-venv}
DOMAIN=ref.test
ADMIN=conformance-admin

if [[ ! -x "$VENV/bin/atp" ]]; then
  ATP_REF_VENV="$VENV" scripts/install-reference.sh
fi
KIT=${ATP_CONFORMANCE_BIN:-}
if [[ -z "$KIT" ]]; then
  cargo build --quiet -p atp-conformance --bin atp-conformance
  KIT="$TD/debug/atp-conformance"
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/atp-conformance-ref.XXXXXX")
PID=
cleanup() {
  if [[ -n "$PID" ]]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if [[ -n "${ATP_KEEP_TMP:-}" ]]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

mkdir -p "$W/home/.atp"
"$KIT" records --format dns-override >"$W/dns_override.toml"
cat >"$W/home/.atp/config.toml" <<TOML
local_mode = true
dns_override_file = "$W/dns_override.toml"
key_selector = "default"
TOML
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/server.key" -out "$W/server.crt" -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

HOME="$W/home" PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/atp" server start --domain "$DOMAIN" \
  --host 127.0.0.1 --port "$PORT" --cert "$W/server.crt" --key "$W/server.key" --admin-token "$ADMIN" \
  >"$W/server.log" 2>&1 </dev/null &
PID=$!
for _ in $(seq 600); do
  grep -q "Uvicorn running" "$W/server.log" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { echo "the reference server exited:"; cat "$W/server.log"; exit 1; }
  sleep 0.1
done
grep -q "Uvicorn running" "$W/server.log" || { echo "the reference server did not start:"; cat "$W/server.log"; exit 1; }

start=$(date +%s%N)
status=0
"$KIT" run --url "https://127.0.0.1:$PORT" --domain "$DOMAIN" --admin-token "$ADMIN" --target reference "$@" || status=$?
ms=$((($(date +%s%N) - start) / 1000000))
echo "reference run: $((ms / 1000)).$((ms % 1000 / 100)) s (kit only, server start excluded)"
if [[ $status -ne 0 && -n "${ATP_SHOW_LOG:-}" ]]; then cat "$W/server.log"; fi
exit $status
