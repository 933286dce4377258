"""The shipped freplace dispatcher (``bpf/dispatcher.bpf.c``, ``data/dispatcher-<N>.o``):
which one fits a chain, its config, and loading it.

Shared by the freplace backend, its probe (freplace_probe.py) and the capability
probes (capabilities.py), none of which needs the others.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from .. import abi
from ..errors import LimitError, ObjectError
from ..kernel import libbpf
from ..model import ChainEntry
from .base import set_frags

DISPATCHER_PROG = "xdph_dispatcher"
_DISPATCHER_RE = re.compile(r"^dispatcher-(\d+)\.o$")


def slot_name(i: int) -> str:
    return f"slot{i}"


def dispatcher_sizes(data_dir: Path) -> list[int]:
    """Slot counts of the shipped dispatchers, ascending."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_DISPATCHER_RE.match, names) if m)


def pick_dispatcher(data_dir: Path, nr: int) -> Path:
    """The smallest shipped dispatcher with at least ``nr`` slots."""
    sizes = dispatcher_sizes(data_dir)
    if not sizes:
        raise ObjectError(f"no freplace dispatcher in {data_dir}",
                          fix="reinstall xdphooks (its data/dispatcher-*.o are missing)")
    for n in sizes:
        if n >= nr:
            return data_dir / f"dispatcher-{n}.o"
    raise LimitError(f"a chain of {nr} programs exceeds the largest dispatcher "
                     f"({sizes[-1]} slots)", fix="use mode = \"static\" or remove programs")


def config_blob(template: bytes, entries: list[ChainEntry] | list[list[int]],
                counters: bool = True, events: bool = True) -> bytes:
    """The dispatcher's rodata with its config (abi.encode_config) in place of the
    template's: nr_slots, switches and the policy table.

    ``entries`` are chain entries, or directly lists of six decision codes.
    """
    head = struct.pack("<II", abi.MAGIC, abi.VERSION)
    off = template.find(head)
    while off >= 0 and off % 4:
        off = template.find(head, off + 1)
    if off < 0:
        raise ObjectError("dispatcher object has no xdphooks config (magic not found)")
    blob = abi.encode_config([e if isinstance(e, list) else list(e.policy.codes())
                              for e in entries], counters, events)
    if off + len(blob) > len(template):
        raise ObjectError("dispatcher config is shorter than the ABI says")
    return template[:off] + blob + template[off + len(blob):]


def _rodata(obj: libbpf.BpfObject) -> libbpf.Map:
    for m in obj.maps():
        if m.internal and m.name.endswith(".rodata"):
            return m
    raise ObjectError(f"{obj.path} has no .rodata")


def load_dispatcher(path: Path, policies: list[ChainEntry] | list[list[int]],
                    counters: bool = True, events: bool = True,
                    frags: bool = False) -> tuple[int, int, int]:
    """Load a dispatcher with its config (multi-buffer if ``frags``); returns
    (prog fd, counters fd, events fd)."""
    obj = libbpf.BpfObject(str(path))
    try:
        for p in obj.programs():
            p.set_autoload(p.name == DISPATCHER_PROG)
            if p.name == DISPATCHER_PROG:
                set_frags(p, frags)
        ro = _rodata(obj)
        ro.set_initial_value(config_blob(ro.initial_value(), policies, counters, events))
        obj.load()
        prog = obj.program(DISPATCHER_PROG)
        return (os.dup(prog.fd), os.dup(obj.map(abi.COUNTERS_MAP).fd),
                os.dup(obj.map(abi.EVENTS_MAP).fd))
    finally:
        obj.close()
