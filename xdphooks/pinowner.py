"""Who owns each program's pinned maps (``<bpffs>/xdphooks/maps/<program>/``).

Pinned maps outlive their chain on purpose: an upgrade keeps its counters and tables.
They are keyed by program name only, so a plugin removed with its maps left behind
would hand them to whatever other plugin later declares a program of the same name:
its blocklist, its counters, its secrets. The owner of each pin directory is therefore
recorded (plugin and object) in ``<state dir>/map-owners.json`` (root-only, written
atomically; bpffs holds no regular files). Before a chain is built, every entry claims
its directory: the recorded plugin, or no record (a first build, or a record lost with
the state: the declarer is recorded), is fine; another plugin gets the directory
**reset** — its pins removed, so the maps start empty — with a warning naming both.
The same plugin with another object (an upgrade that moved its file) keeps its maps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .atomicfile import write_atomic
from .errors import XdphooksError, fix_suffix
from .security import ensure_private_dir, read_checked

if TYPE_CHECKING:  # annotations only
    from .model import ChainEntry
    from .paths import Paths

OWNERS_FILE = "map-owners.json"
LIMIT = 4 << 20  # a few hundred bytes per program


def owners_path(paths: Paths) -> Path:
    return paths.state_dir / OWNERS_FILE


def load(paths: Paths) -> dict[str, dict[str, str]]:
    """{pin directory name: {"plugin", "object"}}; what cannot be read or is not of that
    shape counts as no record (the next claim records the declarer)."""
    try:
        raw = read_checked(owners_path(paths), "map owner record", limit=LIMIT,
                           owners=(0, os.geteuid()))
        data = json.loads(raw.decode())
    except (OSError, ValueError, UnicodeDecodeError, XdphooksError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: {"plugin": v["plugin"], "object": v.get("object", "")}
            for k, v in data.items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("plugin"), str)
            and isinstance(v.get("object", ""), str)}


def save(paths: Paths, owners: dict[str, dict[str, str]]) -> None:
    try:
        ensure_private_dir(paths.state_dir, 0o755)
        write_atomic(owners_path(paths), json.dumps(owners, indent=2, sort_keys=True),
                     mode=0o600, durable=True)
    except OSError as e:
        raise XdphooksError(f"cannot record the owners of pinned maps in "
                            f"{owners_path(paths)}: {e.strerror or e}",
                            fix=f"make {paths.state_dir} writable by root and retry") from None


def claim(paths: Paths, entries: Iterable[ChainEntry]) -> tuple[list[str], set[str]]:
    """Claim each entry's pin directory for its plugin; returns (warnings, names of the
    programs whose maps were reset because another plugin owned them)."""
    from .kernel import bpffs

    owners = load(paths)
    before = json.dumps(owners, sort_keys=True)
    warnings: list[str] = []
    reset: set[str] = set()
    for e in entries:
        if e.maps_of:
            continue  # shares the maps of program e.maps_of, whose own entry claims them
        rec = owners.get(e.name)
        if rec is not None and rec["plugin"] != e.plugin:
            d = paths.map_pin_dir(e.name)
            held = sorted(os.listdir(d)) if d.is_dir() else []
            if held:
                bpffs.rmtree(d)
                warnings.append(
                    f"program {e.name!r}: the maps pinned by plugin {rec['plugin']!r} (object "
                    f"{rec['object'] or 'unknown'}) are not handed to plugin {e.plugin!r} "
                    f"(object {e.object}), which now declares a program of that name: "
                    f"{', '.join(held[:6])}{' …' if len(held) > 6 else ''} were removed and "
                    "start empty" + fix_suffix("none needed if the old plugin is gone for good; "
                                               "rename the program to keep both"))
            reset.add(e.name)
        owners[e.name] = {"plugin": e.plugin, "object": e.object}
    # the programs that share a reset directory start afresh with it
    reset |= {e.name for e in entries if e.maps_of in reset}
    if json.dumps(owners, sort_keys=True) != before:
        save(paths, owners)
    return warnings, reset

