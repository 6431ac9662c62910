#!/usr/bin/env bash
# Installs the official Python MCP SDK (`mcp` on PyPI) into a virtualenv at <repo>/target/mcp-client-venv:
# the MCP client nobody here wrote, which atp-native/tests/mcp.rs runs against `atp mcp`
# (atp-native/tests/mcp_driver.py). Idempotent: a venv that already has the right version is kept.
#
# Environment: ATP_MCP_VENV overrides the venv path; PYTHON the interpreter (default python3, ≥ 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ATP_MCP_VENV:-$PWD/target/mcp-client-venv}
PYTHON=${PYTHON:-python3}
WANT="2.3.0"

installed_version() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
print(m.version("mcp"))
PY
}

if [[ -x "$VENV/bin/python" && "$(installed_version || true)" == "$WANT" ]]; then
  echo "Python mcp $WANT already installed in $VENV"
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "install-mcp-client.sh: $PYTHON not found" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  { echo "install-mcp-client.sh: $PYTHON is older than 3.10 (mcp needs ≥ 3.10)" >&2; exit 1; }
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv/ensurepip into python3-venv.
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "install-mcp-client.sh: $PYTHON lacks the venv module (install python3-venv)" >&2
    exit 1
  fi
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mcp==$WANT"
echo "Python mcp $(installed_version) installed in $VENV"
