"""rpm: file digests from the rpm database.

The ``rpm`` Python bindings come with the system's rpm (python3-rpm), not from
PyPI in any useful form: pyproject lists the ``rpm`` shim, which finds the
system bindings, yet a virtualenv without system site-packages has none. This
is the one place that decides: the bindings when they import, else ``rpm -qf``
run with an argument list, else no rpm at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Any

from . import Record

NAME = "rpm"
TRIGGER_PREFIXES: tuple[str, ...] = ("rpm",)
CONTEXT_ENV: tuple[tuple[str, str], ...] = (("RPM_PACKAGE_NAME", "rpm_package"),)

# rpm's PGPHASHALGO numbers (FILEDIGESTALGO), and the names hashlib knows them by
ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
QF = "%{NAME}\t%{VERSION}-%{RELEASE}\t%{FILEDIGESTALGO}\n[%{FILENAMES}\t%{FILEDIGESTS}\n]"
BIN_PATH = "/usr/bin:/bin"


#: where a system Python keeps python3-rpm (Debian; Fedora/RHEL lib64 and lib)
_SYSTEM_SITES = ("/usr/lib/python3/dist-packages",
                 "/usr/lib64/python{v}/site-packages", "/usr/lib/python{v}/site-packages")


def _system_bindings() -> None:
    """In a virtualenv, import the system's python3-rpm from where it lies. The shim
    would find the same module by running every system interpreter (two processes,
    ~26 ms of a 130 ms reconcile on the development host); a miss leaves it to the shim."""
    import importlib.machinery

    if "rpm" in sys.modules or sys.prefix == sys.base_prefix:
        return  # imported already, or not a virtualenv: `import rpm` is the real one
    v = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for site in (s.format(v=v) for s in _SYSTEM_SITES):
        pkg = os.path.join(site, "rpm")
        if not os.path.isfile(os.path.join(pkg, "__init__.py")) or not any(
                os.path.isfile(os.path.join(pkg, "_rpm" + sfx))
                for sfx in importlib.machinery.EXTENSION_SUFFIXES):
            continue
        sys.path.insert(0, site)
        try:
            import rpm  # noqa: F401
            return
        except Exception:  # noqa: BLE001 - a foreign ABI, say: the shim decides
            for name in [m for m in sys.modules if m == "rpm" or m.startswith("rpm.")]:
                del sys.modules[name]
        finally:
            sys.path.remove(site)


def bindings() -> ModuleType | None:
    """The rpm Python module, or None where it is missing."""
    _system_bindings()
    try:
        import rpm
    except ImportError:
        return None
    return rpm


def _exe() -> str | None:
    return shutil.which("rpm", path=BIN_PATH)


def present() -> bool:
    return bindings() is not None or _exe() is not None


_READERS_TOUCH = ("-shm", ".lock")
#: the open database of the last query, and the state of its files it was opened on
_open_db: tuple[tuple[object, ...], object] | None = None
_dbpath: str | None = None


def _transaction_set(rpm: ModuleType) -> object:
    """One open rpmdb for the queries of a run. Opening it is 6 ms a query (a run asks
    for every plugin and object: seconds for a 128-program chain), a query on an open
    one 0.4 ms. It is opened again when the database directory or any file in it has
    changed (a transaction since, a test's other database), so a query never reads a
    stale handle: the key is every entry's (name, inode, size, mtime) there, but for
    the files readers touch too (sqlite's shared memory, locks, BerkeleyDB's regions)."""
    global _open_db, _dbpath
    if _dbpath is None:
        if _open_db is None:  # a run's only query (a noop) opens it as before, no more:
            _open_db = ((), None)  # the path costs a shell (Debian: %(echo $HOME)/.rpmdb)
            return rpm.TransactionSet()
        _dbpath = str(rpm.expandMacro("%{_dbpath}"))  # the second query: once
    dbpath = _dbpath
    try:
        with os.scandir(dbpath) as it:
            files = sorted((e.name, e.inode(), e.stat().st_size, e.stat().st_mtime_ns)
                           for e in it if not e.name.endswith(_READERS_TOUCH)
                           and not e.name.startswith("__db."))
        st = os.stat(dbpath)
        key: tuple[object, ...] = (dbpath, st.st_ino, st.st_mtime_ns, tuple(files))
    except OSError:
        key = (dbpath, None)
    if _open_db is None or _open_db[0] != key or _open_db[1] is None:
        _open_db = (key, rpm.TransactionSet())
    return _open_db[1]


def record(path: str) -> Record | None:
    rpm = bindings()
    if rpm is None:
        return record_cli(path)
    try:
        ts: Any = _transaction_set(rpm)
        for hdr in ts.dbMatch("basenames", path):
            for f in rpm.files(hdr):
                if f.name == path:
                    algo = ALGOS.get(hdr[rpm.RPMTAG_FILEDIGESTALGO] or 1, "md5")
                    name = hdr[rpm.RPMTAG_NAME]
                    return Record(name, f"{name}-{hdr[rpm.RPMTAG_VERSION]}-"
                                  f"{hdr[rpm.RPMTAG_RELEASE]} (rpm)", "rpm", algo, f.digest or "")
    except Exception:  # noqa: BLE001 - an unreadable rpmdb: as if no rpm owned it
        return None
    return None


def record_cli(path: str) -> Record | None:
    """``record`` through ``rpm -qf`` (no bindings, as in a virtualenv)."""
    exe = _exe()
    if exe is None:
        return None
    try:  # argument list, no shell: the path is data
        out = subprocess.run([exe, "-qf", "--qf", QF, "--", path], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # "file ... is not owned by any package"
    lines = out.stdout.splitlines()
    try:
        name, verrel, algo_no = lines[0].split("\t")
        algo = ALGOS.get(int(algo_no), "md5") if algo_no.isdigit() else "md5"
    except ValueError:
        return None
    for line in lines[1:]:
        fname, _, digest = line.partition("\t")
        if fname == path:
            return Record(name, f"{name}-{verrel} (rpm)", "rpm", algo, digest)
    return None


def reinstall_command(package: str) -> str:
    return f"dnf reinstall {package}"


def defer(trigger: str) -> str | None:
    return None  # rpm's %transfiletriggerin already runs once per transaction


def offline_root() -> str:
    return ""  # rpm --root runs scriptlets chrooted: the chroot check catches it

