"""``xdphooks trace IFACE``: one packet through the chain, program by program.

Trace must answer for the chain that runs, or say why it cannot. Each program of the
interface's recorded chain is loaded on its own exactly as the backends load it:
the object bytes the chain was built from (digest checked), its ``constants=``, its
``maps=`` settings, its pinned maps (DEVMAP flags as the backends declare them), and
the values its globals hold in the running chain right now. It is then run with
BPF_PROG_TEST_RUN, and the verdict policy is applied exactly as the root does. Works
the same for static and freplace chains. Nothing of the running chain is changed but
what the programs themselves write into their shared maps for the traced packet.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from . import state as state_mod
from .backends.preflight import tcp, udp
from .errors import ObjectError, UsageError, XdphooksError
from .model import ACTIONS, ChainEntry, InterfaceRef, VerdictPolicy
from .paths import Paths
from .security import is_root
from .state import InterfaceRecord, ProgramRecord

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


def entry_of(rec: ProgramRecord) -> ChainEntry:
    """The chain entry a recorded program was built from (what the backends loaded)."""
    from . import mapsettings

    constants = tuple((k, bytes.fromhex(v[4:]) if isinstance(v, str) and v.startswith("hex:")
                       else v) for k, v in sorted(rec.constants.items()))
    return ChainEntry(rec.name, rec.plugin, rec.object, rec.program, rec.priority,
                      VerdictPolicy.from_mapping(rec.policy), digest=rec.digest,
                      constants=constants, map_settings=mapsettings.freeze(rec.maps))


def _map_pin_dir(paths: Paths, rec: InterfaceRecord, p: ProgramRecord) -> Path:
    """Where ``p``'s maps are pinned: its own directory, or that of the program of the
    same object whose maps it shares (several programs of one object)."""
    own = paths.map_pin_dir(p.name)
    if own.is_dir():
        return own
    for other in rec.programs:
        if other.object == p.object and paths.map_pin_dir(other.name).is_dir():
            return paths.map_pin_dir(other.name)
    return own


def _running_globals(rec: InterfaceRecord, p: ProgramRecord) -> tuple[dict, callable]:
    """The running chain's globals of ``p`` and how a variable's name maps to them
    (where the chain keeps them is its backend's to say)."""
    from . import backends

    return backends.of(rec).running_globals(rec, p)


def _object_copy(p: ProgramRecord, workdir: Path) -> str:
    """A private copy of the bytes the chain was built from; refused when the object on
    disk is no longer those bytes (trace would answer for another program)."""
    from .security import read_trusted

    data = read_trusted(Path(p.object), "BPF object", p.plugin)
    digest = hashlib.sha256(data).hexdigest()
    if p.digest and digest != p.digest:
        raise ObjectError(f"{p.name}: {p.object} is no longer the object its running chain "
                          f"was built from (sha256 {digest[:12]}…, the chain ran "
                          f"{p.digest[:12]}…), so trace cannot test what runs",
                          plugin=p.plugin, fix="run 'xdphooks reconcile' to build the chain "
                                               "from the new object, then trace again")
    copy = workdir / f"{p.slot}-{os.path.basename(p.object)}"
    copy.write_bytes(data)
    return str(copy)


def run_one(paths: Paths, rec: InterfaceRecord, p: ProgramRecord, packet: bytes,
            workdir: Path):
    """``p`` loaded as the chain loaded it, run once on ``packet``."""
    from . import mapsettings
    from .backends.base import apply_constants, data_maps, object_globals, pin_map, \
        write_globals
    from .kernel import libbpf
    from .backends.globalpins import pinned_globals
    from .link.globals import carry

    entry = entry_of(p)
    path = _object_copy(p, workdir)
    pin_dir = _map_pin_dir(paths, rec, p)
    program = p.program or p.name
    with libbpf.BpfObject(path) as obj:
        for prog in obj.programs():
            prog.set_autoload(prog.name == program)
            if prog.name == program and prog.type == 0:  # BPF_PROG_TYPE_UNSPEC: a section no type claims
                prog.set_type(libbpf.BPF_PROG_TYPE_XDP)  # as the backends take it
        apply_constants(obj, path, entry)
        maps = {m.name: m for m in obj.maps() if not m.internal}
        pins = {name: str(pin_dir / name) for name in maps
                if name not in mapsettings.unpinned(entry)}
        mapsettings.apply(maps, entry, os.path.basename(p.object), pins.get)
        for name, m in maps.items():
            pin = pins.get(name)
            pin_map(m, pin if pin and os.path.exists(pin) else None)  # the chain's live map
        obj.load()
        variables, defaults = object_globals(path)
        if defaults:
            # a static slot's own section maps, pinned (backends/globalpins.py), else
            # what the running chain holds
            old, old_name = pinned_globals(pin_dir), (lambda n: n)
            if not old:
                old, old_name = _running_globals(rec, p)
            contents, _ = carry(old, variables, defaults, old_name)
            write_globals(data_maps(obj), contents)
        return libbpf.prog_test_run(obj.program(program).fd, packet)


def main(args, paths: Paths) -> int:
    if not is_root():
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
    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trace-", dir=paths.run_dir) as tmp:
        for p in rec.programs:
            policy = VerdictPolicy.from_mapping(p.policy)
            res = run_one(paths, rec, p, packet, Path(tmp))
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
