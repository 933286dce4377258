"""Every change is logged, with what changed, where, why and which package
transaction caused it:

* to the journal through its native socket, with structured fields
  (``journalctl -t xdphooks``, ``journalctl XDPHOOKS_INTERFACE=ns/veth0``);
* to syslog (``/dev/log``) where there is no journal;
* always to ``<state_dir>/changes.log`` (JSON lines, written by root only, rotated at
  1 MiB): the record ``xdphooks history`` reads, kept even on hosts with
  neither daemon.

Logging never fails a run: a change that happened must not be undone
because a log socket was missing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import syslog
import time
from pathlib import Path
from typing import Any, Mapping

from . import pkg
from .errors import fix_suffix
from .text import LINE_LIMIT, one_line

JOURNAL_SOCKET = os.environ.get("XDPHOOKS_JOURNAL_SOCKET", "/run/systemd/journal/socket")
MAX_LOG = 1 << 20
_log_file: Path | None = None


def set_log_file(path: Path) -> None:
    """Where the local change record goes (the coordinator sets it per run)."""
    global _log_file
    _log_file = path


def transaction_context(trigger: str) -> dict[str, str]:
    """Which package transaction caused this run, as far as the environment tells."""
    ctx = {"trigger": trigger}
    for var, key in (*pkg.context_env(), ("SUDO_USER", "sudo_user")):
        if os.environ.get(var):
            ctx[key] = os.environ[var]
    return ctx


def log_event(message: str, trigger: str = "manual", error: bool = False,
              interface: str = "", action: str = "", packages: tuple[str, ...] = ()) -> None:
    # the last guard: messages carry plugin text (exception messages, names), and
    # the environment's values are anyone's; every field is one escaped line
    message, interface, action = one_line(message, LINE_LIMIT), one_line(interface), \
        one_line(action)
    ctx = {k: one_line(v) for k, v in transaction_context(trigger).items()}
    if packages:
        ctx["packages"] = one_line(", ".join(packages))
    line = f"{message} ({' '.join(f'{k}={v}' for k, v in ctx.items())})"
    _to_file({"time": time.time(), "message": message, "interface": interface,
              "action": action, "error": error, **ctx})
    if os.environ.get("XDPHOOKS_NO_SYSLOG"):  # the test suite: not the host's journal
        return
    fields = {"MESSAGE": line, "PRIORITY": "3" if error else "5",
              "SYSLOG_IDENTIFIER": "xdphooks", "XDPHOOKS_ACTION": action,
              "XDPHOOKS_INTERFACE": interface,
              **{f"XDPHOOKS_{k.upper()}": v for k, v in ctx.items()}}
    if not _to_journal(fields):
        _to_syslog(line, error)


def _to_journal(fields: dict[str, str]) -> bool:
    # Native protocol: KEY=VALUE lines; a value with a newline uses the binary form.
    payload = b""
    for k, v in fields.items():
        if not v:
            continue
        b = str(v).encode()
        if b"\n" in b:
            payload += k.encode() + b"\n" + len(b).to_bytes(8, "little") + b + b"\n"
        else:
            payload += k.encode() + b"=" + b + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(payload, JOURNAL_SOCKET)
        return True
    except OSError:
        return False


def _to_syslog(line: str, error: bool) -> None:
    syslog.openlog("xdphooks", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_NOTICE, line)


def _to_file(record: dict[str, Any]) -> None:
    if _log_file is None:
        return
    try:
        if _log_file.exists() and _log_file.stat().st_size > MAX_LOG:
            os.replace(_log_file, _log_file.with_suffix(".log.1"))
        fd = os.open(_log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)  # a planted FIFO: ENXIO, no hang
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError:
        pass


#: how much of a log file the readers look at: its newest part (the change log rotates
#: at MAX_LOG; the events log is read for its last lines only)
READ_TAIL = 4 << 20


def read_lines(path: Path, what: str, tail: int = READ_TAIL) -> list[str]:
    """The last ``tail`` bytes of a log file as lines (the cut first line dropped), read
    without blocking or following a symlink; [] if it is missing or not a regular file
    (a warning for the latter is the caller's, from :func:`log_file_problem`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return []
        start = max(0, st.st_size - tail)
        os.set_blocking(fd, True)
        data = os.pread(fd, tail, start)
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").split("\n")
    if start:
        lines = lines[1:]
    return [ln for ln in lines if ln.strip()]


def log_file_problem(path: Path, what: str) -> str:
    """A warning if ``path`` exists and is not a regular file (a FIFO, a directory)."""
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    if stat.S_ISREG(st.st_mode):
        return ""
    from .security import file_kind

    return (f"{what} {path} is {file_kind(st.st_mode)}, not a regular file; it is not read"
            + fix_suffix(f"remove {path} (xdphooks writes a new one)"))


def parse_records(lines: list[str], fields: Mapping[str, tuple[type, ...]],
                  required: tuple[str, ...]) -> tuple[list[dict[str, Any]], int]:
    """JSON-lines records whose ``fields`` have the given types (numbers finite), and how
    many lines were not such a record (torn by a crash, or garbage): those are
    skipped, never fatal. Unknown keys must hold strings (context added by newer
    writers)."""
    out, bad = [], 0
    for ln in lines:
        try:
            rec = json.loads(ln)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if not isinstance(rec, dict) or not all(k in rec for k in required) \
                or not all(_typed(rec[k], fields.get(k, (str,))) for k in rec):
            bad += 1
            continue
        out.append(rec)
    return out, bad


def _typed(value: object, types_: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types_:
        return False
    if not isinstance(value, types_):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def skipped_warning(path: Path, bad: int, what: str) -> str:
    return (f"{what} {path}: skipped {bad} damaged line(s) (torn by a crash, or not "
            "xdphooks' records)" + fix_suffix("none needed; remove the file to start a fresh log"))


#: a change record (log_event): time and error typed, everything else strings
CHANGE_FIELDS = {"time": (int, float), "error": (bool,)}
CHANGE_REQUIRED = ("time", "message")
TIME_MAX = 1e11  # seconds since the epoch: year 5138, beyond any real record


def read_history(path: Path, limit: int = 50,
                 warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` change records (older file first). Damaged lines are skipped;
    with ``warnings``, one warning saying how many is appended to it."""
    out: list[dict[str, Any]] = []
    bad = 0
    for p in (path.with_suffix(".log.1"), path):
        recs, n = parse_records(read_lines(p, "change log"), CHANGE_FIELDS, CHANGE_REQUIRED)
        sane = [r for r in recs if 0 <= r["time"] < TIME_MAX]  # localtime() copes with it
        n += len(recs) - len(sane)
        recs = sane
        out += recs
        bad += n
        if warnings is not None and (problem := log_file_problem(p, "change log")):
            warnings.append(problem)
    if bad and warnings is not None:
        warnings.append(skipped_warning(path, bad, "change log"))
    return out[-limit:] if limit else out
