"""Backends: each one way of running a chain, owning its whole life.

As bpfman's ``enum Dispatcher``, whose every variant owns load, attach and delete,
a backend here owns everything that differs between the ways a chain can run:

- build:   ``usable()`` (may probe the kernel, cached), ``build()`` a loaded chain;
- attach:  ``swap()`` the built chain in atomically, ``detach()`` it;
- observe: ``attached_id()``, a slot's own program id, ``link_kind()`` per slot,
  ``trace_target()`` (where fentry/fexit go for one slot), ``running_globals()``,
  and how the live views watch its chains (``instrumented_watch``);
- predict: ``predict_links()``, what ``plan`` shows of the slots before a build.

Each backend is one module of this package whose ``BACKEND`` is an instance of
:class:`Backend`; :data:`NAMES` is the registry of their names, in ``mode = "auto"``
preference order. Everything outside this package asks the backend of a chain or
record (:func:`get`, :func:`of`) and never compares mode names: config values,
state records and a plugin's ``xdphooks_select_mode`` answer are parsed here.

The base class attaches a chain's root program to the interface's XDP hook over
rtnetlink (``XDP_FLAGS_REPLACE``), which both backends do; a backend that attaches
through a BPF link (tcx, a kernel XDP multi-prog link) overrides the attach and
observe methods in its own module.

- ``freplace`` — dispatcher whose slots are replaced by the components.
- ``static``   — rootlet + rewritten components linked into one program.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, cast, get_args

from ..model import Choice

if TYPE_CHECKING:
    from ..model import Chain, InterfaceRef
    from ..paths import Paths
    from ..state import InterfaceRecord, ProgramRecord
    from .base import BuildContext, BuiltChain

__all__ = ["AUTO", "Backend", "Choice", "FALLBACK", "Mode", "NAMES", "Target", "choose",
           "get", "is_mode", "of"]

#: The backends (each a module of this package), in ``mode = "auto"`` preference: the
#: first usable one wins. The last is usable on every kernel that loads XDP. (A
#: model.Mode is any name; this is the typed sum of those that exist.)
Mode = Literal["freplace", "static"]
NAMES: tuple[Mode, ...] = get_args(Mode)
AUTO = "auto"
#: always usable: auto's last resort, and whose attach undoes a chain whose record is lost
FALLBACK: Mode = NAMES[-1]


class _Record(Protocol):
    mode: str


@dataclass(frozen=True)
class Target:
    """Where a tracer (fentry/fexit, xdphooks/fexit.py) goes for one component."""

    interface: str
    program: str
    plugin: str
    slot: int
    link: str       # the backend's link_kind of the slot
    prog_id: int    # the kernel program holding the function
    func: str       # its BTF function name


class Backend:
    """One way to run a chain. Subclasses set :attr:`MODE` and implement the build
    and observation methods; attach/detach default to the interface's XDP hook."""

    #: its name in :data:`NAMES` (``mode =`` of the config, ``mode`` of a record)
    MODE: Mode
    #: the live views (``status --profile``, ``trace --live``) watch its chains by
    #: swapping in an instrumented build (xdphooks/watchlease.py) rather than by
    #: attaching fentry/fexit at :meth:`trace_target`
    instrumented_watch: bool = False
    #: each slot is a kernel program of its own (its id in the record; the kernel's
    #: run-time statistics of it mean something)
    slot_programs: bool = False

    # --- build ---------------------------------------------------------------------

    def usable(self, paths: "Paths") -> tuple[bool, str]:
        """Can this kernel run it? (answer, why in a few words). May probe, cached."""
        raise NotImplementedError

    #: it has a kernel capability probe of its own (``doctor --capabilities`` lists it
    #: under the backend's name)
    kernel_probed: bool = False

    def kernel_probe(self, cache_dir: Path, data_dir: Path) -> tuple[bool, str]:
        """(works, why in one sentence); never raises. May be cached per boot."""
        return True, f"{self.MODE} needs no probe"

    def build(self, ctx: "BuildContext") -> "BuiltChain":
        """Load ``ctx.chain`` (pre-flighted, not attached); raise XdphooksError if it cannot."""
        raise NotImplementedError

    # --- attach --------------------------------------------------------------------

    def swap(self, iface: "InterfaceRef", ifindex: int, built: "BuiltChain",
             xdp_mode: str) -> None:
        """Put ``built`` in place of what runs, atomically (expected = the running one)."""
        from ..kernel import xdp

        xdp.swap(iface, ifindex, built.prog_fd, xdp_mode)

    def detach(self, iface: "InterfaceRef", ifindex: int, attached_id: int,
               xdp_mode: str) -> None:
        """Remove the chain ``attached_id`` from the interface, only if it still runs."""
        from ..kernel import xdp

        xdp.detach(iface, ifindex, attached_id, xdp_mode)

    # --- observe -------------------------------------------------------------------

    def attached_id(self, iface: "InterfaceRef") -> int:
        """The program id the interface runs (0: none)."""
        from ..kernel import xdp

        return xdp.attached_id(iface)

    def slot_prog_id(self, gen_dir: Path, name: str) -> int:
        """Program ``name``'s own kernel id in the generation pinned at ``gen_dir``
        (0: the slot is no program of its own; the root's id stands for it)."""
        return 0

    def link_kind(self, p: "ProgramRecord") -> str:
        """How a recorded program sits in its chain (status, profile, trace --live)."""
        raise NotImplementedError

    def trace_target(self, rec: "InterfaceRecord", p: "ProgramRecord") -> Target:
        """Where fentry/fexit attach for ``p``; raises the one-line error where none can."""
        raise NotImplementedError

    def running_globals(self, rec: "InterfaceRecord", p: "ProgramRecord"
                        ) -> tuple[dict[str, Any], Callable[[str], str]]:
        """The running chain's globals of ``p`` and how a variable's name maps to them."""
        raise NotImplementedError

    # --- predict -------------------------------------------------------------------

    def predict_links(self, chain: "Chain", workdir: Path) -> list[dict[str, str]] | None:
        """Per entry {"link", "reason"} as ``plan`` shows it before a build (None: this
        backend has nothing to say beyond its mode)."""
        return None


def is_mode(name: object) -> bool:
    return name in NAMES


def get(mode: str) -> Backend:
    """The backend named ``mode`` (a name from :data:`NAMES`)."""
    if not is_mode(mode):
        raise ValueError(f"unknown backend {mode!r}")
    backend = importlib.import_module(f"{__name__}.{mode}").BACKEND
    assert isinstance(backend, Backend)
    return backend


def of(record: _Record | None) -> Backend:
    """The backend of a state record (its mode was checked when state.json was read);
    without a record, the :data:`FALLBACK`'s."""
    return get(record.mode if record is not None else FALLBACK)


def choose(paths: "Paths", configured: str) -> Choice:
    """A configured mode is used as is; ``auto`` takes the first usable backend and
    says why the ones before it were passed over."""
    if configured != AUTO:
        mode = cast(Mode, configured)  # config.py checked it against NAMES
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
        raise RuntimeError("no usable backend")  # the FALLBACK is always usable
    return Choice(usable[0], "auto: " + ("; ".join(passed_over) or why_first), frozenset(usable))
