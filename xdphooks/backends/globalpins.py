"""A component's global data (.data/.bss) kept pinned, as its maps are.

Each slot of a static chain has its .data and .bss in internal maps of their own
(link/rewrite.py renames the sections per slot). The first chain pins them under
the component's map pin directory (``<map pin dir>/globals-data``, ``globals-bss``:
PIN_FMT); every later chain loads with the pinned maps themselves
(bpf_map__reuse_fd), so an update the running chain makes at any moment — during
the relink and the swap too — stays, and file-scope ``static`` globals with it.

Only when the section's layout changed (a variable added, removed, renamed, moved,
resized or of another kind: link/globals.same_layout) does the new chain get a map
of its own: the values of the unchanged variables are copied from the pin after
load (link/globals.carry; the changed ones start from the new defaults, with a
warning) and the new map replaces the pin. A chain whose pins are missing (built
before this scheme, or maps reset) starts as the old rule did: copied from the
running chain, or the defaults after a reset.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import KernelError
from ..kernel import libbpf
from ..link.globals import (DATA_SECTIONS, carry, kernel_vars, slot_prefix, slot_section,
                            same_layout, unprefixed)


#: a section's pin in the component's map pin directory: bpffs refuses dots in names,
#: and no C identifier (so no map of the object's own) contains a "-"
PIN_FMT = "globals-{}"


def pin_path(ctx, entry, section: str) -> Path:
    return ctx.map_pin_dir(entry) / PIN_FMT.format(section.lstrip("."))


def _pinned(path: Path):
    """(fd, map id, value size, variables by the component's own names) of a pinned
    section map; None when there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        fd = libbpf.obj_get(str(path))
    except KernelError:
        return None
    try:
        from ..link.btf import Btf

        info = libbpf.map_info(fd)
        found = {}
        if info.btf_id and info.btf_value_type_id:
            btf = Btf.parse(libbpf.btf_raw_by_id(info.btf_id), str(path))
            value = libbpf.map_lookup(fd, bytes(4), info.value_size) or b""
            vt = info.btf_value_type_id
            tag = slot_prefix(btf.types[vt].name) if vt < len(btf.types) else ""
            found = unprefixed(kernel_vars(btf, vt, value), tag)
        return fd, info.id, info.value_size, found
    except BaseException:
        os.close(fd)
        raise


def pinned_globals(pin_dir: Path) -> dict:
    """A static slot's globals as they are now, read from its pinned section maps: by
    the component's own variable names, with their bytes ({} when none are pinned)."""
    out: dict = {}
    for sec in DATA_SECTIONS:
        got = _pinned(Path(pin_dir) / PIN_FMT.format(sec.lstrip(".")))
        if got is not None:
            os.close(got[0])
            out.update(got[3])
    return out


def _object_vars(path: str):
    from .base import object_globals

    return object_globals(path)


def is_globals_pin(name: str) -> bool:
    """Whether a name in a map pin directory is a section map of ours, not a map."""
    return name.startswith(PIN_FMT.format(""))


def reuse_sections(ctx, entry, maps: dict, obj_path: str) -> None:
    """Before load: point each section map (``maps``: ".data"/".bss" -> opened map) at
    its pin when the layout is unchanged (``obj_path``: the component's own object)."""
    if entry.name in ctx.reset_maps:
        return
    variables = None
    for sec, m in maps.items():
        got = _pinned(pin_path(ctx, entry, sec))
        if got is None:
            continue
        fd, _, size, old = got
        with libbpf.fd_closing(fd):
            if variables is None:
                variables, _ = _object_vars(obj_path)
            if same_layout(old, variables, sec, m.value_size, size):
                m.set_pin_path(None)
                m.reuse_fd(fd)


def reuse_pins(ctx, by_name: dict, entry, prefix: str, obj_path: str) -> None:
    """Static: reuse_sections for the slot's section maps (``by_name``: the opened
    linked object's maps)."""
    reuse_sections(ctx, entry, {sec: by_name[slot_section(sec, prefix)] for sec in DATA_SECTIONS
                                if slot_section(sec, prefix) in by_name}, obj_path)


def settle_sections(ctx, entry, maps: dict[str, int], obj_path: str, running) -> list[str]:
    """After the final load: each section map (``maps``: ".data"/".bss" -> fd) that is
    not its pin gets the values carried over — from the pin, else from ``running()``
    (the running chain's globals of this program by its own names; None: nothing runs)
    — and becomes the pin. Returns the names of the variables whose layout changed."""
    changed: list[str] = []
    variables = defaults = None
    old_running = None
    for sec, fd in sorted(maps.items()):
        path = pin_path(ctx, entry, sec)
        mine = libbpf.map_info(fd)
        got = None if entry.name in ctx.reset_maps else _pinned(path)
        if got is not None:
            os.close(got[0])
            if got[1] == mine.id:
                continue  # the pinned map itself: nothing to carry
            old = got[3]
        elif running is not None and entry.name not in ctx.reset_maps:
            if old_running is None:
                old_running = running()
            old = {n: v for n, v in old_running.items() if v[0].section == sec}
        else:
            old = {}
        if variables is None:
            variables, defaults = _object_vars(obj_path)
        new = {n: v for n, v in variables.items() if v.section == sec}
        contents, moved = carry(old, new, {sec: defaults.get(sec, b"")})
        if contents[sec] and len(contents[sec]) == mine.value_size:
            libbpf.map_update(fd, bytes(4), contents[sec])
        changed += moved
        if path.exists():
            path.unlink()
        libbpf.obj_pin(fd, str(path))
    return changed


def settle(ctx, objs, segments, entries, results, previous_globals) -> list[str]:
    """Static, after the final load: settle_sections for every slot. Returns the layout
    warnings. ``previous_globals()``: the running chain's globals (slot prefixes)."""
    from .base import layout_warning

    prev = ctx.previous
    prev_slots = {p: s for p, s in prev.slots.items() if p not in ctx.reset_maps} \
        if prev is not None and prev.mode == "static" else {}
    cache: list = []

    def running_of(slot: int):
        def read() -> dict:
            if not cache:
                cache.append(previous_globals())
            return unprefixed({n: v for n, v in cache[0].items()
                               if n.startswith(f"s{slot}_")}, f"s{slot}_")
        return read

    warnings = []
    for k, seg in enumerate(segments):
        maps = {m.name: m for m in objs[k].maps() if m.internal}
        for i in seg:
            entry, res = entries[i], results[i]
            mine = {sec: maps[slot_section(sec, res.prefix)].fd for sec in DATA_SECTIONS
                    if slot_section(sec, res.prefix) in maps}
            changed = settle_sections(ctx, entry, mine, ctx.trusted_object(entry),
                                      running_of(prev_slots[entry.name])
                                      if entry.name in prev_slots else None)
            if changed:
                warnings.append(layout_warning(entry.name, sorted(changed)))
    return warnings


def pin_running(ctx, entry, prog_fd: int) -> None:
    """A program kept from the running chain (freplace): pin its section maps where
    they are not pinned yet (a chain from before this scheme)."""
    from ..link.globals import base_section

    for mid in libbpf.prog_info(prog_fd, map_ids=True)[1]:
        with libbpf.fd_closing(libbpf.map_fd_by_id(mid)) as fd:
            sec = base_section(libbpf.map_info(fd).name.decode(errors="replace"))
            path = pin_path(ctx, entry, sec) if sec else None
            if path is not None and not path.exists():
                libbpf.obj_pin(fd, str(path))
