"""The object that runs is the object the package shipped.

Before a chain is built, each object a package owns is hashed and compared with
the digest its package recorded (pkg/: rpm's file digests from the rpm
database, Debian's ``/var/lib/dpkg/info/<pkg>.md5sums``). A mismatch turns the object's facts
into an error naming the package and the file: the planner then refuses every
interface where the plugin runs, so the chain that runs keeps running.

An admin who replaced a packaged object on purpose (a local build) says so per
program: ``[programs.NAME] verify = false``. Objects no package owns, and
packaged files the package recorded no digest for, follow the existing trust
rules (security.read_trusted) only.
"""

from __future__ import annotations

import dataclasses

from . import pkg
from .config import Config
from .model import XdpProgram
from .paths import Paths
from .pkg import Record, record
from .planner import ObjectFacts

__all__ = ["Record", "record", "checked", "check", "status"]


def checked(paths: Paths, cfg: Config, prog: XdpProgram, facts: ObjectFacts) -> ObjectFacts:
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
    actual = pkg.file_hash(facts.path, rec.algorithm)
    if actual == rec.digest:
        return facts
    reinstall = pkg.manager(rec.manager).reinstall_command(rec.package)
    name = programs[0] if programs else "NAME"
    return dataclasses.replace(
        facts, error=f"object {facts.path} is not the file package {rec.label} installed "
        f"({rec.algorithm} {actual or 'unreadable'}, the package recorded {rec.digest}); "
        "it is not loaded",
        fix=f"reinstall the package ({reinstall}), or, for a local build, set "
            f"[programs.{name}] verify = false in {config_file}")


def status(path: str) -> dict[str, object] | None:
    """For ``status --json``: the owning package, the digest it recorded and whether
    the file matches it now; None if no package owns the object."""
    rec = record(path)
    if rec is None:
        return None
    return rec.as_dict(pkg.matches(path, rec))
