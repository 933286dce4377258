#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs what it needs, then
# runs every test — kernel, package-manager and VM tests included. A test that cannot run
# for want of a capability FAILS (XDPHOOKS_REQUIRE_*), it is never silently skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export XDPHOOKS_REQUIRE_KERNEL=1 XDPHOOKS_REQUIRE_VM=1 XDPHOOKS_REQUIRE_PKG=1
export XDPHOOKS_NO_SYSLOG=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
