"""Crash injection for the reliability suite (tests/test_crash.py).

``XDPHOOKS_CRASH_AT=<point>`` makes a run SIGKILL itself when it reaches that
point, so the tests can prove that a crash anywhere leaves the old or the new
chain attached and that the next run converges. ``<point>:<SIGNAL>`` sends that signal instead (``after-swap:INT``,
``after-pin:TERM``, ``before-state-write:HUP``; ``:STOP`` freezes the run there so a
test can change the world, e.g. fill the disk, and ``SIGCONT`` it; ``:RAISE``
raises an exception there): the hostile-
transaction tests (tests/test_hostile_txn.py) deliver signals at exact steps with
it. Unset, it costs one comparison per point. It is no privilege boundary: whoever sets a root process's
environment can already kill it (sudo and package managers do not pass it on).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

POINTS = ("after-load", "after-pin", "after-swap", "before-state-write",
          "after-state-write", "during-cleanup", "after-detach")

_AT, _, _SIG = os.environ.get("XDPHOOKS_CRASH_AT", "").partition(":")


class InjectedFault(RuntimeError):
    """``<point>:RAISE``: an unexpected error at that point (a bug's stand-in)."""


def crashpoint(name: str) -> None:
    if _AT == name and _SIG == "RAISE":
        raise InjectedFault(f"fault injected at {name}")
    if _AT == name:
        os.kill(os.getpid(), getattr(signal, f"SIG{_SIG}") if _SIG else signal.SIGKILL)


def runpoint(name: str) -> None:
    """``XDPHOOKS_RUN_AT=<point>`` with ``XDPHOOKS_RUN_ARGV=<JSON argv list>`` runs that
    command when the run reaches the point: a test makes the world change at the
    worst moment (an interface renamed between resolving and swapping). An argv
    list, never a shell string; the same trust as XDPHOOKS_CRASH_AT."""
    if os.environ.get("XDPHOOKS_RUN_AT") == name:
        subprocess.run(json.loads(os.environ["XDPHOOKS_RUN_ARGV"]), check=False,
                       stdin=subprocess.DEVNULL)
