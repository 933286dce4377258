"""The seam to the system's package managers: which package owns a file and what
digest it recorded for it, and what a package transaction looks like from inside
(its environment, how to defer a reconcile, an offline root).

Each manager is one module implementing ``PackageManager``; adding pacman or apk
is a module plus its line in ``KNOWN``. Callers (provenance, verify, eventlog,
cli) ask this package, never a manager by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from ..errors import PermissionRefused
from ..security import read_regular


@dataclass(frozen=True)
class Record:
    """What the owning package recorded for one file."""

    package: str  # name only: what to reinstall
    label: str  # name, version and format, for people
    manager: str  # "deb" | "rpm"
    algorithm: str  # hashlib name
    digest: str  # "" if the package recorded none

    def as_dict(self, ok: bool | None) -> dict[str, object]:
        return {"package": self.label, "algorithm": self.algorithm,
                "digest": self.digest, "ok": ok}


class PackageManager(Protocol):
    """One package manager, as xdphooks needs it (module-level functions and
    constants of pkg/<manager>.py)."""

    NAME: str  # "deb" | "rpm": Record.manager and the label suffix
    TRIGGER_PREFIXES: tuple[str, ...]  # `--trigger` values its hooks pass
    CONTEXT_ENV: tuple[tuple[str, str], ...]  # (environment variable, log key)

    def present(self) -> bool:
        """Whether this system has the manager's database or tool."""
        ...

    def record(self, path: str) -> Record | None:
        """The owning package's record of ``path``, or None if it owns none."""
        ...

    def reinstall_command(self, package: str) -> str:
        """The command that puts the package's files back, for a fix."""
        ...

    def defer(self, trigger: str) -> str | None:
        """Inside another package's transaction: hand the reconcile to the
        manager's own end-of-transaction hook; the line to print, or None."""
        ...

    def offline_root(self) -> str:
        """Non-empty (the reason) when the transaction installs into another root."""
        ...


def _known() -> tuple[PackageManager, ...]:
    # dpkg first: its index is in memory, an rpm query is not
    from . import dpkg, rpm
    known: tuple[PackageManager, ...] = (dpkg, rpm)  # mypy checks each against the protocol
    return known


def present() -> list[PackageManager]:
    """The managers this system has (decided per call: tests move their databases)."""
    return [m for m in _known() if m.present()]


def file_hash(path: str, algo: str) -> str | None:
    """``path``'s digest, or None if it is not a readable regular file."""
    try:  # a FIFO or an 8 GiB file where a package's object was: no digest, no hang
        return hashlib.new(algo, read_regular(path, "BPF object" if path.endswith(".o")
                                              else "plugin file")).hexdigest()
    except (OSError, PermissionRefused):
        return None


def record(path: str) -> Record | None:
    """The owning package's record of ``path``, or None if no package owns it."""
    for m in present():
        rec = m.record(path)
        if rec is not None:
            return rec
    return None


def matches(path: str, rec: Record) -> bool | None:
    """Whether ``path`` is still the file its package installed (None: no digest recorded)."""
    return file_hash(path, rec.algorithm) == rec.digest if rec.digest else None


def manager(name: str) -> PackageManager:
    """The manager whose Record.manager is ``name``."""
    return next(m for m in _known() if m.NAME == name)


def context_env() -> tuple[tuple[str, str], ...]:
    """(environment variable, log key) of every manager's transaction context;
    all known managers: a variable set is a transaction whatever is installed."""
    return tuple(pair for m in _known() for pair in m.CONTEXT_ENV)


def is_package_trigger(trigger: str) -> bool:
    """Whether ``--trigger`` names a package manager's hook."""
    return any(trigger.startswith(m.TRIGGER_PREFIXES) for m in _known())


def defer(trigger: str) -> str | None:
    for m in _known():
        said = m.defer(trigger)
        if said is not None:
            return said
    return None


def offline_root() -> str:
    for m in _known():
        why = m.offline_root()
        if why:
            return why
    return ""
