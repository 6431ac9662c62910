#!/usr/bin/env bash
# Installs the reference implementation of ATP (the Python `agent-transfer-protocol` 1.0.0a8, docs/protocol.md)
# into a virtualenv at <repo>/target/atp-ref-venv, for the interop test atp-native/tests/reference_cli.rs
# and the load benchmark tests/bench/run.sh. Idempotent: a venv that already has the right version is kept.
#
# starlette is pinned below 1.0: with starlette 1.x the reference's server crashes at start
# (docs/protocol.md §11.0, §12 item 1).
#
# Environment: ATP_REF_VENV overrides the venv path; PYTHON the interpreter (default python3, ≥ 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ATP_REF_VENV:-$PWD/target/atp-ref-venv}
PYTHON=${PYTHON:-python3}
WANT="1.0.0a8"

installed_version() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m
print(m.version("agent-transfer-protocol"))
EOF
}

if [[ -x "$VENV/bin/atp" && "$(installed_version || true)" == "$WANT" ]]; then
  echo "reference ATP $WANT already installed in $VENV"
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "install-reference.sh: $PYTHON not found" >&2; exit 1; }
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv/ensurepip into python3-venv.
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "install-reference.sh: $PYTHON lacks the venv module (install python3-venv)" >&2
    exit 1
  fi
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "agent-transfer-protocol==$WANT" "starlette<1.0"
echo "reference ATP $(installed_version) installed in $VENV ($("$VENV/bin/atp" --version))"
