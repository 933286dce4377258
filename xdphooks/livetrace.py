"""``xdphooks trace --live IFACE PROGRAM``: every real packet's verdict from one
component while the chain runs.

An fexit program (bpf/slot_trace.bpf.c) on the component's function reports its
return value, the frame length and protocol through a ring buffer; it is
attached only for the duration of the command, which ends after ``--count``
packets or ``--seconds``, whichever comes first.
"""

from __future__ import annotations

import os
import struct
import time

from . import fexit
from . import state as state_mod
from .errors import UsageError, XdphooksError
from .model import ACTIONS, InterfaceRef, VerdictPolicy
from .paths import Paths

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
    if os.geteuid() != 0:
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
    t = fexit.target(rec, prog)
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
