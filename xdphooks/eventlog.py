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
import os
import socket
import syslog
import time
from pathlib import Path

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
    for var, key in (("DPKG_MAINTSCRIPT_PACKAGE", "dpkg_package"),
                     ("DPKG_RUNNING_VERSION", "dpkg_version"),
                     ("RPM_PACKAGE_NAME", "rpm_package"), ("SUDO_USER", "sudo_user")):
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


def _to_file(record: dict) -> None:
    if _log_file is None:
        return
    try:
        if _log_file.exists() and _log_file.stat().st_size > MAX_LOG:
            os.replace(_log_file, _log_file.with_suffix(".log.1"))
        fd = os.open(_log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError:
        pass


def read_history(path: Path, limit: int = 50) -> list[dict]:
    """The newest ``limit`` change records (older file first)."""
    out: list[dict] = []
    for p in (path.with_suffix(".log.1"), path):
        try:
            lines = p.read_text().splitlines()
        except OSError:
            continue
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
    return out[-limit:] if limit else out
