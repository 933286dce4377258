"""The rewriter's output checked by an independent ELF reader (pyelftools), not by
xdphooks.link.elf: what the private copy must keep from the original, per symbol,
per instruction byte and per relocation."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from conftest import build_test_object
from xdphooks.link.rewrite import RENAMED_SECTIONS, SLOT_FMT, rewrite

XDPFILT = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_udp.o"
SLOT = 3


def _read(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = {s.name: s.data() if s["sh_type"] != "SHT_NOBITS" else b""
                    for s in elf.iter_sections()}
        names = [s.name for s in elf.iter_sections()]
        symtab = elf.get_section_by_name(".symtab")
        syms = [(s.name, s["st_info"]["bind"], s["st_info"]["type"], s["st_value"],
                 s["st_size"], names[s["st_shndx"]] if isinstance(s["st_shndx"], int) else "")
                for s in symtab.iter_symbols()]
        relocs = {}
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection):
                target = names[sec["sh_info"]]
                relocs[target] = [(r["r_offset"], syms[r["r_info_sym"]], r["r_info_type"])
                                  for r in sec.iter_relocations()]
        return elf["e_machine"], sections, syms, relocs


def _section_name(name: str) -> str:
    if name in (".data", ".bss"):  # each slot's globals in a section (internal map) of its own
        return f"{name}.xdph_s{SLOT}"
    return f"{name}.xdph.s{SLOT}" if name in RENAMED_SECTIONS else name


@pytest.mark.parametrize("obj", ["static_ret", "xdpfilt"])
def test_rewritten_copy_keeps_code_symbols_and_relocations(tmp_path, obj):
    src = XDPFILT if obj == "xdpfilt" else str(build_test_object("static_ret"))
    if not os.path.exists(src):
        pytest.skip("xdp-tools objects not installed")
    res = rewrite(src, str(tmp_path / "copy.o"), SLOT)
    machine, old_secs, old_syms, old_rel = _read(src)
    new_machine, new_secs, new_syms, new_rel = _read(res.path)
    assert machine == new_machine == "EM_BPF"

    (entry,) = [s for s in old_syms if s[0] == res.program and s[2] == "STT_FUNC"]
    prog_sec = entry[5]
    slot_name = SLOT_FMT.format(SLOT)
    (slot,) = [s for s in new_syms if s[0] == slot_name]
    # The entry is the global function xdph_slot_N in .text, 8-byte aligned, same size.
    assert slot[1:3] == ("STB_GLOBAL", "STT_FUNC") and slot[5] == ".text"
    assert slot[3] % 8 == 0 and slot[4] == entry[4]
    assert prog_sec not in new_secs and not any(n.startswith(".debug") for n in new_secs)
    # The code: .text first, unchanged, then the program's bytes at the slot symbol.
    old_text = old_secs.get(".text", b"")
    assert new_secs[".text"][:len(old_text)] == old_text
    assert new_secs[".text"][slot[3]:slot[3] + entry[4]] == old_secs[prog_sec][:entry[4]]

    # Every global gets the s<N>_ prefix, keeping kind, size, offset and section.
    def moved(sym):
        name, bind, kind, value, size, sec = sym
        if sym == entry:
            return (slot_name, bind, kind, slot[3], size, ".text")
        if sec == prog_sec:  # a local inside the program section moves with it
            return (name, bind, kind, slot[3] + value, size, ".text")
        if bind == "STB_GLOBAL" and sec:
            name = f"s{SLOT}_{name}"
        return (name, bind, kind, value, size, _section_name(sec))

    named = lambda syms: Counter(s for s in syms if s[0] and s[2] != "STT_SECTION")  # noqa: E731
    assert named(new_syms) == named(moved(s) for s in old_syms)

    # Each relocation of .text and of the program, at its new offset, names its
    # target's new name (a section symbol: the section it stands for).
    def target(sym):
        if sym[2] != "STT_SECTION":
            return sym[0]
        return ".text" if sym[5] == prog_sec else _section_name(sym[5])

    want = Counter((base + off, target(moved(sym)) if sym[2] != "STT_SECTION" else target(sym),
                    kind)
                   for sec, base in ((".text", 0), (prog_sec, slot[3]))
                   for off, sym, kind in old_rel.get(sec, []))
    got = Counter((off, target(sym), kind) for off, sym, kind in new_rel.get(".text", []))
    assert got == want and got
