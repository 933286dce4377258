"""Real rpm/dnf transactions: the framework's file triggers relink the chain.

Every test installs packages for real (dnf install ./x.rpm), pointed at a
private root, bpffs and namespaced veth through the environment, and removes
them again. See tests/pkg_support.py.
"""

from __future__ import annotations

import json

import pytest

import pkg_support as pu

pytestmark = [pytest.mark.pkg, pytest.mark.slow]


pkgs, env = pu.fixtures("rpm")


def test_rpm_lifecycle(env, pkgs):
    # Framework and firewall in one transaction: one reconcile, chain live.
    p = env.dnf("install", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    runs = env.runs()
    assert len(runs) == 1, runs  # also proves XDPHOOKS_* reached the Lua trigger
    assert runs[0]["argv"] == ["reconcile", "--trigger=rpm"]
    assert env.chain() == ["firewall"], p.stdout
    # The change log says what changed, where, and which package and trigger caused it.
    (change,) = [json.loads(ln) for ln in env.xdphooks("history", "--json").stdout.splitlines()]
    assert change["action"] == "attach" and change["interface"] == env.veth.iface, change
    assert change["trigger"] == "rpm" and "xdphooks-firewall" in change["packages"], change
    assert env.attached_prog_id() == env.iface_status()["prog_id"]
    assert env.ping_ok()

    # Block the peer through the pinned map: its pings are dropped.
    env.block(env.veth.ip_b)
    assert not env.ping_ok()
    assert env.blocklist()[env.veth.ip_b] > 0

    # A second plugin: relinked, the firewall's map contents survive.
    gen = env.generation()
    p = env.dnf("install", str(pkgs["counter"]))
    assert env.chain() == ["firewall", "counter"]
    # The dnf plugin (installed with the framework) reports after the transaction.
    assert "xdphooks: XDP chains after this transaction:" in p.stdout, p.stdout
    assert env.veth.dev_a in p.stdout
    assert env.generation() == gen + 1
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()

    # Upgrade firewall 1.0 -> 1.1: the in and postun triggers both fire,
    # but only one swap happens, and the blocklist is kept.
    before = env.iface_status()
    gen = env.generation()
    env.dnf("install", str(pkgs["firewall-1.1"]))
    assert pu.sh("rpm", "-q", "--qf", "%{VERSION}", "xdphooks-firewall").stdout == "1.1"
    assert env.generation() == gen + 1
    after = env.iface_status()
    assert after["prog_id"] != before["prog_id"]
    assert [p["name"] for p in after["programs"]] == ["firewall", "counter"]
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()

    # Remove a plugin: relinked without it.
    env.dnf("remove", "xdphooks-counter")
    assert env.chain() == ["firewall"]

    # Erase the framework (dnf takes the firewall along): torn down.
    env.dnf("remove", "xdphooks")
    assert env.attached_prog_id() is None
    assert not (env.root / "run/xdphooks").exists()  # erase takes the lock dir along
    assert pu.installed_rpms() == []
    assert env.ping_ok()


def test_rpm_several_plugins_one_reconcile(env, pkgs):
    env.dnf("install", str(pkgs["xdphooks"]))
    assert env.runs() == []  # no plugin files yet: no trigger, nothing to do
    env.dnf("install", str(pkgs["firewall"]), str(pkgs["counter"]), str(pkgs["txbuggy"]))
    assert len(env.runs()) == 1, env.runs()
    assert env.chain() == ["firewall", "txbuggy", "counter"]
    gen = env.generation()
    env.dnf("remove", "xdphooks-firewall", "xdphooks-counter")
    assert len(env.runs()) == 2, env.runs()  # %transfiletriggerpostun: once
    assert env.chain() == ["txbuggy"]
    assert env.generation() == gen + 1


def test_rpm_reconcile_failure_keeps_old_chain(env, pkgs):
    env.dnf("install", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    before = env.iface_status()
    assert [p["name"] for p in before["programs"]] == ["firewall"]

    # The verifier rejects "broken": the transaction still succeeds...
    p = env.dnf("install", str(pkgs["broken"]))
    assert p.returncode == 0
    assert pu.sh("rpm", "-q", "xdphooks-broken", check=False).returncode == 0
    # ...and the old chain keeps running, untouched.
    after = env.iface_status()
    assert after["prog_id"] == before["prog_id"] == env.attached_prog_id()
    assert env.chain() == ["firewall"]
    last = env.state().get("last_run", {})
    assert last.get("failed") or last.get("problems"), last

    # Removing the culprit converges again.
    env.dnf("remove", "xdphooks-broken")
    assert env.chain() == ["firewall"]


def test_rpm_framework_upgrade_keeps_chain(env, pkgs):
    env.dnf("install", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    env.block(env.veth.ip_b)
    before, n = env.iface_status(), len(env.runs())
    env.dnf("install", str(pkgs["xdphooks-next"]))
    assert pu.sh("rpm", "-q", "--qf", "%{VERSION}", "xdphooks").stdout == "0.1.1"
    assert len(env.runs()) == n + 1  # the new framework's trigger sees the installed plugins
    after = env.iface_status()
    assert after["prog_id"] == before["prog_id"] == env.attached_prog_id()  # %preun: no teardown
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()
