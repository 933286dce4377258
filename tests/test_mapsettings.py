"""Issue 22 item 1: what a libbpf loader sets on maps before load, as plugin data.

``XdpProgram(maps={"rx_cnt": {"max_entries": 256}})`` sizes (and flags, and keeps
out of bpffs) an ordinary object's maps in both backends. The differential test
chains xdp-tools' xdp-bench object (xdp_basic.bpf.c, whose maps declare no
max_entries) unmodified and compares verdicts, output bytes and map contents with
the same object loaded as xdp-bench loads it. The end-to-end tests run real packets
through a namespaced veth; bad settings give one line naming the plugin, the chain
that ran before untouched. Static on the host; freplace in the VM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct

import pytest

from conftest import mode_config, one_program, require_kernel
from corpus_packets import PACKETS
from freplace_support import both_modes
from static_helpers import entry, make_ctx, private_bpffs
from xdp_bench_support import (PROGRAM, datarec_totals, extract, own_loader_settings)
from xdphooks import XdpProgram
from xdphooks.kernel import libbpf
from xdphooks.link import constants as C
from xdphooks.link import elf as E
from xdphooks.link.btf import Btf
from xdphooks.mapsettings import declared_maps, freeze, max_entries
from xdphooks.model import Chain, InterfaceRef

XDP = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3}


# --- the declaration ------------------------------------------------------------------------


def test_declaration_is_checked_and_frozen():
    p = XdpProgram("a", "a.o", maps={"rx_cnt": {"max_entries": 8}, "b": {"pin": False}})
    assert p.maps == (("b", (("pin", False),)), ("rx_cnt", (("max_entries", 8),)))
    hash(p)
    for bad, why in [({"m": {"max_entries": 0}}, "max_entries = 0 is out of range"),
                     ({"m": {"max_entries": 2**32}}, "out of range"),
                     ({"m": {"max_entries": True}}, "out of range"),
                     ({"m": {"map_flags": -1}}, "map_flags = -1 is out of range"),
                     ({"m": {"pin": "no"}}, "pin = 'no' must be true or false"),
                     ({"m": {"size": 3}}, "unknown setting 'size'"),
                     ({"m": {}}, "has no settings"),
                     ({"m": 5}, "maps must map map names to settings")]:
        with pytest.raises(ValueError) as ei:
            XdpProgram("a", "a.o", maps=bad)
        assert why in str(ei.value), (bad, str(ei.value))


def test_settings_are_part_of_the_fingerprint(tmp_path):
    obj = tmp_path / "x.o"
    obj.write_bytes(b"x")
    e = entry("a", obj)
    iface = InterfaceRef("", "veth0")
    fps = {Chain(iface, (dataclasses.replace(e, map_settings=freeze(ms)),)).fingerprint()
           for ms in ({}, {"m": {"max_entries": 4}}, {"m": {"max_entries": 8}},
                      {"m": {"max_entries": 8, "pin": False}})}
    assert len(fps) == 4


def test_declared_maps_read_from_btf(bpf_obj):
    maps = declared_maps(E.read_elf(str(extract())))
    assert "max_entries" not in maps["rx_cnt"] and maps["rx_cnt"]["type"] == 2  # ARRAY
    assert maps["devmap_xmit_cnt_multi"]["max_entries"] == 1024
    assert declared_maps(E.read_elf(str(bpf_obj("count_pass"))))["pkt_count"]["max_entries"] == 1


# --- xdp-bench's object: chained vs its own loader ------------------------------------------


def _rodata(path: str, values: dict) -> bytes:
    elf = E.read_elf(path)
    ro = elf.section(".rodata")
    syms = {s.name: (s.value, s.size) for s in elf.symbols if s.shndx == ro.index}
    return C.apply(Btf.parse(elf.section(".BTF").data), syms, bytes(ro.data), values,
                   who="bench", plugin="xdp-bench", obj="xdp_basic")


def _standalone(path: str, action: int, ncpu: int):
    """As xdp-bench loads it: open, size the maps, set nr_cpus and action, load only
    xdp_basic_prog (libbpf calls, no xdphooks code in between)."""
    obj = libbpf.BpfObject(path)
    try:
        for p in obj.programs():
            p.set_autoload(p.name == PROGRAM)
        for name, s in own_loader_settings(ncpu).items():
            assert libbpf._lib.bpf_map__set_max_entries(obj.map(name).ptr, s["max_entries"]) == 0
        ro = [m for m in obj.maps() if m.internal and m.name.endswith(".rodata")][0]
        ro.set_initial_value(_rodata(path, {"nr_cpus": ncpu, "action": action}))
        obj.load()
        fd = obj.program(PROGRAM).fd
        out = {k: _run(fd, v) for k, v in PACKETS.items()}
        rx = obj.map("rx_cnt")
        assert max_entries(rx) == ncpu
        return out, datarec_totals(rx.fd)
    finally:
        obj.close()


def _run(fd: int, pkt: bytes):
    r = libbpf.prog_test_run(fd, pkt)
    return r.retval, bytes(r.data_out)


def _chained(backend, path: str, action: int, ncpu: int, pass_obj=None):
    e = dataclasses.replace(entry("bench", path, program=PROGRAM, plugin="xdp-bench",
                                  policy="pass=return"),
                            constants=(("action", action), ("nr_cpus", ncpu)),
                            map_settings=freeze(own_loader_settings(ncpu)))
    ents = [e] if pass_obj is None else [entry("before", pass_obj), e]
    with private_bpffs() as fs:
        built = backend.build(make_ctx(fs, ents))
        try:
            out = {k: _run(built.prog_fd, v) for k, v in PACKETS.items()}
            with libbpf.fd_closing(libbpf.obj_get(built.maps["bench"]["rx_cnt"])) as fd:
                info = libbpf.map_info(fd)
                assert info.max_entries == ncpu
                totals = datarec_totals(fd)
            return out, totals
        finally:
            built.close()


@both_modes
@pytest.mark.parametrize("action", ["drop", "pass", "tx"])
def test_xdp_bench_chains_unmodified(mode, action, bpf_obj):
    """xdp-bench drop|pass|tx: the same verdict and bytes for every packet, and the same
    rx_cnt contents, standalone, chained alone and chained after a PASS program."""
    require_kernel()
    from xdphooks.backends import freplace, static

    backend = static if mode == "static" else freplace
    path = str(extract())
    ncpu = libbpf.num_possible_cpus()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # rx_cnt is keyed by CPU: one CPU for all runs
    try:
        ref, ref_totals = _standalone(path, XDP[action], ncpu)
        assert {v[0] for v in ref.values()} == {XDP[action]}, ref
        assert ref_totals == (len(PACKETS), len(PACKETS) if action == "drop" else 0, 0)
        for pass_obj in (None, bpf_obj("count_pass")):
            got, totals = _chained(backend, path, XDP[action], ncpu, pass_obj)
            assert got == ref, f"chained ({mode}) differs from xdp-bench's own load"
            assert totals == ref_totals, (totals, ref_totals)
    finally:
        os.sched_setaffinity(0, cpus)
    print(f"xdp-bench {action} ({mode}): {len(PACKETS)} packets, rx_cnt totals {ref_totals} "
          "standalone and chained")


# --- end to end: real packets, status, failures named by plugin ----------------------------


def _map_info(xh, program: str, name: str):
    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps" / program / name))) \
            as fd:
        info = libbpf.map_info(fd)
        return info, _sum_array(fd, info)


def _sum_array(fd: int, info) -> int:
    total = 0
    for k in range(info.max_entries):
        raw = libbpf.map_lookup(fd, struct.pack("<I", k), 8)
        total += struct.unpack("<Q", raw)[0] if raw else 0
    return total


def _errors(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if "error:" in ln]


@both_modes
def test_maps_sized_by_the_plugin(xh, veth, bpf_obj, mode):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("ms_unsized"), "ms_unsized.o")

    def plugin(maps: str) -> None:
        xh.add_plugin("sized", one_program("ms", "ms_unsized.o", 10, veth.iface,
                                           f"maps={maps}"))

    plugin("{'ms_hits': {'max_entries': 4}, 'ms_lens': {'max_entries': 64, 'map_flags': 1}}")
    xh.run("reconcile")
    assert veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode == 0
    info, hits = _map_info(xh, "ms", "ms_hits")
    assert info.max_entries == 4 and hits >= 3, (info.max_entries, hits)
    info, _ = _map_info(xh, "ms", "ms_lens")
    assert info.max_entries == 64 and info.map_flags & 1  # BPF_F_NO_PREALLOC
    status = json.loads(xh.run("status", "--json").stdout)
    progs = [p for i in status["interfaces"] for p in i["programs"]]
    assert progs[0]["maps"] == {"ms_hits": {"max_entries": 4},
                                "ms_lens": {"map_flags": 1, "max_entries": 64}}, progs
    pid = veth.attached_id()

    # a pinned map is reused as it is: another size is refused, naming plugin and fix
    for maps, why in [
            ("{'ms_hits': {'max_entries': 8}, 'ms_lens': {'max_entries': 64, 'map_flags': 1}}",
             "maps= sets max_entries = 8 on map ms_hits of ms_unsized.o, but its pinned map"),
            ("{'ms_hits': {'max_entries': 4}}",
             "map(s) ms_lens declare no max_entries"),
            ("{'ms_hits': {'max_entries': 4}, 'ms_lens': {'max_entries': 64}, "
             "'nosuch': {'max_entries': 1}}", "has no map(s) nosuch named in maps=")]:
        plugin(maps)
        proc = xh.run("reconcile", check=False)
        errs = _errors(proc)
        assert proc.returncode == 1 and len(errs) == 1, proc.stdout + proc.stderr
        assert "plugin 'sized'" in errs[0] and why in errs[0] and " fix: " in errs[0], errs[0]
        assert veth.attached_id() == pid
        print(errs[0])

    # "pin": False: a fresh map each relink; the pin left from before is not used
    plugin("{'ms_hits': {'max_entries': 4}, 'ms_lens': {'max_entries': 64, 'map_flags': 1, "
           "'pin': False}}")
    xh.run("reconcile")
    assert veth.attached_id() != pid
    lens_before = _lens_total(xh)
    _, hits_before = _map_info(xh, "ms", "ms_hits")
    assert veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode == 0
    assert _map_info(xh, "ms", "ms_hits")[1] >= hits_before + 3  # still pinned
    assert _lens_total(xh) == lens_before  # not pinned: the chain has its own


def _lens_total(xh) -> int:
    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/ms/ms_lens"))) as fd:
        return sum(struct.unpack("<Q", libbpf.map_lookup(fd, k, 8))[0]
                   for k in libbpf.map_keys(fd, 4))


@both_modes
def test_xdp_bench_object_drops_real_traffic(xh, veth, mode):
    """xdp-bench drop, chained: pings are dropped and counted in its rx_cnt."""
    xh.write_config(mode_config(mode))
    xh.add_object(extract(), "xdp_basic.bpf.o")
    ncpu = libbpf.num_possible_cpus()
    xh.add_plugin("bench", one_program(
        "bench", "xdp_basic.bpf.o", 10, veth.iface,
        f"program='xdp_basic_prog', constants={{'action': 1, 'nr_cpus': {ncpu}}}, "
        f"maps={own_loader_settings(ncpu)!r}"))
    xh.run("reconcile")
    # ARP is dropped too: a permanent neighbour entry lets every ping reach the program
    mac = json.loads(veth.exec_a("ip", "-j", "link", "show", "dev", veth.dev_a).stdout)[0]
    veth.exec_b("ip", "neigh", "replace", veth.ip_a, "lladdr", mac["address"], "dev",
                veth.dev_b, "nud", "permanent")
    assert veth.exec_b("ping", "-c", "4", "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode != 0
    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/bench/rx_cnt"))) as fd:
        processed, dropped, issue = datarec_totals(fd)
    assert processed >= 4 and dropped == processed and issue == 0, (processed, dropped)
