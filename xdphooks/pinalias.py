"""Maps pinned where the program's own userspace expects them (``pin_aliases``, ``pin_root``).

A program's own tools (Suricata, xdp-filter's CLI, Katran, l3afd) open its maps at the
pin paths they were built for; xdphooks pins them below its own tree
(``<bpffs>/xdphooks/maps/<program>/``). bpffs lets one object be pinned several times,
so the same map is pinned at each declared alias too — the tool and the chain then
share one map. Rules:

- **kept across relinks**: the map is reused from xdphooks' own pin, so an alias keeps
  naming the live map; a missing alias is pinned again by every reconcile;
- **removed with the plugin**: when the program runs in no chain any more its aliases
  are unlinked — only pins recorded in the state file (``State.pin_aliases``) and only
  while they still hold the recorded map, so a path taken over meanwhile is left alone;
- **refused when the path is someone else's**: another object pinned there (another
  plugin's alias, another tool's pin) refuses the change in one line naming the plugin
  and the path; the chain that ran before keeps running.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path

from .errors import XdphooksError

PATH_MAX = 4096


def _path_problem(what: str, path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return f"{what} {path!r} must be an absolute path on a bpffs"
    if not path.startswith("/") or posixpath.normpath(path) != path or path == "/" \
            or "\x00" in path or len(path.encode(errors="surrogateescape")) >= PATH_MAX:
        return f"{what} {path!r} must be an absolute, normalised path on a bpffs " \
               "(no '..', '//' or trailing '/')"
    return None


def declaration_problems(aliases: object, pin_root: object) -> list[str]:
    """What is wrong with ``XdpProgram(pin_aliases=..., pin_root=...)`` as declared."""
    out: list[str] = []
    if aliases is not None:
        items = aliases if isinstance(aliases, tuple) else (
            aliases.items() if isinstance(aliases, Mapping) else None)
        if items is None:
            out.append(f"pin_aliases must map map names to pin paths, not "
                       f"{type(aliases).__name__}")
        else:
            seen: dict[str, str] = {}
            for m, path in items:
                if not isinstance(m, str) or not m:
                    out.append(f"pin_aliases: {m!r} is not a map name")
                    continue
                bad = _path_problem(f"pin_aliases[{m!r}]", path)
                if bad:
                    out.append(bad)
                elif path in seen:
                    out.append(f"pin_aliases: maps {seen[path]!r} and {m!r} both at {path}")
                else:
                    seen[path] = m
    if pin_root is not None:
        bad = _path_problem("pin_root", pin_root)
        if bad:
            out.append(bad)
    return out


def wanted(entry, pinned: Mapping[str, str]) -> dict[str, str]:
    """{alias path: map name} for one chain entry, given its pinned maps {map: path}."""
    out = {path: m for m, path in entry.pin_aliases}
    if entry.pin_root:
        for m in pinned:
            out.setdefault(f"{entry.pin_root}/{m}", m)
    return out


def _map_id(path: str) -> int | None:
    """The id of the map pinned at ``path``; 0 if something else (a program, a link)
    is pinned there; None if nothing is."""
    from .kernel import libbpf

    if not os.path.lexists(path):
        return None
    try:
        fd = libbpf.obj_get(path)
    except XdphooksError:
        return 0
    try:
        return int(libbpf.map_info(fd).id)
    except XdphooksError:
        return 0  # not a map
    finally:
        os.close(fd)


def _in_chains(state, program: str) -> bool:
    return any(p.name == program for r in state.interfaces.values() for p in r.programs)


def _make_parents(path: str) -> None:
    """Create the alias' missing directories, all on the bpffs its nearest existing
    ancestor is (so nothing is created on another filesystem)."""
    from .kernel import bpffs

    parent = Path(path).parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not bpffs.is_bpffs(parent):
        raise OSError(errno.EXDEV, "not on a bpffs")
    for d in reversed(missing):
        d.mkdir(mode=0o700)


def pin(paths, state, iface, entries, built_maps: Mapping[str, Mapping[str, str]]) -> None:
    """Pin every declared alias of a chain about to be swapped in (its maps are pinned
    at xdphooks' own paths by now) and record it; raises one XdphooksError naming the
    plugin and the path, having pinned nothing new, if one cannot be."""
    from .kernel import bpffs, libbpf
    from .state import AliasRecord

    todo: list[tuple[str, str, object, str, int]] = []  # path, map, entry, own pin, id
    claimed: dict[str, object] = {}

    def refuse(e, m, path, why, fix):
        return XdphooksError(f"{iface}: program {e.name}: cannot pin map {m} at {path} for "
                             f"its own tools: {why}; {iface} keeps the chain it runs",
                             plugin=e.plugin, fix=fix)

    for e in entries:
        pinned = built_maps.get(e.name, {})
        for path, m in sorted(wanted(e, pinned).items()):
            other = claimed.get(path)
            if other is not None and other.name != e.name:
                raise refuse(e, m, path, f"program {other.name} of plugin {other.plugin} "
                             "declares the same path", "declare another path in one of them")
            claimed[path] = e
            if m not in pinned:
                raise refuse(e, m, path, "the chain pins no map of that name (not in the "
                             "object, or left unpinned by pin_maps/maps)",
                             f"name one of: {', '.join(sorted(pinned)) or 'no pinned map'}")
            if Path(path).is_relative_to(paths.pin_root):
                raise refuse(e, m, path, "that is inside xdphooks' own pin tree",
                             f"choose a path outside {paths.pin_root}")
            own = _map_id(pinned[m])
            if not own:
                raise refuse(e, m, path, f"its own pin {pinned[m]} holds no map",
                             "run 'xdphooks reconcile' again")
            there = _map_id(path)
            rec = state.pin_aliases.get(path)
            if there is not None and there != own:
                if rec is None or rec.map_id != there or (
                        rec.program != e.name and _in_chains(state, rec.program)):
                    who = (f"plugin {rec.plugin}'s program {rec.program} has its map "
                           f"{rec.map} there" if rec is not None and rec.map_id == there
                           else f"another {'map (id ' + str(there) + ')' if there else 'object'}"
                           " is pinned there, not by xdphooks")
                    raise refuse(e, m, path, who,
                                 "remove that pin if it is stale (rm PATH) or declare "
                                 "another path in pin_aliases")
            todo.append((path, m, e, pinned[m], own))
    done: list[str] = []
    try:
        for path, m, e, own_pin, own in todo:
            if _map_id(path) != own:
                if os.path.lexists(path):  # our own stale alias (checked above)
                    os.unlink(path)
                _make_parents(path)
                if not bpffs.is_bpffs(Path(path).parent):
                    raise OSError(errno.EXDEV, "not on a bpffs")
                fd = libbpf.obj_get(own_pin)
                try:
                    libbpf.obj_pin(fd, path)
                finally:
                    os.close(fd)
                done.append(path)
    except (OSError, XdphooksError) as err:
        for p in done:
            try:
                os.unlink(p)
            except OSError:
                pass
        why = err.line() if isinstance(err, XdphooksError) else (
            "not on a bpffs" if err.errno == errno.EXDEV else (err.strerror or str(err)))
        raise refuse(e, m, path, why, "choose a path on a mounted bpffs (e.g. under "
                     "/sys/fs/bpf) that root can write") from None
    for path, m, e, _, own in todo:
        state.pin_aliases[path] = AliasRecord(e.name, e.plugin, m, own)


def maintain(paths, state) -> list[str]:
    """After a run: unlink the aliases of programs that run in no chain (only while they
    still hold the recorded map) and forget them; pin again the missing aliases of
    programs that still run (a hand rm, a bpffs remounted). Returns what it did."""
    from .kernel import libbpf

    said = []
    for path, rec in list(state.pin_aliases.items()):
        there = _map_id(path)
        if not _in_chains(state, rec.program):
            if there and there == rec.map_id:
                try:  # removed with its program: nothing to say
                    os.unlink(path)
                except OSError as e:
                    said.append(f"cannot remove {path}: {e.strerror}")
                    continue
            del state.pin_aliases[path]
        elif there is None:
            own = paths.map_pin_dir(rec.program) / rec.map
            for r in state.interfaces.values():  # programs of one object share maps
                for p in r.programs:
                    if p.name == rec.program and not own.exists():
                        cand = [paths.map_pin_dir(q.name) / rec.map for q in r.programs
                                if q.object == p.object]
                        own = next((c for c in cand if c.exists()), own)
            if _map_id(str(own)) != rec.map_id:
                continue  # its map is gone: the next relink of its chain pins it anew
            try:
                _make_parents(path)
                fd = libbpf.obj_get(str(own))
                try:
                    libbpf.obj_pin(fd, path)
                finally:
                    os.close(fd)
                said.append(f"pinned {path} again (map {rec.map} of program {rec.program})")
            except (OSError, XdphooksError) as e:
                said.append(f"cannot pin {path} again: "
                            f"{e.line() if isinstance(e, XdphooksError) else e.strerror}")
    return said
