#!/usr/bin/env bash
# A Debian sid root with dnf5 (and libdnf5's actions plugin) for tests/test_dnf5.py: real
# dnf5 transactions run chrooted in it. Debootstrapped once and cached, like the systemd
# VM's root; a root older than a week is made again (sid moves on).
#
#   tests/dnf5/build-root.sh  -> prints the root's path
set -euo pipefail
CACHE=${XDPHOOKS_TEST_CACHE:-/var/cache/xdphooks-test}
ROOT=$CACHE/dnf5-sid-root
MIRROR=http://deb.debian.org/debian
# python3-rpm: xdphooks names the rpm that owns a plugin through the rpm module
PKGS=dnf5,libdnf5-2,rpm,python3,python3-rpm,python3-pluggy,python3-filelock,python3-pyroute2,libbpf1,iproute2,kmod,procps
if [ -f "$ROOT/.complete" ] && [ -z "$(find "$ROOT/.complete" -mtime +7)" ]; then
  # a cached root made with a shorter list: add what it lacks
  missing=()
  for p in ${PKGS//,/ }; do
    chroot "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if ((${#missing[@]})); then
    # the mirror is a dated snapshot: its Release files may be past Valid-Until
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    { chroot "$ROOT" apt-get -o Acquire::Check-Valid-Until=false update -qq && DEBIAN_FRONTEND=noninteractive chroot "$ROOT" \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >>"$CACHE/dnf5-root.log" 2>&1 \
      || { echo "build-root: apt-get install ${missing[*]} in $ROOT failed (see $CACHE/dnf5-root.log)" >&2; exit 1; }
  fi
  echo "$ROOT"; exit 0
fi
rm -rf "$ROOT.tmp"
mkdir -p "$CACHE"
# minbase: no init system; dnf5 only needs its libraries and rpm
debootstrap --variant=minbase --include="$PKGS" sid "$ROOT.tmp" "$MIRROR" >"$CACHE/dnf5-root.log" 2>&1 \
  || { echo "build-root: debootstrap failed; the last lines of $CACHE/dnf5-root.log:" >&2
       tail -5 "$CACHE/dnf5-root.log" >&2; exit 1; }
touch "$ROOT.tmp/.complete"
rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
echo "$ROOT"
