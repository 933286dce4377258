#!/usr/bin/env bash
# The recipe of the systemd test VM (tests/test_systemd_vm.py): a Debian 12
# minbase root with systemd as PID 1, udev, python3 and the framework's
# runtime dependencies, into DEST/rootfs. The test caches DEST under
# /var/cache/xdphooks-test/vm-<hash of this file and the host's kernels> and
# makes ext4 disk images from it with mkfs.ext4 -d (no loop mounts).
#
#   build-rootfs.sh DEST
#
# The mirror is the one apt on this host uses (or XDPHOOKS_VM_MIRROR). The
# kernels are the host's /boot/vmlinuz-* (booted with their own initrd); the
# root gets only the modules the tests load after switch_root (veth, dummy).
set -euo pipefail
DEST=${1:?usage: build-rootfs.sh DEST}
SUITE=bookworm
# ifupdown: Debian's default network setup, whose networking.service orders
# network.target and network-online.target after network-pre.target (without a
# network manager, nothing orders network-online.target after anything).
PACKAGES=systemd,systemd-sysv,udev,kmod,iproute2,ifupdown,libbpf1,python3,python3-pluggy,python3-filelock,python3-pyroute2
MODULES=(kernel/drivers/net/veth.ko kernel/drivers/net/dummy.ko)

mirror=${XDPHOOKS_VM_MIRROR:-}
if [ -z "$mirror" ]; then
    # First apt source serving $SUITE itself (not -security/-updates): deb822 or one-line.
    mirror=$(awk -v s="$SUITE" '
        /^URIs:/ {u=$2}
        /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) {print u; exit}}
        /^deb / {for (i=3;i<=NF;i++) if ($i==s) {print $2; exit}}
    ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1)
fi
[ -n "$mirror" ] || { echo "build-rootfs: no apt source for $SUITE; set XDPHOOKS_VM_MIRROR" >&2; exit 2; }

root=$DEST/rootfs
rm -rf "$root"
mkdir -p "$DEST"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$DEST/debootstrap.log" 2>&1 \
    || { tail -30 "$DEST/debootstrap.log" >&2; exit 1; }

echo xhvm >"$root/etc/hostname"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"

mkdir -p "$root/var/log/journal"                # persistent journal: both boots' records
# Faster boots under emulation: no login prompts (no logind in minbase, so
# getty-static would start six), no ext4 scrub, no utmp records.
for u in getty.target getty-static.service e2scrub_reap.service systemd-update-utmp.service \
         systemd-update-utmp-runlevel.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
done

# The test agent: runs the job the test puts on the second disk (/dev/vdb),
# once the boot is complete, and powers off even if the job fails.
cat >"$root/usr/local/sbin/xh-test-agent" <<'AGENT'
#!/bin/sh
mkdir -p /job
mount /dev/vdb /job || { echo "xh-test-agent: no job disk" >/dev/ttyS0; systemctl poweroff; exit 1; }
mkdir -p /job/out
sh /job/agent.sh >>/job/out/agent.log 2>&1
echo "xh-test-agent: agent.sh exited $?" >>/job/out/agent.log
sync
AGENT
chmod 0755 "$root/usr/local/sbin/xh-test-agent"
cat >"$root/etc/systemd/system/xh-test-agent.service" <<'UNIT'
[Unit]
Description=xdphooks test agent (job on /dev/vdb)
After=multi-user.target
ConditionPathExists=/dev/vdb

[Service]
# simple, not oneshot: a oneshot job would hold the boot open until the agent
# ends, and the agent waits for the boot to finish (is-system-running --wait).
Type=simple
ExecStart=/usr/local/sbin/xh-test-agent
StandardOutput=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/xh-test-agent.service \
    "$root/etc/systemd/system/multi-user.target.wants/xh-test-agent.service"

# Kernel modules for the host's kernels (the initrd brings the disk drivers).
for vmlinuz in /boot/vmlinuz-*; do
    kver=${vmlinuz#/boot/vmlinuz-}
    src=/lib/modules/$kver
    [ -d "$src" ] || continue
    for m in "${MODULES[@]}"; do
        for f in "$src/$m" "$src/$m.xz"; do
            [ -f "$f" ] && install -D -m 0644 "$f" "$root$f"
        done
    done
    cp "$src"/modules.order "$src"/modules.builtin* "$root$src/"
    depmod -b "$root" "$kver"
done

# Smaller: no docs, no package caches, no locales.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
du -sh "$root" | cut -f1 >"$DEST/size"
