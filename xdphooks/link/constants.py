"""Values for a component's ``const volatile`` globals (``XdpProgram.constants``).

libbpf keeps an object's ``const volatile`` variables in its ``.rodata`` internal
map: the verifier sees the values as constants, so code under a false flag is
pruned. This module is pure: given the object's BTF and the section's initial
bytes, it checks each requested value against the variable's BTF type and returns
the patched bytes, which a backend hands to ``bpf_map__set_initial_value`` before
load. In the static backend the variables carry the rewriter's per-slot prefix.
"""

from __future__ import annotations

import struct
from typing import Mapping

from ..errors import ObjectError
from .btf import KIND_ARRAY, KIND_DATASEC, KIND_ENUM, KIND_ENUM64, KIND_INT, KIND_VAR, Btf

RODATA = ".rodata"
_INT_SIGNED, _INT_BOOL = 1, 4  # BTF_INT_ENCODING bits


def rodata_vars(btf: Btf, symbols: Mapping[str, tuple[int, int]],
                prefix: str = "") -> dict[str, tuple[int, int, int]]:
    """{variable name without ``prefix``: (type id, offset, size)} of ``.rodata``.

    ``symbols`` are the ELF symbols defined in ``.rodata`` (name -> (value, size)):
    clang leaves DATASEC offsets at 0 for libbpf to fix up at open, so the symbol
    table is where a variable's place is read."""
    ds = btf.datasec(RODATA)
    out = {}
    for tid, off, size in ds.members() if ds is not None else ():
        var = btf.types[tid] if tid < len(btf.types) else None
        if var is not None and var.kind == KIND_VAR and var.name.startswith(prefix):
            off, size = symbols.get(var.name, (off, size))
            out[var.name[len(prefix):]] = (var.size_type, off, size)
    return out


def encode_value(btf: Btf, type_id: int, size: int, name: str, value: object) -> bytes:
    """``value`` as the bytes of a variable of BTF type ``type_id``, or ValueError
    saying why it does not fit."""
    t = btf.resolve(type_id)
    if t.kind == KIND_INT:
        enc = struct.unpack_from("<I", t.extra)[0] >> 24
        if enc & _INT_BOOL:
            if not isinstance(value, bool):
                raise ValueError(f"{name} is a bool, {value!r} is not")
            return bytes([int(value)]) + bytes(size - 1)
        return _int_bytes(name, value, size, bool(enc & _INT_SIGNED), "int")
    if t.kind in (KIND_ENUM, KIND_ENUM64):
        return _int_bytes(name, value, size, bool(t.kflag), "enum")
    if t.kind == KIND_ARRAY:
        elem, _, n = t.array()
        et = btf.resolve(elem)
        if et.kind == KIND_INT and et.size_type == 1 and isinstance(value, (str, bytes)):
            raw = value.encode() if isinstance(value, str) else value
            if len(raw) > n or (isinstance(value, str) and len(raw) == n):
                room = n - 1 if isinstance(value, str) else n
                raise ValueError(f"{name} holds {room} bytes{' and a NUL' if room < n else ''}, "
                                 f"{value!r} has {len(raw)}")
            return raw + bytes(size - len(raw))
    raise ValueError(f"{name} has a type constants cannot set (integers, bools, enums and "
                     "char arrays can be set)")


def _int_bytes(name: str, value: object, size: int, signed: bool, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is an {8 * size}-bit {what}, {value!r} is not an integer")
    lo, hi = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{name} is a{' signed' if signed else 'n unsigned'} {8 * size}-bit "
                         f"{what}: {value} is out of range {lo}..{hi}")
    return value.to_bytes(size, "little", signed=signed)


def apply(btf: Btf, symbols: Mapping[str, tuple[int, int]], rodata: bytes,
          constants: Mapping[str, object] | tuple[tuple[str, object], ...], *,
          prefix: str = "", who: str,
          plugin: str | None, obj: str) -> bytes:
    """``rodata`` with each constant set; one ObjectError naming the plugin for the first
    name the object does not have or value that does not fit."""
    items = constants if isinstance(constants, tuple) else tuple(constants.items())
    if not items:
        return rodata
    avail = rodata_vars(btf, symbols, prefix)
    buf = bytearray(rodata)
    for name, value in items:
        if name not in avail:
            known = ", ".join(sorted(avail)[:12]) or "none"
            raise ObjectError(f"{who}: {obj} has no const volatile variable {name!r} "
                              f"(it has: {known})", plugin=plugin,
                              fix="fix the name in constants, or declare it in the program "
                                  f"(const volatile ... {name} = ...;) and rebuild the object")
        tid, off, size = avail[name]
        try:
            raw = encode_value(btf, tid, size, name, value)
        except ValueError as e:
            raise ObjectError(f"{who}: constants: {e}", plugin=plugin,
                              fix=f"give {name} a value of its C type") from None
        if off + size > len(buf):
            raise ObjectError(f"{who}: {obj}'s .rodata is shorter than its BTF says",
                              plugin=plugin, fix="rebuild the object")
        buf[off:off + size] = raw
    return bytes(buf)


__all__ = ["apply", "encode_value", "rodata_vars", "RODATA", "KIND_DATASEC"]
