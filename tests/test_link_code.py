"""link/insn.py's symbolic code: decode → write gives back the bytes it was given; moved
code keeps its jumps, and its relocations, BTF.ext records and labels follow it, all
computed by the one writer; rewrite() refuses code whose references do not sit on
instructions, in one line with a fix."""

from __future__ import annotations

import glob
import struct
from pathlib import Path

import pytest

from conftest import REPO, build_test_object
from xdphooks.errors import ObjectError
from xdphooks.link import elf as E
from xdphooks.link import insn as I
from xdphooks.link.btf import Btf, BtfExt
from xdphooks.link.rewrite import rewrite

OBJECTS = ("static_ret", "static_two", "count_pass", "splice_bigframe", "tail_dispatch",
           "static_bigstack", "global_persist")


def _code_sections(elf: E.Elf) -> list[E.Section]:
    return [s for s in elf.sections if s.type == E.SHT_PROGBITS and s.flags & E.SHF_EXECINSTR]


@pytest.mark.parametrize("name", OBJECTS)
def test_decode_write_is_identity(name):
    elf = E.read_elf(str(build_test_object(name)))
    secs = [s for s in _code_sections(elf) if s.data]
    assert secs
    for sec in secs:
        code, _ = I.symbolic(sec.data)
        assert I.write(code).code == sec.data, sec.name
        jumps = [x for x in code if isinstance(x, I.Insn) and x.target is not None]
        if any(ins.is_jump() for _, ins in I.decode(sec.data)):
            assert jumps, f"{sec.name}: no jump became symbolic"


def test_moved_code_keeps_jumps_and_carries_its_references():
    """Code written after 3 new instructions (one of them 2 slots): jump offsets are
    unchanged, relocation, record and label offsets move by 32 bytes."""
    elf = E.read_elf(str(build_test_object("static_ret")))
    sec = next(s for s in _code_sections(elf) if s.name == "xdp")
    rel_sec = next(s for s in elf.sections if s.type == E.SHT_REL and s.info == sec.index)
    rels = E.parse_rels(rel_sec.data)
    btf = Btf.parse(elf.section(".BTF").data)
    ext = BtfExt.parse(elf.section(".BTF.ext").data, btf)
    lines = dict(ext.infos[1])["xdp"]
    assert rels and lines
    end = I.Label("end")
    code, at = I.symbolic(sec.data, {len(sec.data): [end]})
    for r in rels:
        at[r.offset].reloc = (r.sym, r.type)
    for rec in lines:
        at[I.record_offset(rec)].ext.append((1, bytes(rec)))
    head: list[I.Insn | I.Place] = [I.mov_imm(0, 2), I.ld_map(1, 7, 1), I.ja(end)]
    w = I.write(head + code)
    assert w.code[32:] == sec.data  # the moved code's own bytes, jumps included
    assert [(r.offset, r.sym, r.type) for r in w.rels] == \
        [(8, 7, 1)] + [(r.offset + 32, r.sym, r.type) for r in rels]
    assert [I.record_offset(r) for r in w.ext[1]] == [I.record_offset(r) + 32 for r in lines]
    assert [bytes(r[4:]) for r in w.ext[1]] == [bytes(r[4:]) for r in lines]
    assert w.at[end] == 32 + len(sec.data)
    ja = I.decode(w.code[24:32])[0][1]
    assert ja.off == len(sec.data) // 8  # the new jump was resolved to the moved label


def test_label_never_placed_and_jump_too_far():
    with pytest.raises(ValueError, match="never placed"):
        I.write([I.ja(I.Label("nowhere"))])
    far = I.Label("far")
    with pytest.raises(ValueError, match="too far"):
        I.write([I.ja(far)] + [I.mov_imm(0, 0)] * 40000 + [I.Place(far)])


def test_symbolic_refuses_marks_inside_instructions():
    code = I.write([I.ld_map(1, 0, 1), I.exit_()]).code
    with pytest.raises(ValueError, match="'inner' at byte 8 is not the start"):
        I.symbolic(code, {8: [I.Label("inner")]})
    with pytest.raises(ValueError, match="whole number"):
        I.symbolic(code[:-4])


def _patch_rel(src: Path, dst: Path, section: str, delta: int) -> None:
    """``src`` with the first relocation of ``section``'s code moved by ``delta`` bytes."""
    data = bytearray(src.read_bytes())
    elf = E.read_elf(str(src), bytes(data))
    target = elf.section(section)
    rel = next(s for s in elf.sections if s.type == E.SHT_REL and s.info == target.index)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    off = struct.unpack_from("<Q", data, shoff + rel.index * 64 + 0x18)[0]
    struct.pack_into("<Q", data, off, struct.unpack_from("<Q", data, off)[0] + delta)
    dst.write_bytes(bytes(data))


def test_rewrite_refuses_a_relocation_inside_an_instruction(tmp_path):
    bad = tmp_path / "bad.o"
    _patch_rel(build_test_object("static_ret"), bad, "xdp", 4)
    with pytest.raises(ObjectError) as ei:
        rewrite(str(bad), str(tmp_path / "out.o"), 0, who="plug")
    assert "relocation section '.relxdp' points inside an instruction" in str(ei.value)
    assert ei.value.fix and "\n" not in str(ei.value)


def test_rewrite_is_deterministic_on_real_objects(tmp_path):
    """The same input written twice gives the same bytes (no id()- or order-dependent
    layout in the writer)."""
    objs = [build_test_object(n) for n in OBJECTS] + \
        [Path(p) for p in sorted(glob.glob(str(REPO / "build" / "corpus" / "*.o")))[:6]]
    done = 0
    for o in objs:
        try:
            a = rewrite(str(o), str(tmp_path / "a.o"), 2)
        except ObjectError:
            continue
        rewrite(str(o), str(tmp_path / "b.o"), 2, a.program)
        assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes(), o.name
        done += 1
    assert done >= len(OBJECTS) - 2
