#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine, as root: installs what it needs, builds the
# framework and sample plugin packages, then runs scripts/demo.py (private namespaces,
# private xdphooks root and bpffs; everything removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo ">> building packages (framework + sample plugins, firewall 1.0 and 1.1)"
/usr/bin/python3 packaging/build_all.py --formats deb --out build/pkgs >/dev/null
/usr/bin/python3 packaging/build_all.py --formats deb --only firewall --version firewall=1.1 \
  --out build/pkgs-upgrade >/dev/null
exec .venv/bin/python scripts/demo.py --pkgs build/pkgs --upgrade-pkgs build/pkgs-upgrade "$@"
