"""Concurrency: 32 reconciles and package transactions at once.

Each actor first changes what is desired (a drop-in plugin added or removed,
a package installed) and then reconciles. Because a reconcile reads the
desired state inside the lock, the last one to get the lock sees every change
made before any actor started reconciling: the end state must equal the
desired state (no update lost), one generation pinned, nothing leaked.
"""

from __future__ import annotations

import json
import os
import random
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import pkg_support as pu
from test_crash import NOTHING_NEW, bpftool_counts, pinned_roots, settle

pytestmark = pytest.mark.kernel

ACTORS = 32

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object="count_pass.o", priority={prio},
                           interfaces=({iface!r},))]
""")


def chain(status: dict, veth) -> list[str]:
    for iface in status["interfaces"]:
        if iface["netns"] == veth.ns_a and iface["name"] == veth.dev_a:
            return [p["name"] for p in iface["programs"]]
    return []


def test_32_concurrent_reconciles_lose_no_update(xh, veth, bpf_obj):
    baseline = bpftool_counts()
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    # 16 plugins that will be removed, one by each of 16 actors; 16 actors add one.
    for i in range(ACTORS // 2):
        xh.add_plugin(f"old{i:02d}", PLUGIN.format(name=f"old{i:02d}", prio=100 + i,
                                                   iface=veth.iface))
    xh.run("reconcile")
    barrier = threading.Barrier(ACTORS)

    def actor(i: int):
        barrier.wait()
        time.sleep(random.Random(i).uniform(0, 3))  # interleave changes with running reconciles
        if i % 2:
            (xh.plugin_dir / f"old{i // 2:02d}.py").unlink()
        else:  # written aside and renamed in, as package managers do
            tmp = xh.add_plugin(f".new{i // 2:02d}", PLUGIN.format(
                name=f"new{i // 2:02d}", prio=10 + i // 2, iface=veth.iface))
            tmp.rename(tmp.with_name(f"new{i // 2:02d}.py"))
        return xh.run("reconcile", check=False, timeout=600)

    with ThreadPoolExecutor(ACTORS) as pool:
        results = list(pool.map(actor, range(ACTORS)))
    failed = [(r.returncode, r.stderr[:1500]) for r in results if r.returncode]
    assert not failed, failed

    want = [f"new{i:02d}" for i in range(ACTORS // 2)]
    assert chain(json.loads(xh.run("status", "--json").stdout), veth) == want
    plan = json.loads(xh.run("plan", "--json").stdout)
    assert all(c["action"] == "keep" for c in plan["changes"]), plan
    roots = pinned_roots(xh, veth)
    assert len(roots) == 1, f"generations left pinned: {roots}"
    state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
    (rec,) = state["interfaces"].values()
    assert rec["prog_id"] == next(iter(roots.values()))
    applied = sum(r.stdout.startswith(("replace", "attach")) for r in results)
    print(f"\n[concurrency] {ACTORS} reconciles, {applied} of them changed the chain; "
          f"end chain {len(want)} programs")
    xh.run("teardown", "--all")
    assert settle(baseline) == NOTHING_NEW, "kernel objects leaked"


# --- with real package transactions -------------------------------------------------


pkgs, env = pu.fixtures("rpm", "conc")


@pytest.mark.pkg
@pytest.mark.slow
def test_package_transactions_and_reconciles_at_once(env, pkgs, bpf_obj):
    """4 dnf transactions (each trigger reconciles) race 28 manual reconciles and
    drop-in changes; dnf serialises its own transactions, xdphooks' lock the rest."""
    env.dnf("install", str(pkgs["xdphooks"]))
    admin = env.root / "etc/xdphooks/plugins"
    bpf_dir = env.root / "objects"
    bpf_dir.mkdir()
    obj = bpf_dir / "count_pass.o"
    obj.write_bytes(bpf_obj("count_pass").read_bytes())
    os.chmod(obj, 0o644)
    # dnf, not bare rpm: Debian's rpm does not wait for a held transaction lock (it
    # fails with EAGAIN), while dnf waits for the other dnf; both end in real rpm
    # transactions whose file triggers reconcile.
    transactions = [("install", str(pkgs[name]))
                    for name in ("firewall", "counter", "txbuggy", "example")]
    barrier = threading.Barrier(ACTORS)

    def actor(i: int):
        barrier.wait()
        time.sleep(random.Random(i).uniform(0, 3))
        if i < len(transactions):
            return env.dnf(*transactions[i], check=False)
        if i % 2:  # an admin drop-in, reconciled by hand
            name = f"adm{i:02d}"
            (admin / f".{name}.py").write_text(PLUGIN.format(
                name=name, prio=100 + i, iface=env.veth.iface).replace(
                '"count_pass.o"', repr(str(obj))))
            (admin / f".{name}.py").rename(admin / f"{name}.py")
        return env.xdphooks("reconcile", check=False)

    with ThreadPoolExecutor(ACTORS) as pool:
        results = list(pool.map(actor, range(ACTORS)))
    failed = [(i, r.returncode, r.stdout[-300:], r.stderr[-500:])
              for i, r in enumerate(results) if r.returncode]
    assert not failed, failed
    assert sorted(pu.installed_rpms()) == sorted(
        ["xdphooks", "xdphooks-firewall", "xdphooks-counter", "xdphooks-txbuggy",
         "xdphooks-example"])
    want = ["firewall", "example", "txbuggy", "counter"] + [
        f"adm{i:02d}" for i in range(len(transactions), ACTORS) if i % 2]
    got = env.chain()
    assert sorted(got) == sorted(want), got
    assert got[:4] == sorted(got[:4], key=want.index)  # package plugins by priority first
    plan = json.loads(env.xdphooks("plan", "--json").stdout)
    assert all(c["action"] == "keep" for c in plan["changes"]), plan
    assert env.attached_prog_id() == env.iface_status()["prog_id"]
    triggered = [r for r in env.runs() if "--trigger=rpm" in r["argv"]]
    print(f"\n[concurrency] {len(transactions)} package transactions ({len(triggered)} "
          f"trigger reconciles) + {ACTORS - len(transactions)} manual reconciles; "
          f"end chain {got}")
    assert len(triggered) >= len(transactions)
