"""Each component checked on its own, from its ELF file, before any chain is linked.

A linked chain the kernel or libbpf refuses says "the verifier rejected the rootlet"
or "cannot open BPF object root0.o", naming no plugin. The faults that commonly
cause that are visible in the component's own file, so both backends look for them
first and say which plugin, program and object, what is wrong, and the fix:

* legacy ``struct bpf_map_def SEC("maps")`` definitions (libbpf 1.x refuses them);
* BTF-defined maps without ``max_entries`` that ``maps=`` does not size
  (xdphooks/mapsettings.py);
* ``__ksym`` externs (kfuncs, kernel variables) the running kernel's BTF lacks;
* instructions no BPF machine has (e.g. opcode 0xff), or a program whose last
  instruction is neither an exit nor a jump;
* relocations that point outside their section, between instructions, or at an
  instruction that takes none (libbpf: LIBBPF_ERRNO__RELOC, 4005).

Pure reads: nothing is loaded, the object is never modified.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import mapsettings
from .errors import ObjectError
from .link import elf as E
from .link.btf import KIND_DATASEC, KIND_FUNC, KIND_VAR, Btf
from .link.elf import shown

if TYPE_CHECKING:  # annotations only
    from .model import ChainEntry

#: makes the error for one fault: (what, fix) -> ObjectError naming plugin, program, object
Fail = Callable[[str, str], ObjectError]

KERNEL_BTF = Path("/sys/kernel/btf")
INSN = 8
_LD_IMM64, _CALL, _EXIT, _JA = 0x18, 0x85, 0x95, 0x05
_ALU_OPS = {0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0}
_JMP_OPS = {0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0}


def _valid_opcodes() -> frozenset[int]:
    """Every opcode the kernel's instruction table knows (kernel/bpf/core.c
    bpf_opcode_in_insntable, v6.x, cpu v4 included)."""
    ok = set()
    for cls in (0x04, 0x07):  # ALU, ALU64
        for op in _ALU_OPS:
            ok |= {cls | op | 0x00, cls | op | 0x08}
    for op in _JMP_OPS:
        ok |= {0x05 | op, 0x05 | op | 0x08, 0x06 | op, 0x06 | op | 0x08}
    ok |= {_CALL, _EXIT, 0x8d}  # call, exit, callx
    ok |= {_LD_IMM64, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50}  # ld_imm64, legacy LD_ABS/IND
    for size in (0x00, 0x08, 0x10, 0x18):  # W H B DW
        ok |= {0x61 | size, 0x62 | size, 0x63 | size}  # LDX, ST, STX (MEM)
    ok |= {0x81, 0x89, 0x91}  # LDX MEMSX
    ok |= {0xc3, 0xdb}  # atomics
    return frozenset(ok)


VALID_OPCODES = _valid_opcodes()


def check(path: str, entry: ChainEntry, program: str | None = None) -> None:
    """Raise ObjectError naming ``entry``'s plugin, program and object for the first
    fault found in the object at ``path`` (the trusted copy of ``entry.object``)."""
    name = os.path.basename(entry.object)
    elf = E.read_elf(path, plugin=entry.plugin)
    program = program or entry.program or _only_program(elf)
    who = f"{entry.name}: program {program!r} in {name}" if program else \
        f"{entry.name}: {name}"

    def fail(what: str, fix: str) -> ObjectError:
        return ObjectError(f"{who}: {what}", plugin=entry.plugin, fix=fix)

    legacy = [s for s in elf.sections if s.name == "maps" or s.name.startswith("maps/")]
    if legacy:
        syms = [s.name for s in elf.symbols
                if s.shndx in {x.index for x in legacy} and s.type == E.STT_OBJECT]
        raise fail(f"defines maps the legacy way (struct bpf_map_def in SEC(\"maps\")"
                   f"{': ' + ', '.join(syms[:6]) if syms else ''}), which libbpf 1.x refuses",
                   "declare them as BTF-defined maps in SEC(\".maps\") (struct { __uint(type, "
                   "...); __uint(max_entries, ...); ... } name SEC(\".maps\")) and rebuild "
                   "with clang -g")
    unsized = mapsettings.missing_max_entries(elf, entry)
    if unsized:
        example = ", ".join(f'"{m}": {{"max_entries": N}}' for m in unsized[:3])
        raise fail(f"map(s) {', '.join(unsized)} declare no max_entries (their own loader "
                   "sizes them before load), and maps= sets none",
                   f"size them in the plugin: XdpProgram(..., maps={{{example}}})")
    _check_ksyms(elf, fail)
    sections = _code_sections(elf, program)
    for sec in sections:
        _check_code(sec, fail)
    for rel in elf.sections:
        if rel.type == E.SHT_REL and 0 < rel.info < len(elf.sections):
            target = elf.sections[rel.info]
            if target.flags & E.SHF_EXECINSTR:
                _check_relocations(elf, rel, target, fail)


def _only_program(elf: E.Elf) -> str | None:
    """The object's one XDP program, when it has one and the entry names none."""
    from .link.rewrite import xdp_programs

    progs = xdp_programs(elf)
    return progs[0].name if len(progs) == 1 else None


def _code_sections(elf: E.Elf, program: str | None) -> list[E.Section]:
    """The entry program's section and .text (its subprograms): what the chain runs."""
    out = [s for s in elf.sections if s.name == ".text" and s.data]
    for sym in elf.symbols:
        if sym.type == E.STT_FUNC and sym.name == program and 0 < sym.shndx < len(elf.sections):
            sec = elf.sections[sym.shndx]
            if sec not in out:
                out.append(sec)
    return out


def _check_code(sec: E.Section, fail: Fail) -> None:
    code = sec.data
    if len(code) % INSN:
        raise fail(f"section {shown(sec.name)} is {len(code)} bytes, not whole instructions",
                   E.REBUILD)
    i = 0
    n = len(code) // INSN
    while i < n:
        op = code[i * INSN]
        if op not in VALID_OPCODES:
            raise fail(f"instruction {i} of section {shown(sec.name)} (byte {i * INSN}) has "
                       f"opcode {op:#04x}, which is no BPF instruction (the kernel says "
                       f"'unknown opcode {op:02x}')",
                       "the object is corrupt or not BPF code: " + E.REBUILD)
        i += 2 if op == _LD_IMM64 else 1
    if sec.name != ".text" and n:
        last = code[(n - 1) * INSN]
        if last not in (_EXIT, _JA, 0x06):  # exit, ja, gotol (kernel check_subprogs)
            raise fail(f"the last instruction of section {shown(sec.name)} (#{n - 1}, opcode "
                       f"{last:#04x}) is neither an exit nor a jump (the kernel says 'last "
                       "insn is not an exit or jmp')",
                       "the object is truncated or corrupt: " + E.REBUILD)


def _check_relocations(elf: E.Elf, rel: E.Section, target: E.Section, fail: Fail) -> None:
    code = target.data
    for k, r in enumerate(E.parse_rels(rel.data)):
        sym = elf.symbols[r.sym] if r.sym < len(elf.symbols) else None
        what = f"relocation #{k} of section {shown(target.name)}"
        if sym is None:
            raise fail(f"{what} names symbol #{r.sym}, which the object does not have "
                       "(libbpf: relocation failed, LIBBPF_ERRNO 4005)", E.REBUILD)
        if r.offset % INSN or r.offset + INSN > len(code):
            raise fail(f"{what} (against {shown(sym.name)}) points at byte {r.offset}, "
                       f"{'past the end of' if r.offset + INSN > len(code) else 'between instructions of'}"
                       " the section (libbpf: relocation failed, LIBBPF_ERRNO 4005)", E.REBUILD)
        op = code[r.offset]
        if op not in (_LD_IMM64, _CALL):
            raise fail(f"{what} (against {shown(sym.name)}) applies to instruction "
                       f"{r.offset // INSN} (opcode {op:#04x}), which takes no relocation: "
                       "only a 64-bit load or a call does (libbpf: relocation failed, "
                       "LIBBPF_ERRNO 4005)", E.REBUILD)


def _check_ksyms(elf: E.Elf, fail: Fail) -> None:
    """Non-weak __ksym externs the running kernel (vmlinux and module BTF) lacks."""
    btf_sec = elf.section(".BTF")
    if btf_sec is None:
        return
    btf = Btf.parse(btf_sec.data, elf.path)
    ksyms = btf.datasec(".ksyms")
    if ksyms is None:
        return
    weak = {s.name for s in elf.symbols if s.bind == E.STB_WEAK}
    names = []
    for tid, _, _ in ksyms.members():
        t = btf.types[tid] if tid < len(btf.types) else None
        if t is not None and t.kind in (KIND_FUNC, KIND_VAR) and t.name not in weak:
            names.append((t.name, "kfunc" if t.kind == KIND_FUNC else "kernel variable"))
    missing = [(n, k) for n, k in names if not kernel_has(n)]
    if missing:
        n, kind = missing[0]
        raise fail(f"calls {kind} {n}, which this kernel ({os.uname().release}) does not have "
                   f"(not in {KERNEL_BTF}/vmlinux or a module's BTF)"
                   + (f"; also missing: {', '.join(m for m, _ in missing[1:])}"
                      if len(missing) > 1 else ""),
                   f"run it on a kernel that has {n}, load the module that provides it, or "
                   "declare it __weak and check bpf_ksym_exists() before calling it")


@functools.lru_cache(maxsize=1)
def _kernel_strings() -> tuple[bytes, ...]:
    """The string sections of the kernel's BTF (vmlinux and loaded modules)."""
    out = []
    try:
        files = sorted(KERNEL_BTF.iterdir())
    except OSError:
        return ()
    for f in files:
        try:
            data = f.read_bytes()
            hdr_len, str_off, str_len = struct.unpack_from("<I", data, 4)[0], \
                *struct.unpack_from("<II", data, 16)
            out.append(b"\0" + data[hdr_len + str_off: hdr_len + str_off + str_len])
        except (OSError, struct.error):
            continue
    return tuple(out)


def kernel_has(name: str) -> bool:
    """Whether the kernel's BTF names ``name`` (True when it cannot tell: no BTF)."""
    blobs = _kernel_strings()
    if not blobs:
        return True
    needle = b"\0" + name.encode() + b"\0"
    return any(needle in b for b in blobs)
