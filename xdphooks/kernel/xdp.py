"""XDP on one interface, in its network namespace: ifindex, what runs, swap, detach.

The coordinator's kernel facts and its two writes (the atomic swap and the
expected-program detach) in one place, so each is written once. Interfaces
are :class:`~xdphooks.model.InterfaceRef`; netlink calls run inside the
interface's namespace (BPF objects are not tied to one).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from ..errors import KernelError, XdphooksError
from ..model import InterfaceRef
from . import libbpf
from .netns import NetnsError, netns
from .netns import ifindex as _ns_ifindex


class InterfaceGone(XdphooksError):
    """The interface (or its namespace) vanished while a chain was being attached."""

    def __init__(self, iface: InterfaceRef, while_: str) -> None:
        super().__init__(f"interface {iface} vanished {while_}",
                         fix="nothing to do; it is attached when the interface returns")


def ifindex(iface: InterfaceRef) -> int:
    """ifindex of ``iface``; 0 if it or its namespace does not exist."""
    try:
        return _ns_ifindex(iface.netns, iface.name)
    except NetnsError:
        return 0


def query(iface: InterfaceRef) -> tuple[int, int]:
    """(ifindex, id of the attached XDP program) of ``iface``; (0, 0) if it or its
    namespace does not exist. A failing query raises :class:`KernelError`."""
    try:
        with netns(iface.netns):
            try:
                index = socket.if_nametoindex(iface.name)
            except OSError:
                return 0, 0
            return index, libbpf.xdp_query_id(index)
    except NetnsError:
        return 0, 0


def attached_id(iface: InterfaceRef) -> int:
    """Id of the XDP program attached to ``iface`` (0: none, no such interface, or
    the query failed) — for read-only views and garbage collection."""
    try:
        return query(iface)[1]
    except KernelError:
        return 0


def swap(iface: InterfaceRef, index: int, prog_fd: int, xdp_mode: str) -> None:
    """Attach ``prog_fd``: the first time with ``XDP_FLAGS_UPDATE_IF_NOEXIST``, else
    atomically with ``XDP_FLAGS_REPLACE`` against what runs now (never clobbers a
    program attached meanwhile, never leaves a window without one)."""
    mode = libbpf.XDP_MODES[xdp_mode]
    try:
        with netns(iface.netns):
            running = libbpf.xdp_query_id(index)
            if running == 0:
                libbpf.xdp_attach(index, prog_fd, libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST | mode)
                return
            old_fd = libbpf.prog_fd_by_id(running)
            try:
                libbpf.xdp_attach(index, prog_fd, libbpf.XDP_FLAGS_REPLACE | mode, old_fd)
            finally:
                os.close(old_fd)
    except (NetnsError, KernelError) as e:
        if isinstance(e, NetnsError) or e.errno == errno.ENODEV:
            raise InterfaceGone(iface, "while its new chain was being built; nothing was "
                                "attached") from None
        raise


def detach(iface: InterfaceRef, index: int, prog_id: int, xdp_mode: str) -> None:
    """Detach program ``prog_id`` from ``iface``; an expected-program detach, so it
    never removes someone else's program."""
    with netns(iface.netns):
        old_fd = libbpf.prog_fd_by_id(prog_id)
        try:
            libbpf.xdp_attach(index, -1, libbpf.XDP_FLAGS_REPLACE
                              | libbpf.XDP_MODES.get(xdp_mode, 0), old_fd)
        finally:
            os.close(old_fd)


def pinned_prog_id(path: Path | str) -> int:
    """Kernel id of the program pinned at ``path``; 0 if nothing (usable) is pinned there."""
    try:
        fd = libbpf.obj_get(str(path))
    except KernelError:
        return 0
    try:
        return libbpf.prog_info(fd)[0].id
    finally:
        os.close(fd)
