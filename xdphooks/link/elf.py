"""Minimal ELF64 little-endian reader/writer for BPF relocatable objects.

Pure Python, stdlib only (struct), so it is cheap to import on the reconcile
path. Only what BPF objects use: section headers, one string table shared by
section and symbol names, SYMTAB and REL sections.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import ObjectError

EM_BPF = 247
ET_REL = 1
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 0, 1, 2, 3
SHT_RELA, SHT_NOBITS, SHT_REL = 4, 8, 9
SHT_LLVM_ADDRSIG = 0x6FFF4C03
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
REBUILD = "rebuild the object with clang -O2 -g -target bpf"

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")


@dataclass
class Section:
    name: str
    type: int
    flags: int = 0
    data: bytes = b""
    link: int = 0
    info: int = 0
    align: int = 1
    entsize: int = 0
    index: int = 0  # in the file it was read from


@dataclass
class Symbol:
    name: str
    info: int
    other: int
    shndx: int
    value: int
    size: int

    @property
    def bind(self) -> int:
        return self.info >> 4

    @property
    def type(self) -> int:
        return self.info & 0xF

    def set(self, bind: int | None = None, type_: int | None = None) -> None:
        b = self.bind if bind is None else bind
        t = self.type if type_ is None else type_
        self.info = (b << 4) | t


@dataclass
class Rel:
    offset: int
    sym: int
    type: int


@dataclass
class Elf:
    path: str
    sections: list[Section]
    flags: int = 0
    symbols: list[Symbol] = field(default_factory=list)
    symtab_index: int = 0

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def rels(self, sec: Section) -> list[Rel]:
        return parse_rels(sec.data)


def shown(name: str, quote: bool = True, limit: int = 60) -> str:
    """``name`` for a one-line message: escaped, cut to ``limit`` characters, quoted."""
    text = repr(name[:limit]) if quote else repr(name[:limit])[1:-1]
    return text + ("..." if len(name) > limit else "")


def _cstr(blob: bytes, off: int) -> str:
    end = blob.find(b"\0", off)
    if end < 0:
        end = len(blob)
    return blob[off:end].decode("utf-8", errors="replace")


def parse_rels(data: bytes) -> list[Rel]:
    out = []
    for off, info in _REL.iter_unpack(data[: len(data) - len(data) % 16]):
        out.append(Rel(off, info >> 32, info & 0xFFFFFFFF))
    return out


def read_elf(path: str, data: bytes | None = None, plugin: str | None = None) -> Elf:
    """Parse a BPF ELF object; anything malformed raises ObjectError (naming ``plugin``)."""
    try:
        if data is None:  # never blocks on a FIFO, never reads past the object size limit
            from ..security import read_regular

            data = read_regular(path, "BPF object", plugin)
    except OSError as e:
        raise ObjectError(f"cannot read BPF object {path}: {e.strerror}", plugin=plugin,
                          fix="check the path in the plugin declaration") from None
    return _parse(path, data, plugin)


def _parse(path: str, data: bytes, plugin: str | None) -> Elf:
    def bad(what: str, fix: str = REBUILD) -> ObjectError:
        return ObjectError(f"{path} {what}", plugin=plugin, fix=fix)

    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise bad("is not an ELF file", "point to a BPF object built with clang -target bpf")
    if data[4] != 2 or data[5] != 1:
        raise bad("is not a 64-bit little-endian ELF object",
                  "build with clang -target bpfel (or -target bpf on x86/arm64)")
    (_, e_type, e_machine, _, _, _, e_shoff, e_flags, _, _, _, e_shentsize, e_shnum,
     e_shstrndx) = _EHDR.unpack_from(data, 0)
    if e_machine != EM_BPF:
        raise bad(f"is not a BPF object (e_machine {e_machine})", "build with clang -target bpf")
    if e_type != ET_REL:
        raise bad(f"is not a relocatable object (e_type {e_type})",
                  "use the .o produced by clang -c")
    if e_shentsize != _SHDR.size or e_shoff + e_shnum * _SHDR.size > len(data):
        raise bad("has a truncated section table")
    raw = [_SHDR.unpack_from(data, e_shoff + i * _SHDR.size) for i in range(e_shnum)]
    if raw and raw[0][1] != SHT_NULL:
        raise bad("has no null section 0 (corrupt section table)")
    shstr = b""
    if 0 < e_shstrndx < e_shnum:
        h = raw[e_shstrndx]
        shstr = data[h[4]: h[4] + h[5]]
    sections = []
    for i, (name, typ, flags, _addr, off, size, link, info, align, entsize) in enumerate(raw):
        if typ != SHT_NOBITS and off + size > len(data):
            raise bad(f"section {i} extends past the end of the file")
        body = b"" if typ in (SHT_NOBITS, SHT_NULL) else data[off: off + size]
        sec = Section(_cstr(shstr, name) if i else "", typ, flags, body, link, info, align,
                      entsize, i)
        if typ == SHT_NOBITS:
            sec.data = bytes(0)
            sec.entsize = entsize
            sec.info = info
            sec.__dict__["nobits_size"] = size
        sections.append(sec)
    elf = Elf(path, sections, e_flags)
    for s in sections:
        if s.type == SHT_SYMTAB:
            elf.symtab_index = s.index
            strs = sections[s.link].data if s.link < len(sections) else b""
            for st_name, st_info, st_other, st_shndx, st_value, st_size in _SYM.iter_unpack(
                    s.data[: len(s.data) - len(s.data) % _SYM.size]):
                elf.symbols.append(Symbol(_cstr(strs, st_name), st_info, st_other, st_shndx,
                                          st_value, st_size))
            break
    return elf


class StrTab:
    def __init__(self) -> None:
        self.blob = bytearray(b"\0")
        self.index: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.blob)
            self.blob += s.encode() + b"\0"
        return self.index[s]


def write_elf(path: str, sections: list[Section], symbols: list[Symbol], flags: int = 0) -> None:
    """Write ``sections`` (index 0 must be the NULL section; SYMTAB/STRTAB are
    generated and appended). Symbols' shndx and rel sections' link/info must
    already use indexes into ``sections``."""
    strtab = StrTab()
    symtab_idx = len(sections)
    strtab_idx = symtab_idx + 1
    sym_blob = bytearray()
    nlocal = 0
    for i, s in enumerate(symbols):
        if s.bind == STB_LOCAL:
            nlocal = i + 1
        sym_blob += _SYM.pack(strtab.add(s.name) if s.name else 0, s.info, s.other, s.shndx,
                              s.value, s.size)
    symtab = Section(".symtab", SHT_SYMTAB, 0, bytes(sym_blob), strtab_idx, nlocal, 8, _SYM.size)
    names = ([strtab.add(sec.name) for sec in sections]
             + [strtab.add(".symtab"), strtab.add(".strtab")])
    strsec = Section(".strtab", SHT_STRTAB, 0, bytes(strtab.blob), 0, 0, 1, 0)
    allsecs = list(sections) + [symtab, strsec]
    for sec in allsecs:
        if sec.type in (SHT_REL, SHT_RELA):
            sec.link = symtab_idx
    out = bytearray(64)
    offsets = []
    for sec in allsecs:
        if sec.type in (SHT_NULL, SHT_NOBITS):
            offsets.append(0 if sec.type == SHT_NULL else len(out))
            continue
        al = max(sec.align, 1)
        out += b"\0" * (-len(out) % al)
        offsets.append(len(out))
        out += sec.data
    out += b"\0" * (-len(out) % 8)
    shoff = len(out)
    for sec, name, off in zip(allsecs, names, offsets):
        size = sec.__dict__.get("nobits_size", 0) if sec.type == SHT_NOBITS else len(sec.data)
        if sec.type == SHT_NULL:
            out += b"\0" * _SHDR.size
            continue
        out += _SHDR.pack(name, sec.type, sec.flags, 0, off, size, sec.link, sec.info, sec.align,
                          sec.entsize)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    _EHDR.pack_into(out, 0, ident, ET_REL, EM_BPF, 1, 0, 0, shoff, flags, 64, 0, 0,
                    _SHDR.size, len(allsecs), strtab_idx)
    with open(path, "wb") as f:
        f.write(out)


def pack_rels(rels: list[Rel]) -> bytes:
    return b"".join(_REL.pack(r.offset, (r.sym << 32) | r.type) for r in rels)
