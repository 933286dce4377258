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
from dataclasses import dataclass, field

from ..abi import is_frags_section
from ..errors import ObjectError
from . import elf as E
from . import insn as I
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


@dataclass
class _Job:
    """One rewrite's state, handed from phase to phase (as libbpf's linker.c hands its
    ``bpf_linker``): :func:`_parse` → :func:`_plan` → :func:`_symbols` → :func:`_code`
    → :func:`_btf` → :func:`_write`. The code of ``.text`` and of the entry program is
    held symbolically (:mod:`.insn`): each instruction carries its relocation and
    BTF.ext records, each symbol in code is a label; where they end up in the output's
    ``.text`` is computed once, by :func:`insn.write`."""

    src: str
    out: str
    slot: int
    program: str | None
    prefix: str
    who: str | None
    name: str  # the object's file name, for messages
    fn_name: str  # xdph_slot_<N>
    # _parse
    elf: E.Elf = field(init=False)
    btf: Btf = field(init=False)
    ext: BtfExt = field(init=False)
    lic: str = ""
    entry: ProgramInfo = field(init=False)
    esec: E.Section = field(init=False)  # the entry program's section
    text: E.Section | None = None
    # _plan
    out_secs: list[E.Section] = field(default_factory=list)
    sec_renames: dict[str, str] = field(default_factory=dict)
    remap: dict[int, int] = field(default_factory=dict)  # section index: input -> output
    text_idx: int = -1
    # _symbols
    syms: list[E.Symbol] = field(default_factory=list)
    sym_remap: dict[int, int] = field(default_factory=dict)  # symbol index: input -> output
    names: dict[str, str] = field(default_factory=dict)
    maps: dict[str, str] = field(default_factory=dict)
    #: labels of the symbols defined in code: section index -> byte offset -> labels
    marks: dict[int, dict[int, list[I.Label]]] = field(default_factory=dict)
    labelled: list[tuple[E.Symbol, I.Label]] = field(default_factory=list)
    # _code: .text's and the entry's code, symbolic, by input section index, with the
    # instruction at each byte offset (for relocations and records to ride on)
    code: dict[int, tuple[I.Code, dict[int, I.Insn]]] = field(default_factory=dict)
    # _btf: per BTF.ext kind, (section name, records); ".text"'s records come from the code
    ext_out: list[list[tuple[str, list[bytearray]]]] = field(default_factory=list)

    def fail(self, reason: str, fix: str) -> ObjectError:
        return ObjectError(f"object {self.name}: {reason}", plugin=self.who, fix=fix)

    def code_section(self, ext_name: str) -> int | None:
        """The input section whose code a BTF.ext section name refers to, if code."""
        if ext_name == self.esec.name:
            return self.esec.index
        if ext_name == ".text":  # with no .text of its own, the entry is the new .text
            return self.text.index if self.text is not None else self.esec.index
        return None


def rewrite(src: str, out: str, slot: int, program: str | None = None,
            prefix: str | None = None, who: str | None = None) -> RewriteResult:
    """Write a linkable copy of ``src`` to ``out`` with its entry as slot ``slot``.

    :param who: plugin/program name used in error messages.
    """
    job = _Job(src, out, slot, program, prefix if prefix is not None else PREFIX_FMT.format(slot),
               who, os.path.basename(src), SLOT_FMT.format(slot))
    for phase in (_parse, _plan, _symbols, _code, _btf):
        phase(job)
    return _write(job)


def _parse(job: _Job) -> None:
    """Read and check the object: BTF and BTF.ext, relocation kinds, licence, the entry."""
    fail, program = job.fail, job.program
    elf = job.elf = E.read_elf(job.src, plugin=job.who)
    btf_sec, ext_sec = elf.section(".BTF"), elf.section(".BTF.ext")
    if btf_sec is None:
        raise fail("has no BTF, so it cannot be linked into a chain",
                   "rebuild it with clang -g -O2 -target bpf (BTF is emitted with -g)")
    job.btf = Btf.parse(btf_sec.data, job.name, job.who)
    if ext_sec is None:
        raise fail("has no .BTF.ext (function info), so it cannot be linked",
                   "rebuild it with clang -g -O2 -target bpf")
    job.ext = BtfExt.parse(ext_sec.data, job.btf, job.name, job.who)
    if any(s.type == E.SHT_RELA for s in elf.sections):
        raise fail("uses RELA relocations, which the BPF linker does not support",
                   "rebuild it with clang -target bpf")
    if not elf.symbols:
        raise fail("has no symbol table", "rebuild it with clang -target bpf")
    for s in elf.sections:
        if s.type == E.SHT_REL and not 0 < s.info < len(elf.sections):
            raise fail(f"relocation section {shown(s.name)} applies to no section", REBUILD)

    lic = job.lic = license_of(elf)
    if lic not in GPL_COMPATIBLE:
        raise fail((f"licence {shown(lic)} is not GPL-compatible" if lic else
                    f"{'program ' + repr(program) + ' ' if program else ''}has no license "
                    "section (SEC(\"license\"), so the kernel takes it as "
                    "proprietary)") + "; the static chain is one GPL program",
                   'use mode = "freplace" for this interface, or a GPL-compatible '
                   'licence (e.g. char _license[] SEC("license") = "Dual BSD/GPL")')

    progs = xdp_programs(elf)
    if program is None:
        if not progs:
            raise fail("contains no XDP program (SEC(\"xdp\"))",
                       "point to an object with an XDP program")
        if len(progs) > 1:
            listed = ", ".join(shown(p.name, False) for p in progs[:8])
            raise fail(f"contains several XDP programs ({listed})",
                       "name one with program = \"...\" in the plugin declaration")
        job.entry = progs[0]
    else:
        cand = [p for p in xdp_programs(elf, untyped=True) if p.name == program]
        if not cand:
            others = [s.name for s in elf.symbols if s.name == program and s.type == E.STT_FUNC]
            why = ("is not an XDP program (section is not SEC(\"xdp\"))" if others
                   else "does not exist")
            avail = ", ".join(shown(p.name, False) for p in progs[:8]) or "none"
            raise fail(f"program {shown(program)} {why}", f"use one of: {avail}")
        job.entry = cand[0]
    job.esec = elf.sections[job.entry.index]  # frags-aware code runs fine in a non-frags program
    job.text = elf.section(".text")


def _plan(job: _Job) -> None:
    """Which sections the copy keeps, under which name and index: the entry's section
    joins ``.text``; other programs, DWARF, the symbol and string tables (written anew)
    and relocations of dropped sections go."""
    elf, esec, text, fail = job.elf, job.esec, job.text, job.fail
    dropped: set[int] = set()  # original section indexes not carried over
    for s in elf.sections:
        if s.index == 0:
            continue
        if (s.type in (E.SHT_SYMTAB, E.SHT_STRTAB, E.SHT_LLVM_ADDRSIG) or is_dwarf(s.name)
                or s.name in (".rel.BTF", ".rel.BTF.ext", ".BTF", ".BTF.ext")):
            dropped.add(s.index)
        elif _is_prog_section(s) and s.index != esec.index:
            dropped.add(s.index)  # other programs: not part of this slot
    maps_sec = elf.section(".maps")
    maps_idx = maps_sec.index if maps_sec is not None else -1
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

    out_secs = job.out_secs
    out_secs.append(E.Section("", E.SHT_NULL))
    for s in elf.sections:
        if s.index == 0:
            continue
        if text is not None and s.index == text.index or (text is None and s.index == esec.index):
            job.text_idx = len(out_secs)  # its code is written by _write
            out_secs.append(E.Section(".text", E.SHT_PROGBITS, E.SHF_ALLOC | E.SHF_EXECINSTR,
                                      b"", 0, 0, 8, 0))
            job.remap[s.index] = job.text_idx
            continue
        if s.index in dropped:
            continue
        job.remap[s.index] = len(out_secs)
        if s.type not in (E.SHT_PROGBITS, E.SHT_NOBITS, E.SHT_REL):
            raise fail(f"section {shown(s.name)} has an unsupported type {s.type:#x}", REBUILD)
        if s.align > 4096 or s.align & (s.align - 1):
            raise fail(f"section {shown(s.name)} has a bad alignment ({s.align})", REBUILD)
        c = E.Section(s.name, s.type, s.flags, s.data, s.link, s.info, s.align, s.entsize)
        if s.name in RENAMED_SECTIONS:
            # the linker wants identical license/version contents in every input:
            # keep the component's copy under a private name (libbpf skips it)
            c.name = f"{s.name}.xdph.{job.prefix.rstrip('_')}"
            job.sec_renames[s.name] = c.name
        elif s.name in DATA_SECTIONS:
            # each slot's .data/.bss in a section of its own: libbpf makes every
            # ".data.*"/".bss.*" section a separate internal map, which the backend
            # keeps pinned with the component's maps (backends/globalpins.py)
            c.name = slot_section(s.name, job.prefix)
            job.sec_renames[s.name] = c.name
        if "nobits_size" in s.__dict__:
            c.__dict__["nobits_size"] = s.__dict__["nobits_size"]
        out_secs.append(c)
    job.remap[esec.index] = job.text_idx


def _symbols(job: _Job) -> None:
    """The copy's symbol table: renamed (entry → xdph_slot_<N>, globals and maps
    prefixed), remapped to the kept sections, locals first. A symbol in code becomes a
    label on its instruction; its value is known when the code is written out."""
    elf, esec, text, fail = job.elf, job.esec, job.text, job.fail
    maps_sec = elf.section(".maps")
    code_secs = {esec.index} | ({text.index} if text is not None else set())
    new_syms, sym_remap = job.syms, job.sym_remap
    text_secsym = -1
    esec_secsym = -1
    for i, s in enumerate(elf.symbols):
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
        if not special and s.shndx not in job.remap:
            continue  # lives in a dropped section
        c = E.Symbol(s.name, s.info, s.other, s.shndx, s.value, s.size)
        if not special and s.value > _size(elf.sections[s.shndx]):
            raise fail(f"symbol {shown(s.name)} lies outside its section", REBUILD)
        if s.type == E.STT_SECTION:
            if text is not None and s.shndx == text.index:
                text_secsym = len(new_syms)
            if s.shndx == esec.index:
                esec_secsym = i
                if text is not None:
                    continue  # merged into .text's section symbol (resolved below)
                c.name = ""
        if not special:
            c.shndx = job.remap[s.shndx]
            if s.shndx in code_secs:
                label = I.Label(s.name)
                job.marks.setdefault(s.shndx, {}).setdefault(s.value, []).append(label)
                job.labelled.append((c, label))
        if not special and s.type in (E.STT_FUNC, E.STT_OBJECT, E.STT_NOTYPE) and s.name:
            in_maps = maps_sec is not None and s.shndx == maps_sec.index
            if s.shndx == esec.index and s.name == job.entry.name and s.type == E.STT_FUNC:
                job.names[s.name] = job.fn_name
                c.name = job.fn_name
                c.set(bind=E.STB_GLOBAL)
            elif in_maps or (s.bind in (E.STB_GLOBAL, E.STB_WEAK)
                             and s.type in (E.STT_FUNC, E.STT_OBJECT)):
                new = job.prefix + s.name
                if len(new) > 255:
                    raise fail(f"symbol {shown(s.name)} is too long", "shorten it")
                job.names[s.name] = new
                c.name = new
                if in_maps:
                    job.maps[new] = s.name
        sym_remap[i] = len(new_syms)
        new_syms.append(c)
    if esec_secsym >= 0 and text is not None:
        if text_secsym < 0:
            # .text had no section symbol: add one (locals must stay first)
            nloc = sum(1 for s in new_syms if s.bind == E.STB_LOCAL)
            new_syms.insert(nloc, E.Symbol("", (E.STB_LOCAL << 4) | E.STT_SECTION, 0,
                                           job.text_idx, 0, 0))
            job.sym_remap = sym_remap = {k: (v + 1 if v >= nloc else v)
                                         for k, v in sym_remap.items()}
            text_secsym = nloc
        sym_remap[esec_secsym] = text_secsym
    # locals first: a symbol we made global must not precede remaining locals
    order = sorted(range(len(new_syms)),
                   key=lambda k: (k != 0, new_syms[k].bind != E.STB_LOCAL, k))
    if order != list(range(len(new_syms))):
        pos = {old: new for new, old in enumerate(order)}
        job.syms = [new_syms[k] for k in order]
        job.sym_remap = {k: pos[v] for k, v in sym_remap.items()}


def _code(job: _Job) -> None:
    """``.text``'s and the entry's code as symbolic instructions, each carrying its
    relocation; the relocations of kept data sections remapped in place."""
    elf, esec, text, fail = job.elf, job.esec, job.text, job.fail
    for sec in ([text] if text is not None else []) + [esec]:
        try:
            job.code[sec.index] = I.symbolic(sec.data, job.marks.get(sec.index))
        except ValueError as e:
            raise fail(f"the code of section {shown(sec.name)}: {e}", REBUILD) from None

    def remap_rels(rel_sec: E.Section) -> list[E.Rel]:
        out = []
        for r in E.parse_rels(rel_sec.data):
            width = 4 if r.type == R_BPF_64_ABS32 else 8  # the bytes the linker patches
            if r.sym >= len(elf.symbols) or r.offset + width > len(elf.sections[rel_sec.info].data):
                raise fail(f"relocation section {shown(rel_sec.name)} points outside its "
                           "section or symbol table", REBUILD)
            if r.sym not in job.sym_remap:
                raise fail(f"relocation against a symbol of a dropped section "
                           f"({shown(elf.symbols[r.sym].name, False) or 'section symbol'})",
                           "the entry program must not reference other programs' code")
            out.append(E.Rel(r.offset, job.sym_remap[r.sym], r.type))
        return out

    for s in elf.sections:
        if s.type == E.SHT_REL and s.info in job.code:
            at = job.code[s.info][1]
            for r in remap_rels(s):
                ins = at.get(r.offset)
                if ins is None or ins.reloc is not None:
                    raise fail(f"relocation section {shown(s.name)} "
                               + ("points inside an instruction" if ins is None
                                  else "relocates one instruction twice"), REBUILD)
                ins.reloc = (r.sym, r.type)
    # A PROG_ARRAY's declarative initialiser relocates .maps against programs: the
    # copy keeps the map, the backend loads those programs beside the chain and
    # libbpf fills the array from the original object (backends/base.load_tail_targets).
    maps_sec = elf.section(".maps")
    for s in elf.sections:
        if s.type == E.SHT_REL and maps_sec is not None and s.info == maps_sec.index \
                and s.index in job.remap:
            kept = bytearray()
            for r in E.parse_rels(s.data):
                if not _inits_prog_array(elf.symbols[r.sym] if r.sym < len(elf.symbols)
                                         else None):
                    kept += E.pack_rels([r])
            s = E.Section(s.name, s.type, s.flags, bytes(kept), s.link, s.info, s.align,
                          s.entsize, index=s.index)
        if s.type == E.SHT_REL and s.index in job.remap:
            c = job.out_secs[job.remap[s.index]]
            c.data = E.pack_rels(remap_rels(s))
            c.info = job.remap[s.info]
            if elf.sections[s.info].name in job.sec_renames:  # .rel.data follows .data
                c.name = ".rel" + job.sec_renames[elf.sections[s.info].name]


def _btf(job: _Job) -> None:
    """BTF names follow the symbols; BTF.ext records of code go onto their instructions,
    those of kept sections stay as they are, the rest go."""
    btf, entry, names, renames = job.btf, job.entry, job.names, job.sec_renames
    seen_entry = False
    for t in btf.types:
        if t.kind == KIND_FUNC and t.name in names and t.linkage != LINKAGE_EXTERN:
            if t.name == entry.name:
                seen_entry = True
                btf.rename(t, job.fn_name)
                btf.set_func_linkage(t, LINKAGE_GLOBAL)
            else:
                btf.rename(t, names[t.name])
        elif t.kind == KIND_VAR and t.name in names and t.linkage != LINKAGE_EXTERN:
            btf.rename(t, names[t.name])
    for t in btf.types:
        if t.kind == KIND_DATASEC and t.name in renames:
            btf.rename(t, renames[t.name])
    for secs in job.ext.infos:
        for k, (sec_name, recs) in enumerate(secs):
            if sec_name in renames:
                secs[k] = (renames[sec_name], recs)
    if not seen_entry:
        raise job.fail(f"BTF has no FUNC for program {shown(entry.name)}",
                       "rebuild it with clang -g -O2 -target bpf")

    keep_secs = {s.name for s in job.out_secs}
    for kind, secs in enumerate(job.ext.infos):
        merged: dict[str, list[bytearray]] = {}
        for sec_name, recs in secs:
            code = job.code_section(sec_name)
            if code is not None:
                merged.setdefault(".text", [])  # filled by _write, from the code
                at = job.code[code][1]
                for rec in recs:
                    ins = at.get(I.record_offset(rec))
                    if ins is None:  # past the end, or inside an instruction
                        raise job.fail(f"a .BTF.ext record points outside the instructions "
                                       f"of section {shown(sec_name)}", REBUILD)
                    ins.ext.append((kind, bytes(rec)))
            elif sec_name in keep_secs:
                merged.setdefault(sec_name, []).extend(bytearray(r) for r in recs)
        job.ext_out.append([(n, sorted(recs, key=I.record_offset))
                            for n, recs in merged.items()])


def _write(job: _Job) -> RewriteResult:
    """Lay the code out (.text's, then the entry's): symbol values, ``.rel.text`` and the
    code's BTF.ext records come from :func:`insn.write`; then BTF, BTF.ext, the ELF."""
    esec, text = job.esec, job.text
    code: I.Code = list(job.code[text.index][0]) if text is not None else []
    code += job.code[esec.index][0]
    try:
        w = I.write(code)
    except ValueError as e:  # a jump that does not fit once moved (cannot happen: moved whole)
        raise job.fail(f"the code cannot be written out: {e}", REBUILD) from None
    job.out_secs[job.text_idx].data = w.code
    for sym, label in job.labelled:
        sym.value = w.at[label]
    if w.rels:
        job.out_secs.append(E.Section(".rel.text", E.SHT_REL, 0x40, E.pack_rels(w.rels), 0,
                                      job.text_idx, 8, 16))
    for kind, secs in enumerate(job.ext_out):
        job.ext.infos[kind] = [(n, w.ext[kind] if n == ".text" else recs) for n, recs in secs]
    ext_blob = job.ext.encode(job.btf)  # may add strings to btf: encode BTF after
    btf_blob = job.btf.encode()
    job.out_secs.append(E.Section(".BTF", E.SHT_PROGBITS, 0, btf_blob, 0, 0, 4, 0))
    job.out_secs.append(E.Section(".BTF.ext", E.SHT_PROGBITS, 0, ext_blob, 0, 0, 4, 0))

    seen_names: set[str] = {".symtab", ".strtab"}  # write_elf adds these
    for s in job.out_secs[1:]:
        if s.name in seen_names:  # the linker finds sections by name
            raise job.fail(f"has two sections named {shown(s.name)}", REBUILD)
        seen_names.add(s.name)
    data_secs = {s.name for s in job.out_secs
                 if s.type in (E.SHT_PROGBITS, E.SHT_NOBITS) and s.flags & E.SHF_ALLOC
                 and not s.flags & E.SHF_EXECINSTR
                 and (s.name.startswith((".data", ".rodata", ".bss")))}
    E.write_elf(job.out, job.out_secs, job.syms, job.elf.flags)
    return RewriteResult(job.out, job.src, job.entry.name, job.slot, job.fn_name, job.prefix,
                         job.maps, data_secs, job.lic, job.names,
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
