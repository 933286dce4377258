"""Issue 12 item 4: multi-buffer XDP. A chain whose programs are all SEC("xdp.frags")
is loaded with BPF_F_XDP_HAS_FRAGS and attaches on a jumbo-MTU veth, where real
8000-byte pings go through it; adding a program that is not built for frags is
refused in one line naming it and the fix, and the chain that ran before keeps
running. Static on the host; freplace inside the VM (the host kernel refuses EXT
programs).
"""

from __future__ import annotations

import json
import os
import struct

from conftest import one_program, sh
from freplace_support import both_modes


def frag_stats(xh) -> tuple[int, int]:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/jumbo/frag_stats"))
    try:
        return tuple(struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", k), 8))[0]
                     for k in (0, 1))
    finally:
        os.close(fd)


@both_modes
def test_chain_on_jumbo_mtu(xh, veth, bpf_obj, mode):
    # native XDP: generic (skb) mode takes any MTU, single-buffer programs included
    xh.write_config(f'mode = "{mode}"\n')
    for dev, ns in ((veth.dev_a, veth.ns_a), (veth.dev_b, veth.ns_b)):
        sh("ip", "-n", ns, "link", "set", dev, "mtu", "9000")
    xh.add_object(bpf_obj("frags_count"), "frags_count.o")
    xh.add_plugin("jumbo", one_program("jumbo", "frags_count.o", 10, veth.iface))
    xh.run("reconcile")
    pid = veth.attached_id()
    assert pid
    status = json.loads(xh.run("status", "--json").stdout)
    assert status, "status shows the chain"

    # real jumbo packets through the chain, both ways (echo request in, reply out)
    pkts0, bytes0 = frag_stats(xh)
    veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "2", "-s", "8000", "-M", "do", veth.ip_a)
    pkts, nbytes = frag_stats(xh)
    assert pkts - pkts0 >= 3 and nbytes - bytes0 >= 3 * 8000, (pkts0, bytes0, pkts, nbytes)

    # a program not built for multi-buffer: refused by name, the old chain untouched
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    small = xh.add_plugin("small", one_program("small", "count_pass.o", 20, veth.iface))
    proc = xh.run("reconcile", check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "multi-buffer" in ln and "small" in ln]
    assert lines, proc.stderr
    assert "xdp.frags" in lines[0] and " fix: " in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert veth.attached_id() == pid
    veth.exec_b("ping", "-c", "2", "-i", "0.05", "-W", "2", "-s", "8000", "-M", "do", veth.ip_a)
    assert frag_stats(xh)[0] >= pkts + 2

    # the plugin goes again: the next run has nothing to do
    small.unlink()
    again = xh.run("reconcile")
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    assert veth.attached_id() == pid

