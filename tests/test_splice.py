"""Spliced static linking on the real kernel: the generated root inlines each
component's entry; called and spliced chains must behave identically.

Every test loads real programs (BPF_PROG_TEST_RUN); nothing is mocked.
"""

from __future__ import annotations

import struct

import pytest

from static_helpers import ACTION, XDPFILT_UDP, entry, make_ctx, private_bpffs, seen, set_verdict
from xdphooks import abi
from xdphooks.backends import preflight as pf
from xdphooks.backends import static
from xdphooks.counters import read_counters, read_events
from xdphooks.kernel import libbpf

pytestmark = pytest.mark.kernel

PACKETS = {
    "udp53": pf.udp(40000, 53), "udp9": pf.udp(40000, 9), "tcp80": pf.tcp(40000, 80),
    "udp6": pf.CANNED["udp6"], "icmp4": pf.CANNED["icmp4"], "arp": pf.CANNED["arp"],
    "runt": b"\x00" * 14,
}


@pytest.fixture(scope="module")
def fs():
    with private_bpffs() as base:
        yield base


@pytest.fixture(scope="module")
def ret_obj(bpf_obj):
    return bpf_obj("static_ret")


def run(built, pkt=None) -> int:
    return libbpf.prog_test_run(built.prog_fd, pkt or pf.udp(40000, 53)).retval


def links(built) -> list[str]:
    return [s["link"] for s in built.slot_links]


@pytest.mark.parametrize("n", [1, 2, 10, 64, 128])
def test_spliced_chains_of_n(fs, ret_obj, n):
    """n copies of one program with one map each: spliced, verdicts flow through every
    slot, a drop in the middle ends the chain there, counters count each slot."""
    names = [f"n{n}p{i}" for i in range(n)]  # own pinned maps per test
    built = static.build(make_ctx(fs, [entry(nm, ret_obj) for nm in names]))
    try:
        assert links(built) == ["spliced"] * n
        # 64 one-map programs do not fit the kernel's 64 maps per program: segments
        assert ("segments" in built.pins) == (n >= 62)
        base = [seen(built, nm) for nm in names]  # pre-flight packets ran through them
        assert run(built) == ACTION["pass"]
        assert [seen(built, nm) - b for nm, b in zip(names, base)] == [1] * n
        mid = n // 2
        set_verdict(built, names[mid], ACTION["drop"])
        assert run(built) == ACTION["drop"]
        assert [seen(built, nm) - b for nm, b in zip(names, base)] == \
            [2] * (mid + 1) + [1] * (n - mid - 1)
        c = read_counters(built.pins["counters"], n)
        assert [x["packets"] for x in c] == [2] * (mid + 1) + [1] * (n - mid - 1)
        assert c[mid]["verdicts"]["drop"] == 1 and c[mid]["verdicts"]["pass"] == 1
        if n > 1:  # the last program's verdict is the chain's
            set_verdict(built, names[mid], ACTION["pass"])
            set_verdict(built, names[-1], ACTION["tx"])
            assert run(built) == ACTION["tx"]
    finally:
        built.close()


POLICIES = ["", "pass=continue,tx=log", "drop=continue", "unknown=continue,tx=continue",
            "aborted=log,drop=log,pass=log,tx=log,redirect=log,unknown=log",
            "pass=return", "redirect=continue,pass=log"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("value", [0, 1, 2, 3, 4, 17])
def test_spliced_equals_called(fs, ret_obj, policy, value):
    """The same chain, spliced and called: same verdict, counters and events."""
    out = {}
    for link in ("splice", "call"):
        built = static.build(make_ctx(fs, [entry("a", ret_obj, policy, link=link),
                                           entry("b", ret_obj, link=link)]))
        try:
            assert links(built) == ["spliced" if link == "splice" else "called"] * 2
            set_verdict(built, "a", value)
            set_verdict(built, "b", ACTION["tx"])
            got = run(built)
            c = read_counters(built.pins["counters"], 2)
            ev = [(e["slot"], e["retval"]) for e in read_events(built.pins["events"])]
            out[link] = (got, c, ev)
        finally:
            built.close()
    assert out["splice"] == out["call"]


def test_third_party_objects_spliced_equal_called(fs):
    """xdp-tools' xdpfilt objects (many subprograms, maps, CO-RE-free parsing) give the
    same verdicts spliced and called on a packet corpus."""
    import glob
    objs = sorted(glob.glob(str(XDPFILT_UDP).replace("dny_udp", "*")))[:6]
    assert objs, "xdp-tools' objects are missing"
    results = {}
    for link in ("splice", "call"):
        built = static.build(make_ctx(fs, [entry(f"x{i}", o, "drop=continue", link=link)
                                           for i, o in enumerate(objs)]))
        try:
            assert set(links(built)) == {"spliced" if link == "splice" else "called"}
            results[link] = [libbpf.prog_test_run(built.prog_fd, p).retval
                             for p in PACKETS.values()]
            results[link].append(read_counters(built.pins["counters"], len(objs)))
        finally:
            built.close()
    assert results["splice"] == results["call"]


def test_tail_call_entry_is_called_with_reason(fs, bpf_obj, ret_obj):
    built = static.build(make_ctx(fs, [entry("t", bpf_obj("splice_tailcall")),
                                       entry("r", ret_obj)]))
    try:
        assert built.slot_links[0]["link"] == "called"
        assert "tail-calls" in built.slot_links[0]["reason"]
        assert built.slot_links[1] == {"link": "spliced", "reason": ""}
        assert run(built) == ACTION["pass"]
    finally:
        built.close()


def test_big_frame_is_called_with_reason(fs, bpf_obj, ret_obj):
    """A 480-byte frame in the root's, with the neighbour's subprogram calls on top, would
    not fit the kernel's 512 bytes: that slot is called, the neighbour stays spliced."""
    built = static.build(make_ctx(fs, [entry("big", bpf_obj("splice_bigframe")),
                                       entry("r", ret_obj)]))
    try:
        assert built.slot_links[0]["link"] == "called"
        assert built.slot_links[1]["link"] == "spliced"
        assert "frame (4" in built.slot_links[0]["reason"], built.slot_links[0]
        assert run(built) == ACTION["pass"]
    finally:
        built.close()


def test_generated_root_has_no_call_per_spliced_slot(fs, ret_obj):
    """The point of splicing: the root's xlated code calls no slot function."""
    import subprocess
    built = static.build(make_ctx(fs, [entry(f"p{i}", ret_obj) for i in range(4)],
                                  counters=False))
    try:
        info, _ = libbpf.prog_info(built.prog_fd)
        dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info.id)],
                              capture_output=True, text=True, check=True).stdout
        assert "xdph_slot_" not in dump
        assert "ret_value" in dump  # the component's own subprogram is still a call
    finally:
        built.close()


def test_plan_and_status_say_spliced_or_called(xh, veth, bpf_obj):
    """End to end: plan predicts, status (table and JSON) reports each program's link and
    why one is called; real packets through the veth reach both programs."""
    import json
    import textwrap

    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_object(bpf_obj("splice_tailcall"), "tailcall.o")
    xh.add_plugin("two", textwrap.dedent(f"""
        from xdphooks import XdpProgram, hookimpl
        @hookimpl
        def xdphooks_programs():
            return [XdpProgram(name="tc", object="tailcall.o", priority=10,
                               interfaces=({veth.iface!r},)),
                    XdpProgram(name="cnt", object="count_pass.o", priority=20,
                               interfaces=({veth.iface!r},))]
    """))
    xh.write_config('mode = "static"\n')
    plan = xh.run("plan").stdout
    assert "tc: called, not spliced: the entry tail-calls" in plan, plan
    pj = json.loads(xh.run("plan", "--json").stdout)
    assert [ln["link"] for ln in pj["changes"][0]["links"]] == ["called", "spliced"]
    xh.run("reconcile")
    veth.exec_b("ping", "-c", "3", "-i", "0.2", "-W", "1", veth.ip_a, check=False)
    st = json.loads(xh.run("status", "--json").stdout)
    progs = st["interfaces"][0]["programs"]
    assert [(p["name"], p["link"]) for p in progs] == [("tc", "called"), ("cnt", "spliced")]
    assert "tail-calls" in progs[0]["link_reason"] and progs[1]["link_reason"] is None
    assert progs[1]["packets"] >= 3 and progs[0]["packets"] == progs[1]["packets"]
    table = xh.run("status").stdout
    assert "spliced" in table and "called, not spliced: tc" in table, table
    # the admin can ask for call linking per program: the chain is rebuilt
    xh.write_config('mode = "static"\n[programs.cnt]\nlink = "call"\n')
    xh.run("reconcile")
    st = json.loads(xh.run("status", "--json").stdout)
    assert [p["link"] for p in st["interfaces"][0]["programs"]] == ["called", "called"]
