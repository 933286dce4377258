"""Shared state between xdphooks processes, and the lock that serialises them.

Protocol (see docs/protocol.md):

- One lock, ``<root>/run/xdphooks/lock`` (directory 0700, root-owned), held by
  every writer over the whole read → plan → build → swap → record → clean-up.
  ``flock`` semantics: a holder that dies releases it.
- ``<root>/var/lib/xdphooks/state.json`` is a cache of what we attached,
  written atomically (temp file, fsync, rename, fsync dir). The kernel is the
  truth: an entry whose ``prog_id`` is no longer attached is stale and rebuilt.
- Pins under ``<bpffs>/xdphooks/``: ``if/<ns>@<ifname>/g<N>/root`` (and
  counters, events, per-program pins) per chain generation;
  ``maps/<program>/<map>`` for maps that persist across generations.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomicfile import write_atomic
from .errors import LockError, StateError
from .security import ensure_private_dir

STATE_VERSION = 1


@dataclass
class ProgramRecord:
    name: str
    plugin: str
    priority: int
    policy: dict[str, str]
    object: str
    program: str | None
    digest: str
    prog_id: int
    slot: int
    link: str = ""  # static: "spliced" | "called"; freplace: "freplace"
    link_reason: str = ""  # why a program asked to be spliced was called
    constants: dict[str, Any] = field(default_factory=dict)  # its const volatile values
    maps: dict[str, Any] = field(default_factory=dict)  # its XdpProgram.maps settings


@dataclass
class InterfaceRecord:
    netns: str
    name: str
    ifindex: int
    mode: str
    prog_id: int
    fingerprint: str
    generation: int
    pin_dir: str
    xdp_mode: str
    programs: list[ProgramRecord]
    updated: float = 0.0
    trigger: str = ""
    # What the kernel called the chain when it was pinned, so that it is recognised
    # (and re-pinned) from the kernel if the pins are lost: xdphooks/recover.py.
    root_name: str = ""
    root_tag: str = ""
    pins: dict[str, int] = field(default_factory=dict)  # pin path under the pin root -> id
    # The namespace the interface is in, as the kernel identifies it ("dev:inode" of
    # its nsfs file, kernel/netns.identity): a run in another namespace leaves the
    # record alone. "" in state files written before it (checked by ifindex only).
    netns_id: str = ""


@dataclass
class State:
    version: int = STATE_VERSION
    generation: int = 0  # bumped on every build; names pin directories
    interfaces: dict[str, InterfaceRecord] = field(default_factory=dict)  # key: InterfaceRef.key
    last_run: dict[str, Any] = field(default_factory=dict)  # time, trigger, result, errors

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "State":
        ifaces = {}
        for key, rec in data.get("interfaces", {}).items():
            progs = [ProgramRecord(**p) for p in rec.pop("programs", [])]
            ifaces[key] = InterfaceRecord(programs=progs, **rec)
        return cls(version=data["version"], generation=int(data.get("generation", 0)),
                   interfaces=ifaces, last_run=data.get("last_run", {}))


def load(path: Path) -> tuple[State, str]:
    """Read the state; returns (state, warning). A missing or corrupt file gives an
    empty state and a warning: the coordinator rebuilds from the kernel and pins."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return State(), ""
    try:
        data = json.loads(raw)
        version = data.get("version")
        if isinstance(version, int) and version > STATE_VERSION:
            raise StateError(f"{path} was written by a newer xdphooks (state version {version}, "
                             f"this one knows {STATE_VERSION})",
                             fix="upgrade xdphooks, or move the file away and run reconcile")
        return State.from_dict(data), ""
    except StateError:
        raise
    except Exception as e:  # noqa: BLE001 - any damage means "rebuild"
        return State(), (f"state file {path} is corrupt ({type(e).__name__}); what runs is "
                         "read from the kernel and the pins instead — fix: none needed; "
                         "'xdphooks reconcile' (as root) rewrites it")


def save(path: Path, state: State) -> None:
    """Atomic replace: readers see the old or the new file, never half of one."""
    ensure_private_dir(path.parent, 0o755)
    write_atomic(path, state.to_json(), durable=True)


class Lock:
    """The coordinator's lock: flock on a file in a root-only directory."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = None

    def __enter__(self) -> "Lock":
        import filelock

        ensure_private_dir(self.path.parent, 0o700)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise LockError(f"lock {self.path} is a symlink (planted?)",
                            fix=f"remove {self.path} and run again")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise LockError(f"lock {self.path} is not a regular file (planted?)",
                            fix=f"remove {self.path} and run again")
        if st is not None and st.st_uid != os.geteuid():
            raise LockError(f"lock {self.path} is owned by uid {st.st_uid}, not "
                            f"{'root' if os.geteuid() == 0 else os.geteuid()} (planted?)",
                            fix=f"remove {self.path} and run again")
        self._lock = filelock.UnixFileLock(str(self.path), timeout=self.timeout)
        t0 = time.monotonic()
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise LockError(f"another xdphooks has held {self.path} for over "
                            f"{self.timeout:g} s", fix="wait for it to finish, or find it "
                            f"with: fuser -v {self.path}") from None
        self.waited = time.monotonic() - t0
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
