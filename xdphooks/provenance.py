"""Which package owns each plugin, and whether its files still match what the
package recorded (rpm: file digests in the rpmdb via the ``rpm`` module;
Debian: ``/var/lib/dpkg/info/<pkg>.md5sums``)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .atomicfile import write_atomic
from .errors import PermissionRefused
from .paths import Paths
from .security import check_trusted_dirs, read_regular, read_trusted

DPKG_INFO = Path("/var/lib/dpkg/info")


def _file_hash(path: str, algo: str) -> str | None:
    try:  # a FIFO or an 8 GiB file where a package's object was: no digest, no hang
        return hashlib.new(algo, read_regular(path, "BPF object" if path.endswith(".o")
                                              else "plugin file")).hexdigest()
    except (OSError, PermissionRefused):
        return None


def rpm_owner(path: str) -> tuple[str, bool] | None:
    """(package, matches) from the rpmdb, or None if no rpm owns ``path``."""
    try:
        import rpm
    except ImportError:
        return None
    try:
        ts = rpm.TransactionSet()
        for hdr in ts.dbMatch("basenames", path):
            for f in rpm.files(hdr):
                if f.name == path:
                    algo = {8: "sha256", 1: "md5", 2: "sha1", 10: "sha512"}.get(
                        hdr[rpm.RPMTAG_FILEDIGESTALGO] or 1, "sha256")
                    ok = _file_hash(path, algo) == f.digest
                    return f"{hdr[rpm.RPMTAG_NAME]}-{hdr[rpm.RPMTAG_VERSION]}-" \
                           f"{hdr[rpm.RPMTAG_RELEASE]} (rpm)", ok
    except Exception:  # noqa: BLE001 - an unreadable rpmdb must not break status
        return None
    return None


# Reading every .list costs a few ms each on a slow filesystem (seconds in
# the test VM, on every reconcile and status), so the result is kept in
# memory and on disk, keyed by the info directory's mtime: dpkg renames each
# new .list into place and unlinks removed ones, either of which changes it. A
# result read within RACY_NS of that mtime is not kept (a change in the same
# clock tick would not show), as git does with its index. The cache describes
# the system's dpkg database, so like DPKG_INFO it ignores --root.
INDEX_CACHE = Path("/var/cache/xdphooks/dpkg-index.json")
RACY_NS = 2_000_000_000
_index: tuple[int, dict[str, str]] = (0, {})


def _dpkg_index() -> dict[str, str]:
    """{installed path: package} for the packages that ship xdphooks files."""
    global _index
    try:
        mtime = DPKG_INFO.stat().st_mtime_ns
    except OSError:
        return {}
    if mtime == _index[0]:
        return _index[1]
    index = _read_cache(mtime)
    if index is None:
        index = _scan_lists()
        if time.time_ns() - mtime < RACY_NS:
            return index
        if os.geteuid() == 0:
            _write_cache(mtime, index)
    _index = (mtime, index)
    return index


def _scan_lists() -> dict[str, str]:
    index: dict[str, str] = {}
    try:
        lists = [p for p in DPKG_INFO.iterdir() if p.suffix == ".list"]
    except OSError:
        return index
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
                index[line] = pkg
    return index


def _read_cache(mtime: int) -> dict[str, str] | None:
    """The cached index if root wrote it for this state of dpkg's database."""
    try:
        data = json.loads(read_trusted(INDEX_CACHE, "dpkg index cache"))
    except (OSError, ValueError, PermissionRefused):
        return None
    if not isinstance(data, dict) or data.get("info_mtime_ns") != mtime:
        return None
    index = data.get("index")
    if not isinstance(index, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in index.items()):
        return None
    return index


def _write_cache(mtime: int, index: dict[str, str]) -> None:
    try:
        os.makedirs(INDEX_CACHE.parent, mode=0o755, exist_ok=True)
        check_trusted_dirs(INDEX_CACHE.parent, "dpkg index cache")
        write_atomic(INDEX_CACHE, json.dumps({"info_mtime_ns": mtime, "index": index}))
    except (OSError, PermissionRefused):
        pass  # a cache: the next reader scans again


_versions: tuple[int, dict[str, str]] = (0, {})


def _dpkg_version(pkg: str) -> str:
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


def dpkg_owner(path: str, index: dict[str, str]) -> tuple[str, bool] | None:
    pkg = index.get(path)
    if not pkg:
        return None
    version = _dpkg_version(pkg)
    label = f"{pkg}_{version} (deb)" if version else f"{pkg} (deb)"
    rel = path.lstrip("/")
    for md5s in (DPKG_INFO / f"{pkg}.md5sums", *DPKG_INFO.glob(f"{pkg}:*.md5sums")):
        try:
            for line in md5s.read_text().splitlines():
                digest, _, name = line.partition("  ")
                if name == rel:
                    return label, _file_hash(path, "md5") == digest
        except OSError:
            continue
    return label, True


def owner(path: str, dpkg_index: dict[str, str]) -> tuple[str, bool] | None:
    return rpm_owner(path) or dpkg_owner(path, dpkg_index)


def plugin_owners(paths: Paths, objects: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """{plugin: {"package": str|None, "modified": bool}} for drop-in plugins.

    ``modified`` is true when the plugin file or one of its objects no longer
    matches the digest its package recorded.
    """
    out: dict[str, dict] = {}
    index = _dpkg_index()
    for d in (paths.plugin_dir, paths.admin_plugin_dir):
        try:
            files = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in files:
            if not e.name.endswith(".py"):
                continue
            name = e.name[:-3]
            found = owner(e.path, index)
            info = {"package": found[0] if found else None,
                    "modified": bool(found and not found[1])}
            if d == paths.admin_plugin_dir:
                info = {"package": "local override (/etc)", "modified": False}
            for obj in (objects or {}).get(name, []):
                o = owner(obj, index)
                if o and not o[1]:
                    info["modified"] = True
            out[name] = info
    return out
