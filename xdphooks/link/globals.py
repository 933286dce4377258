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

import re
from dataclasses import dataclass
from typing import Callable, Mapping

from .btf import KIND_DATASEC, KIND_VAR, Btf

DATA_SECTIONS = (".data", ".bss")
#: a static chain's slot keeps its .data/.bss in sections of its own (link/rewrite.py),
#: so in maps of their own, pinned with the component's maps (backends/globalpins.py)
SLOT_SECTION_FMT = "{section}.xdph_{tag}"
_SLOT_SECTION = re.compile(r"^(\.data|\.bss)\.xdph_(\w+)$")


def slot_section(section: str, prefix: str) -> str:
    """The section (and internal map: at most 15 characters) of a slot's ``section``."""
    return SLOT_SECTION_FMT.format(section=section, tag=prefix.rstrip("_"))


def base_section(name: str) -> str | None:
    """".data"/".bss" for a data section or internal map name of either form (a map
    name libbpf prefixed with the object's name included), else None."""
    m = _SLOT_SECTION.match(name)
    if m:
        return m.group(1)
    return next((s for s in DATA_SECTIONS if name.endswith(s)), None)


def slot_prefix(name: str) -> str:
    """The symbol prefix of the slot a per-slot section belonged to ("" for others)."""
    m = _SLOT_SECTION.match(name)
    return m.group(2) + "_" if m else ""


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
    section = base_section(ds.name) or ds.name  # a slot's section reads as .data/.bss
    out = {}
    for tid, off, size in ds.members():
        var = btf.types[tid] if tid < len(btf.types) else None
        if var is not None and var.kind == KIND_VAR and off + size <= len(value):
            out[var.name] = (Var(section, off, size, _kind(btf, var.size_type)),
                             value[off:off + size])
    return out


def unprefixed(found: Mapping[str, tuple[Var, bytes]], prefix: str) -> dict[str, tuple[Var, bytes]]:
    """``found`` (one slot's section map) by the names in the component's own object:
    its global variables lose the slot's prefix, its static ones have none."""
    return {(n[len(prefix):] if prefix and n.startswith(prefix) else n): v
            for n, v in found.items()}


def same_layout(old: Mapping[str, tuple[Var, bytes]], new: Mapping[str, Var], section: str,
                size: int, old_size: int) -> bool:
    """Whether a section map with variables ``old`` can serve as the new object's
    ``section`` as it is: same size, and every variable at the same offset with the
    same size and kind (names included: a renamed variable is another variable)."""
    mine = {n: (v.offset, v.size, v.kind) for n, v in new.items() if v.section == section}
    theirs = {n: (v.offset, v.size, v.kind) for n, (v, _) in old.items()}
    return size == old_size and mine == theirs


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
