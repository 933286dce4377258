#!/bin/sh
# Runs inside the systemd test VM (xh-test-agent.service, from the job disk at
# /job), once per boot. It only acts and collects: tests/test_systemd_vm.py
# asserts on what lands in /job/out. SCENARIO: "online" (apt install, hotplug,
# reboot, boot 2) or "offline" (installed while not running, first boot).
set -u
J=/job
O=$J/out
SCENARIO=$(cat $J/scenario)
export PYTHONPATH=/usr/lib/xdphooks/python
BL=/sys/fs/bpf/xdphooks/maps/firewall/blocklist

log() { echo "guest: $*"; echo "guest: $*" >/dev/ttyS0; }

snapshot() {  # $1: prefix
    cat /proc/1/comm >"$O/$1-pid1.txt"
    uname -r >"$O/$1-uname.txt"
    ip -j link show >"$O/$1-links.json"
    find /sys/fs/bpf -mindepth 1 | sort >"$O/$1-pins.txt"
    xdphooks status --json >"$O/$1-status.json" 2>"$O/$1-status.err"
    python3 - "$BL" >"$O/$1-blocklist.json" 2>&1 <<'PY'
import json, os, sys
from xdphooks.kernel import libbpf
if not os.path.exists(sys.argv[1]):
    print(json.dumps(None)); sys.exit()
fd = libbpf.obj_get(sys.argv[1])
print(json.dumps([".".join(map(str, k)) for k in libbpf.map_keys(fd, 4)]))
PY
    ls -l /var/lib/xdphooks >"$O/$1-statedir.txt" 2>&1
}

boot_checks() {  # $1: prefix. What the boot unit did, and when.
    systemctl is-system-running --wait >"$O/$1-running.txt" 2>&1
    for u in xdphooks.service xh-bootnet.service network-pre.target network.target \
             network-online.target multi-user.target; do
        systemctl show "$u" -p Id -p ActiveState -p Result -p ExecMainStatus \
            -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic
        echo
    done >"$O/$1-units.txt"
    systemctl show xdphooks.service -p Before -p After -p WantedBy >"$O/$1-order.txt"
    systemd-analyze >"$O/$1-analyze.txt" 2>&1
    systemd-analyze blame >"$O/$1-blame.txt" 2>&1
    journalctl -b 0 -u xdphooks -o json >"$O/$1-journal-unit.json"
    journalctl -b 0 -u xdphooks --no-pager >"$O/$1-journal-unit.txt"
    journalctl -b 0 -t xdphooks -o json >"$O/$1-journal-all.json"
    journalctl -b 0 -o short-monotonic --no-pager >"$O/$1-journal-boot.txt"
    xdphooks history --json -n 0 >"$O/$1-history.json" 2>&1
}

wait_for() {  # $1 seconds, rest: a command that succeeds when done; prints the wait
    t0=$(cut -d' ' -f1 /proc/uptime); limit=$1; shift
    while ! "$@" >/dev/null 2>&1; do
        now=$(cut -d' ' -f1 /proc/uptime)
        if [ "$(echo "$now $t0 $limit" | awk '{print ($1 - $2 > $3)}')" = 1 ]; then
            echo timeout; return 1
        fi
        sleep 0.2
    done
    echo "$(cut -d' ' -f1 /proc/uptime) $t0" | awk '{printf "%.1f\n", $1 - $2}'
}
has_xdp() { ip -j link show dev "$1" | grep -q '"xdp"'; }
no_pins() { ! ls -d /sys/fs/bpf/xdphooks/if/*"$1" 2>/dev/null | grep -q .; }

online_boot1() {
    log "online boot 1: apt install"
    mkdir -p /etc/xdphooks
    cp $J/xdphooks.toml /etc/xdphooks/xdphooks.toml
    cp $J/xh-bootnet.service /etc/systemd/system/
    systemctl enable --now xh-bootnet.service >"$O/b1-fixture.txt" 2>&1
    apt-get install -y --no-install-recommends $J/debs/*.deb >"$O/b1-apt.log" 2>&1
    echo $? >"$O/b1-apt.rc"
    systemctl is-enabled xdphooks.service >"$O/b1-enabled.txt" 2>&1
    python3 -c "
from xdphooks.kernel import libbpf
libbpf.map_update(libbpf.obj_get('$BL'), bytes([192, 0, 2, 7]), bytes(8))" >"$O/b1-block.txt" 2>&1
    snapshot b1
    journalctl -b 0 -t xdphooks -o json >"$O/b1-journal-all.json"

    log "hotplug: add xhdyn-0"
    ip link add xhdyn-0 type veth peer name xhdyp0
    ip link set xhdyp0 up; ip link set xhdyn-0 up
    wait_for 120 has_xdp xhdyn-0 >"$O/hp-add-wait.txt"
    snapshot hp-add
    systemctl show xdphooks-hotplug@xhdyn-0.service -p Result -p ExecMainStatus >"$O/hp-add-unit.txt"
    log "hotplug: del xhdyn-0"
    ip link del xhdyn-0
    wait_for 120 no_pins xhdyn-0 >"$O/hp-del-wait.txt"
    snapshot hp-del
    log "hotplug: a device udev renames (veth0 -> xhdyn-ren)"
    mkdir -p /etc/systemd/network
    printf '[Match]\nOriginalName=veth0\n\n[Link]\nName=xhdyn-ren\n' >/etc/systemd/network/10-xhren.link
    udevadm control --reload
    ip link add type veth               # the kernel names the pair veth0, veth1
    wait_for 120 has_xdp xhdyn-ren >"$O/hp-ren-wait.txt"
    udevadm info /sys/class/net/xhdyn-ren >"$O/hp-ren-udev.txt" 2>&1
    snapshot hp-ren
    ip link del xhdyn-ren
    journalctl -b 0 -u 'xdphooks-hotplug@*' -o json >"$O/hp-journal.json"
    journalctl -b 0 -u 'xdphooks-hotplug@*' --no-pager >"$O/hp-journal.txt"
    touch "$O/boot1.done"
    log "rebooting"
    sync
    systemctl reboot
}

final_boot() {  # $1: prefix
    log "$SCENARIO: checks of boot $1"
    boot_checks "$1"
    snapshot "$1"
    touch "$O/$1.done"
    sync
    systemctl poweroff
}

case $SCENARIO in
online) if [ -e "$O/boot1.done" ]; then final_boot b2; else online_boot1; fi ;;
offline) final_boot f1 ;;
*) log "unknown scenario $SCENARIO"; systemctl poweroff ;;
esac
