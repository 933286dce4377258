"""No gap during swaps: ≥ 1000 chain changes under real traffic, every packet
accounted for.

A bounded UDP stream (round-robin to port 9, which the chain must drop, and
port 7777, which it must pass) runs from the peer namespace while the chain
on the receiving veth goes through add / remove / reorder / upgrade changes.
Two components are in every chain: the *guard* (drops port 9) and the *tail*
(last; counts what reached the end). The proof, from counters the programs
keep in their own pinned maps and from real sockets:

* guard saw every port-9 packet sent, and no port-9 packet reached a socket
  or the tail: none passed unfiltered;
* guard and tail saw every port-7777 packet sent, and the socket received
  every one: none dropped for want of a program.

XDPHOOKS_NOGAP_CHANGES sets the number of changes (default 1000 on the host,
25 in the VM where the kernel is emulated).
"""

from __future__ import annotations

import json
from collections import Counter
import os
import random
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import sh
from freplace_support import IN_VM, vm_only

pytestmark = pytest.mark.kernel

TRAFFIC = Path(__file__).resolve().parent / "traffic.py"
PORT_DROP, PORT_PASS = 9, 7777
# packets/s, both ports together; the emulated VM spends its CPU on the sender otherwise
RATE = 300 if IN_VM else 2000

PLUGIN = textwrap.dedent("""
    import json
    from xdphooks import XdpProgram, hookimpl

    @hookimpl
    def xdphooks_programs():
        with open({spec!r}) as f:
            progs = json.load(f)
        return [XdpProgram(name=p["name"], object=p["object"], priority=p["priority"],
                           interfaces=({iface!r},)) for p in progs]
""")


def changes(n: int, seed: int = 6):
    """The churn: n chain specs, each differing from the one before by an add,
    a remove, a reorder or an upgrade (guard and tail are always present)."""
    rnd = random.Random(seed)
    comps = {"guard": [10, "gap_guard.o"], "tail": [99, "gap_tail.o"]}
    next_filler = 0
    for i in range(n):
        fillers = [c for c in comps if c.startswith("f")]
        kind = ("add", "remove", "reorder", "upgrade")[i % 4]
        if kind == "add" and len(fillers) >= 6 or kind == "remove" and not fillers:
            kind = "remove" if fillers else "add"
        if kind == "reorder" and not fillers:  # the guard alone has no order to change
            kind = "add"
        used = {v[0] for v in comps.values()}
        if kind == "add":
            prio = rnd.choice([p for p in range(1, 99) if p not in used])
            comps[f"f{next_filler}"] = [prio, "gap_filler.o"]
            next_filler += 1
        elif kind == "remove":
            del comps[rnd.choice(fillers)]
        elif kind == "reorder":
            movable = [c for c in comps if c != "tail"]
            old = sorted(movable, key=lambda c: comps[c][0])
            while True:
                prios = rnd.sample(range(1, 99), len(movable))
                if sorted(movable, key=lambda c: prios[movable.index(c)]) != old:
                    break
            for c, p in zip(movable, prios):
                comps[c][0] = p
        else:
            c = rnd.choice([c for c in comps if c != "tail"])
            obj = comps[c][1]
            comps[c][1] = obj.replace("_v2.o", ".o") if "_v2" in obj else obj.replace(".o", "_v2.o")
        yield kind, [{"name": c, "priority": p, "object": o} for c, (p, o) in comps.items()]


def read_u64s(path: Path, n: int) -> list[int]:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(path))
    try:
        return [struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", k), 8))[0]
                for k in range(n)]
    finally:
        os.close(fd)


def udp_errors(veth) -> dict[str, int]:
    lines = [ln.split() for ln in veth.exec_a("cat", "/proc/net/snmp").stdout.splitlines()
             if ln.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def write_spec(path: Path, progs: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(progs))
    os.replace(tmp, path)


@pytest.mark.parametrize("mode", [
    pytest.param("static", marks=pytest.mark.skipif(IN_VM, reason="host test")),
    pytest.param("freplace", marks=vm_only),
])
def test_no_gap_under_traffic(xh, veth, bpf_obj, mode, tmp_path):
    from xdphooks import coordinator
    from xdphooks.kernel import xdp
    from xdphooks.coordinator import Options
    from xdphooks.model import InterfaceRef
    from xdphooks.paths import Paths

    n_changes = int(os.environ.get("XDPHOOKS_NOGAP_CHANGES", "25" if IN_VM else "1000"))
    xh.write_config(f'mode = "{mode}"\n' + ('xdp_mode = "skb"\n' if mode == "freplace" else ""))
    for src in ("gap_guard", "gap_guard_v2", "gap_tail", "gap_filler", "gap_filler_v2"):
        xh.add_object(bpf_obj(src), f"{src}.o")
    spec = xh.root / "etc/xdphooks/nogap.json"
    all_changes = list(changes(n_changes + 1))
    write_spec(spec, all_changes[0][1])
    xh.add_plugin("nogap", PLUGIN.format(spec=str(spec), iface=veth.iface))
    xh.run("reconcile")

    paths = Paths(xh.root, xh.bpffs)
    iface = InterfaceRef(veth.ns_a, veth.dev_a)
    os.environ["XDPHOOKS_NO_SYSLOG"] = "1"  # 1000 changes are not the journal's business
    mac = json.loads(sh("ip", "-j", "-n", veth.ns_a, "link", "show", veth.dev_a).stdout)[0]["address"]
    sh("ip", "-n", veth.ns_b, "neigh", "replace", veth.ip_a, "lladdr", mac, "dev", veth.dev_b,
       "nud", "permanent")  # no ARP in the way of the count
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    recv = subprocess.Popen(["ip", "netns", "exec", veth.ns_a, sys.executable, str(TRAFFIC), "recv",
                             f"{PORT_DROP},{PORT_PASS}", str(ready), str(stop)],
                            stdout=subprocess.PIPE, text=True)
    send = None
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and recv.poll() is None, "receiver did not start"
            time.sleep(0.05)
        send = subprocess.Popen(["ip", "netns", "exec", veth.ns_b, sys.executable, str(TRAFFIC),
                                 "send", veth.ip_a, f"{PORT_DROP},{PORT_PASS}", str(RATE),
                                 "2000000", str(stop)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        swaps, prev_id, t0 = 0, xdp.attached_id(iface), time.monotonic()
        for i, (kind, progs) in enumerate(all_changes[1:]):
            write_spec(spec, progs)
            res = coordinator.reconcile(paths, Options(trigger=f"nogap-{i}-{kind}"))
            assert not res.failed, (i, kind, res.failed)
            now_id = xdp.attached_id(iface)
            assert now_id and now_id != prev_id, f"change {i} ({kind}) did not swap the chain"
            swaps, prev_id = swaps + 1, now_id
            if swaps % 100 == 0 or IN_VM and swaps % 10 == 0:
                sys.stderr.write(f"[nogap {mode}] {swaps} swaps, {time.monotonic() - t0:.0f} s\n")
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.touch()
        sent = json.loads(send.communicate(timeout=30)[0])["sent"] if send else None
        got = json.loads(recv.communicate(timeout=30)[0])["received"]
    sent = {int(k): v for k, v in sent.items()}
    got = {int(k): v for k, v in got.items()}
    guard = read_u64s(xh.bpffs / "xdphooks/maps/guard/gap_seen", 3)
    tail = read_u64s(xh.bpffs / "xdphooks/maps/tail/gap_seen", 3)
    errs = udp_errors(veth)
    report = (f"\n[nogap {mode}] {swaps} swaps ({dict(Counter(k for k, _ in all_changes[1:]))}) in {took:.1f} s "
              f"({took / swaps * 1000:.1f} ms each); sent {sent}, received {got}; "
              f"guard saw {guard[:2]}, tail saw {tail[:2]}; "
              f"{(sent[PORT_DROP] + sent[PORT_PASS]) / swaps:.0f} packets per swap\n")
    sys.stderr.write(report)
    assert swaps >= n_changes
    assert errs.get("RcvbufErrors", 0) == 0, f"the test's own socket overflowed: {errs}"
    # none passed unfiltered
    assert got[PORT_DROP] == 0, report
    assert tail[0] == 0, report
    assert guard[0] == sent[PORT_DROP], report
    # none dropped for want of a program
    assert got[PORT_PASS] == sent[PORT_PASS], report
    assert guard[1] == sent[PORT_PASS] and tail[1] == sent[PORT_PASS], report
    # the guard was upgraded under traffic: packets met both of its versions
    assert guard[1] < guard[2] < 2 * guard[1], report
    assert sent[PORT_PASS] > n_changes, "traffic too thin to cover the swaps"
