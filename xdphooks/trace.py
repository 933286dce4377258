"""``xdphooks trace IFACE``: one packet through the chain, program by program.

Each program of the interface's recorded chain is loaded on its own, with
its pinned maps (so it sees the same blocklists and state as in the chain),
and run with BPF_PROG_TEST_RUN; the verdict policy is then applied exactly
as the rootlet does. Works the same for static and freplace chains.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import state as state_mod
from .backends.preflight import tcp, udp
from .errors import UsageError, XdphooksError
from .model import ACTIONS, InterfaceRef, VerdictPolicy
from .paths import Paths

SPEC_RE = re.compile(r"^\s*([\d.]+):(\d+)\s*(?:->|→)\s*([\d.]+):(\d+)\s*$")


def packet_from_args(args) -> bytes:
    if args.file:
        return Path(args.file).read_bytes()
    spec = args.udp or args.tcp
    m = SPEC_RE.match(spec)
    if not m:
        raise UsageError(f"bad packet description {spec!r}", fix="write SRC:PORT->DST:PORT, "
                         "e.g. 10.0.0.1:1234->10.0.0.2:53")
    src, sport, dst, dport = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
    build = udp if args.udp else tcp
    return build(sport, dport, src=src, dst=dst)


def run_one(paths: Paths, obj_path: str, program: str, name: str, packet: bytes):
    from .kernel import libbpf

    with libbpf.BpfObject(obj_path) as obj:
        for p in obj.programs():
            p.set_autoload(p.name == program)
        pin_dir = paths.map_pin_dir(name)
        for m in obj.maps():
            pin = pin_dir / m.name
            if not m.internal and pin.exists():
                m.set_pin_path(str(pin))  # reuse the chain's live map
        obj.load()
        return libbpf.prog_test_run(obj.program(program).fd, packet)


def main(args, paths: Paths) -> int:
    if os.geteuid() != 0:
        raise XdphooksError("trace loads programs into the kernel and needs root",
                            fix="run it as root")
    packet = packet_from_args(args)
    iface = InterfaceRef.parse(args.interface)
    st, _ = state_mod.load(paths.state_file)
    rec = st.interfaces.get(iface.key)
    if rec is None:
        raise UsageError(f"no chain on {iface}", fix="see xdphooks status for the interfaces")
    print(f"trace {iface} ({rec.mode}), {len(packet)}-byte packet")
    final = "pass (end of chain)"
    for p in rec.programs:
        policy = VerdictPolicy.from_mapping(p.policy)
        res = run_one(paths, p.object, p.program, p.name, packet)
        verdict = ACTIONS[res.retval] if res.retval < len(ACTIONS) else f"unknown({res.retval})"
        decision = policy.decision(verdict if res.retval < len(ACTIONS) else "unknown").value
        print(f"  {p.priority:>4}  {p.name:<16} -> {verdict:<10} policy: {decision}")
        if decision == "return":
            final = f"{verdict} (returned by {p.name})"
            break
        if res.data_out:
            packet = res.data_out  # a program may rewrite the packet for the next one
    print(f"chain verdict: {final}")
    return 0
