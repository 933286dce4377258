"""Issue 13: our chain is recognised from the kernel after its pins are lost.

The decision (xdphooks/recover.py ``recognise``) is pure and unit-tested here;
the end-to-end tests attach a real chain on a namespaced veth, count real
packets into a component's map, then unmount the bpffs and mount a fresh one at
the same place (what a container restart, or a bpffs mounted inside
``ip netns exec``, does). The next reconcile must converge without
``--takeover``. Static: same program attached, every pin back, the component's map
with its old contents, and a later rebuild reusing that map. freplace: the kernel
frees a freplace link (and so the EXT program and its maps) with its last pin, so
the dispatcher is recognised and the chain rebuilt in one swap, with a warning
naming what was lost. Static on the host; freplace inside the VM (the host kernel
refuses EXT programs).
"""

from __future__ import annotations

import json
import os
import struct
import textwrap

import pytest

from conftest import sh
from freplace_support import IN_VM, both_modes
from xdphooks.recover import KernelFacts, ProgFacts, recognise

GEN = "if/ns@a0/g3-0123456789abcdef"
PINS = {f"{GEN}/root": 10, f"{GEN}/counters": 20, f"{GEN}/events": 21,
        "maps/fw/blocklist": 22}


def facts(root_id=10, name="xdphooks_root", tag="aa", maps=(20, 21, 22), **kw) -> KernelFacts:
    return KernelFacts(ProgFacts(root_id, name, tag, frozenset(maps)),
                       maps=frozenset(kw.get("exist", maps)), progs=kw.get("progs", {}),
                       links=kw.get("links", {}))


def test_recognised_by_ids_name_and_tag():
    r = recognise(10, "xdphooks_root", "aa", PINS, facts())
    assert r.ours and r.gen_rel == GEN
    assert r.repin["maps/fw/blocklist"] == ("map", 22)
    assert r.repin[f"{GEN}/root"] == ("prog", 10)


@pytest.mark.parametrize("case,why", [
    (dict(name="xdp_prog"), "named 'xdp_prog'"),           # id reused by someone else
    (dict(tag="bb"), "tag bb"),                              # same name, other code
    (dict(maps=(20, 21), exist=(20, 21, 22)), "map id 22"),  # map not used by the program
    (dict(exist=(20, 21)), "map id 22"),                     # map gone, its program not
    (dict(root_id=11), "gone"),
])
def test_not_recognised(case, why):
    r = recognise(10, "xdphooks_root", "aa", PINS, facts(**case))
    assert not r.ours and why in r.why


def test_freplace_links_and_programs_checked():
    pins = {f"{GEN}/root": 10, f"{GEN}/counters": 20, f"{GEN}/prog-fw": 30,
            f"{GEN}/link-fw": 40, "maps/fw/blocklist": 31}
    fw = ProgFacts(30, "fw", "cc", frozenset({31}))
    ok = facts(name="xdph_dispatcher", maps=(20,), exist=(20, 31), progs={30: fw},
               links={40: (30, 10)})
    assert recognise(10, "xdph_dispatcher", "aa", pins, ok).ours
    moved = facts(name="xdph_dispatcher", maps=(20,), exist=(20, 31), progs={30: fw},
                  links={40: (30, 99)})
    assert "link id 40" in recognise(10, "xdph_dispatcher", "aa", pins, moved).why
    # the kernel frees a freplace link with its last pin, and the EXT program and its
    # maps with it: the dispatcher is still ours, the chain must be built again
    freed = facts(name="xdph_dispatcher", maps=(20,), exist=(20,))
    r = recognise(10, "xdph_dispatcher", "aa", pins, freed)
    assert r.ours and r.rebuild
    assert set(r.lost) == {f"{GEN}/prog-fw", f"{GEN}/link-fw", "maps/fw/blocklist"}
    assert set(r.repin) == {f"{GEN}/root", f"{GEN}/counters"}
    # a map id that exists again but that no surviving program uses is not re-pinned
    reused = facts(name="xdph_dispatcher", maps=(20,), exist=(20, 31))
    assert "maps/fw/blocklist" not in recognise(10, "xdph_dispatcher", "aa", pins, reused).repin


# --- end to end -----------------------------------------------------------------------

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio},
                           interfaces=({iface!r},))]
""")


def attached_id(veth) -> int:
    link = json.loads(sh("ip", "-j", "-n", veth.ns_a, "link", "show", "dev", veth.dev_a).stdout)[0]
    return (link.get("xdp") or {}).get("prog", {}).get("id", 0)


OLD_COUNT = 10**6


def set_count(xh, value: int) -> None:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/counter/pkt_count"))
    try:
        libbpf.map_update(fd, struct.pack("<I", 0), struct.pack("<Q", value))
    finally:
        os.close(fd)


def count(xh) -> int:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/counter/pkt_count"))
    try:
        return struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", 0), 8))[0]
    finally:
        os.close(fd)


def ping(veth, n=3) -> None:
    veth.exec_b("ping", "-c", str(n), "-i", "0.05", "-W", "1", veth.ip_a)


def remount(xh) -> None:
    """The bpffs is lost and a fresh, empty one appears at the same place."""
    sh("umount", "-l", str(xh.bpffs))
    sh("mount", "-t", "bpf", "bpf", str(xh.bpffs))
    assert not (xh.bpffs / "xdphooks").exists()


def lost_pins_setup(xh, veth, bpf_obj, mode: str) -> None:
    xh.write_config(f'mode = "{mode}"\nxdp_mode = "skb"\n')
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("counter", PLUGIN.format(name="counter", obj="count_pass.o", prio=10,
                                           iface=veth.iface))
    xh.run("reconcile")


def lost_pins_scenario(xh, veth, bpf_obj, mode: str) -> None:
    lost_pins_setup(xh, veth, bpf_obj, mode)
    pid = attached_id(veth)
    ping(veth)
    before = count(xh)
    assert before >= 3
    state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
    (rec,) = state["interfaces"].values()
    assert rec["root_tag"] and rec["root_name"] and "maps/counter/pkt_count" in rec["pins"]

    remount(xh)
    proc = xh.run("reconcile")  # no --takeover
    (warning,) = [ln for ln in proc.stderr.splitlines() if "were lost" in ln]
    assert veth.iface in warning and " fix: " in warning
    if mode == "static":
        # one linked program holds every map: all of it survives, nothing is rebuilt
        assert "nothing to do" in proc.stdout, proc.stdout + proc.stderr
        assert attached_id(veth) == pid
        for rel in rec["pins"]:
            assert (xh.bpffs / "xdphooks" / rel).exists(), rel
        assert count(xh) >= before  # its contents survived (stray IPv6 packets may add some)
        before_ping = count(xh)
    else:
        # the kernel released the freplace link with its pin, and the EXT program and
        # its map with it: the dispatcher (ours by id, name and tag) is rebuilt in one
        # swap, no --takeover, and the warning says what was lost
        assert "rebuilt the chain" in warning and "counter" in warning, warning
        assert "replace" in proc.stdout, proc.stdout
        assert attached_id(veth) not in (0, pid)
        state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
        (rec,) = state["interfaces"].values()
        for rel in rec["pins"]:
            assert (xh.bpffs / "xdphooks" / rel).exists(), rel
        before_ping = count(xh)  # a fresh map (pre-flight packets do not count)
    ping(veth)
    assert count(xh) >= before_ping + 3
    again = xh.run("reconcile")
    assert "nothing to do" in again.stdout and "were lost" not in again.stderr

    # a rebuild after the recovery reuses the recovered map: the count carries on
    mid = count(xh)
    xh.add_object(bpf_obj("drop_icmp"), "drop_icmp.o")
    xh.add_plugin("icmpdrop", PLUGIN.format(name="icmpdrop", obj="drop_icmp.o", prio=20,
                                            iface=veth.iface))
    xh.run("reconcile")
    assert attached_id(veth) not in (0, pid)
    assert count(xh) >= mid

    # teardown finds the chain too once the pins are lost again
    remount(xh)
    xh.run("teardown", "--all")
    assert attached_id(veth) == 0


def test_static_chain_survives_lost_pins(xh, veth, bpf_obj):
    lost_pins_scenario(xh, veth, bpf_obj, "static")


@pytest.mark.vm
@pytest.mark.skipif(not IN_VM, reason="VM-ONLY TEST SKIPPED ON THE HOST: freplace needs "
                    "tests/vm/run-in-vm.sh (tests/test_vm_harness.py)")
def test_freplace_chain_survives_lost_pins(xh, veth, bpf_obj):
    lost_pins_scenario(xh, veth, bpf_obj, "freplace")


@both_modes
def test_reboot_restores_chain_and_records_empty_maps(xh, veth, bpf_obj, mode):
    """What a reboot does, without one (tests/test_systemd_vm.py has the real one): the
    program is gone from the interface and the bpffs is empty, the state file is kept.
    The boot reconcile attaches the chain again, and its change record says which maps
    start empty."""
    lost_pins_setup(xh, veth, bpf_obj, mode)
    ping(veth)
    assert count(xh) >= 3
    set_count(xh, OLD_COUNT)  # what the map held before the "reboot": far from any stray
    sh("ip", "-n", veth.ns_a, "link", "set", "dev", veth.dev_a, "xdpgeneric", "off")
    assert attached_id(veth) == 0
    remount(xh)
    proc = xh.run("reconcile", "--trigger=boot")
    assert "were lost" not in proc.stderr  # nothing of ours runs: not a lost-pins case
    # a fresh map: it may have counted a stray ARP/ND packet since the attach, not the old
    assert attached_id(veth) and count(xh) < 100
    rec = json.loads(xh.run("history", "--json", "-n", "1").stdout.splitlines()[-1])
    assert (rec["action"], rec["trigger"]) == ("attach", "boot"), rec
    assert "restored generation 1" in rec["message"], rec
    assert rec["message"].endswith("these maps start empty: counter/pkt_count"), rec
    ping(veth)
    assert count(xh) >= 3


def test_a_map_named_root_is_a_map():
    pins = dict(PINS, **{"maps/fw/root": 23})
    r = recognise(10, "xdphooks_root", "aa", pins, facts(maps=(20, 21, 22, 23)))
    assert r.ours and r.repin["maps/fw/root"] == ("map", 23)


def test_planted_pin_is_refused(xh, veth, bpf_obj):
    """After the pins are lost, someone pins another map where the chain's map goes:
    re-pinning never adopts it, and says which path to remove."""
    from xdphooks.kernel import libbpf

    xh.write_config('mode = "static"\nxdp_mode = "skb"\n')
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("counter", PLUGIN.format(name="counter", obj="count_pass.o", prio=10,
                                           iface=veth.iface))
    xh.run("reconcile")
    remount(xh)
    other = libbpf.BpfObject(str(bpf_obj("count_pass")))
    other.load()
    try:
        planted = xh.bpffs / "xdphooks/maps/counter/pkt_count"
        planted.parent.mkdir(parents=True)
        libbpf.obj_pin(other.map("pkt_count").fd, str(planted))
    finally:
        other.close()
    proc = xh.run("reconcile", check=False)
    (line,) = [ln for ln in proc.stderr.splitlines() if "holds another object" in ln]
    assert str(planted) in line and f"fix: remove {planted}" in line, proc.stderr
