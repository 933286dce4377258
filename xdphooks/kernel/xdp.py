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
from ..faults import runpoint
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


class InterfaceRenamed(XdphooksError):
    """The ifindex resolved for ``iface`` carries another name now (udev renamed it,
    or the name went to a new device) — found before or right after the swap."""

    def __init__(self, iface: InterfaceRef, now: str, undone: str = "") -> None:
        what = f"the swap was undone: {undone}" if undone else "nothing was attached"
        super().__init__(f"interface {iface} was renamed to {now or '(gone)'} while its "
                         f"new chain was being built; {what}",
                         fix="none needed; the next reconcile attaches the chain its "
                             "current name is configured for")


def name_of(index: int) -> str:
    """Name of ifindex ``index`` in the current namespace; "" if there is none."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


def swap(iface: InterfaceRef, index: int, prog_fd: int, xdp_mode: str) -> None:
    """Attach ``prog_fd``: the first time with ``XDP_FLAGS_UPDATE_IF_NOEXIST``, else
    atomically with ``XDP_FLAGS_REPLACE`` against what runs now (never clobbers a
    program attached meanwhile, never leaves a window without one).

    ``index`` was resolved from the name before the build; udev may have renamed
    that device since (or given the name to a new one). The kernel attaches by
    index, xdphooks records by name: the name is checked before the attach and
    again after it, and a mismatch after it is undone (the previous program put
    back, or ours detached, both expected-program replaces) so that nothing runs
    that the state does not record under the interface's name."""
    mode = libbpf.XDP_MODES[xdp_mode]
    runpoint("before-swap")
    try:
        with netns(iface.netns):
            now = name_of(index)
            if now != iface.name:
                if not now:
                    raise InterfaceGone(iface, "while its new chain was being built; "
                                        "nothing was attached")
                raise InterfaceRenamed(iface, now)
            running = libbpf.xdp_query_id(index)
            old_fd = libbpf.prog_fd_by_id(running) if running else -1
            try:
                if running == 0:
                    libbpf.xdp_attach(index, prog_fd,
                                      libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST | mode)
                else:
                    libbpf.xdp_attach(index, prog_fd, libbpf.XDP_FLAGS_REPLACE | mode,
                                      old_fd)
                runpoint("after-swap-attach")
                now = name_of(index)
                if now != iface.name:
                    _undo(iface, index, prog_fd, old_fd, mode, now)
            finally:
                if old_fd >= 0:
                    os.close(old_fd)
    except (NetnsError, KernelError) as e:
        if isinstance(e, NetnsError) or e.errno == errno.ENODEV:
            raise InterfaceGone(iface, "while its new chain was being built; nothing was "
                                "attached") from None
        raise


def _undo(iface: InterfaceRef, index: int, prog_fd: int, old_fd: int, mode: int,
          now: str) -> None:
    """Renamed under our attach: put back what ran (or detach ours), expecting ours."""
    if not now:  # the device is gone, and our program with it
        raise InterfaceGone(iface, "while its new chain was being attached; nothing of it "
                            "is left")
    try:
        libbpf.xdp_attach(index, old_fd, libbpf.XDP_FLAGS_REPLACE | mode, prog_fd)
    except KernelError as e:
        raise XdphooksError(
            f"interface {iface} was renamed to {now} while its new chain was being "
            f"attached, and undoing the attach failed ({e.message}); the new chain may run "
            f"on {now} unrecorded",
            fix=f"check 'ip link show {now}'; 'ip link set dev {now} xdp off' removes it") \
            from None
    raise InterfaceRenamed(iface, now, "the chain that ran there before runs again, still "
                           "recorded" if old_fd >= 0 else "nothing of it stays attached")


def locate(iface: InterfaceRef, recorded_index: int) -> tuple[int, int]:
    """(ifindex, attached program id) of a recorded interface, by what the kernel
    says: by name, or — when the name is gone — by the ifindex recorded with the
    chain, so a chain on a device renamed since is still found (and can be
    detached) instead of being disowned. (0, 0) if neither exists."""
    index, attached = query(iface)
    if index or not recorded_index:
        return index, attached
    try:
        with netns(iface.netns):
            if not name_of(recorded_index):
                return 0, 0
            return recorded_index, libbpf.xdp_query_id(recorded_index)
    except (NetnsError, KernelError):
        return 0, 0


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
        prog_id: int = libbpf.prog_info(fd)[0].id
        return prog_id
    finally:
        os.close(fd)
