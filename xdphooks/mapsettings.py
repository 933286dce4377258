"""What a libbpf loader sets on an object's maps before load (``XdpProgram.maps``).

Many loaders (xdp-tools' xdp-bench and xdp-trafficgen among them) declare maps
without ``max_entries`` and size them with ``bpf_map__set_max_entries`` before
load; some set map flags, or keep a map out of bpffs. A plugin declares the same
as data: ``maps={"rx_cnt": {"max_entries": 256}}``. This module holds the one rule
for those settings: what a declaration may say (``declaration_problems``), what an
object's BTF declares for each map (``declared_maps``), and how they are checked
and applied to an opened, not yet loaded libbpf object (``apply``), in both
backends; the static backend passes its renamed maps.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, cast

from .errors import ObjectError

if TYPE_CHECKING:  # annotations only
    from .link.elf import Elf
    from .model import ChainEntry

#: the keys a map setting may have, and what each takes
KEYS = {"max_entries": "an integer 1 to 4294967295",
        "map_flags": "an integer 0 to 4294967295 (BPF_F_* bits)",
        "pin": "true or false"}
U32_MAX = 2**32 - 1
#: libbpf-style map definition members in BTF (__uint/__type in SEC(".maps"))
_BTF_FIELDS = ("type", "max_entries", "map_flags", "pinning")
#: map types that need no max_entries: libbpf sizes a PERF_EVENT_ARRAY by the CPUs, and
#: the local-storage maps must have none
UNSIZED_TYPES = frozenset({4, 19, 21, 24, 28, 29, 32})


def freeze(maps: Mapping[Any, Any]) -> tuple[Any, ...]:
    """A hashable, ordered copy: ((map, ((key, value), ...)), ...). Left as given when
    it is not a mapping of mappings (declaration_problems says why)."""
    if not isinstance(maps, Mapping) or not all(isinstance(v, Mapping) for v in maps.values()):
        return maps  # type: ignore[return-value]
    return tuple(sorted((str(k), tuple(sorted(dict(v).items()))) for k, v in maps.items()))


def _items(maps: object) -> list[tuple[Any, dict[Any, Any]]] | None:
    if isinstance(maps, tuple):
        return [(k, dict(v)) for k, v in maps]
    if isinstance(maps, Mapping) and all(isinstance(v, Mapping) for v in maps.values()):
        return [(k, dict(v)) for k, v in maps.items()]
    return None


def declaration_problems(maps: object) -> list[str]:
    """What is wrong with ``XdpProgram.maps`` on its own, as sentences."""
    items = _items(maps)
    if items is None:
        return [f"maps must map map names to settings ({{\"rx_cnt\": {{\"max_entries\": 256}}}}), "
                f"not {maps!r}"]
    out = []
    for name, settings in items:
        if not isinstance(name, str) or not name:
            out.append(f"maps: {name!r} is not a map name")
            continue
        if not settings:
            out.append(f"maps: {name} has no settings (use {', '.join(KEYS)})")
        for key, value in settings.items():
            if key not in KEYS:
                out.append(f"maps: {name}: unknown setting {key!r} (use {', '.join(KEYS)})")
            elif key == "pin":
                if not isinstance(value, bool):
                    out.append(f"maps: {name}: pin = {value!r} must be {KEYS[key]}")
            elif isinstance(value, bool) or not isinstance(value, int) \
                    or not (1 if key == "max_entries" else 0) <= value <= U32_MAX:
                out.append(f"maps: {name}: {key} = {value!r} is out of range: "
                           f"use {KEYS[key]}")
    return out


def settings_of(entry: ChainEntry) -> dict[str, dict[str, Any]]:
    """{map: {key: value}} of a ChainEntry (its frozen ``map_settings``)."""
    return {name: dict(items) for name, items in entry.map_settings}


def unpinned(entry: ChainEntry) -> set[str]:
    """Maps the plugin keeps out of bpffs (``"pin": False``)."""
    return {n for n, s in settings_of(entry).items() if s.get("pin") is False}


# --- what the object declares ---------------------------------------------------------------


def declared_maps(elf: Elf) -> dict[str, dict[str, int]]:
    """{map name: {"type", "max_entries", "map_flags", "pinning" it declares}} for each
    BTF-defined map in SEC(".maps") (a member the definition leaves out is absent)."""
    from .link.btf import (KIND_ARRAY, KIND_DATASEC, KIND_PTR, KIND_STRUCT, KIND_VAR, Btf)

    sec = elf.section(".BTF")
    if sec is None:
        return {}
    btf = Btf.parse(sec.data, elf.path if hasattr(elf, "path") else "object")
    out: dict[str, dict[str, int]] = {}
    for t in btf.types:
        if t.kind != KIND_DATASEC or t.name != ".maps":
            continue
        for tid, _, _ in t.members():
            var = btf.types[tid] if tid < len(btf.types) else None
            if var is None or var.kind != KIND_VAR:
                continue
            st = btf.resolve(var.size_type)
            fields: dict[str, int] = {}
            if st.kind == KIND_STRUCT:
                for name_off, mtype, _ in st.members():
                    mname = btf.string(name_off)
                    ptr = btf.types[mtype] if mtype < len(btf.types) else None
                    if mname in _BTF_FIELDS and ptr is not None and ptr.kind == KIND_PTR:
                        arr = btf.types[ptr.size_type] if ptr.size_type < len(btf.types) else None
                        if arr is not None and arr.kind == KIND_ARRAY:
                            fields[mname] = arr.array()[2]
            out[var.name] = fields
    return out


# --- applying them to an opened object --------------------------------------------------------

_sigs_done = False


def _lib() -> Any:
    """libbpf with the two getters xdphooks.kernel.libbpf does not declare."""
    global _sigs_done
    from .kernel import libbpf

    if not _sigs_done:
        libbpf._sig("bpf_map__max_entries", ctypes.c_uint32, ctypes.c_void_p)
        _sigs_done = True
    return libbpf._lib


def max_entries(m: Any) -> int:
    return cast(int, _lib().bpf_map__max_entries(m.ptr))


def apply(maps: Mapping[str, Any], entry: ChainEntry, obj_name: str,
          pin_of: Callable[[str], str | None] = lambda name: None) -> None:
    """Set ``entry``'s map settings on an opened, not yet loaded object's maps
    (``maps``: the object's own map name -> libbpf Map; the static backend's renamed
    ones keyed back by their original names). ``pin_of(name)``: the pin the map will
    reuse, if any; a setting it cannot take (another max_entries or flags than the
    pinned map has) is an error naming the plugin, before anything loads."""
    from .kernel import libbpf

    settings = settings_of(entry)
    unknown = sorted(set(settings) - set(maps))
    if unknown:
        raise ObjectError(f"{entry.name}: {obj_name} has no map(s) {', '.join(unknown)} "
                          "named in maps=", plugin=entry.plugin,
                          fix=f"use some of: {', '.join(sorted(maps)) or '(no maps)'}")
    for name, s in sorted(settings.items()):
        m = maps[name]
        if "max_entries" in s:
            rc = _lib().bpf_map__set_max_entries(m.ptr, s["max_entries"])
            if rc < 0:
                raise ObjectError(f"{entry.name}: map {name} of {obj_name} cannot be sized "
                                  f"to {s['max_entries']} (libbpf: {os.strerror(-rc)})",
                                  plugin=entry.plugin, fix="fix maps= in the plugin")
        if "map_flags" in s:
            m.set_map_flags(s["map_flags"])
        pin = pin_of(name)
        if pin is None or not os.path.exists(pin):
            continue
        try:
            with libbpf.fd_closing(libbpf.obj_get(pin)) as fd:
                info = libbpf.map_info(fd)
        except Exception:  # noqa: BLE001 - libbpf's own reuse check says what is wrong
            continue
        have = {"max_entries": info.max_entries, "map_flags": info.map_flags}
        for key in ("max_entries", "map_flags"):
            want = s.get(key)
            if want is None:
                continue
            got = have[key]
            if key == "map_flags":  # the kernel adds BPF_F_RDONLY_PROG to DEVMAPs
                got &= ~libbpf.BPF_F_RDONLY_PROG
                want &= ~libbpf.BPF_F_RDONLY_PROG
            if got != want:
                raise ObjectError(
                    f"{entry.name}: maps= sets {key} = {s[key]} on map {name} of {obj_name}, "
                    f"but its pinned map {pin} has {key} = {have[key]}: a pinned map is "
                    "reused as it is, so the setting cannot apply",
                    plugin=entry.plugin,
                    fix=f"set {key} = {have[key]} again, or remove the pin {pin} (its "
                        "contents are lost) and reconcile")


def missing_max_entries(elf: Elf, entry: ChainEntry) -> list[str]:
    """BTF-defined maps that declare no max_entries and get none from ``maps=`` (libbpf
    would refuse the object: 'map ... max_entries should be specified')."""
    sized = {n for n, s in settings_of(entry).items() if "max_entries" in s}
    return sorted(n for n, f in declared_maps(elf).items()
                  if "max_entries" not in f and n not in sized
                  and f.get("type") not in UNSIZED_TYPES)
