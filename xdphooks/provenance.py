"""Which package owns each plugin, and whether its files still match what the
package recorded (the package managers' knowledge is in pkg/)."""

from __future__ import annotations

import os

from . import pkg
from .paths import Paths


def owner(path: str) -> tuple[str, bool] | None:
    """(package label, matches) for ``path``, or None if no package owns it; a file
    the package recorded no digest for matches."""
    rec = pkg.record(path)
    if rec is None:
        return None
    return rec.label, pkg.matches(path, rec) is not False


def plugin_owners(paths: Paths,
                  objects: dict[str, list[str]] | None = None) -> dict[str, dict[str, object]]:
    """{plugin: {"package": str|None, "modified": bool}} for drop-in plugins.

    ``modified`` is true when the plugin file or one of its objects no longer
    matches the digest its package recorded.
    """
    from .pkg import dpkg

    with dpkg.cache_in(paths.cache_dir):  # under --root, never the host's /var/cache
        return _plugin_owners(paths, objects)


def _plugin_owners(paths: Paths, objects: dict[str, list[str]] | None) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for d in (paths.plugin_dir, paths.admin_plugin_dir):
        try:
            files = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in files:
            if not e.name.endswith(".py"):
                continue
            name = e.name[:-3]
            found = owner(e.path)
            info: dict[str, object] = {"package": found[0] if found else None,
                                       "modified": bool(found and not found[1])}
            if d == paths.admin_plugin_dir:
                info = {"package": "local override (/etc)", "modified": False}
            for obj in (objects or {}).get(name, []):
                o = owner(obj)
                if o and not o[1]:
                    info["modified"] = True
            out[name] = info
    return out
