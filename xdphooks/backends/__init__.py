"""Backends turn a planned :class:`~xdphooks.model.Chain` into one loaded XDP
program ready to attach; the coordinator does the attaching, pinning and state.

Each backend is one module of this package implementing :class:`Backend`
(module-level ``MODE``, ``usable()`` and ``build()``), and :data:`Mode` is the
typed sum of their names, as bpfman's ``enum Dispatcher`` is of its
dispatchers. Everything that names a mode — config validation, ``mode =
"auto"``, a plugin's ``xdphooks_select_mode`` answer — goes through here, so a
third backend is one new module plus its name in :data:`Mode`.

- ``freplace`` — dispatcher whose slots are replaced by the components.
- ``static``   — rootlet + rewritten components linked into one program.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast, get_args, runtime_checkable

if TYPE_CHECKING:
    from ..paths import Paths
    from .base import BuildContext, BuiltChain

#: The backends, in ``mode = "auto"`` preference: the first usable one wins.
Mode = Literal["freplace", "static"]
NAMES: tuple[Mode, ...] = get_args(Mode)
AUTO = "auto"


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides."""

    #: its name in :data:`Mode` (and in ``mode =`` of the config)
    MODE: str

    def usable(self, paths: "Paths") -> tuple[bool, str]:
        """Can this kernel run it? (answer, why in a few words). May probe, cached."""
        ...

    def build(self, ctx: "BuildContext") -> "BuiltChain":
        """Load ``ctx.chain`` (pre-flighted, not attached); raise XdphooksError if it cannot."""
        ...


@dataclass(frozen=True)
class Choice:
    """The mode for this run's chains, why, and which modes a plugin may pick instead."""

    mode: Mode
    why: str
    usable: frozenset[Mode]


def is_mode(name: object) -> bool:
    return name in NAMES


def get(mode: str) -> Backend:
    if not is_mode(mode):
        raise ValueError(f"unknown backend {mode!r}")
    return cast(Backend, importlib.import_module(f"{__name__}.{mode}"))


def choose(paths: "Paths", configured: str) -> Choice:
    """A configured mode is used as is; ``auto`` takes the first usable backend and
    says why the ones before it were passed over."""
    if configured != AUTO:
        mode = cast(Mode, configured)
        return Choice(mode, "configured", frozenset((mode,)))
    usable: list[Mode] = []
    passed_over: list[str] = []
    why_first = ""
    for name in NAMES:
        try:
            ok, why = get(name).usable(paths)
        except ImportError:  # a packaging that leaves a backend out
            ok, why = False, f"{name} backend not installed"
        if ok:
            usable.append(name)
            why_first = why_first or why
        elif not usable:
            passed_over.append(why)
    if not usable:
        raise RuntimeError("no usable backend")  # static is always usable
    return Choice(usable[0], "auto: " + ("; ".join(passed_over) or why_first), frozenset(usable))


if TYPE_CHECKING:  # mypy checks that every backend module implements the protocol
    from . import freplace, static

    _ALL: tuple[Backend, ...] = (freplace, static)
