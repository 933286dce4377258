"""xdphooks: several independently packaged XDP programs on one interface.

Plugin authors need only what this module exports::

    from xdphooks import XdpProgram, VerdictPolicy, hookimpl, veto, warn
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import pluggy

    #: Marker for hook implementations (see :mod:`xdphooks.hookspecs`).
    hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> Any:
    # pluggy is imported only where plugin code runs (the plugin host, a plugin's own
    # import): the coordinator never calls a hook, and pluggy is 10 ms of every run
    if name == "hookimpl":
        import pluggy

        globals()["hookimpl"] = marker = pluggy.HookimplMarker("xdphooks")
        return marker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
