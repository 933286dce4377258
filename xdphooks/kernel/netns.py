"""Enter named network namespaces (``ip netns``) for interface lookups and XDP attach.

BPF objects are not tied to a namespace, so only the netlink calls (attach,
query, ifindex lookup) need to run inside; sockets opened there stay there.
"""

from __future__ import annotations

import ctypes
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from ..errors import XdphooksError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class NetnsError(XdphooksError):
    pass


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the body inside network namespace ``name`` ("" = the current one)."""
    if not name:
        yield
        return
    if "/" in name or name in (".", ".."):
        raise NetnsError(f"bad network namespace name {name!r}")
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"network namespace {name!r} does not exist",
                         fix=f"create it (ip netns add {name}) or fix the interface name") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def identity(name: str = "") -> str:
    """What the kernel calls namespace ``name`` ("" = the one this thread runs in):
    ``"<dev>:<inode>"`` of its nsfs file, as ``stat`` of /run/netns/NAME or
    /proc/thread-self/ns/net reports it; "" if there is no such namespace. Names
    are handles that another run (another namespace, a re-created one) can mean
    differently; this identity cannot."""
    if name and ("/" in name or name in (".", "..")):
        return ""
    path = os.path.join(NETNS_RUN_DIR, name) if name else "/proc/thread-self/ns/net"
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def interfaces(ns: str = "") -> list[tuple[int, str]]:
    """(ifindex, name) of every interface in namespace ``ns``."""
    with netns(ns):
        return socket.if_nameindex()


def ifindex(ns: str, name: str) -> int:
    """ifindex of ``name`` in ``ns``; 0 if it does not exist."""
    with netns(ns):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            return 0
