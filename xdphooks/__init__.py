"""xdphooks: several independently packaged XDP programs on one interface.

Plugin authors need only what this module exports::

    from xdphooks import XdpProgram, VerdictPolicy, hookimpl, veto, warn
"""

from __future__ import annotations

import pluggy

from .model import (
    ACTIONS,
    Chain,
    ChainEntry,
    Decision,
    InterfaceRef,
    Problem,
    VerdictPolicy,
    XdpProgram,
)

__version__ = "0.1.0"

#: Marker for hook implementations (see :mod:`xdphooks.hookspecs`).
hookimpl = pluggy.HookimplMarker("xdphooks")


def veto(message: str, fix: str = "") -> Problem:
    """A problem that refuses the planned change on one interface."""
    return Problem("error", None, message, fix)


def warn(message: str, fix: str = "") -> Problem:
    """A problem that is reported while the change goes ahead."""
    return Problem("warning", None, message, fix)


__all__ = [
    "ACTIONS",
    "Chain",
    "ChainEntry",
    "Decision",
    "InterfaceRef",
    "Problem",
    "VerdictPolicy",
    "XdpProgram",
    "hookimpl",
    "veto",
    "warn",
    "__version__",
]
