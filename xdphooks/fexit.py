"""Attach xdphooks' own tracing programs (fentry/fexit) to one component of a
running freplace chain, for ``status --profile`` and ``trace --live``.

The attach point is the component's EXT program (the kernel allows fentry/fexit on
EXT programs, though not on other tracing programs). Static chains are watched
through an instrumented build instead (xdphooks/watchlease.py), which works for
spliced slots and on kernels that refuse fentry/fexit on BPF programs (EPERM);
:func:`target` still resolves ``xdph_slot_<N>`` of a called static slot and refuses
a spliced one, for callers that want the tracer there. Nothing is attached to a
chain except while a command runs, so a chain pays nothing otherwise.
"""

from __future__ import annotations

import errno as _errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import KernelError, UsageError, XdphooksError
from .paths import DATA_DIR
from .state import InterfaceRecord, ProgramRecord
from .status import link_kind

__all__ = ["Target", "attached", "link_kind", "percpu_sum", "target"]

PROFILE_OBJ = "slot_profile.o"
PROFILE_PROGS = ("xdph_prof_enter", "xdph_prof_exit")
TRACE_OBJ = "slot_trace.o"
TRACE_PROGS = ("xdph_trace_exit",)


@dataclass(frozen=True)
class Target:
    """Where the tracer goes for one component."""

    interface: str
    program: str
    plugin: str
    slot: int
    link: str       # "called", "spliced", "freplace"
    prog_id: int    # the kernel program holding the function
    func: str       # its BTF function name


def iface_name(rec: InterfaceRecord) -> str:
    return f"{rec.netns}/{rec.name}" if rec.netns else rec.name


def spliced_error(rec: InterfaceRecord, p: ProgramRecord) -> XdphooksError:
    return UsageError(
        f"program {p.name!r} on {iface_name(rec)} is spliced into the static root "
        f"(inlined), so there is no function of it to attach to",
        plugin=p.plugin, fix=f'set link = "call" under [programs.{p.name}] in '
        "xdphooks.toml and run xdphooks reconcile")


def target(rec: InterfaceRecord, p: ProgramRecord) -> Target:
    """Resolve the attach point; raises the one-line error for a spliced slot."""
    from .kernel import libbpf

    kind = link_kind(rec, p)
    if kind == "spliced":
        raise spliced_error(rec, p)
    if rec.mode == "freplace":
        pin = Path(rec.pin_dir) / f"prog-{p.name}"
        fd = libbpf.obj_get(str(pin)) if pin.exists() else libbpf.prog_fd_by_id(p.prog_id)
        try:
            func = libbpf.prog_main_func(fd)
            prog_id = libbpf.prog_info(fd)[0].id
        finally:
            os.close(fd)
        return Target(iface_name(rec), p.name, p.plugin, p.slot, kind, prog_id, func)
    func = f"xdph_slot_{p.slot}"
    with _open_prog(rec.prog_id) as fd:
        try:
            libbpf.prog_btf_func_id(fd, func)
        except KernelError as e:
            if e.errno == _errno.ENOENT:  # inlined by the linker/verifier: as good as spliced
                raise spliced_error(rec, p) from None
            raise
    return Target(iface_name(rec), p.name, p.plugin, p.slot, kind, rec.prog_id, func)


@contextmanager
def _open_prog(prog_id: int) -> Iterator[int]:
    from .kernel import libbpf

    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def attached(obj_file: str, progs: tuple[str, ...], t: Target) -> Iterator:
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
