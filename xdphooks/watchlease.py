"""Watching a static chain: an instrumented build swapped in only while someone watches.

``trace --live`` and ``status --profile`` on a static chain (any slot: spliced,
called, in any segment) do this, under the coordinator's lock:

1. plan as reconcile would and check that the planned chain IS the running one
   (same fingerprint); else refuse — the watch must show the chain that runs;
2. build that same chain again with the static backend (same object bytes,
   constants, pinned maps), with :class:`xdphooks.link.splice.Instrument` code
   around the watched slots, SHARING the running chain's counters, events ring
   and globals maps (the counters keep counting in one place; the globals are one
   copy, so nothing diverges and nothing has to be carried back);
3. pin it under ``if/<iface>/watch/`` (a multi-segment chain's prog array must
   outlive this process), write the lease (:data:`LEASE_DIR`), swap it in with
   ``XDP_FLAGS_REPLACE`` against the recorded program (no packet window);
4. release the lock while the caller reads; then take it again and swap the
   recorded generation back (still pinned: the same program, same fingerprint),
   remove the watch pins and the lease.

Nothing stays behind: SIGINT/SIGTERM/SIGHUP unwind through step 4 (blocked while a
swap runs); after a SIGKILL, the next ``xdphooks reconcile`` or ``teardown`` ends
every watch it finds first (:func:`end_watches`). ``status`` shows the lease.
The state file is not touched: it records the untraced chain throughout.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from . import abi
from .errors import KernelError, UsageError, XdphooksError
from .kernel import bpffs, libbpf
from .kernel.netns import netns
from .model import InterfaceRef
from .paths import Paths

if TYPE_CHECKING:  # the splicer is imported where a watch is built: reconcile's
    # end_watches() runs every time and needs none of it (5 ms of imports)
    from .link.splice import Instrument

#: per interface key: the lease of the watch in progress (JSON, see Lease)
LEASE_DIR = "watch"
WATCH_PIN = "watch"  # if/<iface>/watch/: the instrumented chain's pins
RING_BYTES = 1 << 22  # 4 MiB of captured packets between two reads
BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF = 6, 27
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass
class Lease:
    interface: str
    key: str
    purpose: str  # "trace PROGRAM" or "profile"
    pid: int
    uid: int
    tty: str
    since: float
    until: float
    watched_id: int  # the instrumented root
    restore_id: int  # the recorded root it replaced
    restore_pin: str  # .../g<N>-<fp>/root

    def owner_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        who = f"pid {self.pid} (uid {self.uid}{', ' + self.tty if self.tty else ''})"
        state = "" if self.owner_alive() and time.time() < self.until else \
            " — its owner is gone: the next 'xdphooks reconcile' swaps the untraced chain back"
        return (f"watched ({self.purpose}) by {who} since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.since))} until "
                f"{time.strftime('%H:%M:%S', time.localtime(self.until))}{state}")


def lease_dir(paths: Paths) -> Path:
    return paths.state_dir / LEASE_DIR


def read_leases(paths: Paths) -> dict[str, Lease]:
    """Interface key -> lease (unreadable files are skipped: status must answer)."""
    out = {}
    d = lease_dir(paths)
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.json")):
        try:
            lease = Lease(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        out[lease.key] = lease
    return out


def _write_lease(paths: Paths, lease: Lease) -> None:
    from .atomicfile import write_atomic

    d = lease_dir(paths)
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(d / f"{lease.key}.json", json.dumps(asdict(lease)))


def _tty() -> str:
    for fd in (0, 1, 2):
        try:
            return os.ttyname(fd)
        except OSError:
            continue
    return ""


# --- maps of the instrumentation -------------------------------------------------------------

_lib = libbpf._lib
_lib.bpf_map_create.restype = ctypes.c_int
_lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                ctypes.c_uint32, ctypes.c_void_p]


def create_map(kind: int, name: str, key_size: int, value_size: int, entries: int) -> int:
    fd = _lib.bpf_map_create(kind, name.encode(), key_size, value_size, entries, None)
    if fd < 0:
        raise KernelError(f"cannot create the watch's map {name}: {os.strerror(-fd)}",
                          errno=-fd, fix="see xdphooks doctor")
    return fd


def ring_map() -> int:
    return create_map(BPF_MAP_TYPE_RINGBUF, "xdph_watch_ring", 0, 0, RING_BYTES)


def prof_map() -> int:
    from .link.splice import PROF_SIZE

    return create_map(BPF_MAP_TYPE_PERCPU_ARRAY, "xdph_watch_prof", 4, PROF_SIZE, 1)


def prof_read(fd: int) -> list[tuple[int, int]]:
    """(calls, ns) per slot key, summed over CPUs; index abi.MAX_CHAIN: the timing's own."""
    import struct

    from .link.splice import PROF_SIZE

    ncpu = libbpf.num_possible_cpus()
    stride = (PROF_SIZE + 7) // 8 * 8
    raw = libbpf.map_lookup(fd, struct.pack("<I", 0), stride * ncpu) or b""
    rows = [[0, 0] for _ in range(abi.MAX_CHAIN + 1)]
    for c in range(ncpu if raw else 0):
        vals = struct.unpack_from(f"<{(abi.MAX_CHAIN + 1) * 2}Q", raw, c * stride)
        for k in range(abi.MAX_CHAIN + 1):
            rows[k][0] += vals[2 * k]
            rows[k][1] += vals[2 * k + 1]
    return [tuple(r) for r in rows]


def prof_zero(fd: int) -> None:
    import struct

    from .link.splice import PROF_SIZE

    stride = (PROF_SIZE + 7) // 8 * 8
    libbpf.map_update(fd, struct.pack("<I", 0), bytes(stride * libbpf.num_possible_cpus()))


# --- swapping ------------------------------------------------------------------------------


def _replace(iface: InterfaceRef, ifindex: int, expected: int, new_fd: int,
             xdp_mode: str) -> None:
    """Attach ``new_fd`` in place of program ``expected`` (XDP_FLAGS_REPLACE: the kernel
    refuses if anything else runs now; no window without a program)."""
    with netns(iface.netns):
        running = libbpf.xdp_query_id(ifindex)
        if running != expected:
            raise XdphooksError(f"{iface}: program id {running} runs, not {expected}; "
                                "nothing was swapped",
                                fix="run 'xdphooks reconcile' and watch again")
        with libbpf.fd_closing(libbpf.prog_fd_by_id(expected)) as old_fd:
            libbpf.xdp_attach(ifindex, new_fd,
                              libbpf.XDP_FLAGS_REPLACE | libbpf.XDP_MODES[xdp_mode], old_fd)


@contextmanager
def _signals_held() -> Iterator[None]:
    """A swap and its bookkeeping finish before a signal is acted on."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Stop(BaseException):
    pass


@contextmanager
def stop_on_signals() -> Iterator[list]:
    """SIGTERM/SIGHUP end a watch like Ctrl-C: the ``finally`` swaps back. Yields a
    list that receives the signal's name."""
    got: list = []

    def handler(signum, _frame):
        got.append(signal.Signals(signum).name)
        raise _Stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield got
    except (_Stop, KeyboardInterrupt):
        if not got:
            got.append("SIGINT")
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- the watch -------------------------------------------------------------------------------


@dataclass
class Watch:
    iface: InterfaceRef
    record: object  # the InterfaceRecord of the running chain
    chain: object  # its Chain
    prog_id: int  # the instrumented root
    lease: Lease
    ended_by_other: str = ""


def _share(gen_dir: Path, root_id: int) -> tuple[dict[str, int], list[dict[str, int]], list[int]]:
    """fds of the running chain's counters/events, and per segment its globals maps
    (fds to close afterwards in the third item)."""
    from .link.globals import DATA_SECTIONS

    fds: list[int] = []
    maps: dict[str, int] = {}
    for name, pin in ((abi.COUNTERS_MAP, "counters"), (abi.EVENTS_MAP, "events")):
        if (gen_dir / pin).exists():
            maps[name] = libbpf.obj_get(str(gen_dir / pin))
            fds.append(maps[name])
    progs = [root_id]
    if (gen_dir / "segments").exists():
        with libbpf.fd_closing(libbpf.obj_get(str(gen_dir / "segments"))) as seg_fd:
            for k in range(1, abi.MAX_SEGMENTS):
                raw = libbpf.map_lookup(seg_fd, k.to_bytes(4, "little"), 4)
                if not raw or not int.from_bytes(raw, "little"):
                    break
                progs.append(int.from_bytes(raw, "little"))
    per_seg = []
    for pid in progs:
        seg: dict[str, int] = {}
        with libbpf.fd_closing(libbpf.prog_fd_by_id(pid)) as pfd:
            for mid in libbpf.prog_info(pfd, map_ids=True)[1]:
                fd = libbpf.map_fd_by_id(mid)
                name = libbpf.map_info(fd).name.decode(errors="replace")
                sec = next((s for s in DATA_SECTIONS if name.endswith(s)), None)
                if sec is None:
                    os.close(fd)
                    continue
                seg[sec] = fd
                fds.append(fd)
        per_seg.append(seg)
    return maps, per_seg, fds


def end_watches(paths: Paths, stale_only: bool = False, key: str | None = None) -> list[str]:
    """Swap the recorded chain back wherever a watch left its instrumented one (the
    caller holds the lock). Called by reconcile and teardown before they look at the
    kernel (every watch), by a new watch (``stale_only``: those whose owner is gone or
    whose lease expired) and by a watch on its way out (its ``key``). Returns one line
    per watch ended."""
    from . import state as state_mod
    from .kernel import xdp

    said = []
    leases = read_leases(paths)
    st, _ = state_mod.load(paths.state_file)
    keys = set(leases)
    if_root = paths.pin_root / "if"
    if if_root.is_dir():
        keys |= {d.name for d in if_root.iterdir() if (d / WATCH_PIN).is_dir()}
    for k in sorted(keys if key is None else keys & {key}):
        lease, rec = leases.get(k), st.interfaces.get(k)
        if stale_only and lease is not None and lease.owner_alive() \
                and time.time() < lease.until:
            continue
        wdir = paths.iface_pin_dir(k) / WATCH_PIN
        watched = lease.watched_id if lease else xdp.pinned_prog_id(wdir / "root")
        restore = Path(lease.restore_pin) if lease else (Path(rec.pin_dir) / "root"
                                                         if rec else None)
        iface = InterfaceRef(rec.netns, rec.name) if rec else \
            InterfaceRef.parse(lease.interface) if lease else None
        if iface is not None and watched and restore is not None and restore.exists():
            index, attached = xdp.query(iface)
            if attached == watched:
                with libbpf.fd_closing(libbpf.obj_get(str(restore))) as fd:
                    _replace(iface, index, watched, fd, rec.xdp_mode if rec else "native")
                who = f" by pid {lease.pid}" if lease else ""
                why = ("its owner is gone" if lease and not lease.owner_alive() else
                       "its lease expired" if lease and time.time() > lease.until else
                       "the chain is being changed")
                said.append(f"{iface}: ended the watch{who} ({why}); the untraced chain "
                            f"(program id {xdp.pinned_prog_id(restore)}) runs again")
        bpffs.rmtree(wdir)
        (lease_dir(paths) / f"{k}.json").unlink(missing_ok=True)
    return said


@contextmanager
def watching(paths: Paths, iface: InterfaceRef, instrument: Instrument, purpose: str,
             seconds: float) -> Iterator[Watch]:
    """Swap an instrumented build of the running static chain in for the duration."""
    from . import state as state_mod
    from .kernel import xdp

    # signals wait from before the swap in until the try below that swaps back: a
    # Ctrl-C during the build is acted on only once the finally is in place
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        with state_mod.Lock(paths.lock_file):
            w = _swap_in(paths, iface, instrument, purpose, seconds)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        yield w
    finally:
        with _signals_held(), state_mod.Lock(paths.lock_file):
            index, attached = xdp.query(iface)
            if attached != w.prog_id:
                w.ended_by_other = ("the watch was ended meanwhile (an 'xdphooks reconcile' "
                                    "changed or restored the chain)")
            now_lease = read_leases(paths).get(iface.key)
            if now_lease is None or now_lease.watched_id == w.prog_id:  # not a newer watch
                end_watches(paths, key=iface.key)


def _swap_in(paths: Paths, iface: InterfaceRef, instrument: Instrument, purpose: str,
             seconds: float) -> Watch:
    """Build the instrumented chain, pin it, write the lease, swap it in (lock held)."""
    from . import coordinator
    from .backends import static
    from .backends.base import BuildContext, PreviousChain
    from .kernel import xdp

    said = end_watches(paths, stale_only=True)  # a watch killed earlier
    live = read_leases(paths).get(iface.key)
    if live is not None:
        raise UsageError(f"{iface} is already {live.describe()}; nothing was watched",
                         fix="wait for that watch to end (one watch per interface)")
    sess = coordinator.gather(paths, coordinator.Options(interfaces=(str(iface),)))
    rec = sess.state.interfaces.get(iface.key)
    if rec is None:
        raise UsageError(f"no chain on {iface}", fix="see xdphooks status for the interfaces")
    chain = sess.desired.get(iface)
    index, attached = xdp.query(iface)
    if attached != rec.prog_id:
        raise XdphooksError(f"{iface}: program id {attached} runs, not the recorded chain "
                            f"(id {rec.prog_id}); nothing was watched",
                            fix="run 'xdphooks reconcile' first")
    if chain is None or chain.fingerprint() != rec.fingerprint:
        raise XdphooksError(f"{iface}: the configuration or the plugins changed since its "
                            "chain was built, so a watched build would not be the chain "
                            "that runs; nothing was watched",
                            fix="run 'xdphooks reconcile' first")
    gen_dir = Path(rec.pin_dir)
    share, share_globals, fds = _share(gen_dir, rec.prog_id)
    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=paths.run_dir))
    built = None
    try:
        ctx = BuildContext(iface, chain, paths, workdir, coordinator.DATA_DIR,
                           sess.config.counters,
                           PreviousChain(gen_dir, {}, mode=rec.mode),
                           coordinator._prog_arrays_hook(sess, iface))
        ctx.instrument, ctx.share_maps, ctx.share_globals = instrument, share, share_globals
        built = static.build(ctx)
        wdir = paths.iface_pin_dir(iface.key) / WATCH_PIN
        bpffs.rmtree(wdir)
        wdir.mkdir(parents=True, mode=0o700)
        for name, fd in built.pins.items():
            libbpf.obj_pin(fd, str(wdir / name))
        watched = libbpf.prog_info(built.prog_fd)[0].id
        # pre-flight's canned packets went through the instrumentation too
        if instrument.prof_fd >= 0:
            prof_zero(instrument.prof_fd)
        if instrument.ring_fd >= 0:
            with libbpf.RingBuffer(instrument.ring_fd, lambda _b: True) as rb:
                rb.consume()
        now = time.time()
        lease = Lease(str(iface), iface.key, purpose, os.getpid(), os.getuid(), _tty(),
                      now, now + seconds + 30, watched, rec.prog_id, str(gen_dir / "root"))
        _write_lease(paths, lease)  # before the swap: a SIGKILL after it is recoverable
        try:
            _replace(iface, index, rec.prog_id, built.prog_fd, rec.xdp_mode)
        except BaseException:
            bpffs.rmtree(wdir)
            (lease_dir(paths) / f"{iface.key}.json").unlink(missing_ok=True)
            raise
        w = Watch(iface, rec, chain, watched, lease)
        w.ended_by_other = "; ".join(said)
        return w
    finally:
        if built is not None:
            built.close()  # the pins and the attachment hold the chain
        for fd in fds:
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["Lease", "Watch", "watching", "end_watches", "read_leases", "ring_map",
           "prof_map", "prof_read", "stop_on_signals"]
