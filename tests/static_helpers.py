"""Helpers shared by the static-backend tests (private bpffs, contexts)."""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from conftest import entry  # noqa: F401 - the backend tests' entry(), re-exported
from xdphooks.backends.base import BuildContext
from xdphooks.model import Chain, InterfaceRef
from xdphooks.paths import Paths

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "xdphooks" / "data"
XDPFILT_UDP = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_udp.o"
ACTION = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}


@contextmanager
def private_bpffs():
    base = Path(f"/tmp/xhs-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(base)], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def make_ctx(bpffs: Path, entries, counters: bool = True) -> BuildContext:
    iface = InterfaceRef("", "xhtest0")
    work = Path(tempfile.mkdtemp(prefix="xhs-work-"))
    atexit.register(shutil.rmtree, work, True)  # the coordinator removes it in real runs
    return BuildContext(iface, Chain(iface, tuple(entries)), Paths(Path("/"), bpffs), work,
                        DATA, counters=counters)


def pin_update(path: str, key: int, value: bytes) -> None:
    from xdphooks.kernel import libbpf
    fd = libbpf.obj_get(str(path))
    try:
        libbpf.map_update(fd, struct.pack("<I", key), value)
    finally:
        os.close(fd)


def pin_lookup(path: str, key: int, size: int = 4) -> bytes | None:
    from xdphooks.kernel import libbpf
    fd = libbpf.obj_get(str(path))
    try:
        return libbpf.map_lookup(fd, struct.pack("<I", key), size)
    finally:
        os.close(fd)


def set_verdict(built, name: str, value: int) -> None:
    """static_ret returns (value at key 0) - 1."""
    pin_update(built.maps[name]["ret_map"], 0, struct.pack("<I", value + 1))


def seen(built, name: str) -> int:
    raw = pin_lookup(built.maps[name]["ret_map"], 1)
    return struct.unpack("<I", raw)[0] if raw else 0
