"""SIGINT, SIGTERM and SIGHUP during a run that changes the kernel.

Ctrl-C in apt or dnf, ``systemctl stop`` or a closed terminal must never tear a
transaction: once a new generation is pinned, its swap and its state record
belong together, and so do a detach and its record. Inside a critical section
(:meth:`Deferral.critical`) a signal is only recorded; the run finishes the step,
then stops applying further changes, writes the state and ends with an exit code
that says whether the kernel changed. Outside one (discovery, planning, a build:
nothing of the change is in the kernel yet) the signal raises :class:`Interrupted`
at once, so the run unwinds without waiting for a slow verifier.

Handlers are installed by the main thread only (Python delivers signals there);
elsewhere the deferral is a no-op and the default disposition stays.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

from .errors import XdphooksError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(XdphooksError):
    """A run stopped by a signal; ``exit_code`` says whether the kernel changed
    (3: some change was made, 1: nothing was)."""

    def __init__(self, signum: int, message: str = "", changed: bool = False, **kw: Any) -> None:
        self.signum = signum
        self.exit_code = 3 if changed else 1
        super().__init__(message or f"interrupted by {name(signum)} before any change; the "
                         "kernel runs what it ran before", **kw)


class Deferral:
    """``with Deferral() as d:`` for a whole run; ``with d.critical():`` around each step
    that must complete once begun. ``d.received`` is the first signal that arrived."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._depth = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> "Deferral":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth = 0
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._depth == 0:
            raise Interrupted(signum)

    def hold(self) -> None:
        """Critical from here until the deferral ends (the lock's release included, so
        a late signal cannot unwind a finished run as if nothing had changed)."""
        self._depth += 1

    @contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stretch inside a critical section that a signal may cut short (a build:
        nothing is in the kernel yet); a signal already recorded stops it before it starts."""
        if self.received is not None:
            raise Interrupted(self.received)
        saved, self._depth = self._depth, 0
        try:
            yield
        finally:
            self._depth = saved
