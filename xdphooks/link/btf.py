"""BTF and BTF.ext reader/patcher (pure Python, stdlib only).

Enough to: list types with their names, rename FUNC/VAR types (new names are
appended to the string section; the type layout never changes, so type ids
stay valid), follow struct members and arrays (libbpf-style ``__uint`` map /
run-config definitions), and rewrite .BTF.ext records per section.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import ObjectError
from .elf import REBUILD

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19
LINKAGE_STATIC, LINKAGE_GLOBAL, LINKAGE_EXTERN = 0, 1, 2

_HDR = struct.Struct("<HBBIIIII")


@dataclass
class BtfType:
    id: int
    kind: int
    name_off: int
    vlen: int
    kflag: int
    size_type: int
    off: int  # byte offset of this type record inside the type section
    extra: bytes  # kind-specific trailer
    name: str = ""

    @property
    def linkage(self) -> int:  # FUNC: vlen holds linkage; VAR: first u32 of extra
        if self.kind == KIND_FUNC:
            return self.vlen
        if self.kind == KIND_VAR:
            linkage: int = struct.unpack_from("<I", self.extra)[0]
            return linkage
        return -1

    def members(self) -> list[tuple[int, int, int]]:
        """STRUCT/UNION: (name_off, type, offset); DATASEC: (type, offset, size)."""
        return [struct.unpack_from("<III", self.extra, i * 12) for i in range(self.vlen)]

    def array(self) -> tuple[int, int, int]:
        return struct.unpack_from("<III", self.extra)


def _extra_len(kind: int, vlen: int) -> int:
    if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION, KIND_DATASEC, KIND_ENUM64):
        return 12 * vlen
    if kind in (KIND_ENUM, KIND_FUNC_PROTO):
        return 8 * vlen
    if kind in (KIND_PTR, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT,
                KIND_FUNC, KIND_FLOAT, KIND_TYPE_TAG):
        return 0
    raise ValueError(f"unknown BTF kind {kind}")


@dataclass
class Btf:
    hdr_len: int
    types_blob: bytearray
    strings: bytearray
    flags: int = 0
    types: list[BtfType] = field(default_factory=list)  # index = type id (0 = void placeholder)

    @classmethod
    def parse(cls, data: bytes, where: str = "object", plugin: str | None = None) -> "Btf":
        try:
            magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
                _HDR.unpack_from(data, 0)
            if magic != BTF_MAGIC:
                raise ValueError("bad BTF magic")
            tstart, sstart = hdr_len + type_off, hdr_len + str_off
            if tstart + type_len > len(data) or sstart + str_len > len(data):
                raise ValueError("BTF sections out of bounds")
            btf = cls(hdr_len, bytearray(data[tstart: tstart + type_len]),
                      bytearray(data[sstart: sstart + str_len]), flags)
            btf.types.append(BtfType(0, 0, 0, 0, 0, 0, -1, b""))
            off, tid = 0, 1
            blob = btf.types_blob
            while off < len(blob):
                name_off, info, size_type = struct.unpack_from("<III", blob, off)
                kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
                n = _extra_len(kind, vlen)
                if off + 12 + n > len(blob):
                    raise ValueError("truncated BTF type")
                t = BtfType(tid, kind, name_off, vlen, kflag, size_type, off,
                            bytes(blob[off + 12: off + 12 + n]))
                t.name = btf.string(name_off)
                btf.types.append(t)
                off += 12 + n
                tid += 1
            return btf
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ObjectError(f"{where}: corrupt BTF ({e})", plugin=plugin, fix=REBUILD) from None

    def string(self, off: int) -> str:
        if off >= len(self.strings):
            raise ValueError(f"string offset {off} out of range")
        end = self.strings.find(b"\0", off)
        return self.strings[off: end if end >= 0 else len(self.strings)].decode()

    def add_string(self, s: str) -> int:
        needle = b"\0" + s.encode() + b"\0"
        pos = self.strings.find(needle)
        if pos >= 0:
            return pos + 1
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def rename(self, t: BtfType, new: str) -> None:
        off = self.add_string(new)
        struct.pack_into("<I", self.types_blob, t.off, off)
        t.name_off, t.name = off, new

    def set_func_linkage(self, t: BtfType, linkage: int) -> None:
        info = (KIND_FUNC << 24) | (linkage & 0xFFFF)
        struct.pack_into("<I", self.types_blob, t.off + 4, info)
        t.vlen = linkage

    def resolve(self, tid: int) -> BtfType:
        """Skip typedef/const/volatile/restrict/type_tag modifiers."""
        seen = 0
        t = self.types[tid]
        while t.kind in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG):
            t = self.types[t.size_type]
            seen += 1
            if seen > 64:
                raise ValueError("BTF modifier loop")
        return t

    def by_name(self, name: str, kind: int) -> list[BtfType]:
        return [t for t in self.types if t.kind == kind and t.name == name]

    def datasec(self, name: str) -> BtfType | None:
        for t in self.types:
            if t.kind == KIND_DATASEC and t.name == name:
                return t
        return None

    def encode(self) -> bytes:
        hdr = _HDR.pack(BTF_MAGIC, 1, self.flags, 24, 0, len(self.types_blob),
                        len(self.types_blob), len(self.strings))
        return hdr + bytes(self.types_blob) + bytes(self.strings)


# --- .BTF.ext ------------------------------------------------------------------------


@dataclass
class BtfExt:
    """func_info, line_info, core_relo: each a list of (section name, [record bytes])."""

    rec_sizes: list[int]
    infos: list[list[tuple[str, list[bytearray]]]]
    flags: int = 0
    has_core: bool = False

    @classmethod
    def parse(cls, data: bytes, btf: Btf, where: str = "object",
              plugin: str | None = None) -> "BtfExt":
        try:
            magic, version, flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
            if magic != BTF_MAGIC:
                raise ValueError("bad BTF.ext magic")
            fields = struct.unpack_from("<IIII", data, 8)
            subs = [(fields[0], fields[1]), (fields[2], fields[3])]
            has_core = hdr_len >= 32
            if has_core:
                subs.append(struct.unpack_from("<II", data, 24))
            else:
                subs.append((0, 0))
            rec_sizes: list[int] = []
            infos: list[list[tuple[str, list[bytearray]]]] = []
            for off, length in subs:
                if length == 0:
                    rec_sizes.append(0)
                    infos.append([])
                    continue
                p = hdr_len + off
                end = p + length
                if end > len(data):
                    raise ValueError("BTF.ext info out of bounds")
                rec_size = struct.unpack_from("<I", data, p)[0]
                if rec_size < 8:
                    raise ValueError("bad BTF.ext record size")
                p += 4
                secs = []
                while p < end:
                    name_off, num = struct.unpack_from("<II", data, p)
                    p += 8
                    if p + num * rec_size > end:  # check before building num records
                        raise ValueError("BTF.ext records out of bounds")
                    recs = [bytearray(data[p + i * rec_size: p + (i + 1) * rec_size])
                            for i in range(num)]
                    p += num * rec_size
                    secs.append((btf.string(name_off), recs))
                rec_sizes.append(rec_size)
                infos.append(secs)
            return cls(rec_sizes, infos, flags, has_core)
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ObjectError(f"{where}: corrupt BTF.ext ({e})", plugin=plugin,
                              fix=REBUILD) from None

    def encode(self, btf: Btf) -> bytes:
        hdr_len = 32 if self.has_core else 24
        bodies = []
        for rec_size, secs in zip(self.rec_sizes, self.infos):
            secs = [(n, r) for n, r in secs if r]
            if not secs:
                bodies.append(b"")
                continue
            body = bytearray(struct.pack("<I", rec_size))
            for name, recs in secs:
                body += struct.pack("<II", btf.add_string(name), len(recs))
                for r in recs:
                    body += r
            bodies.append(bytes(body))
        offs, cur = [], 0
        for b in bodies:
            offs.append(cur)
            cur += len(b)
        hdr = struct.pack("<HBBIIIII", BTF_MAGIC, 1, self.flags, hdr_len,
                          offs[0], len(bodies[0]), offs[1], len(bodies[1]))
        if self.has_core:
            hdr += struct.pack("<II", offs[2], len(bodies[2]))
        return hdr + b"".join(bodies)
