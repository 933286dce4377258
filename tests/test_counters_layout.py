"""The chain's counters at the cost of an add (issue 23): one lookup of one per-CPU value
per packet (per segment of a long chain), a slot's packets derived from its verdicts,
and a chain pinned with the previous layout still readable by status.

Real kernel, real programs (BPF_PROG_TEST_RUN); nothing is mocked.
"""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

from static_helpers import ACTION, entry, make_ctx, private_bpffs, set_verdict
from xdphooks import abi
from xdphooks.backends import preflight as pf
from xdphooks.backends import static
from xdphooks.counters import read_counters
from xdphooks.kernel import libbpf
from xdphooks.link import elf as E

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def fs():
    with private_bpffs() as base:
        yield base


def _counter_refs(root_o) -> int:
    """References to the counters map in the generated root program of ``root_o``."""
    elf = E.read_elf(str(root_o))
    sec = next(s for s in elf.sections if s.name == "xdp")
    n = 0
    for s in elf.sections:
        if s.type == E.SHT_REL and s.info == sec.index:
            n += sum(elf.symbols[r.sym].name == abi.COUNTERS_MAP for r in E.parse_rels(s.data))
    return n


# static_ret has one map and a .bss variable: each slot's globals are a map of their own
# (so that they persist across relinks, issue 22), so two maps a slot, and 128 slots need 5
# segments under the kernel's 64 maps per program
@pytest.mark.parametrize("n,segments", [(10, 1), (128, 5)])
def test_one_counters_lookup_per_segment(fs, bpf_obj, n, segments):
    """Each segment's root refers to the counters map twice: its one lookup in the
    prologue, and the never-run block that keeps the chain's maps in the program (before:
    once more per slot). Every slot still counts, across the tail calls."""
    ret = bpf_obj("static_ret")
    names = [f"seg{n}p{i}" for i in range(n)]
    ctx = make_ctx(fs, [entry(nm, ret) for nm in names])
    built = static.build(ctx)
    try:
        roots = sorted(ctx.workdir.glob("root*.o"))
        assert len(roots) == segments, roots
        assert [_counter_refs(r) for r in roots] == [2] * segments
        before = read_counters(built.pins["counters"], n)
        for _ in range(3):
            assert libbpf.prog_test_run(built.prog_fd, pf.udp(40000, 53)).retval == ACTION["pass"]
        last = n - 1
        set_verdict(built, names[last], 17)  # an unknown verdict, at the end of the last segment
        assert libbpf.prog_test_run(built.prog_fd, pf.udp(40000, 53)).retval == 17
        after = read_counters(built.pins["counters"], n)
        diff = [{k: a["verdicts"][k] - b["verdicts"][k] for k in abi.POLICY_KEYS}
                for a, b in zip(after, before)]
        assert all(d["pass"] == 4 for d in diff[:last]), diff
        assert diff[last]["pass"] == 3 and diff[last]["unknown"] == 1, diff[last]
        # packets: the sum of the verdicts, every slot ran 4 times
        assert [a["packets"] - b["packets"] for a, b in zip(after, before)] == [4] * n
    finally:
        built.close()


def test_counters_off_leave_the_chain_uncounted(fs, bpf_obj):
    """Counters off: no lookup at all, no counts, same verdicts."""
    ret = bpf_obj("static_ret")
    ctx = make_ctx(fs, [entry("off0", ret), entry("off1", ret)], counters=False)
    built = static.build(ctx)
    try:
        assert [_counter_refs(r) for r in sorted(ctx.workdir.glob("root*.o"))] == [1]
        set_verdict(built, "off1", ACTION["drop"])
        assert libbpf.prog_test_run(built.prog_fd, pf.udp(40000, 53)).retval == ACTION["drop"]
        assert [c["packets"] for c in read_counters(built.pins["counters"], 2)] == [0, 0]
    finally:
        built.close()


def test_version_1_counters_still_read(fs):
    """A chain pinned before the upgrade (one entry per slot {packets, verdicts[6]}) keeps
    its map until its next rebuild: status reads it as before."""
    pin = fs / "v1_counters"
    subprocess.run(["bpftool", "map", "create", str(pin), "type", "percpu_array", "key", "4",
                    "value", str(abi.V1_SLOT_STATS.size), "entries", "4", "name",
                    abi.COUNTERS_MAP], check=True, capture_output=True)
    ncpu = libbpf.num_possible_cpus()
    fd = libbpf.obj_get(str(pin))
    try:
        for slot in range(3):
            rows = [abi.V1_SLOT_STATS.pack(slot + 2, 1, 0, slot + 1, 0, 0, 0)] * ncpu
            libbpf.map_update(fd, struct.pack("<I", slot), b"".join(rows))
    finally:
        os.close(fd)
    got = read_counters(str(pin), 3)
    assert [g["packets"] for g in got] == [(s + 2) * ncpu for s in range(3)]
    assert [g["verdicts"]["pass"] for g in got] == [(s + 1) * ncpu for s in range(3)]
    assert [g["verdicts"]["aborted"] for g in got] == [ncpu] * 3
