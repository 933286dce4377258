#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine, as root (run as a user, it asks sudo): installs
# what it needs, builds the framework and sample plugin packages, then runs scripts/demo.py
# (private namespaces, private xdphooks root and bpffs; everything removed at the end).
# The set-up steps print one line each; their output goes to build/demo-setup.log and is
# shown only if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "demo.sh: needs root (it installs packages and attaches XDP programs); run it as root" >&2
    exit 1
  fi
  exec sudo "$PWD/scripts/demo.sh" "$@"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p build
LOG=build/demo-setup.log
: >"$LOG"

# step LABEL CMD...: one line with the elapsed time; the command's output goes to $LOG.
step() {
  local label=$1 start=$SECONDS
  shift
  printf '>> %s … ' "$label"
  if "$@" >>"$LOG" 2>&1; then
    echo "done ($((SECONDS - start)) s)"
  else
    echo "FAILED"
    echo "---- last lines of $LOG:"
    tail -n 40 "$LOG"
    exit 1
  fi
}

echo "xdphooks demo: about 1–2 minutes (set-up output: $LOG)"
step "checking dependencies (apt packages, .venv; minutes on a fresh machine)" \
  bash scripts/install-deps.sh
step "building packages: framework and sample plugins, firewall 1.0" \
  /usr/bin/python3 packaging/build_all.py --formats deb --out build/pkgs
step "building firewall 1.1, for the upgrade step" \
  /usr/bin/python3 packaging/build_all.py --formats deb --only firewall --version firewall=1.1 \
  --out build/pkgs-upgrade
exec .venv/bin/python scripts/demo.py --pkgs build/pkgs --upgrade-pkgs build/pkgs-upgrade "$@"
