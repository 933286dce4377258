"""Object rewriter: a private, linkable copy of a third-party component object.

libbpf's static linker only lets one object call functions of another through
global functions in ``.text``, and refuses two objects that define the same
global symbol (two copies of xdp-filter both define ``xdp_stats_map``). For
each component we therefore write a copy in which

* the entry program's section is appended to ``.text`` (8-byte aligned) and the
  entry becomes the global function ``xdph_slot_<N>`` — the strong definition
  of the rootlet's ``__weak`` slot;
* every defined global function/variable and every map gets the prefix
  ``s<N>_`` (extern symbols — ksyms, kconfig — keep their names);
* other program sections are dropped (they would be loaded as programs);
* ``.symtab``/``.strtab``, ``.BTF`` (FUNC/VAR names, FUNC linkage) and
  ``.BTF.ext`` (func_info/line_info/CO-RE records, moved to ``.text`` with
  shifted offsets) and the ``.rel*`` sections are kept consistent; DWARF and
  relocations of ``.BTF*`` are dropped (the linker ignores them anyway).

Only the copy is written; the input object is never modified.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from ..abi import is_frags_section
from ..errors import ObjectError
from . import elf as E
from .elf import REBUILD, shown
from .globals import DATA_SECTIONS, slot_section
from .btf import (KIND_DATASEC, KIND_FUNC, KIND_VAR, LINKAGE_EXTERN, LINKAGE_GLOBAL, Btf,
                  BtfExt)

SLOT_FMT = "xdph_slot_{}"
PREFIX_FMT = "s{}_"  # what a slot's symbols, maps and globals are renamed with
R_BPF_64_ABS32 = 3
RENAMED_SECTIONS = ("license", "version")
# Licence strings the kernel accepts as GPL-compatible (include/linux/license.h).
GPL_COMPATIBLE = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL",
                  "Dual MIT/GPL", "Dual MPL/GPL"}
_XDP_SEC = re.compile(r"^(xdp|xdp\.frags)(/.*)?$|^xdp_(?!devmap|cpumap).*$")
_XDP_NOT_MAIN = re.compile(r"^(xdp|xdp\.frags)/(devmap|cpumap)(/.*)?$|^xdp_(devmap|cpumap)/")


def is_xdp_section(name: str) -> bool:
    return bool(_XDP_SEC.match(name)) and not _XDP_NOT_MAIN.match(name)


def is_dwarf(name: str) -> bool:
    return name.startswith(".debug_") or name.startswith(".rel.debug_")


def _is_prog_section(s: E.Section) -> bool:
    return (s.type == E.SHT_PROGBITS and bool(s.flags & E.SHF_EXECINSTR)
            and s.name != ".text")


@dataclass
class ProgramInfo:
    name: str
    section: str
    index: int = 0  # of the section


#: section names (before any "/" or ".") by which libbpf 1.1 knows a program type other
#: than XDP; a program in a section named otherwise has no type until its loader sets one
_OTHER_TYPES = frozenset("""
    socket sk_reuseport kprobe uprobe kretprobe uretprobe ksyscall kretsyscall usdt tc
    classifier action tracepoint tp raw_tracepoint raw_tp tp_btf fentry fmod_ret fexit
    freplace lsm iter syscall perf_event lwt_in lwt_out lwt_xmit lwt_seg6local sockops
    sk_skb sk_msg lirc_mode2 flow_dissector cgroup_skb cgroup struct_ops sk_lookup
    netfilter tcx netkit""".split())


def _untyped_section(name: str) -> bool:
    return not is_xdp_section(name) and name.split("/")[0].split(".")[0] not in _OTHER_TYPES


def xdp_programs(elf: E.Elf, untyped: bool = False) -> list[ProgramInfo]:
    """The object's XDP programs; with ``untyped``, also those in sections no program
    type claims (e.g. SEC("redirect_map_0")): a plugin that names one takes it as XDP,
    as its own loader does with bpf_program__set_type()."""
    out = []
    for sym in elf.symbols:
        if sym.type != E.STT_FUNC or sym.shndx in (E.SHN_UNDEF,) or sym.shndx >= len(elf.sections):
            continue
        sec = elf.sections[sym.shndx]
        if _is_prog_section(sec) and sym.bind != E.STB_LOCAL and (
                is_xdp_section(sec.name) or untyped and _untyped_section(sec.name)):
            out.append(ProgramInfo(sym.name, sec.name, sec.index))
    return out


@dataclass
class RewriteResult:
    path: str  # the rewritten copy
    source: str  # the original object
    program: str  # entry function name in the original
    slot: int
    function: str  # xdph_slot_<N>
    prefix: str
    maps: dict[str, str] = field(default_factory=dict)  # renamed map -> original name
    data_sections: set[str] = field(default_factory=set)  # .data/.rodata/.bss... (internal maps)
    license: str = ""
    names: dict[str, str] = field(default_factory=dict)  # every renamed symbol: old -> new
    frags: bool = False  # the entry is in SEC("xdp.frags") (abi.is_frags_section)

    @property
    def original_maps(self) -> dict[str, str]:
        """original map name -> renamed map name."""
        return {v: k for k, v in self.maps.items()}


def _inits_prog_array(sym: E.Symbol | None) -> bool:
    """A relocation of .maps against a function: a PROG_ARRAY's ``.values`` entry."""
    return sym is not None and sym.type == E.STT_FUNC


def tail_targets(elf: E.Elf) -> tuple[str, ...]:
    """Programs the object's PROG_ARRAYs name in a declarative initialiser."""
    maps_sec = elf.section(".maps")
    out: list[str] = []
    for s in elf.sections:
        if s.type == E.SHT_REL and maps_sec is not None and s.info == maps_sec.index:
            out += [elf.symbols[r.sym].name for r in E.parse_rels(s.data)
                    if r.sym < len(elf.symbols) and _inits_prog_array(elf.symbols[r.sym])]
    return tuple(dict.fromkeys(out))


def without_prog_array_inits(data: bytes, elf: E.Elf) -> bytes:
    """The object's bytes with its PROG_ARRAY initialisers' relocations taken out of
    the relocation sections of .maps, in place (code, maps and BTF untouched): for a
    loader that fills the arrays itself (libbpf 1.1 fails a load whose initialiser
    names a program it does not load)."""
    maps_sec = elf.section(".maps")
    if maps_sec is None:
        return data
    buf = bytearray(data)
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3a:0x3c], "little")
    for s in elf.sections:
        if s.type != E.SHT_REL or s.info != maps_sec.index:
            continue
        kept = E.pack_rels([r for r in E.parse_rels(s.data) if not _inits_prog_array(
            elf.symbols[r.sym] if r.sym < len(elf.symbols) else None)])
        hdr = shoff + s.index * shentsize
        off = int.from_bytes(buf[hdr + 0x18:hdr + 0x20], "little")
        buf[off:off + len(kept)] = kept
        buf[hdr + 0x20:hdr + 0x28] = len(kept).to_bytes(8, "little")  # sh_size
    return bytes(buf)


def license_of(elf: E.Elf) -> str:
    sec = elf.section("license")
    if sec is None:
        return ""
    return sec.data.split(b"\0", 1)[0][:256].decode(errors="replace")


def rewrite(src: str, out: str, slot: int, program: str | None = None,
            prefix: str | None = None, who: str | None = None) -> RewriteResult:
    """Write a linkable copy of ``src`` to ``out`` with its entry as slot ``slot``.

    :param who: plugin/program name used in error messages.
    """
    name = os.path.basename(src)
    prefix = prefix if prefix is not None else PREFIX_FMT.format(slot)
    fn_name = SLOT_FMT.format(slot)

    def fail(reason: str, fix: str) -> ObjectError:
        return ObjectError(f"object {name}: {reason}", plugin=who, fix=fix)

    elf = E.read_elf(src, plugin=who)
    btf_sec, ext_sec = elf.section(".BTF"), elf.section(".BTF.ext")
    if btf_sec is None:
        raise fail("has no BTF, so it cannot be linked into a chain",
                   "rebuild it with clang -g -O2 -target bpf (BTF is emitted with -g)")
    btf = Btf.parse(btf_sec.data, name, who)
    ext = BtfExt.parse(ext_sec.data, btf, name, who) if ext_sec is not None else None
    if ext is None:
        raise fail("has no .BTF.ext (function info), so it cannot be linked",
                   "rebuild it with clang -g -O2 -target bpf")
    if any(s.type == E.SHT_RELA for s in elf.sections):
        raise fail("uses RELA relocations, which the BPF linker does not support",
                   "rebuild it with clang -target bpf")
    if not elf.symbols:
        raise fail("has no symbol table", "rebuild it with clang -target bpf")
    for s in elf.sections:
        if s.type == E.SHT_REL and not 0 < s.info < len(elf.sections):
            raise fail(f"relocation section {shown(s.name)} applies to no section", REBUILD)

    # --- licence --------------------------------------------------------------
    lic = license_of(elf)
    if lic not in GPL_COMPATIBLE:
        raise fail((f"licence {shown(lic)} is not GPL-compatible" if lic else
                    f"{'program ' + repr(program) + ' ' if program else ''}has no license "
                    "section (SEC(\"license\"), so the kernel takes it as "
                    "proprietary)") + "; the static chain is one GPL program",
                   'use mode = "freplace" for this interface, or a GPL-compatible '
                   'licence (e.g. char _license[] SEC("license") = "Dual BSD/GPL")')

    # --- entry program -------------------------------------------------------------
    progs = xdp_programs(elf)
    if program is None:
        if not progs:
            raise fail("contains no XDP program (SEC(\"xdp\"))",
                       "point to an object with an XDP program")
        if len(progs) > 1:
            names = ", ".join(shown(p.name, False) for p in progs[:8])
            raise fail(f"contains several XDP programs ({names})",
                       "name one with program = \"...\" in the plugin declaration")
        entry = progs[0]
    else:
        cand = [p for p in xdp_programs(elf, untyped=True) if p.name == program]
        if not cand:
            others = [s.name for s in elf.symbols if s.name == program and s.type == E.STT_FUNC]
            why = ("is not an XDP program (section is not SEC(\"xdp\"))" if others
                   else "does not exist")
            avail = ", ".join(shown(p.name, False) for p in progs[:8]) or "none"
            raise fail(f"program {shown(program)} {why}", f"use one of: {avail}")
        entry = cand[0]
    esec = elf.sections[entry.index]  # frags-aware code runs fine in a non-frags program

    # --- which sections stay --------------------------------------------------------
    text = elf.section(".text")
    text_data = bytes(text.data) if text is not None else b""
    shift = (len(text_data) + 7) // 8 * 8
    new_text = text_data + b"\0" * (shift - len(text_data)) + esec.data

    dropped: set[int] = set()  # original section indexes not carried over
    for s in elf.sections:
        if s.index == 0:
            continue
        if (s.type in (E.SHT_SYMTAB, E.SHT_STRTAB, E.SHT_LLVM_ADDRSIG) or is_dwarf(s.name)
                or s.name in (".rel.BTF", ".rel.BTF.ext", ".BTF", ".BTF.ext")):
            dropped.add(s.index)
        elif _is_prog_section(s) and s.index != esec.index:
            dropped.add(s.index)  # other programs: not part of this slot
    maps_idx = elf.section(".maps").index if elf.section(".maps") is not None else -1
    for s in elf.sections:  # relocation sections follow their target
        if s.type == E.SHT_REL and s.info == maps_idx and all(
                r.sym < len(elf.symbols) and _inits_prog_array(elf.symbols[r.sym])
                for r in E.parse_rels(s.data)):
            dropped.add(s.index)  # only PROG_ARRAY initialisers (an empty one crashes libbpf)
        if s.type == E.SHT_REL and (s.info in dropped or s.info == esec.index
                                    or (text is not None and s.info == text.index)):
            dropped.add(s.index)
    dropped.add(esec.index)
    if text is not None:
        dropped.add(text.index)

    out_secs: list[E.Section] = [E.Section("", E.SHT_NULL)]
    sec_renames: dict[str, str] = {}
    remap: dict[int, int] = {}
    text_idx = -1
    for s in elf.sections:
        if s.index == 0:
            continue
        if text is not None and s.index == text.index or (text is None and s.index == esec.index):
            text_idx = len(out_secs)
            out_secs.append(E.Section(".text", E.SHT_PROGBITS, E.SHF_ALLOC | E.SHF_EXECINSTR,
                                      new_text, 0, 0, 8, 0))
            remap[s.index] = text_idx
            continue
        if s.index in dropped:
            continue
        remap[s.index] = len(out_secs)
        if s.type not in (E.SHT_PROGBITS, E.SHT_NOBITS, E.SHT_REL):
            raise fail(f"section {shown(s.name)} has an unsupported type {s.type:#x}", REBUILD)
        if s.align > 4096 or s.align & (s.align - 1):
            raise fail(f"section {shown(s.name)} has a bad alignment ({s.align})", REBUILD)
        c = E.Section(s.name, s.type, s.flags, s.data, s.link, s.info, s.align, s.entsize)
        if s.name in RENAMED_SECTIONS:
            # the linker wants identical license/version contents in every input:
            # keep the component's copy under a private name (libbpf skips it)
            c.name = f"{s.name}.xdph.{prefix.rstrip('_')}"
            sec_renames[s.name] = c.name
        elif s.name in DATA_SECTIONS:
            # each slot's .data/.bss in a section of its own: libbpf makes every
            # ".data.*"/".bss.*" section a separate internal map, which the backend
            # keeps pinned with the component's maps (backends/globalpins.py)
            c.name = slot_section(s.name, prefix)
            sec_renames[s.name] = c.name
        if "nobits_size" in s.__dict__:
            c.__dict__["nobits_size"] = s.__dict__["nobits_size"]
        out_secs.append(c)
    remap[esec.index] = text_idx

    # --- symbols ----------------------------------------------------------------------
    maps_sec = elf.section(".maps")
    old_syms = elf.symbols
    new_syms: list[E.Symbol] = []
    sym_remap: dict[int, int] = {}
    names: dict[str, str] = {}
    maps: dict[str, str] = {}
    text_secsym = -1
    esec_secsym = -1
    for i, s in enumerate(old_syms):
        if i == 0:
            sym_remap[0] = 0
            new_syms.append(E.Symbol("", 0, 0, 0, 0, 0))
            continue
        special = s.shndx in (E.SHN_UNDEF, E.SHN_ABS, E.SHN_COMMON)
        if (s.shndx >= E.SHN_LORESERVE and not special
                or special and (s.type == E.STT_SECTION or s.shndx and s.bind != E.STB_LOCAL)):
            # SHN_XINDEX, section symbols without a section, global absolute symbols:
            # clang never emits them, and libbpf's linker crashes on some of them
            raise fail(f"symbol {shown(s.name)} has an unusable section index {s.shndx:#x}",
                       REBUILD)
        if not special and s.shndx not in remap:
            continue  # lives in a dropped section
        c = E.Symbol(s.name, s.info, s.other, s.shndx, s.value, s.size)
        if not special and s.value > _size(elf.sections[s.shndx]):
            raise fail(f"symbol {shown(s.name)} lies outside its section", REBUILD)
        if not special:
            c.shndx = remap[s.shndx]
            if s.shndx == esec.index:
                c.value += shift
        if s.type == E.STT_SECTION:
            if text is not None and s.shndx == text.index:
                text_secsym = len(new_syms)
            if s.shndx == esec.index:
                esec_secsym = i
                if text is not None:
                    continue  # merged into .text's section symbol (resolved below)
                c.name = ""
        defined = not special
        if defined and s.type in (E.STT_FUNC, E.STT_OBJECT, E.STT_NOTYPE) and s.name:
            in_maps = maps_sec is not None and s.shndx == maps_sec.index
            if s.shndx == esec.index and s.name == entry.name and s.type == E.STT_FUNC:
                names[s.name] = fn_name
                c.name = fn_name
                c.set(bind=E.STB_GLOBAL)
            elif in_maps or (s.bind in (E.STB_GLOBAL, E.STB_WEAK)
                             and s.type in (E.STT_FUNC, E.STT_OBJECT)):
                new = prefix + s.name
                if len(new) > 255:
                    raise fail(f"symbol {shown(s.name)} is too long", "shorten it")
                names[s.name] = new
                c.name = new
                if in_maps:
                    maps[new] = s.name
        sym_remap[i] = len(new_syms)
        new_syms.append(c)
    if esec_secsym >= 0 and text is not None:
        if text_secsym < 0:
            # .text had no section symbol: add one (locals must stay first)
            nloc = sum(1 for s in new_syms if s.bind == E.STB_LOCAL)
            new_syms.insert(nloc, E.Symbol("", (E.STB_LOCAL << 4) | E.STT_SECTION, 0,
                                           text_idx, 0, 0))
            sym_remap = {k: (v + 1 if v >= nloc else v) for k, v in sym_remap.items()}
            text_secsym = nloc
        sym_remap[esec_secsym] = text_secsym
    # locals first: a symbol we made global must not precede remaining locals
    order = sorted(range(len(new_syms)), key=lambda k: (k != 0, new_syms[k].bind != E.STB_LOCAL, k))
    if order != list(range(len(new_syms))):
        pos = {old: new for new, old in enumerate(order)}
        new_syms = [new_syms[k] for k in order]
        sym_remap = {k: pos[v] for k, v in sym_remap.items()}

    # --- relocations ----------------------------------------------------------------------
    def remap_rels(rel_sec: E.Section, off_shift: int = 0) -> list[E.Rel]:
        out = []
        for r in E.parse_rels(rel_sec.data):
            width = 4 if r.type == R_BPF_64_ABS32 else 8  # the bytes the linker patches
            if r.sym >= len(old_syms) or r.offset + width > len(elf.sections[rel_sec.info].data):
                raise fail(f"relocation section {shown(rel_sec.name)} points outside its "
                           "section or symbol table", REBUILD)
            if r.sym not in sym_remap:
                raise fail(f"relocation against a symbol of a dropped section "
                           f"({shown(old_syms[r.sym].name, False) or 'section symbol'})",
                           "the entry program must not reference other programs' code")
            out.append(E.Rel(r.offset + off_shift, sym_remap[r.sym], r.type))
        return out

    text_rels: list[E.Rel] = []
    for s in elf.sections:
        if s.type != E.SHT_REL:
            continue
        if text is not None and s.info == text.index:
            text_rels += remap_rels(s)
        elif s.info == esec.index:
            text_rels += remap_rels(s, shift)
    # A PROG_ARRAY's declarative initialiser relocates .maps against programs: the
    # copy keeps the map, the backend loads those programs beside the chain and
    # libbpf fills the array from the original object (backends/base.load_tail_targets).
    for s in elf.sections:
        if s.type == E.SHT_REL and maps_sec is not None and s.info == maps_sec.index \
                and s.index in remap:
            kept = bytearray()
            for r in E.parse_rels(s.data):
                if not _inits_prog_array(old_syms[r.sym] if r.sym < len(old_syms) else None):
                    kept += E.pack_rels([r])
            s = E.Section(s.name, s.type, s.flags, bytes(kept), s.link, s.info, s.align,
                          s.entsize, index=s.index)
        if s.type == E.SHT_REL and s.index in remap:
            c = out_secs[remap[s.index]]
            c.data = E.pack_rels(remap_rels(s))
            c.info = remap[s.info]
            if elf.sections[s.info].name in sec_renames:  # .rel.data follows .data
                c.name = ".rel" + sec_renames[elf.sections[s.info].name]
    if text_rels:
        text_rels.sort(key=lambda r: r.offset)
        out_secs.append(E.Section(".rel.text", E.SHT_REL, 0x40, E.pack_rels(text_rels), 0,
                                  text_idx, 8, 16))

    # --- BTF ---------------------------------------------------------------------------------
    seen_entry = False
    for t in btf.types:
        if t.kind == KIND_FUNC and t.name in names and t.linkage != LINKAGE_EXTERN:
            if t.name == entry.name:
                seen_entry = True
                btf.rename(t, fn_name)
                btf.set_func_linkage(t, LINKAGE_GLOBAL)
            else:
                btf.rename(t, names[t.name])
        elif t.kind == KIND_VAR and t.name in names and t.linkage != LINKAGE_EXTERN:
            btf.rename(t, names[t.name])
    for t in btf.types:
        if t.kind == KIND_DATASEC and t.name in sec_renames:
            btf.rename(t, sec_renames[t.name])
    for secs in ext.infos:
        for k, (sec_name, recs) in enumerate(secs):
            if sec_name in sec_renames:
                secs[k] = (sec_renames[sec_name], recs)
    if not seen_entry:
        raise fail(f"BTF has no FUNC for program {shown(entry.name)}",
                   "rebuild it with clang -g -O2 -target bpf")

    # --- BTF.ext: move the entry section's records to .text ---------------------------------
    keep_secs = {s.name for s in out_secs}
    for kind_i, secs in enumerate(ext.infos):
        merged: dict[str, list[bytearray]] = {}
        order_names: list[str] = []
        for sec_name, recs in secs:
            if sec_name == esec.name:
                target, delta = ".text", shift
            elif sec_name in keep_secs:
                target, delta = sec_name, 0
            else:
                continue
            moved = []
            for r in recs:
                r = bytearray(r)
                off = struct.unpack_from("<I", r, 0)[0]
                if delta and off >= len(esec.data):
                    raise fail(f"a .BTF.ext record points outside section {shown(sec_name)}",
                               REBUILD)
                struct.pack_into("<I", r, 0, off + delta)
                moved.append(r)
            if target not in merged:
                merged[target] = []
                order_names.append(target)
            merged[target] += moved
        for n in merged:
            merged[n].sort(key=lambda r: struct.unpack_from("<I", r, 0)[0])
        ext.infos[kind_i] = [(n, merged[n]) for n in order_names]
    ext_blob = ext.encode(btf)  # may add strings to btf: encode BTF after
    btf_blob = btf.encode()
    out_secs.append(E.Section(".BTF", E.SHT_PROGBITS, 0, btf_blob, 0, 0, 4, 0))
    out_secs.append(E.Section(".BTF.ext", E.SHT_PROGBITS, 0, ext_blob, 0, 0, 4, 0))

    seen_names: set[str] = {".symtab", ".strtab"}  # write_elf adds these
    for s in out_secs[1:]:
        if s.name in seen_names:  # the linker finds sections by name
            raise fail(f"has two sections named {shown(s.name)}", REBUILD)
        seen_names.add(s.name)
    data_secs = {s.name for s in out_secs
                 if s.type in (E.SHT_PROGBITS, E.SHT_NOBITS) and s.flags & E.SHF_ALLOC
                 and not s.flags & E.SHF_EXECINSTR
                 and (s.name.startswith((".data", ".rodata", ".bss")))}
    E.write_elf(out, out_secs, new_syms, elf.flags)
    return RewriteResult(out, src, entry.name, slot, fn_name, prefix, maps, data_secs, lic, names,
                         frags=is_frags_section(esec.name))


def _size(sec: E.Section) -> int:
    return sec.__dict__.get("nobits_size", 0) if sec.type == E.SHT_NOBITS else len(sec.data)


def count_maps(elf_path: str) -> tuple[int, set[str]]:
    """(number of .maps definitions, names of data sections) of an object."""
    elf = E.read_elf(elf_path)
    btf_sec = elf.section(".BTF")
    n = 0
    if btf_sec is not None:
        btf = Btf.parse(btf_sec.data, elf_path)
        ds = btf.datasec(".maps")
        n = ds.vlen if ds is not None else 0
    data = {s.name for s in elf.sections
            if s.type in (E.SHT_PROGBITS, E.SHT_NOBITS) and s.flags & E.SHF_ALLOC
            and not s.flags & E.SHF_EXECINSTR and s.name.startswith((".data", ".rodata", ".bss"))
            and (s.data or s.__dict__.get("nobits_size"))}
    return n, data


__all__ = ["rewrite", "RewriteResult", "tail_targets", "xdp_programs", "is_xdp_section", "license_of",
           "count_maps", "GPL_COMPATIBLE", "SLOT_FMT", "PREFIX_FMT", "KIND_DATASEC"]
