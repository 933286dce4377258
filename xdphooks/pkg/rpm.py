"""rpm: file digests from the rpm database.

The ``rpm`` Python bindings come with the system's rpm (python3-rpm), not from
PyPI in any useful form: pyproject lists the ``rpm`` shim, which finds the
system bindings, yet a virtualenv without system site-packages has none. This
is the one place that decides: the bindings when they import, else ``rpm -qf``
run with an argument list, else no rpm at all.
"""

from __future__ import annotations

import shutil
import subprocess
from types import ModuleType

from . import Record

NAME = "rpm"
TRIGGER_PREFIXES: tuple[str, ...] = ("rpm",)
CONTEXT_ENV: tuple[tuple[str, str], ...] = (("RPM_PACKAGE_NAME", "rpm_package"),)

# rpm's PGPHASHALGO numbers (FILEDIGESTALGO), and the names hashlib knows them by
ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
QF = "%{NAME}\t%{VERSION}-%{RELEASE}\t%{FILEDIGESTALGO}\n[%{FILENAMES}\t%{FILEDIGESTS}\n]"
BIN_PATH = "/usr/bin:/bin"


def bindings() -> ModuleType | None:
    """The rpm Python module, or None where it is missing."""
    try:
        import rpm
    except ImportError:
        return None
    return rpm


def _exe() -> str | None:
    return shutil.which("rpm", path=BIN_PATH)


def present() -> bool:
    return bindings() is not None or _exe() is not None


def record(path: str) -> Record | None:
    rpm = bindings()
    if rpm is None:
        return record_cli(path)
    try:
        ts = rpm.TransactionSet()
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

