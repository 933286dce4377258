"""Read the rootlet's/dispatcher's per-slot counters and drain its event ring.

The layouts are :mod:`xdphooks.abi`'s (mirroring bpf/xdphooks_config.h):
``xdph_counters`` is a PERCPU_ARRAY of one value holding every slot's verdict
counters (a slot's packets are the sum of its verdicts); ``xdph_events`` a RINGBUF
of ``abi.EVENT`` records, drained here through libbpf's own ring-buffer consumer
(``kernel.libbpf.RingBuffer``).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from . import abi
from .model import ACTIONS, POLICY_KEYS

if TYPE_CHECKING:
    from .paths import Paths


def _open(fd_or_path: int | str) -> tuple[int, bool]:
    from .kernel import libbpf
    if isinstance(fd_or_path, int):
        return fd_or_path, False
    return libbpf.obj_get(str(fd_or_path)), True


def _per_cpu(raw: bytes | None, ncpu: int, size: int) -> Iterator[bytes]:
    """A per-CPU value as the kernel returns it: each CPU's copy, 8-byte aligned."""
    stride = (size + 7) // 8 * 8
    for c in range(ncpu if raw is not None else 0):
        yield raw[c * stride: c * stride + size]


def read_counters(counters: int | str, nr_slots: int) -> list[dict]:
    """Per slot: {"packets": n, "verdicts": {"aborted": n, ... "unknown": n}},
    summed over CPUs. ``counters`` is a map fd or a pinned path."""
    from .kernel import libbpf
    fd, close = _open(counters)
    try:
        ncpu = libbpf.num_possible_cpus()
        if libbpf.map_info(fd).value_size == abi.V1_SLOT_STATS.size:
            return _read_v1(fd, nr_slots, ncpu)
        nr = min(nr_slots, abi.MAX_CHAIN)
        raw = libbpf.map_lookup(fd, struct.pack("<I", abi.COUNTERS_KEY),
                                abi.COUNTERS_SIZE * ncpu)
        rows = struct.Struct(f"<{nr * abi.NR_POLICY}Q")  # the first nr rows, in one go
        flat = [0] * (nr * abi.NR_POLICY)
        for value in _per_cpu(raw, ncpu, abi.COUNTERS_SIZE):
            flat = [a + b for a, b in zip(flat, rows.unpack_from(value, abi.counter_offset(0)))]
        flat += [0] * ((nr_slots - nr) * abi.NR_POLICY)
        out = []
        for slot in range(nr_slots):
            t = flat[slot * abi.NR_POLICY: (slot + 1) * abi.NR_POLICY]
            out.append({"packets": sum(t), "verdicts": dict(zip(POLICY_KEYS, t))})
        return out
    finally:
        if close:
            os.close(fd)


def _read_v1(fd: int, nr_slots: int, ncpu: int) -> list[dict]:
    """A chain pinned by version 1 (one map entry per slot, with its own packets)."""
    from .kernel import libbpf
    out = []
    for slot in range(nr_slots):
        raw = libbpf.map_lookup(fd, struct.pack("<I", slot), abi.V1_SLOT_STATS.size * ncpu)
        tot = [0] * (1 + abi.NR_POLICY)
        for value in _per_cpu(raw, ncpu, abi.V1_SLOT_STATS.size):
            tot = [a + b for a, b in zip(tot, abi.V1_SLOT_STATS.unpack(value))]
        out.append({"packets": tot[0], "verdicts": dict(zip(POLICY_KEYS, tot[1:]))})
    return out


def read_events(events: int | str, limit: int = 1000) -> list[dict]:
    """Consume up to ``limit`` events from the ring buffer (fd or pinned path), as
    :func:`decode_event` dicts. Consumed events are gone (libbpf's
    ``ring_buffer__consume`` advances the consumer position)."""
    return [decode_event(rec) for rec in iter_ring(events, limit, abi.V2_EVENT.size)]


def decode_event(rec: bytes) -> dict:
    """One ring record: ts_ns, slot, retval, ifindex, flags, pkt_len and pkt (the
    packet's first bytes). A version 2 chain, pinned before an upgrade and running
    until its next rebuild, writes the shorter record without the packet: pkt_len
    None, pkt b""."""
    ts, slot, ret, ifindex, flags = abi.V2_EVENT.unpack_from(rec, 0)
    pkt_len, pkt = None, b""
    if len(rec) >= abi.EVENT.size:
        *_, pkt_len, cap_len, data = abi.EVENT.unpack_from(rec, 0)
        pkt = data[:min(cap_len, abi.EVENT_SNAPLEN)]
    return {"ts_ns": ts, "slot": slot, "retval": ret, "ifindex": ifindex, "flags": flags,
            "pkt_len": pkt_len, "pkt": pkt}


def iter_ring(ring: int | str, limit: int, min_len: int = 0) -> Iterator[bytes]:
    """Consume up to ``limit`` records of at least ``min_len`` bytes from a BPF ring
    buffer (fd or pinned path) with libbpf's ring_buffer API, as raw bytes; shared by
    the chain's event ring and the live tracer's (xdphooks/livetrace.py)."""
    from .kernel import libbpf
    out: list[bytes] = []
    if limit <= 0:
        return iter(out)

    def take(rec: bytes) -> bool:
        if len(rec) >= min_len:
            out.append(bytes(rec))
        return len(out) < limit

    fd, close = _open(ring)
    try:
        with libbpf.RingBuffer(fd, take) as rb:
            rb.consume()
    finally:
        if close:
            os.close(fd)
    return iter(out)


def drain_events(paths: "Paths", rec, limit: int = 100000) -> int:
    """Move a generation's 'log' events from its ring into ``events.log`` (JSON lines),
    so they outlive the generation (each relink pins a new ring). ``rec`` is the
    interface's state record (names the slots' programs)."""
    path = Path(rec.pin_dir) / "events"
    if not path.exists():
        return 0
    name = f"{rec.netns}/{rec.name}" if rec.netns else rec.name
    lines = []
    # ts_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns), which restarts at boot: the wall
    # clock is taken now, while the offset between them is this boot's
    mono_to_wall = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    for ev in read_events(str(path), limit):
        slot = ev["slot"]
        prog = rec.programs[slot].name if slot < len(rec.programs) else f"slot {slot}"
        verdict = (POLICY_KEYS[ev["retval"]] if ev["retval"] < len(ACTIONS)
                   else f"unknown({ev['retval']})")
        # keys added since the first records hold strings (why: xdphooks/events.py)
        record = {"ts_ns": ev["ts_ns"], "time_ns": str(ev["ts_ns"] + mono_to_wall),
                  "interface": name, "program": prog, "slot": str(slot), "verdict": verdict,
                  "generation": rec.generation}
        if ev["pkt_len"] is not None:  # raw, decoded when shown (xdphooks/events.py)
            record.update(packet_len=str(ev["pkt_len"]), packet=ev["pkt"].hex())
        lines.append(json.dumps(record))
    if lines:
        # never blocks on a FIFO planted there (ENXIO), never follows a symlink
        log = paths.state_dir / "events.log"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "a") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(log))
            f.write("\n".join(lines) + "\n")
    return len(lines)
