"""Attach xdphooks' own tracing programs (fentry/fexit) to one component of a
running chain, for ``status --profile`` and ``trace --live``.

Where the tracer goes is the backend's answer (``trace_target``: a freplace
component's EXT program — the kernel allows fentry/fexit on EXT programs, though
not on other tracing programs — or ``xdph_slot_<N>`` of a called static slot; a
spliced one is refused). Static chains are watched through an instrumented build
instead (the backend's ``instrumented_watch``, xdphooks/watchlease.py), which works
for spliced slots and on kernels that refuse fentry/fexit on BPF programs (EPERM).
Nothing is attached to a chain except while a command runs, so a chain pays
nothing otherwise.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from . import backends
from .backends import Target
from .errors import KernelError
from .paths import DATA_DIR
from .state import InterfaceRecord, ProgramRecord

__all__ = ["Target", "attached", "iface_name", "percpu_sum", "target"]

PROFILE_OBJ = "slot_profile.o"
PROFILE_PROGS = ("xdph_prof_enter", "xdph_prof_exit")
TRACE_OBJ = "slot_trace.o"
TRACE_PROGS = ("xdph_trace_exit",)


def iface_name(rec: InterfaceRecord) -> str:
    return f"{rec.netns}/{rec.name}" if rec.netns else rec.name


def target(rec: InterfaceRecord, p: ProgramRecord) -> Target:
    """Resolve the attach point (the backend of ``rec`` says where); raises the
    one-line error where there is none (a spliced slot)."""
    return backends.of(rec).trace_target(rec, p)


@contextmanager
def _open_prog(prog_id: int) -> Iterator[int]:
    from .kernel import libbpf

    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def attached(obj_file: str, progs: tuple[str, ...], t: Target) -> Iterator[Any]:
    """Load ``obj_file`` from xdphooks/data with each of ``progs`` aimed at ``t``,
    attach them, yield the object; detach and unload on the way out."""
    from .kernel import libbpf

    obj = libbpf.BpfObject(str(DATA_DIR / obj_file))
    links = []
    try:
        with _open_prog(t.prog_id) as fd:
            for name in progs:
                obj.program(name).set_attach_target(fd, t.func)
            try:
                obj.load()
            except KernelError as e:
                raise KernelError(
                    f"cannot load a tracer for program {t.program!r} on {t.interface} "
                    f"({t.func} in program id {t.prog_id}): {e.message}", errno=e.errno,
                    log=e.log, detail=e.detail, plugin=t.plugin,
                    fix="this kernel needs BTF and fentry/fexit on BPF programs "
                        "(see xdphooks doctor)") from None
        for name in progs:
            links.append(obj.program(name).attach_trace())
        yield obj
    finally:
        for link in links:
            link.destroy()
        obj.close()


def percpu_sum(map_fd: int, nr_u64: int, key: int = 0) -> list[int]:
    """One PERCPU_ARRAY entry of ``nr_u64`` u64 fields, summed over CPUs."""
    import struct

    from .kernel import libbpf

    ncpu = libbpf.num_possible_cpus()
    stride = nr_u64 * 8
    raw = libbpf.map_lookup(map_fd, struct.pack("<I", key), stride * ncpu)
    tot = [0] * nr_u64
    if raw is not None:
        for c in range(ncpu):
            for k, v in enumerate(struct.unpack_from(f"<{nr_u64}Q", raw, c * stride)):
                tot[k] += v
    return tot
