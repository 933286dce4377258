"""The whole tool in freplace mode, inside the VM: a chain on a namespaced
veth drops real ICMP, and adding a program relinks the others without
reloading them (same kernel program ids, counter map keeps counting)."""

from __future__ import annotations

import json
import os
import struct
import textwrap

from freplace_support import vm_only

pytestmark = vm_only

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")


def install(xh, veth, bpf_obj, name, src, prio):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def status(xh) -> dict:
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    return iface


def ping(veth, n=3) -> bool:
    return veth.exec_b("ping", "-c", str(n), "-i", "0.2", "-W", "1", veth.ip_a,
                       check=False).returncode == 0


def count(xh) -> int:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/counter/pkt_count"))
    try:
        return struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", 0), 8))[0]
    finally:
        os.close(fd)


def test_freplace_chain_on_veth_and_relink(xh, veth, bpf_obj):
    xh.write_config('mode = "freplace"\nxdp_mode = "skb"\n')
    install(xh, veth, bpf_obj, "counter", "count_pass", 10)
    xh.run("reconcile")
    st = status(xh)
    assert st["mode"] == "freplace" and st["attached"], st
    assert ping(veth)
    seen = count(xh)
    assert seen >= 3
    ids = {p["name"]: p["prog_id"] for p in st["programs"]}

    install(xh, veth, bpf_obj, "icmpdrop", "drop_icmp", 20)
    xh.run("reconcile")
    st2 = status(xh)
    assert st2["prog_id"] != st["prog_id"] and st2["attached"], st2
    ids2 = {p["name"]: p["prog_id"] for p in st2["programs"]}
    assert ids2["counter"] == ids["counter"], "unchanged program was reloaded"
    assert not ping(veth, 2), "ICMP not dropped"
    assert count(xh) >= seen + 2  # same map, still counting (counter runs first)

    xh.run("teardown", "--all")
    assert ping(veth)
