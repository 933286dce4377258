"""Read the rootlet's/dispatcher's per-slot counters and drain its event ring.

``xdph_counters``: PERCPU_ARRAY, key = slot, value = struct xdphooks_slot_stats
{u64 packets; u64 verdicts[6]} (bpf/xdphooks_config.h). ``xdph_events``: RINGBUF
of struct xdphooks_event {u64 ts_ns; u32 slot, retval, ifindex, flags}, drained
here by mmap()ing the map like libbpf's ring_buffer__consume (consumer page
read/write, producer page + data pages read-only).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Iterator

from .errors import KernelError

POLICY_KEYS = ("aborted", "drop", "pass", "tx", "redirect", "unknown")
_STATS = struct.Struct("<7Q")
_EVENT = struct.Struct("<QIIII")
_RB_BUSY, _RB_DISCARD, _RB_HDR = 1 << 31, 1 << 30, 8


def _open(fd_or_path: int | str) -> tuple[int, bool]:
    from .kernel import libbpf
    if isinstance(fd_or_path, int):
        return fd_or_path, False
    return libbpf.obj_get(str(fd_or_path)), True


def read_counters(counters: int | str, nr_slots: int) -> list[dict]:
    """Per slot: {"packets": n, "verdicts": {"aborted": n, ... "unknown": n}},
    summed over CPUs. ``counters`` is a map fd or a pinned path."""
    from .kernel import libbpf
    fd, close = _open(counters)
    try:
        ncpu = libbpf.num_possible_cpus()
        stride = (_STATS.size + 7) // 8 * 8
        out = []
        for slot in range(nr_slots):
            raw = libbpf.map_lookup(fd, struct.pack("<I", slot), stride * ncpu)
            tot = [0] * 7
            if raw is not None:
                for c in range(ncpu):
                    for k, v in enumerate(_STATS.unpack_from(raw, c * stride)):
                        tot[k] += v
            out.append({"packets": tot[0], "verdicts": dict(zip(POLICY_KEYS, tot[1:]))})
        return out
    finally:
        if close:
            os.close(fd)


def read_events(events: int | str, limit: int = 1000) -> list[dict]:
    """Consume up to ``limit`` events from the ring buffer (fd or pinned path).

    Consumed events are gone (the consumer position advances), like
    ``ring_buffer__consume``. Returns dicts with ts_ns, slot, retval, ifindex, flags.
    """
    return list(_iter_events(events, limit))


def _iter_events(events: int | str, limit: int) -> Iterator[dict]:
    for rec in iter_ring(events, limit, _EVENT.size):
        ts, slot, ret, ifindex, flags = _EVENT.unpack_from(rec, 0)
        yield {"ts_ns": ts, "slot": slot, "retval": ret, "ifindex": ifindex, "flags": flags}


def iter_ring(ring: int | str, limit: int, min_len: int = 0) -> Iterator[bytes]:
    """Consume up to ``limit`` records of at least ``min_len`` bytes from a BPF
    ring buffer (fd or pinned path), as raw bytes; shared by the chain's event
    ring and the live tracer's (xdphooks/livetrace.py)."""
    from .kernel import libbpf
    fd, close = _open(ring)
    try:
        size = libbpf.map_info(fd).max_entries
        page = mmap.PAGESIZE
        try:
            cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        except OSError as e:
            raise KernelError(f"cannot map the event ring buffer: {e.strerror}",
                              errno=e.errno or 0) from None
        try:
            prod = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except OSError as e:
            cons.close()
            raise KernelError(f"cannot map the event ring buffer: {e.strerror}",
                              errno=e.errno or 0) from None
        try:
            mask = size - 1
            cpos = struct.unpack_from("<Q", cons, 0)[0]
            n = 0
            while n < limit:
                ppos = struct.unpack_from("<Q", prod, 0)[0]
                if cpos >= ppos:
                    break
                hdr_len = struct.unpack_from("<I", prod, page + (cpos & mask))[0]
                if hdr_len & _RB_BUSY:
                    break  # being written; stop here
                length = hdr_len & ~(_RB_BUSY | _RB_DISCARD)
                start = page + ((cpos + _RB_HDR) & mask)
                rec = prod[start: start + length]  # data pages are mapped twice: no wrap
                cpos += (length + _RB_HDR + 7) // 8 * 8
                struct.pack_into("<Q", cons, 0, cpos)
                if not hdr_len & _RB_DISCARD and length >= min_len:
                    n += 1
                    yield rec
        finally:
            prod.close()
            cons.close()
    finally:
        if close:
            os.close(fd)
