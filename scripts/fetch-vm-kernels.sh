#!/usr/bin/env bash
# Fetches the Debian kernels the VM matrix boots that this Debian 12 host's own archive does
# not carry (bullseye's 5.10, sid's current one) and unpacks each .deb into a cache dir for
# virtme-ng: the host's kernel, /boot and package database are not touched.
#
#   scripts/fetch-vm-kernels.sh [SUITE...]      (default: bullseye sid)
#
# Result: $CACHE/<suite>/boot/vmlinuz-<ver> and $CACHE/<suite>/lib/modules/<ver>/, and
# $CACHE/<suite>/vmlinuz (a symlink to the image) for tests/vm/run-in-vm.sh. Idempotent: a
# suite already unpacked is only re-fetched when XDPHOOKS_REFETCH_KERNELS=1 (sid moves on).
set -euo pipefail
CACHE=${XDPHOOKS_KERNEL_CACHE:-/var/cache/xdphooks-test/kernels}
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SUITES=("$@"); ((${#SUITES[@]})) || SUITES=(bullseye sid)

for suite in "${SUITES[@]}"; do
  dest=$CACHE/$suite
  if [ -e "$dest/vmlinuz" ] && [ "${XDPHOOKS_REFETCH_KERNELS:-0}" != 1 ]; then
    echo ">> kernel for $suite cached: $(readlink "$dest/vmlinuz")"; continue
  fi
  apt_dir=$CACHE/apt-$suite
  mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
  : > "$apt_dir/status"  # empty: the host's installed kernels must not answer for this suite
  echo "deb [signed-by=$KEYRING] $MIRROR $suite main" > "$apt_dir/sources.list"
  # A private apt configuration: only this suite's lists, the host's sources untouched.
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
            -o "Dir::State=$apt_dir/state" -o "Dir::Cache=$apt_dir/cache"
            -o "Dir::State::status=$apt_dir/status" -o "Debug::NoLocking=1"
            -o "APT::Architecture=amd64" -o "Acquire::Languages=none")
  echo ">> fetching $suite's package lists"
  apt-get -qq "${apt_opts[@]}" update
  # linux-image-amd64 is the metapackage: the package it depends on holds the image.
  pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "fetch-vm-kernels: no linux-image-amd64 dependency in $suite" >&2; exit 1; }
  # Since 7.x (sid) the image package is split: the vmlinuz and the modules come in
  # linux-binary-*, linux-modules-* and linux-base-<ver> (modules.builtin) packages it depends on.
  parts=$(apt-cache "${apt_opts[@]}" depends "$pkg" | awk '/Depends: linux-(binary|modules|base)-[0-9]/ {print $2}')
  echo ">> downloading $pkg $parts ($suite)"
  # _apt cannot write in this root-only cache: apt downloads as root (its warning says so)
  (cd "$apt_dir/debs" && rm -f ./*.deb && apt-get -qq "${apt_opts[@]}" download "$pkg" $parts 2>&1 \
     | grep -v 'unsandboxed as root' >&2 || true)
  tmp=$(mktemp -d "$CACHE/.unpack-$suite.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
  # usr-merged kernels (sid) ship their modules under usr/lib/modules
  [ -d "$tmp/lib/modules" ] || { [ -d "$tmp/usr/lib/modules" ] && mkdir -p "$tmp/lib" && ln -s ../usr/lib/modules "$tmp/lib/modules"; }
  img=$(ls "$tmp"/boot/vmlinuz-* "$tmp"/usr/lib/modules/*/vmlinuz 2>/dev/null | head -1 || true)
  [ -n "$img" ] || { echo "fetch-vm-kernels: no vmlinuz in $pkg $parts" >&2; exit 1; }
  case $img in */boot/vmlinuz-*) ver=${img##*/vmlinuz-} ;; *) ver=$(basename "$(dirname "$img")") ;; esac
  [ -d "$tmp/lib/modules/$ver" ] || { echo "fetch-vm-kernels: $deb has no modules for $ver" >&2; exit 1; }
  depmod -b "$tmp" "$ver"
  ln -s "${img#"$tmp"/}" "$tmp/vmlinuz"
  rm -rf "$dest" && mv "$tmp" "$dest" && trap - EXIT
  rm -f "$apt_dir"/debs/*.deb
  echo ">> kernel for $suite: $ver in $dest"
done
