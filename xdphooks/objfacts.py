"""What parsing an object found, kept between runs, addressed by the object's sha256.

Every reconcile inspects every declared object (inspect.py): a trusted read, its sha256,
then an ELF parse for its XDP programs, run configs, tail-call targets and untyped
programs. The read and the hash happen every run, since they are what the trust and
verification checks and the chain fingerprint need; the parse does not have to: its
result depends on nothing but the bytes (and the parser), so it is kept under the
sha256 of those bytes. A changed file has another digest and is parsed again: no stat
key (inode, size, mtimes) is trusted to stand for the contents.

The cache is root's state: ``<root>/var/cache/xdphooks/object-facts.json``, written
only by root (0600, atomically), read only when root-owned in root-owned directories
not writable by others (security.read_trusted); anything unreadable, foreign or
malformed is ignored and the objects are parsed. It holds the objects of the last run
(nothing grows without bound), and only successful parses: a broken object is parsed,
and its error said, on every run. ``VERSION`` changes with what the parser reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "object-facts.json"
#: bump when the facts' meaning or the parser's findings change: older entries are dropped
VERSION = 1
#: the most objects kept (a chain holds at most abi.MAX_CHAIN programs per interface)
MAX_ENTRIES = 4096

Facts = dict[str, Any]  # {"programs": [...], "run_config": {...}, "tail_targets", "untyped"}


class FactsCache:
    """The cache of one run: :meth:`get` and :meth:`put` while inspecting, :meth:`save`
    once after."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / FILE
        self.loaded: dict[str, Facts] = {}
        self.used: dict[str, Facts] = {}
        if os.geteuid() != 0:
            return  # only root's runs use (and write) it
        from .errors import PermissionRefused
        from .security import read_trusted

        try:
            data = json.loads(read_trusted(self.path, "object facts cache"))
        except (OSError, ValueError, PermissionRefused):
            return
        if isinstance(data, dict) and data.get("version") == VERSION \
                and isinstance(data.get("objects"), dict):
            self.loaded = {k: v for k, v in data["objects"].items()
                           if isinstance(k, str) and _valid(v)}

    def get(self, digest: str) -> Facts | None:
        facts = self.loaded.get(digest) or self.used.get(digest)
        if facts is not None:
            self.used[digest] = facts
        return facts

    def put(self, digest: str, facts: Facts) -> None:
        if _valid(facts):
            self.used[digest] = facts

    def save(self) -> None:
        """Write the objects of this run, if they differ from what was read."""
        if os.geteuid() != 0 or self.used.keys() == self.loaded.keys() \
                or len(self.used) > MAX_ENTRIES:
            return
        from .atomicfile import write_atomic
        from .errors import PermissionRefused
        from .security import check_trusted_dirs

        try:
            os.makedirs(self.path.parent, mode=0o755, exist_ok=True)
            check_trusted_dirs(self.path.parent, "object facts cache")
            write_atomic(self.path, json.dumps({"version": VERSION, "objects": self.used}),
                         mode=0o600)
        except (OSError, PermissionRefused):
            pass  # a cache: the next run parses again


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _valid(v: Any) -> bool:
    """An entry as :func:`inspect.inspect` writes it (a damaged file is not trusted)."""
    if not isinstance(v, dict) or set(v) != {"programs", "run_config", "tail_targets",
                                               "untyped"}:
        return False
    rc = v["run_config"]
    return _strs(v["programs"]) and _strs(v["tail_targets"]) and _strs(v["untyped"]) \
        and isinstance(rc, dict) and all(
            isinstance(k, str) and isinstance(c, list) and len(c) == 2
            and (c[0] is None or (isinstance(c[0], int) and not isinstance(c[0], bool)))
            and (c[1] is None or _strs(c[1])) for k, c in rc.items())
