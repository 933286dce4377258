"""Object rewriter: structure of the private copy and clear refusals."""

from __future__ import annotations

import subprocess

import pytest

from conftest import build_test_object
from xdphooks.errors import ObjectError
from xdphooks.link import elf as E
from xdphooks.link.btf import KIND_DATASEC, KIND_FUNC, KIND_VAR, Btf, BtfExt
from xdphooks.link.rewrite import rewrite

XDPFILT = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_udp.o"


def test_entry_becomes_global_slot_function(tmp_path):
    src = build_test_object("static_ret")
    res = rewrite(str(src), str(tmp_path / "c.o"), 3)
    assert res.function == "xdph_slot_3" and res.program == "xdp_ret"
    assert res.maps == {"s3_ret_map": "ret_map"}
    elf = E.read_elf(res.path)
    text = elf.section(".text")
    assert elf.section("xdp") is None and text is not None
    syms = {s.name: s for s in elf.symbols}
    slot = syms["xdph_slot_3"]
    assert slot.bind == E.STB_GLOBAL and slot.type == E.STT_FUNC
    assert elf.sections[slot.shndx].name == ".text" and slot.value % 8 == 0 and slot.value > 0
    assert {"s3_ret_value", "s3_ret_map", "s3_seen", "s3_ret_bias"} <= set(syms)
    assert "bump" in syms  # static function keeps its name
    btf = Btf.parse(elf.section(".BTF").data)
    funcs = {t.name: t.linkage for t in btf.types if t.kind == KIND_FUNC}
    assert funcs["xdph_slot_3"] == 1 and "xdp_ret" not in funcs and "s3_ret_value" in funcs
    maps = btf.datasec(".maps")
    assert [btf.types[m[0]].name for m in maps.members()] == ["s3_ret_map"]
    ext = BtfExt.parse(elf.section(".BTF.ext").data, btf)
    fi = dict(ext.infos[0])
    assert set(fi) == {".text"}
    import struct
    offs = [struct.unpack_from("<II", r)[0] for r in fi[".text"]]
    assert slot.value in offs and offs == sorted(offs)
    assert all(o < len(text.data) for o in offs)
    # llvm's tools agree the object is sane
    out = subprocess.run(["llvm-objdump", "-d", "-r", res.path], capture_output=True, text=True)
    assert out.returncode == 0 and "<xdph_slot_3>:" in out.stdout


def test_xdp_filter_copy(tmp_path):
    res = rewrite(XDPFILT, str(tmp_path / "f.o"), 0)
    assert res.maps == {"s0_xdp_stats_map": "xdp_stats_map", "s0_filter_ports": "filter_ports"}
    elf = E.read_elf(res.path)
    btf = Btf.parse(elf.section(".BTF").data)
    assert {t.name for t in btf.types if t.kind == KIND_VAR} >= {"s0__xdpfilt_dny_udp",
                                                                  "s0__license"}
    assert btf.datasec("license.xdph.s0") is not None
    assert not any(s.name.startswith(".debug") for s in elf.sections)


def test_select_program_and_drop_others(tmp_path):
    src = build_test_object("static_two")
    with pytest.raises(ObjectError, match="several XDP programs.*xdp_first, xdp_second") as ei:
        rewrite(str(src), str(tmp_path / "x.o"), 0)
    assert ei.value.fix
    res = rewrite(str(src), str(tmp_path / "x.o"), 1, program="xdp_second")
    elf = E.read_elf(res.path)
    names = {s.name for s in elf.sections}
    assert "xdp" not in names and "tc" not in names and "xdp.frags" not in names
    with pytest.raises(ObjectError, match="'tc_prog' is not an XDP program"):
        rewrite(str(src), str(tmp_path / "y.o"), 0, program="tc_prog")
    with pytest.raises(ObjectError, match="'nope' does not exist"):
        rewrite(str(src), str(tmp_path / "y.o"), 0, program="nope")


def test_refusals(tmp_path):
    src = build_test_object("static_proprietary")
    with pytest.raises(ObjectError, match="licence 'Proprietary' is not GPL-compatible"):
        rewrite(str(src), str(tmp_path / "p.o"), 0)
    nobtf = tmp_path / "nobtf.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(build_test_object("static_pass")).replace("build/tests-bpf", "tests/bpf")
                    .replace(".bpf.o", ".bpf.c"), "-o", str(nobtf)], check=True)
    with pytest.raises(ObjectError, match="has no BTF") as ei:
        rewrite(str(nobtf), str(tmp_path / "n.o"), 0)
    assert "clang -g" in ei.value.fix
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(ObjectError):
        rewrite(str(junk), str(tmp_path / "j.o"), 0)
    with pytest.raises(ObjectError, match="cannot read"):
        rewrite(str(tmp_path / "missing.o"), str(tmp_path / "m.o"), 0)
    trunc = tmp_path / "trunc.o"
    trunc.write_bytes(build_test_object("static_ret").read_bytes()[:3000])
    with pytest.raises(ObjectError):
        rewrite(str(trunc), str(tmp_path / "t.o"), 0)
