"""Every change goes to the journal (through syslog, which journald collects)."""

from __future__ import annotations

import os
import syslog

_opened = False


def _trigger_context(trigger: str) -> str:
    """Which package transaction caused this run, as far as the environment tells."""
    bits = [f"trigger={trigger}"]
    pkg = os.environ.get("DPKG_MAINTSCRIPT_PACKAGE")
    if pkg:
        bits.append(f"dpkg-package={pkg}")
    for var in ("RPM_PACKAGE_NAME", "SUDO_USER"):
        if os.environ.get(var):
            bits.append(f"{var.lower()}={os.environ[var]}")
    return " ".join(bits)


def log_event(message: str, trigger: str = "manual", error: bool = False) -> None:
    global _opened
    if os.environ.get("XDPHOOKS_NO_SYSLOG"):
        return
    if not _opened:
        syslog.openlog("xdphooks", syslog.LOG_PID, syslog.LOG_DAEMON)
        _opened = True
    syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_NOTICE,
                  f"{message} ({_trigger_context(trigger)})")
