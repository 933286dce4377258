"""dpkg: owners from ``/var/lib/dpkg/info/<pkg>.list``, digests from
``<pkg>.md5sums``, versions from dpkg's status file; dpkg triggers and
``DPKG_ROOT`` for transactions."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

from ..atomicfile import write_atomic
from ..errors import PermissionRefused
from ..security import check_trusted_dirs, is_root, read_trusted
from . import Record

NAME = "deb"
TRIGGER_PREFIXES: tuple[str, ...] = ("dpkg",)
CONTEXT_ENV: tuple[tuple[str, str], ...] = (("DPKG_MAINTSCRIPT_PACKAGE", "dpkg_package"),
               ("DPKG_RUNNING_VERSION", "dpkg_version"))
DPKG_INFO = Path("/var/lib/dpkg/info")
TRIGGER = "xdphooks-reconcile"  # the trigger deb/debian/xdphooks.triggers declares

# Reading every .list costs a few ms each on a slow filesystem (seconds in
# the test VM, on every reconcile and status), so the result is kept in
# memory and on disk, keyed by the info directory's mtime: dpkg renames each
# new .list into place and unlinks removed ones, either of which changes it. A
# result read within RACY_NS of that mtime is not kept (a change in the same
# clock tick would not show), as git does with its index. The cache describes
# the system's dpkg database (DPKG_INFO ignores --root), but a run under --root
# writes nothing outside that root, so its copy is kept there (cache_in).
INDEX_CACHE = Path("/var/cache/xdphooks/dpkg-index.json")
#: under --root the cache is written below that root, never in the host's /var/cache
#: (provenance.plugin_owners sets it for the duration of a call: cache_in)
_cache_dir: Path | None = None
RACY_NS = 2_000_000_000
_index: tuple[int, dict[str, str]] = (0, {})


def present() -> bool:
    return DPKG_INFO.is_dir()


def index() -> dict[str, str]:
    """{installed path: package} for the packages that ship xdphooks files."""
    global _index
    try:
        mtime = DPKG_INFO.stat().st_mtime_ns
    except OSError:
        return {}
    if mtime == _index[0]:
        return _index[1]
    found = _read_cache(mtime)
    if found is None:
        found = _scan_lists()
        if time.time_ns() - mtime < RACY_NS:
            return found
        if is_root():
            _write_cache(mtime, found)
    _index = (mtime, found)
    return found


def _scan_lists() -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        lists = [p for p in DPKG_INFO.iterdir() if p.suffix == ".list"]
    except OSError:
        return found
    for lst in lists:
        try:
            text = lst.read_text(errors="replace")
        except OSError:
            continue
        if "/xdphooks/" not in text:
            continue  # only packages that ship xdphooks files matter
        pkg = lst.stem.split(":")[0]
        for line in text.splitlines():
            if "/xdphooks/" in line:
                found[line] = pkg
    return found


@contextlib.contextmanager
def cache_in(cache_dir: Path) -> Iterator[None]:
    """Keep the index cache in ``cache_dir`` (Paths.cache_dir) meanwhile."""
    global _cache_dir
    before, _cache_dir = _cache_dir, cache_dir
    try:
        yield
    finally:
        _cache_dir = before


def _cache_file() -> Path:
    if _cache_dir is None or _cache_dir == INDEX_CACHE.parent:
        return INDEX_CACHE
    return _cache_dir / INDEX_CACHE.name


def _read_cache(mtime: int) -> dict[str, str] | None:
    """The cached index if root wrote it for this state of dpkg's database."""
    try:
        data = json.loads(read_trusted(_cache_file(), "dpkg index cache"))
    except (OSError, ValueError, PermissionRefused):
        return None
    if not isinstance(data, dict) or data.get("info_mtime_ns") != mtime:
        return None
    found = data.get("index")
    if not isinstance(found, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        return None
    return found


def _write_cache(mtime: int, found: dict[str, str]) -> None:
    try:
        cache = _cache_file()
        os.makedirs(cache.parent, mode=0o755, exist_ok=True)
        check_trusted_dirs(cache.parent, "dpkg index cache")
        write_atomic(cache, json.dumps({"info_mtime_ns": mtime, "index": found}))
    except (OSError, PermissionRefused):
        pass  # a cache: the next reader scans again


_versions: tuple[int, dict[str, str]] = (0, {})


def version(pkg: str) -> str:
    """The installed version, from dpkg's status file ("" if unknown); the file is
    parsed once per change of it, not once per plugin."""
    global _versions
    status = DPKG_INFO.parent / "status"
    try:
        mtime = status.stat().st_mtime_ns
        if mtime != _versions[0]:
            found = {}
            for stanza in status.read_text(errors="replace").split("\n\n"):
                fields = dict(ln.split(": ", 1) for ln in stanza.splitlines()
                              if ": " in ln and not ln.startswith(" "))
                if "Package" in fields and "Version" in fields:
                    found[fields["Package"]] = fields["Version"]
            _versions = (mtime, found)
    except OSError:
        return ""
    return _versions[1].get(pkg, "")


def record(path: str) -> Record | None:
    pkg = index().get(path)
    if not pkg:
        return None
    ver = version(pkg)
    label = f"{pkg}_{ver} (deb)" if ver else f"{pkg} (deb)"
    rel = path.lstrip("/")
    for md5s in (DPKG_INFO / f"{pkg}.md5sums", *DPKG_INFO.glob(f"{pkg}:*.md5sums")):
        try:
            for line in md5s.read_text().splitlines():
                digest, _, name = line.partition("  ")
                if name == rel:
                    return Record(pkg, label, NAME, "md5", digest)
        except OSError:
            continue
    return Record(pkg, label, NAME, "md5", "")


def reinstall_command(package: str) -> str:
    return f"apt-get install --reinstall {package}"


def defer(trigger: str) -> str | None:
    pkg = os.environ.get("DPKG_MAINTSCRIPT_PACKAGE")
    if pkg and pkg != "xdphooks" and trigger == "manual":
        # Another package's maintainer script: let dpkg run us once, at the end.
        rc = subprocess.run(["/usr/bin/dpkg-trigger", "--no-await", TRIGGER],
                            check=False).returncode
        if rc == 0:
            return f"xdphooks: reconcile deferred to the {TRIGGER} dpkg trigger"
    return None


def offline_root() -> str:
    dpkg_root = os.environ.get("DPKG_ROOT", "")
    return f"DPKG_ROOT={dpkg_root}" if dpkg_root not in ("", "/") else ""
