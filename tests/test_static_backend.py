"""Static backend on the real kernel (BPF_PROG_TEST_RUN): chains, policies,
namespacing, xdp-filter unmodified, relink, verifier errors, counters, events."""

from __future__ import annotations

import os
import struct

import pytest

from conftest import build_test_object, require_kernel
from static_helpers import (ACTION, XDPFILT_UDP, entry, make_ctx, pin_update, private_bpffs,
                            seen, set_verdict)
from xdphooks.backends import preflight as pf
from xdphooks.backends import static
from xdphooks.counters import read_counters, read_events
from xdphooks.errors import LimitError, ObjectError, VerifierError

pytestmark = pytest.mark.kernel
UDP53 = pf.udp(40000, 53)


@pytest.fixture
def fs():
    require_kernel()
    with private_bpffs() as base:
        yield base


@pytest.fixture(scope="module")
def ret_obj():
    return build_test_object("static_ret")


def run(built, pkt=UDP53) -> int:
    from xdphooks.kernel import libbpf
    return libbpf.prog_test_run(built.prog_fd, pkt).retval


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64])
def test_chain_lengths(fs, ret_obj, n):
    # static_ret (with a map) at the first, middle and last slot; map-less ones between
    pass_obj = build_test_object("static_pass")
    ret_at = sorted({0, n // 2, n - 1})
    ents = [entry(f"p{i}", ret_obj if i in ret_at else pass_obj) for i in range(n)]
    names = [f"p{i}" for i in ret_at]
    built = static.build(make_ctx(fs, ents))
    try:
        assert built.mode == "static" and len(set(built.slot_prog_ids)) == 1
        assert len(built.slot_prog_ids) == n
        assert set(built.pins) == {"root", "counters", "events"}
        k = 0  # pre-flight ran a trial copy with maps of its own: no trace in these
        base = [seen(built, nm) for nm in names]
        assert base == [k] * len(names)
        assert run(built) == ACTION["pass"]  # everyone passes: chain end passes
        assert [seen(built, nm) for nm in names] == [k + 1] * len(names)  # each ran, own map
        set_verdict(built, names[-1], ACTION["drop"])
        assert run(built) == ACTION["drop"]
        c = read_counters(built.pins["counters"], n)
        assert [x["packets"] for x in c] == [2] * n
        assert c[-1]["verdicts"]["drop"] == 1 and c[-1]["verdicts"]["pass"] == 1
        if len(names) == 3:  # a drop in the middle ends the chain there
            set_verdict(built, names[1], ACTION["drop"])
            assert run(built) == ACTION["drop"]
            assert [seen(built, nm) for nm in names] == [k + 3, k + 3, k + 2]
            c = read_counters(built.pins["counters"], n)
            assert c[ret_at[1]]["packets"] == 3 and c[ret_at[1] + 1]["packets"] == 2
    finally:
        built.close()


def test_map_limit(fs):
    """One program with more maps than the kernel allows per program (plus the chain's
    own) cannot be chained; the message names it. (Many programs with few maps each are
    split into segments: tests/test_splice.py.)"""
    with pytest.raises(LimitError, match="uses 70 maps.*the kernel allows 64"):
        static.build(make_ctx(fs, [entry("many", build_test_object("bad_manymaps"))]))


CASES = [(a, d) for a in ["aborted", "drop", "pass", "tx", "redirect", "unknown"]
         for d in ["continue", "return", "log"]]


@pytest.mark.parametrize("action,decision", CASES)
def test_policy_outcomes(fs, ret_obj, action, decision):
    value = ACTION.get(action, 17)
    built = static.build(make_ctx(fs, [entry("a", ret_obj, f"{action}={decision}"),
                                       entry("b", ret_obj)]))
    try:
        set_verdict(built, "a", value)
        b_value = ACTION["tx"] if value != ACTION["tx"] else ACTION["drop"]
        set_verdict(built, "b", b_value)
        base = seen(built, "b")
        got = run(built)
        if decision == "return":
            assert got == value and seen(built, "b") == base
        else:
            assert got == b_value and seen(built, "b") == base + 1
        ev = read_events(built.pins["events"])
        if decision == "log":
            assert [(e["slot"], e["retval"]) for e in ev] == [(0, value)]
            assert ev[0]["ts_ns"] > 0
        else:
            assert ev == []
        c = read_counters(built.pins["counters"], 2)
        assert c[0]["verdicts"][action] == 1 and c[0]["packets"] == 1
    finally:
        built.close()


def test_same_function_and_map_names(fs, ret_obj):
    built = static.build(make_ctx(fs, [entry("one", ret_obj), entry("two", ret_obj)]))
    try:
        assert built.maps["one"]["ret_map"] != built.maps["two"]["ret_map"]
        assert built.maps["one"]["ret_map"].endswith("/maps/one/ret_map")
        set_verdict(built, "two", ACTION["drop"])
        assert run(built) == ACTION["drop"]
        set_verdict(built, "one", ACTION["tx"])
        assert run(built) == ACTION["tx"]
        assert (seen(built, "one"), seen(built, "two")) == (2, 1)  # pre-flight left no trace
    finally:
        built.close()


def test_xdp_filter_unmodified(fs, ret_obj):
    from xdphooks.kernel import libbpf
    if not os.path.exists(XDPFILT_UDP):
        pytest.skip("xdp-tools objects not installed")
    built = static.build(make_ctx(fs, [entry("ours", ret_obj), entry("filt", XDPFILT_UDP)]))
    try:
        ports = built.maps["filt"]["filter_ports"]
        assert set(built.maps["filt"]) == {"filter_ports", "xdp_stats_map"}
        # xdpfilt_dny_udp: default deny; a port with MAP_FLAG_DST|MAP_FLAG_UDP is let through.
        # filter_ports is a PERCPU_ARRAY keyed by the port in network byte order.
        ncpu = libbpf.num_possible_cpus()
        key = struct.unpack("<H", struct.pack("!H", 5353))[0]
        pin_update(ports, key, struct.pack("<Q", 0x2 | 0x8) * ncpu)
        assert run(built, pf.udp(40000, 5353)) == ACTION["pass"]
        assert run(built, pf.udp(40000, 5354)) == ACTION["drop"]
        assert run(built, pf.tcp(40000, 5353)) == ACTION["drop"]
        assert run(built, pf.ipv6(17, pf.udp_hdr(40000, 5353))) == ACTION["pass"]
        assert seen(built, "ours") == 4  # pre-flight left no trace
    finally:
        built.close()


def test_xdp_filter_allow_mode_drops_port(fs, ret_obj):
    from xdphooks.kernel import libbpf
    obj = XDPFILT_UDP.replace("dny", "alw")
    if not os.path.exists(obj):
        pytest.skip("xdp-tools objects not installed")
    built = static.build(make_ctx(fs, [entry("ours", ret_obj), entry("filt", obj)]))
    try:
        ncpu = libbpf.num_possible_cpus()
        key = struct.unpack("<H", struct.pack("!H", 53))[0]
        pin_update(built.maps["filt"]["filter_ports"], key, struct.pack("<Q", 0xA) * ncpu)
        assert run(built, pf.udp(40000, 53)) == ACTION["drop"]
        assert run(built, pf.udp(40000, 54)) == ACTION["pass"]
        assert run(built, pf.tcp(40000, 53)) == ACTION["pass"]
    finally:
        built.close()


def test_relink_keeps_map_contents(fs, ret_obj):
    first = static.build(make_ctx(fs, [entry("keep", ret_obj)]))
    set_verdict(first, "keep", ACTION["drop"])
    assert run(first) == ACTION["drop"]
    before = seen(first, "keep")
    first.close()
    # different chain shape, same program name: the pin is reused
    second = static.build(make_ctx(fs, [entry("other", ret_obj), entry("keep", ret_obj)]))
    try:
        assert run(second) == ACTION["drop"]
        # same map: the count continues (+4 pre-flight packets, +1 run)
        assert seen(second, "keep") == before + 1  # pre-flight left no trace
    finally:
        second.close()


def test_pin_maps_subset(fs):
    two = build_test_object("static_two")
    built = static.build(make_ctx(fs, [entry("t", two, program="xdp_second", pin_maps=())]))
    try:
        assert built.maps["t"] == {}
        assert run(built) == ACTION["tx"]
    finally:
        built.close()
    with pytest.raises(ObjectError, match="nope"):
        static.build(make_ctx(fs, [entry("t", two, program="xdp_second", pin_maps=("nope",))]))


def test_verifier_rejects_component(fs, ret_obj):
    bad = build_test_object("static_bad")
    with pytest.raises(VerifierError) as ei:
        static.build(make_ctx(fs, [entry("good", ret_obj), entry("broken", bad, plugin="bp")]))
    err = ei.value
    assert err.plugin == "bp" and "'broken'" in str(err) and "xdp_bad" in str(err)
    assert "invalid access to packet" in err.detail or "R" in err.detail


def test_stack_limit_message(fs, ret_obj):
    """The verifier's combined-stack error becomes a LimitError naming the program."""
    from xdphooks.backends.static import _verifier_error
    from xdphooks.errors import KernelError
    ctx = make_ctx(fs, [entry("a", ret_obj), entry("deep", ret_obj, plugin="pd")])

    class R:
        program = "xdp_ret"
    log = ("Validating xdph_slot_1() func#3...\n"
           "combined stack size of 3 calls is 544. Too large\n")
    err = _verifier_error(ctx, KernelError("load failed", errno=13, log=log), [R(), R()])
    assert isinstance(err, LimitError) and err.plugin == "pd"
    assert "'deep'" in str(err) and "544" in str(err) and "512" in str(err)


def test_deep_stack_component_loads_or_limit(fs):
    big = build_test_object("static_bigstack")
    try:
        static.build(make_ctx(fs, [entry("big", big)])).close()
    except LimitError as e:
        assert "stack" in str(e)


def test_too_many_programs(fs, ret_obj):
    from xdphooks import abi
    with pytest.raises(LimitError, match=f"at most {abi.MAX_CHAIN}"):
        static.build(make_ctx(fs, [entry(f"p{i}", ret_obj) for i in range(abi.MAX_CHAIN + 1)]))


def test_counters_off(fs, ret_obj):
    built = static.build(make_ctx(fs, [entry("a", ret_obj, "pass=log")], counters=False))
    try:
        for _ in range(3):
            assert run(built) == ACTION["pass"]
        assert read_counters(built.pins["counters"], 1)[0]["packets"] == 0
        assert len(read_events(built.pins["events"])) == 3
    finally:
        built.close()


def test_counters_and_events_pinned_paths(fs, ret_obj):
    from xdphooks.kernel import libbpf
    built = static.build(make_ctx(fs, [entry("a", ret_obj, "pass=log"), entry("b", ret_obj)]))
    try:
        d = fs / "gen"
        d.mkdir()
        for name, fd in built.pins.items():
            libbpf.obj_pin(fd, str(d / name))
        for _ in range(5):
            run(built)
        c = read_counters(str(d / "counters"), 2)
        assert c == [{"packets": 5, "verdicts": {"aborted": 0, "drop": 0, "pass": 5, "tx": 0,
                                                  "redirect": 0, "unknown": 0}}] * 2
        ev = read_events(str(d / "events"), limit=2)
        assert len(ev) == 2 and len(read_events(str(d / "events"))) == 3
        assert read_events(str(d / "events")) == []
    finally:
        built.close()
