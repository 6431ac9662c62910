#!/usr/bin/env bash
# Checks contrib/atp.service (README "Running in production") the way CI can, with no systemd running
# as PID 1 (a container): `systemd-analyze verify` parses the unit offline and checks that ExecStart
# is executable, but it exits 0 on unknown keys and unparsable values (it only prints them), so any
# output fails the check; the installed path /usr/local/bin/atp does not exist here, so ExecStart is
# pointed at the binary just built; --man=no because no man pages are installed. Then
# `systemd-analyze security --offline=yes` scores the sandboxing (fails above an exposure of 2.0),
# contrib/atp.sysusers is applied to an empty root, and a unit with a misspelt key must be caught
# (proof that this systemd-analyze really checks).
# Needs systemd-analyze (Debian: apt-get install systemd; scripts/install-test-deps.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v systemd-analyze >/dev/null || { echo "no systemd-analyze: apt-get install systemd" >&2; exit 1; }
TD=$(realpath -m "${CARGO_TARGET_DIR:-target}")
[[ -x "$TD/debug/atp" ]] || cargo build -q -p atp-native
work=$(mktemp -d "${TMPDIR:-/tmp}/atp-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT

# verify UNIT: fails on a non-zero exit or on any message.
verify() {
  local out rc=0
  out=$(systemd-analyze verify --man=no "$1" 2>&1) || rc=$?
  if ((rc != 0)) || [[ -n "$out" ]]; then
    echo "$out"
    return 1
  fi
}

sed "s|/usr/local/bin/atp|$TD/debug/atp|g" contrib/atp.service > "$work/atp.service"
grep -q "^ExecStart=$TD/debug/atp server start" "$work/atp.service" || { echo "ExecStart not found" >&2; exit 1; }
verify "$work/atp.service"
echo "systemd-analyze verify: contrib/atp.service is clean ($(systemd-analyze --version | head -1))"

systemd-analyze security --offline=yes --threshold=20 --no-pager "$work/atp.service" | tail -1

mkdir -p "$work/root/etc"
systemd-sysusers --root="$work/root" - < contrib/atp.sysusers
grep -q '^atp:x:[0-9]*:[0-9]*:ATP server:/var/lib/atp:' "$work/root/etc/passwd"
echo "systemd-sysusers: contrib/atp.sysusers creates the atp user"

sed 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' "$work/atp.service" > "$work/bad.service"
if verify "$work/bad.service" >/dev/null; then
  echo "systemd-analyze verify did not report a misspelt key: this check would prove nothing" >&2
  exit 1
fi
echo "systemd-analyze verify catches a misspelt key (self-test)"
