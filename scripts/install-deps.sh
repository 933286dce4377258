#!/usr/bin/env bash
# Installs everything xdphooks needs to build, test and demo on Debian 12, as root.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # BPF toolchain and kernel tools
  clang llvm libbpf-dev bpftool xdp-tools iproute2 iputils-ping util-linux procps kmod
  # package managers exercised for real by the tests and the demo
  rpm rpm2cpio cpio dnf python3-rpm python3-dnf dpkg-dev debhelper dh-python fakeroot
  # signed apt and dnf repositories built from packaging/build-all.sh (tests/test_repos.py)
  apt-utils createrepo-c gnupg
  # the installed framework runs on Debian's python3 with these
  python3 python3-pluggy python3-filelock python3-pyroute2
  # real-kernel VM for the freplace backend (this host's kernel refuses freplace)
  qemu-system-x86 busybox-static linux-image-amd64 linux-image-6.12-amd64
  # systemd-booted VM (tests/test_systemd_vm.py): its root is debootstrapped, its disks made
  # with mkfs.ext4 -d and read back with debugfs
  debootstrap e2fsprogs
  # stat tools used in the docs' examples
  jq
  # reads back the pcapng of trace --live --pcap (tests/test_watch_spliced.py)
  tcpdump
  # man page rendering and completion syntax checks (tests/test_docs_cli.py)
  man-db groff-base zsh
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo ">> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

# Servers the tests run themselves (a private config, loopback only): installed
# without letting the package start its own daemon (policy-rc.d: 101 = not now).
SERVICE_PACKAGES=(
  prometheus  # tests/test_metrics.py scrapes `xdphooks metrics --listen` with it
)
for p in "${SERVICE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  echo ">> apt-get install $p (not started)"
  export DEBIAN_FRONTEND=noninteractive
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "$p" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
         --no-install-recommends "$p" >/dev/null; }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
done

# The VM matrix's kernels that bookworm does not carry (bullseye's 5.10, sid's 7.x):
# unpacked into a cache for virtme-ng, never installed (tests/test_vm_harness.py).
bash scripts/fetch-vm-kernels.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import xdphooks, pytest, hypothesis, elftools, prometheus_client, virtme_ng" 2>/dev/null; then
  echo ">> pip install"
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/pip install -q -e '.[test]' virtme-ng
fi

# Prebuilt BPF objects shipped with the package (rootlet, dispatcher).
if [ -f bpf/Makefile ]; then
  make -s -C bpf
fi
echo ">> dependencies ready"
