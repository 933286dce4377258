"""The object that runs is the object the package shipped.

Before a chain is built, each object a package owns is hashed and compared with
the digest its package recorded: rpm's file digests from the rpm database
(the ``rpm`` Python module, or ``rpm -qf --qf`` run with an argument list where
the module is missing, as in a virtualenv), Debian's
``/var/lib/dpkg/info/<pkg>.md5sums``. A mismatch turns the object's facts
into an error naming the package and the file: the planner then refuses every
interface where the plugin runs, so the chain that runs keeps running.

An admin who replaced a packaged object on purpose (a local build) says so per
program: ``[programs.NAME] verify = false``. Objects no package owns, and
packaged files the package recorded no digest for, follow the existing trust
rules (security.read_trusted) only.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass

from .planner import ObjectFacts
from .provenance import DPKG_INFO, _dpkg_index, _dpkg_version, _file_hash

# rpm's PGPHASHALGO numbers (FILEDIGESTALGO), and the names hashlib knows them by
RPM_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
RPM_QF = "%{NAME}\t%{VERSION}-%{RELEASE}\t%{FILEDIGESTALGO}\n[%{FILENAMES}\t%{FILEDIGESTS}\n]"


@dataclass(frozen=True)
class Record:
    """What the owning package recorded for one file."""

    package: str  # name only: what to reinstall
    label: str  # name, version and format, for people
    manager: str  # "deb" | "rpm"
    algorithm: str  # hashlib name
    digest: str  # "" if the package recorded none

    def as_dict(self, ok: bool | None) -> dict:
        return {"package": self.label, "algorithm": self.algorithm,
                "digest": self.digest, "ok": ok}


def _rpm_record(path: str) -> Record | None:
    try:
        import rpm
    except ImportError:
        return _rpm_record_cli(path)
    try:
        ts = rpm.TransactionSet()
        for hdr in ts.dbMatch("basenames", path):
            for f in rpm.files(hdr):
                if f.name == path:
                    algo = RPM_ALGOS.get(hdr[rpm.RPMTAG_FILEDIGESTALGO] or 1, "md5")
                    name = hdr[rpm.RPMTAG_NAME]
                    return Record(name, f"{name}-{hdr[rpm.RPMTAG_VERSION]}-"
                                  f"{hdr[rpm.RPMTAG_RELEASE]} (rpm)", "rpm", algo, f.digest or "")
    except Exception:  # noqa: BLE001 - an unreadable rpmdb: as if no rpm owned it
        return None
    return None


def _rpm_record_cli(path: str) -> Record | None:
    exe = shutil.which("rpm", path="/usr/bin:/bin")
    if exe is None:
        return None
    try:  # argument list, no shell: the path is data
        out = subprocess.run([exe, "-qf", "--qf", RPM_QF, "--", path], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # "file ... is not owned by any package"
    lines = out.stdout.splitlines()
    try:
        name, verrel, algo_no = lines[0].split("\t")
        algo = RPM_ALGOS.get(int(algo_no), "md5") if algo_no.isdigit() else "md5"
    except ValueError:
        return None
    for line in lines[1:]:
        fname, _, digest = line.partition("\t")
        if fname == path:
            return Record(name, f"{name}-{verrel} (rpm)", "rpm", algo, digest)
    return None


def _dpkg_record(path: str) -> Record | None:
    pkg = _dpkg_index().get(path)
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
                    return Record(pkg, label, "deb", "md5", digest)
        except OSError:
            continue
    return Record(pkg, label, "deb", "md5", "")


def record(path: str) -> Record | None:
    """The owning package's record of ``path``, or None if no package owns it (dpkg's
    index first: it is in memory, an rpm query is not)."""
    return _dpkg_record(path) or _rpm_record(path)


def checked(paths, cfg, prog, facts: ObjectFacts) -> ObjectFacts:
    """The coordinator's call: ``prog``'s object checked unless the admin said
    ``[programs.NAME] verify = false``."""
    override = cfg.programs.get(prog.name)
    return check(facts, (prog.name,), override is not None and not override.verify,
                 str(paths.config_file))


def check(facts: ObjectFacts, programs: tuple[str, ...], skip: bool,
          config_file: str) -> ObjectFacts:
    """``facts`` unchanged, or with an error if the object is not what its package
    shipped. ``programs``: the programs declared from it (for the fix)."""
    if skip or facts.error:
        return facts
    rec = record(facts.path)
    if rec is None or not rec.digest:
        return facts
    actual = _file_hash(facts.path, rec.algorithm)
    if actual == rec.digest:
        return facts
    reinstall = (f"apt-get install --reinstall {rec.package}" if rec.manager == "deb"
                 else f"dnf reinstall {rec.package}")
    name = programs[0] if programs else "NAME"
    return dataclasses.replace(
        facts, error=f"object {facts.path} is not the file package {rec.label} installed "
        f"({rec.algorithm} {actual or 'unreadable'}, the package recorded {rec.digest}); "
        "it is not loaded",
        fix=f"reinstall the package ({reinstall}), or, for a local build, set "
            f"[programs.{name}] verify = false in {config_file}")


def status(path: str) -> dict | None:
    """For ``status --json``: the owning package, the digest it recorded and whether
    the file matches it now; None if no package owns the object."""
    rec = record(path)
    if rec is None:
        return None
    ok = (_file_hash(path, rec.algorithm) == rec.digest) if rec.digest else None
    return rec.as_dict(ok)
