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

import dataclasses
import fcntl
import json
import math
import os
import stat
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomicfile import write_atomic
from .errors import LockError, StateError, XdphooksError
from .security import ensure_private_dir, read_checked

STATE_VERSION = 1
XDP_MODES = ("native", "skb")  # config.XDP_MODES: the admin's choices, recorded per chain


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
    package: str = ""  # the package its plugin came from, when attached (for history)


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
class AliasRecord:
    """A map pinned where its program's own userspace expects it (xdphooks/pinalias.py)."""

    program: str
    plugin: str
    map: str
    map_id: int = 0


@dataclass
class State:
    version: int = STATE_VERSION
    generation: int = 0  # bumped on every build; names pin directories
    interfaces: dict[str, InterfaceRecord] = field(default_factory=dict)  # key: InterfaceRef.key
    last_run: dict[str, Any] = field(default_factory=dict)  # time, trigger, result, errors
    #: alias pin path -> whose map it is; xdphooks removes only the pins recorded here
    pin_aliases: dict[str, AliasRecord] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], pin_root: Path | None = None) -> "State":
        """Strict: raises Damage at the first thing wrong (see :func:`load` for the
        forgiving reader)."""
        st, problems = _from_dict(data, pin_root)
        if problems:
            raise Damage(problems[0])
        return st


# --- validation on load ------------------------------------------------------------------
#
# Everything in the file can be damaged (a torn disk, an editor) or planted (a
# backup restored from another host, a hand edit), and root acts on it: its keys
# name directories that reconcile removes, its pin paths are where recovery pins.
# So every value is checked against the dataclasses' own annotations (a field
# added to a record is covered without touching this), then against the rules
# the types cannot say (below). What fails is dropped, never half-trusted: a
# record, or the whole file; the coordinator rebuilds it from the kernel and the
# pins (recover.py, coordinator._adopt_running).

#: the state file's size limit: a few KiB per interface, so 16 MiB is thousands
STATE_MAX = 16 << 20
INT_RANGE = (-(1 << 63), 1 << 64)
TIME_MAX = 1e11  # seconds since the epoch (year 5138): what time.localtime() can show


class Damage(ValueError):
    """One thing wrong with the state file's contents (the message says what, where)."""


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (an annotation of the dataclasses here), or Damage.
    Floats must be finite (JSON from Python may hold NaN and Infinity)."""
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return check_value(value, arg, where)
            except Damage:
                continue
        raise Damage(f"{where} is {_show(value)}, not {_name(tp)}")
    if origin is dict:
        if not isinstance(value, dict):
            raise Damage(f"{where} is {_show(value)}, not a table")
        kt, vt = args or (Any, Any)
        return {check_value(k, kt, f"{where} key"): check_value(v, vt, f"{where}[{k!r}]")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise Damage(f"{where} is {_show(value)}, not a list")
        (et,) = args or (Any,)
        return [check_value(v, et, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise Damage(f"{where} is {_show(value)}, not null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise Damage(f"{where} is {_show(value)}, not true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) \
                or not INT_RANGE[0] <= value < INT_RANGE[1]:
            raise Damage(f"{where} is {_show(value)}, not an integer in range")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise Damage(f"{where} is {_show(value)}, not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise Damage(f"{where} is {_show(value)}, not a string")
        return value
    raise Damage(f"{where}: no rule for type {tp!r}")  # a new field of an unknown kind


def build(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from JSON ``data``: every field's type checked
    (from the annotations), required fields present; unknown keys are ignored (an
    older xdphooks reading a newer record of the same version)."""
    if not isinstance(data, dict):
        raise Damage(f"{where} is {_show(data)}, not a table")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Damage(f"{where} has no {f.name!r}")
            continue
        kwargs[f.name] = check_value(data[f.name], hints[f.name], f"{where}.{f.name}")
    obj = cls(**kwargs)
    for rule in _RULES.get(cls, ()):
        rule(obj, where)
    return obj


_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _hint_cache:
        _hint_cache[cls] = typing.get_type_hints(cls)
    return _hint_cache[cls]


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "a list"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _plain_parts(path: str, where: str) -> list[str]:
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise Damage(f"{where} {path!r} is not a plain path")
    return parts


def _record_rules(rec: "InterfaceRecord", where: str) -> None:
    from .backends import NAMES

    if rec.mode not in NAMES:
        raise Damage(f"{where}.mode {rec.mode!r} is not one of {', '.join(NAMES)}")
    if rec.xdp_mode not in XDP_MODES:
        raise Damage(f"{where}.xdp_mode {rec.xdp_mode!r} is not one of {', '.join(XDP_MODES)}")
    for name in ("ifindex", "prog_id", "generation"):
        if getattr(rec, name) < 0:
            raise Damage(f"{where}.{name} is negative")


def _program_rules(prog: "ProgramRecord", where: str) -> None:
    from .model import NAME_RE, VerdictPolicy

    if not NAME_RE.match(prog.name):
        raise Damage(f"{where}.name {prog.name!r} is not a program name")
    try:
        VerdictPolicy.from_mapping(prog.policy)
    except (ValueError, TypeError) as e:
        raise Damage(f"{where}.policy: {e}") from None
    if prog.slot < 0 or prog.prog_id < 0:
        raise Damage(f"{where}: negative slot or program id")


def check_record_paths(key: str, rec: "InterfaceRecord", pin_root: Path | None,
                       where: str) -> None:
    """A record's pin paths stay inside the pin tree: ``pin_dir`` is
    ``<pin root>/if/<key>/g<N>-<fingerprint>`` and every recorded pin is
    ``if/<key>/<generation>/<name>`` or ``maps/<program>/<map>`` (relative to the pin
    root) — recovery pins there, so nothing else is acceptable."""
    from .model import InterfaceRef
    from .paths import PIN_TREE, parse_gen_dir, valid_iface_key

    if not valid_iface_key(key):
        raise Damage(f"interface key {key!r} is not one (NETNS@IFNAME, no '/' or '..')")
    if InterfaceRef(rec.netns, rec.name).key != key:
        raise Damage(f"{where} names {rec.netns or '-'}@{rec.name}, not its key")
    parts = _plain_parts(rec.pin_dir.removeprefix("/"), f"{where}.pin_dir")
    if len(parts) < 4 \
            or parts[-4:-1] != [PIN_TREE, "if", key] or parse_gen_dir(parts[-1]) is None:
        raise Damage(f"{where}.pin_dir {rec.pin_dir!r} is not <pin root>/if/{key}/g<N>-<fp>")
    if pin_root is not None and Path(rec.pin_dir).parent.parent.parent not in (
            Path(pin_root), Path(os.path.normpath(os.path.abspath(pin_root)))):
        raise Damage(f"{where}.pin_dir {rec.pin_dir!r} is not inside the pin root {pin_root}")
    for rel, oid in rec.pins.items():
        rp = _plain_parts(rel, f"{where}.pins")
        ok = (len(rp) == 4 and rp[:2] == ["if", key] and parse_gen_dir(rp[2]) is not None) \
            or (len(rp) == 3 and rp[0] == "maps")
        if not ok or oid < 0:
            raise Damage(f"{where}.pins: {rel!r} is not a pin path of this interface")


LAST_RUN: dict[str, Any] = {"time": float, "trigger": str, "applied": list[str],
                            "failed": dict[str, str], "problems": list[str],
                            "refused": dict[str, str], "foreign": dict[str, int]}


def _from_dict(data: Any, pin_root: Path | None) -> tuple[State, list[str]]:
    """(what is sound, what was dropped and why)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return State(), [f"the file holds {_show(data)}, not a table"]
    try:
        version = check_value(data.get("version"), int, "version")
        generation = check_value(data.get("generation", 0), int, "generation")
        if generation < 0:
            raise Damage("generation is negative")
    except Damage as e:
        return State(), [str(e)]
    ifaces: dict[str, InterfaceRecord] = {}
    raw = data.get("interfaces", {})
    if not isinstance(raw, dict):
        problems.append(f"interfaces is {_show(raw)}, not a table")
        raw = {}
    for key, rec in raw.items():
        where = f"interfaces[{key!r}]"
        try:
            built = build(InterfaceRecord, rec, where)
            check_record_paths(key, built, pin_root, where)
        except Damage as e:
            problems.append(str(e))
            continue
        ifaces[key] = built
    last_run = data.get("last_run", {})
    try:
        last_run = check_value(last_run, dict[str, Any], "last_run")
        for k, tp in LAST_RUN.items():
            if k in last_run:
                last_run[k] = check_value(last_run[k], tp, f"last_run.{k}")
        if not 0 <= last_run.get("time", 0) < TIME_MAX:
            raise Damage(f"last_run.time {last_run['time']} is not a time")
    except Damage as e:
        problems.append(str(e))
        last_run = {}
    aliases: dict[str, AliasRecord] = {}
    raw = data.get("pin_aliases", {})
    for path, rec in (raw.items() if isinstance(raw, dict) else ()):
        try:  # an alias path is only ever unlinked if it still holds the recorded map
            if not isinstance(path, str) or not path.startswith("/"):
                raise Damage(f"pin_aliases key {path!r} is not an absolute path")
            aliases[path] = build(AliasRecord, rec, f"pin_aliases[{path!r}]")
        except Damage as e:
            problems.append(str(e))
    return State(version=version, generation=generation, interfaces=ifaces,
                  last_run=last_run, pin_aliases=aliases), problems


def load(path: Path, pin_root: Path | None = None) -> tuple[State, str]:
    """Read the state; returns (state, warning). Whatever is missing, unreadable or
    damaged (not a regular root-owned file, not JSON, a key or a type wrong, a path
    leading outside the pin tree) is dropped with ONE warning naming the file: the
    coordinator rebuilds it from the kernel and the pins. ``pin_root`` (when the
    caller knows it) also pins every record's ``pin_dir`` below it."""
    try:
        raw = read_checked(path, "state file", limit=STATE_MAX, owners=(0, os.geteuid()))
    except FileNotFoundError:
        return State(), ""
    except (OSError, XdphooksError) as e:
        why = ("it " + e.message.removeprefix(f"state file {path} ")
               if isinstance(e, XdphooksError) else f"cannot read it: {e.strerror or e}")
        return State(), _warning(path, [why])
    try:
        data = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return State(), _warning(path, [f"not JSON: {type(e).__name__}"])
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > STATE_VERSION:
        raise StateError(f"{path} was written by a newer xdphooks (state version {version}, "
                         f"this one knows {STATE_VERSION})",
                         fix="upgrade xdphooks, or move the file away and run reconcile")
    try:
        st, problems = _from_dict(data, pin_root)
    except RecursionError:
        return State(), _warning(path, ["nested too deeply"])
    return st, _warning(path, problems) if problems else ""


def _warning(path: Path, problems: list[str]) -> str:
    more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return (f"state file {path} is corrupt ({problems[0]}{more}); what is dropped is read "
            "from the kernel and the pins instead — fix: none needed; 'xdphooks reconcile' "
            "(as root) rewrites it")


_RULES = {InterfaceRecord: (_record_rules,), ProgramRecord: (_program_rules,)}


def save(path: Path, state: State) -> None:
    """Atomic replace: readers see the old or the new file, never half of one."""
    ensure_private_dir(path.parent, 0o755)
    _move_aside(path)
    write_atomic(path, state.to_json(), durable=True)


def _move_aside(path: Path) -> None:
    """Something not a regular file where the state goes (a directory, a FIFO: planted or
    damaged; load() said so) is renamed aside in xdphooks' own directory, kept for
    inspection, so that the new state can be written. Nothing is deleted."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        os.rename(path, path.with_name(f"{path.name}.damaged-{time.time_ns()}"))


_LOCK_POLL = 0.05  # s between two tries while another run holds the lock


class Lock:
    """The coordinator's lock: flock on a file in a root-only directory."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock: int | None = None

    def __enter__(self) -> "Lock":
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
        # flock(2) directly: the filelock package cost 9 ms of imports in every run.
        # The lock is the open file description: released when the holder dies.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 >= self.timeout:
                    os.close(fd)
                    raise LockError(f"another xdphooks has held {self.path} for over "
                                    f"{self.timeout:g} s", fix="wait for it to finish, or "
                                    f"find it with: fuser -v {self.path}") from None
                time.sleep(_LOCK_POLL)
            except BaseException:
                os.close(fd)
                raise
        self._lock = fd
        self.waited = time.monotonic() - t0
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            fd, self._lock = self._lock, None
            os.close(fd)  # closing the only description releases the flock
