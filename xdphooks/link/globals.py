"""A component's global data (``.data``, ``.bss``) carried from one chain to the next.

libbpf keeps an object's writable globals in internal array maps, created afresh
at every load. A relink (static) or an upgrade (freplace) would reset a program's
``__u64 seen;`` to 0, so the backends copy the running chain's values into the
new one: each variable by name, when its size and kind are unchanged. A variable
that is new, gone, or of another size or kind gets the new object's default, and
the backend warns naming the program. Pure: the backends read the old values
from the kernel (map contents and their BTF) and write the result into the new
maps after pre-flight, so the canned packets leave no trace in the globals either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from .btf import KIND_DATASEC, KIND_VAR, Btf

DATA_SECTIONS = (".data", ".bss")


@dataclass(frozen=True)
class Var:
    section: str
    offset: int
    size: int
    kind: int  # resolved BTF kind of its type: a change of kind is a change of layout


def _kind(btf: Btf, tid: int) -> int:
    try:
        return btf.resolve(tid).kind
    except (IndexError, ValueError):
        return -1


def elf_vars(btf: Btf, section: str, symbols: Mapping[str, tuple[int, int]]) -> dict[str, Var]:
    """Variables of ``section`` in an object file, placed by its symbol table (clang
    leaves DATASEC offsets at 0 for libbpf to fix up at open)."""
    ds = btf.datasec(section)
    out = {}
    for tid, off, size in ds.members() if ds is not None else ():
        var = btf.types[tid] if tid < len(btf.types) else None
        if var is not None and var.kind == KIND_VAR:
            off, size = symbols.get(var.name, (off, size))
            out[var.name] = Var(section, off, size, _kind(btf, var.size_type))
    return out


def kernel_vars(btf: Btf, datasec_id: int, value: bytes) -> dict[str, tuple[Var, bytes]]:
    """Variables of a loaded internal map (its BTF value type is the DATASEC, with
    offsets fixed up by libbpf) and each one's current bytes."""
    if not 0 < datasec_id < len(btf.types) or btf.types[datasec_id].kind != KIND_DATASEC:
        return {}
    ds = btf.types[datasec_id]
    out = {}
    for tid, off, size in ds.members():
        var = btf.types[tid] if tid < len(btf.types) else None
        if var is not None and var.kind == KIND_VAR and off + size <= len(value):
            out[var.name] = (Var(ds.name, off, size, _kind(btf, var.size_type)),
                             value[off:off + size])
    return out


def carry(old: Mapping[str, tuple[Var, bytes]], new: Mapping[str, Var],
          defaults: Mapping[str, bytes], old_name: Callable[[str], str | None] = lambda n: n,
          ) -> tuple[dict[str, bytes], list[str]]:
    """The new sections' contents (``defaults`` by section) with every variable whose
    old counterpart (``old_name`` maps a new variable name to the old one, None when
    it has none) has the same size and kind copied over; and the names of the new
    variables whose layout changed (new, resized or of another kind)."""
    out = {sec: bytearray(data) for sec, data in defaults.items()}
    # a section no running program uses has no map to read: nothing to carry, no change
    visible = {v.section for v, _ in old.values()}
    changed = []
    for name, var in sorted(new.items()):
        oname = old_name(name) if var.section in visible else None
        prev = old.get(oname) if oname is not None else None
        if prev is None or prev[0].size != var.size or prev[0].kind != var.kind \
                or var.section not in out or var.offset + var.size > len(out[var.section]):
            if oname is not None:
                changed.append(name)
            continue
        out[var.section][var.offset:var.offset + var.size] = prev[1]
    return {sec: bytes(b) for sec, b in out.items()}, changed
