"""``xdphooks trace --live IFACE PROGRAM``: every real packet's verdict from one
component while the chain runs.

Static chains (every slot: spliced or called, any segment): an instrumented build
of the same chain is swapped in for the duration (xdphooks/watchlease.py) whose
generated code copies the packet as the component left it (and, with ``--capture
entry,exit``, as it got it) with its verdict into a ring buffer; ``--pcap`` writes
those packets as pcapng (xdphooks/pcap.py). Freplace chains: an fexit program
(bpf/slot_trace.bpf.c) on the component's EXT program reports its return value,
the frame length and protocol. Either ends after ``--count`` packets or
``--seconds``, whichever comes first, and leaves nothing behind.
"""

from __future__ import annotations

import os
import struct
import time

from . import backends, fexit
from . import state as state_mod
from .errors import UsageError, XdphooksError
from .model import ACTIONS, InterfaceRef, VerdictPolicy
from .paths import Paths
from .security import is_root

_EVENT = struct.Struct("<QIIHBBI")  # struct xdph_trace_event (bpf/xdph_abi_trace.h)
_L4 = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
_L3 = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN", 0x88A8: "QinQ"}
POLL_S = 0.05


def describe(proto_be: int, l4: int) -> str:
    eth = int.from_bytes(proto_be.to_bytes(2, "little"), "big")  # stored as read: network order
    l3 = _L3.get(eth, f"0x{eth:04x}")
    if eth in (0x0800, 0x86DD):
        return f"{l3}/{_L4.get(l4, str(l4))}"
    return l3


def format_event(rec: bytes, mono_to_wall: float, policy: VerdictPolicy) -> str:
    ts, ret, length, proto, l4, _, cpu = _EVENT.unpack_from(rec, 0)
    verdict = ACTIONS[ret] if ret < len(ACTIONS) else f"unknown({ret})"
    decision = policy.decision(verdict if ret < len(ACTIONS) else "unknown").value
    when = ts / 1e9 + mono_to_wall
    stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1e6) % 1000000:06d}"
    return (f"{stamp}  cpu{cpu:<3} {verdict:<12} {length:>5} B  {describe(proto, l4):<12} "
            f"chain: {decision}")


def main(args, paths: Paths) -> int:
    if not is_root():
        raise XdphooksError("trace --live attaches a tracer in the kernel and needs root",
                            fix="run it as root")
    if not args.program:
        raise UsageError("trace --live needs the program to watch",
                         fix="xdphooks trace --live IFACE PROGRAM (names: xdphooks status)")
    if args.count <= 0 or args.seconds <= 0:
        raise UsageError("--count and --seconds must be positive", fix="e.g. --count 20")
    iface = InterfaceRef.parse(args.interface)
    st, _ = state_mod.load(paths.state_file)
    rec = st.interfaces.get(iface.key)
    if rec is None:
        raise UsageError(f"no chain on {iface}", fix="see xdphooks status for the interfaces")
    prog = next((p for p in rec.programs if p.name == args.program), None)
    if prog is None:
        names = ", ".join(p.name for p in rec.programs) or "none"
        raise UsageError(f"no program {args.program!r} in the chain on {iface}",
                         fix=f"name one of: {names}")
    backend = backends.of(rec)
    if backend.instrumented_watch:
        return _watch(args, paths, iface, rec, prog)
    t = backend.trace_target(rec, prog)
    policy = VerdictPolicy.from_mapping(prog.policy)
    mono_to_wall = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    from .counters import iter_ring

    with fexit.attached(fexit.TRACE_OBJ, fexit.TRACE_PROGS, t) as obj:
        ring = obj.map("xdph_trace_ring").fd
        print(f"live trace of {prog.name} (slot {prog.slot}, {t.link}) on {iface}: "
              f"up to {args.count} packet(s) or {args.seconds:g} s", flush=True)
        n, t0 = 0, time.monotonic()
        deadline = t0 + args.seconds
        while n < args.count and time.monotonic() < deadline:
            for raw in iter_ring(ring, args.count - n, _EVENT.size):
                print(format_event(raw, mono_to_wall, policy), flush=True)
                n += 1
            if n < args.count:
                time.sleep(POLL_S)
    print(f"{n} packet(s) in {time.monotonic() - t0:.1f} s; tracer detached")
    return 0


# --- static chains: the instrumented build -----------------------------------------------


def _l3l4(data: bytes) -> str:
    if len(data) < 14:
        return "?"
    eth = int.from_bytes(data[12:14], "big")
    l4 = data[23] if eth == 0x0800 and len(data) > 23 else \
        data[20] if eth == 0x86DD and len(data) > 20 else 0
    return describe(int.from_bytes(eth.to_bytes(2, "big"), "little"), l4)


def format_capture(hdr: tuple, data: bytes, mono_to_wall: float,
                   policy: VerdictPolicy) -> str:
    from .link.splice import CAPTURE_ENTRY, WHERE_EXIT

    ts, _slot, ret, length, _cap, where, ifindex = hdr
    when = ts / 1e9 + mono_to_wall
    stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1e6) % 1000000:06d}"
    if where == WHERE_EXIT and ret != CAPTURE_ENTRY:
        verdict = ACTIONS[ret] if ret < len(ACTIONS) else f"unknown({ret})"
        decision = policy.decision(verdict if ret < len(ACTIONS) else "unknown").value
        at = "exit"
    else:
        verdict, decision, at = "-", "-", "entry"
    return (f"{stamp}  if{ifindex:<4} {at:<5} {verdict:<12} {length:>5} B  "
            f"{_l3l4(data):<12} chain: {decision}")


def _watch(args, paths: Paths, iface: InterfaceRef, rec, prog) -> int:
    import sys

    from . import pcap as pcap_mod, watchlease
    from .capabilities import has_load_bytes
    from .kernel.libbpf import RingBuffer
    from .link.splice import CAPTURE_HDR, WHERE_ENTRY, WHERE_EXIT, Instrument

    where = {w.strip() for w in args.capture.split(",") if w.strip()}
    if not has_load_bytes():
        raise XdphooksError(
            f"trace --live on a static chain copies each packet with bpf_xdp_load_bytes, "
            f"which Linux {os.uname().release} does not have (it came in 5.18); nothing "
            "was changed", fix="'xdphooks status --profile' times the slots on this "
                               "kernel; for a packet view, run Linux 5.18 or later")
    if not where or where - {"entry", "exit"}:
        raise UsageError(f"--capture {args.capture!r}: say entry, exit or entry,exit",
                         fix="e.g. --capture entry,exit")
    if not 14 <= args.snaplen <= 4096:
        raise UsageError(f"--snaplen {args.snaplen}: from 14 to 4096 bytes", fix="e.g. --snaplen 256")
    counted = WHERE_EXIT if "exit" in where else WHERE_ENTRY
    text = sys.stderr if args.pcap == "-" else sys.stdout
    out = None
    if args.pcap:
        out = sys.stdout.buffer if args.pcap == "-" else open(args.pcap, "wb")  # noqa: SIM115
    writer = pcap_mod.PcapngWriter(out, args.snaplen, str(iface)) if out else None
    policy = VerdictPolicy.from_mapping(prog.policy)
    mono_to_wall = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    ring = watchlease.ring_map()
    n, t0, stopped, watch = 0, time.monotonic(), [], None
    link = backends.of(rec).link_kind(prog)
    try:
        ins = Instrument(ring_fd=ring, capture=frozenset({prog.slot}), entry="entry" in where,
                         snaplen=args.snaplen)
        with watchlease.stop_on_signals() as stopped, watchlease.watching(
                paths, iface, ins, f"trace {prog.name}", args.seconds) as w:
            print(f"live trace of {prog.name} (slot {prog.slot}, {link}) on {iface}: up to "
                  f"{args.count} packet(s) or {args.seconds:g} s; instrumented chain id "
                  f"{w.prog_id} swapped in for the watch", file=text, flush=True)
            watch = w
            t0 = time.monotonic()  # --seconds counts from the swap, not from the build

            def on_sample(raw: bytes) -> bool:
                nonlocal n
                hdr = CAPTURE_HDR.unpack_from(raw, 0)
                data = raw[CAPTURE_HDR.size: CAPTURE_HDR.size + hdr[4]]
                print(format_capture(hdr, data, mono_to_wall, policy), file=text, flush=True)
                if writer is not None:
                    ret, at = hdr[2], "exit" if hdr[5] == WHERE_EXIT else "entry"
                    verdict = (ACTIONS[ret] if ret < len(ACTIONS) else f"unknown({ret})") \
                        if at == "exit" else "-"
                    decision = policy.decision(verdict if ret < len(ACTIONS) else "unknown"
                                               ).value if at == "exit" else "-"
                    writer.packet(int((hdr[0] / 1e9 + mono_to_wall) * 1e9), data, hdr[3],
                                  pcap_mod.comment(prog.slot, prog.name, at, verdict, decision))
                if hdr[5] == counted:
                    n += 1
                return n < args.count

            with RingBuffer(ring, on_sample) as rb:
                deadline = time.monotonic() + args.seconds
                while n < args.count and time.monotonic() < deadline:
                    try:
                        rb.poll(int(min(POLL_S, max(deadline - time.monotonic(), 0)) * 1000)
                                or 1)
                    except XdphooksError:
                        if stopped:  # the signal arrived inside libbpf's callback
                            break
                        raise
    finally:
        os.close(ring)
        if out is not None and args.pcap != "-":
            out.close()
    if watch is not None and watch.ended_by_other:
        print(f"xdphooks: warning: {watch.ended_by_other}", file=sys.stderr)
    how = f"; stopped by {stopped[0]}" if stopped else ""
    print(f"{n} packet(s) in {time.monotonic() - t0:.1f} s{how}; the untraced chain runs "
          "again; tracer detached", file=text, flush=True)
    return 130 if stopped and stopped[0] == "SIGINT" else 0
