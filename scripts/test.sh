#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs what it needs, then
# runs every test — kernel, package-manager and VM tests included. A test that cannot run
# for want of a capability FAILS (XDPHOOKS_REQUIRE_*), it is never silently skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export XDPHOOKS_REQUIRE_KERNEL=1 XDPHOOKS_REQUIRE_VM=1 XDPHOOKS_REQUIRE_PKG=1
export XDPHOOKS_NO_SYSLOG=1
# The systemd-booted VM (boot, udev hotplug, offline installs: kernel-independent) on
# Debian 12's default kernel only; the BPF side of every kernel is the VM matrix's.
export XDPHOOKS_SYSTEMD_VM_KERNELS=${XDPHOOKS_SYSTEMD_VM_KERNELS:-6.1}
# The VM suites start in the background at once and overlap the host tests
# (tests/vm_suites.py); --durations shows where the time went in every CI log.
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=25 "$@"
