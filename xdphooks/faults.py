"""Crash injection for the reliability suite (tests/test_crash.py).

``XDPHOOKS_CRASH_AT=<point>`` makes a run SIGKILL itself when it reaches that
point, so the tests can prove that a crash anywhere leaves the old or the new
chain attached and that the next run converges. Unset, it costs one dict
lookup per point. It is no privilege boundary: whoever sets a root process's
environment can already kill it (sudo and package managers do not pass it on).
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-load", "after-pin", "after-swap", "before-state-write",
          "after-state-write", "during-cleanup", "after-detach")

_AT = os.environ.get("XDPHOOKS_CRASH_AT", "")


def crashpoint(name: str) -> None:
    if _AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
