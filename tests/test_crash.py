"""Crash injection: SIGKILL at each step of a reconcile.

``XDPHOOKS_CRASH_AT=<point>`` (xdphooks/faults.py) makes the run kill itself
with SIGKILL at that point. After each crash the old or the new chain is
attached — never none — and packets still meet it; the next reconcile
converges to exactly what an uninterrupted run leaves; after teardown the
kernel holds no more programs, maps or links than before the test (counted
with bpftool).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import sh
from freplace_support import IN_VM, vm_only
from xdphooks.faults import POINTS

pytestmark = pytest.mark.kernel

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")

ATTACH_POINTS = [p for p in POINTS if p != "after-detach"]


def bpftool_counts() -> dict[str, frozenset[int]]:
    """Ids of the kernel objects of the kinds a chain is made of (other BPF users of
    the host, e.g. systemd's cgroup programs, are other types). Ids, not counts: an
    object another test or process frees meanwhile must not hide one we leaked."""
    progs = json.loads(sh("bpftool", "-j", "prog", "show").stdout or "[]")
    maps = json.loads(sh("bpftool", "-j", "map", "show").stdout or "[]")
    links = json.loads(sh("bpftool", "-j", "link", "show").stdout or "[]")
    return {"progs": frozenset(p["id"] for p in progs if p.get("type") in ("xdp", "ext")),
            "maps": frozenset(m["id"] for m in maps),
            "links": frozenset(ln["id"] for ln in links
                               if ln.get("type") in ("xdp", "tracing"))}


def settle(baseline: dict[str, frozenset[int]], timeout: float = 10) -> dict[str, list[int]]:
    """Objects created since `baseline` that still exist (empty lists: nothing leaked).
    Kernel objects go away after an RCU grace period: poll a little."""
    deadline = time.monotonic() + timeout
    while True:
        now = bpftool_counts()
        new = {kind: sorted(now[kind] - baseline[kind]) for kind in now}
        if not any(new.values()) or time.monotonic() > deadline:
            return new


NOTHING_NEW = {"progs": [], "maps": [], "links": []}


def attached_id(veth) -> int:
    link = json.loads(sh("ip", "-j", "-n", veth.ns_a, "link", "show", veth.dev_a).stdout)[0]
    return (link.get("xdp") or {}).get("prog", {}).get("id", 0)


def pinned_roots(xh, veth) -> dict[str, int]:
    """Generation dir name -> prog id of its pinned root."""
    from xdphooks.kernel import libbpf

    idir = xh.bpffs / "xdphooks/if" / f"{veth.ns_a}@{veth.dev_a}"
    out = {}
    for g in sorted(idir.iterdir()) if idir.is_dir() else []:
        try:
            fd = libbpf.obj_get(str(g / "root"))
        except Exception:  # noqa: BLE001 - a root unpinned by an interrupted clean-up
            out[g.name] = 0
            continue
        try:
            out[g.name] = libbpf.prog_info(fd)[0].id
        finally:
            os.close(fd)
    return out


def count(xh) -> int:
    from test_nogap import read_u64s

    return read_u64s(xh.bpffs / "xdphooks/maps/first/pkt_count", 1)[0]


def ping_counted(xh, veth) -> bool:
    """Packets still meet a chain: the first component's own counter rises."""
    before = count(xh)
    veth.exec_b("ping", "-c", "3", "-i", "0.2", "-W", "1", veth.ip_a, check=False)
    return count(xh) >= before + 3


def install(xh, veth, bpf_obj, name, prio):
    xh.add_plugin(name, PLUGIN.format(name=name, obj="count_pass.o", prio=prio, iface=veth.iface))


def crash_run(xh, point: str) -> subprocess.CompletedProcess:
    env = dict(xh.env, XDPHOOKS_CRASH_AT=point)
    return subprocess.run([sys.executable, "-m", "xdphooks", "reconcile"], env=env, text=True,
                          capture_output=True, timeout=300)


def setup_chain(xh, veth, bpf_obj, mode):
    xh.write_config(f'mode = "{mode}"\n' + ('xdp_mode = "skb"\n' if mode == "freplace" else ""))
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    install(xh, veth, bpf_obj, "first", 10)
    xh.run("reconcile")
    return attached_id(veth)


def chain_names(xh) -> list[str]:
    """Program names the state file records (read directly: no CLI start-up)."""
    state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
    return [p["name"] for rec in state["interfaces"].values() for p in rec["programs"]]


def converged(xh) -> bool:
    from xdphooks.coordinator import Options, gather
    from xdphooks.paths import Paths

    plan = gather(Paths(xh.root, xh.bpffs), Options()).plan
    return all(c.action == "keep" for c in plan.changes)


def crash_cycle(xh, veth, point: str, want: list[str]) -> None:
    """Crash a reconcile that should bring the chain to ``want`` at ``point``; check the
    old or new chain runs, then that the next run converges to ``want``."""
    old_id = attached_id(veth)
    proc = crash_run(xh, point)
    assert proc.returncode == -signal.SIGKILL, (
        f"crash point {point} was not reached (exit {proc.returncode}):\n{proc.stderr}")
    now, roots = attached_id(veth), pinned_roots(xh, veth)
    if point == "after-detach":
        assert now == 0, "the chain was meant to go: it must be gone"
    else:
        assert now, f"crash at {point} left NO chain attached"
        if point in ("after-load", "after-pin"):
            assert now == old_id, f"crash at {point}: expected the old chain {old_id}, found {now}"
        else:
            assert now != old_id and now in roots.values(), (
                f"crash at {point}: expected the new pinned chain, found {now} (pins {roots})")
        assert ping_counted(xh, veth), f"after a crash at {point} packets no longer meet the chain"

    # The next run converges: the wanted chain, one generation, pinned root == attached.
    xh.run("reconcile")
    roots = pinned_roots(xh, veth)
    if want:
        assert chain_names(xh) == want
        assert list(roots.values()) == [attached_id(veth)], roots
        assert ping_counted(xh, veth)
    else:
        assert not roots and attached_id(veth) == 0 and chain_names(xh) == []
    assert converged(xh), f"not converged after a crash at {point}"


@pytest.mark.parametrize("point", ATTACH_POINTS)
@pytest.mark.skipif(IN_VM, reason="host test")
def test_crash_while_changing_chain(xh, veth, bpf_obj, point):
    baseline = bpftool_counts()
    assert setup_chain(xh, veth, bpf_obj, "static") and ping_counted(xh, veth)
    install(xh, veth, bpf_obj, "second", 20)
    crash_cycle(xh, veth, point, ["first", "second"])
    # Nothing leaked: teardown returns the kernel to the baseline.
    xh.run("teardown", "--all")
    assert settle(baseline) == NOTHING_NEW, f"leak after a crash at {point}"


@pytest.mark.skipif(IN_VM, reason="host test")
def test_crash_while_detaching(xh, veth, bpf_obj):
    baseline = bpftool_counts()
    assert setup_chain(xh, veth, bpf_obj, "static")
    (xh.plugin_dir / "first.py").unlink()
    crash_cycle(xh, veth, "after-detach", [])
    xh.run("teardown", "--all")
    assert settle(baseline) == NOTHING_NEW


@vm_only[0]
@vm_only[1]
def test_crash_at_every_point_freplace(xh, veth, bpf_obj):
    """The same crash points with the freplace backend (extension programs and links
    pinned per generation), in one environment: under emulation every CLI start
    costs seconds. The chain alternates between one and two programs."""
    baseline = bpftool_counts()
    assert setup_chain(xh, veth, bpf_obj, "freplace") and ping_counted(xh, veth)
    for i, point in enumerate(ATTACH_POINTS):
        if i % 2 == 0:
            install(xh, veth, bpf_obj, "second", 20)
            crash_cycle(xh, veth, point, ["first", "second"])
        else:
            (xh.plugin_dir / "second.py").unlink()
            crash_cycle(xh, veth, point, ["first"])
    for plugin in xh.plugin_dir.glob("*.py"):
        plugin.unlink()
    crash_cycle(xh, veth, "after-detach", [])
    xh.run("teardown", "--all")
    assert settle(baseline) == NOTHING_NEW, "leak after the freplace crash points"


@pytest.mark.skipif(IN_VM, reason="host test")
def test_killed_lock_holder_releases_the_lock(xh, veth, bpf_obj):
    """A holder killed mid-run (here: after the swap) never wedges the next run."""
    setup_chain(xh, veth, bpf_obj, "static")
    install(xh, veth, bpf_obj, "second", 20)
    assert crash_run(xh, "after-swap").returncode == -signal.SIGKILL
    t0 = time.monotonic()
    xh.run("reconcile", timeout=60)
    assert time.monotonic() - t0 < 30
    assert chain_names(xh) == ["first", "second"]
