"""Issue 22 item 3: global data loses no update across relinks under live traffic.

tests/bpf/global_persist.bpf.c counts each UDP packet to port 9 in a global
(``udp9_seen``, .bss), in a file-scope ``static`` (``udp9_static``) and in a pinned
map (``gp_pkts``). The peer namespace sends a steady stream of such packets while the
chain is relinked RELINKS times, alternately because another program joins ahead of it
or leaves again (its slot, so its prefix and section names, change) and because its
own object is upgraded to another digest with the same code (freplace loads it afresh;
the running program is kept otherwise). At the end the
globals equal the map and the packets sent: a value copied from the running chain
before the swap would lose the increments made in between. The globals' pinned maps
are the same maps from the first chain to the last (reused, never copied).
"""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import mode_config, one_program
from freplace_support import both_modes

RELINKS = {"static": 100, "freplace": 4}  # the VM emulates its CPU: 4 = each kind of relink once

#: the peer's sender: UDP to <ip>:9 every ~1 ms until <stop file> exists; prints the
#: number of datagrams the kernel accepted
SENDER = """
import os, socket, sys, time
ip, stop = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
while not os.path.exists(stop):
    s.sendto(b"x" * 32, (ip, 9))
    n += 1
    time.sleep(0.001)
print(n, flush=True)
"""


def _state(xh, prog: str) -> tuple[dict[str, int], int, dict[str, int]]:
    """(globals by name, the map counter, the pinned section maps' ids)."""
    from xdphooks.backends.globalpins import PIN_FMT, pinned_globals
    from xdphooks.kernel import libbpf

    pin_dir = xh.bpffs / "xdphooks/maps" / prog
    glob = {n: int.from_bytes(raw, "little") for n, (_, raw) in pinned_globals(pin_dir).items()}
    with libbpf.fd_closing(libbpf.obj_get(str(pin_dir / "gp_pkts"))) as fd:
        pkts = int.from_bytes(libbpf.map_lookup(fd, bytes(4), 8), "little")
    ids = {}
    for sec in ("data", "bss"):
        with libbpf.fd_closing(libbpf.obj_get(str(pin_dir / PIN_FMT.format(sec)))) as fd:
            ids[sec] = libbpf.map_info(fd).id
    return glob, pkts, ids


@both_modes
def test_no_increment_lost_across_relinks(xh, veth, bpf_obj, mode, tmp_path):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("global_persist"), "global_persist.o")
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    persist = one_program("persist", "global_persist.o", 50, veth.iface)
    xh.add_plugin("persist", persist)
    xh.run("reconcile")
    glob, pkts, ids = _state(xh, "persist")
    assert glob == {"udp9_seen": 0, "udp9_static": 0, "gen": 7} and pkts == 0, (glob, pkts)
    veth.exec_b("ping", "-c", "2", "-i", "0.05", "-W", "1", veth.ip_a)  # ARP resolved first

    stop = tmp_path / "stop"
    sender = subprocess.Popen(["ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SENDER,
                               veth.ip_a, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        obj = xh.bpf_dir / "global_persist.o"
        code = obj.read_bytes()
        for k in range(RELINKS[mode]):
            if k % 4 == 0:
                xh.add_plugin("first", one_program("first", "count_pass.o", 10, veth.iface))
            elif k % 4 == 2:
                (xh.plugin_dir / "first.py").unlink()
            else:  # another digest, same code and layout: an upgrade
                obj.write_bytes(code + b"\0" * 8 * (k % 4 == 1))
            xh.run("reconcile")
        took = time.monotonic() - t0
        time.sleep(0.2)
    finally:
        stop.touch()
        out, _ = sender.communicate(timeout=30)
    sent = int(out.strip())
    time.sleep(0.2)  # the last datagrams through the veth
    glob, pkts, ids_after = _state(xh, "persist")
    print(f"{RELINKS[mode]} relinks in {took:.1f} s, {sent} datagrams sent, map counted {pkts}, "
          f"globals {glob}")
    assert sent > RELINKS[mode] * 5, sent  # traffic ran throughout the relinks
    assert glob["udp9_seen"] == glob["udp9_static"] == pkts == sent, (sent, pkts, glob)
    assert glob["gen"] == 7
    assert ids_after == ids, "the pinned globals maps were replaced, not reused"
