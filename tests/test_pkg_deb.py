"""Real dpkg/apt transactions: the framework's dpkg triggers relink the chain.

Every test installs packages for real (dpkg -i, apt-get install ./x.deb),
pointed at a private root, bpffs and namespaced veth through the environment,
and removes them again. See tests/pkg_support.py.
"""

from __future__ import annotations

import json

import pytest

import pkg_support as pu

pytestmark = [pytest.mark.pkg, pytest.mark.slow]


pkgs, env = pu.fixtures("deb")


def dpkg_status(pkg: str) -> str:
    return pu.sh("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg, check=False).stdout.strip()


def test_deb_lifecycle(env, pkgs):
    env.dpkg("-i", str(pkgs["xdphooks"]))
    runs = env.runs()
    assert [r["argv"] for r in runs] == [["reconcile", "--trigger=dpkg-configure"]]
    assert env.chain() == []

    # apt-get install ./plugin: the file trigger runs reconcile once.
    env.apt("install", str(pkgs["firewall"]))
    runs = env.runs()
    assert len(runs) == 2 and runs[1]["argv"] == ["reconcile", "--trigger=dpkg-triggered"], runs
    assert env.chain() == ["firewall"]
    # The change log says what changed, where, and which package and trigger caused it.
    (change,) = [json.loads(ln) for ln in env.xdphooks("history", "--json").stdout.splitlines()]
    assert change["action"] == "attach" and change["interface"] == env.veth.iface, change
    assert change["trigger"] == "dpkg-triggered" and "xdphooks-firewall" in change["packages"], change
    assert env.attached_prog_id() == env.iface_status()["prog_id"]
    assert env.ping_ok()
    env.block(env.veth.ip_b)
    assert not env.ping_ok()

    # dpkg -i a second plugin: relinked, map contents intact.
    gen = env.generation()
    env.dpkg("-i", str(pkgs["counter"]))
    assert env.chain() == ["firewall", "counter"]
    assert env.generation() == gen + 1
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()

    # Upgrade firewall to 1.1: one trigger run, one swap.
    before, gen, n = env.iface_status(), env.generation(), len(env.runs())
    env.apt("install", str(pkgs["firewall-1.1"]))
    assert dpkg_status("xdphooks-firewall") == "ii"
    assert pu.sh("dpkg-query", "-W", "-f", "${Version}", "xdphooks-firewall").stdout == "1.1"
    assert len(env.runs()) == n + 1
    assert env.generation() == gen + 1
    assert env.iface_status()["prog_id"] != before["prog_id"]
    assert env.chain() == ["firewall", "counter"]
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()

    # apt-get remove a plugin: relinked without it.
    env.apt("remove", "xdphooks-counter")
    assert env.chain() == ["firewall"]

    # apt-get remove the framework (apt takes the firewall along): torn down.
    env.apt("remove", "xdphooks")
    assert env.attached_prog_id() is None
    assert env.ping_ok()
    assert dpkg_status("xdphooks")[:2] in ("", "rc", "un"), dpkg_status("xdphooks")
    assert not (env.root / "run/xdphooks").exists()  # removal takes the lock dir along
    assert (env.root / "var/lib/xdphooks").exists()  # state stays until purge
    env.dpkg("--purge", "xdphooks")
    assert not (env.root / "var/lib/xdphooks").exists()


def test_deb_framework_and_plugins_in_one_run(env, pkgs):
    env.dpkg("-i", str(pkgs["xdphooks"]), str(pkgs["firewall"]), str(pkgs["counter"]))
    assert len(env.runs()) == 1, env.runs()
    assert env.chain() == ["firewall", "counter"]


def test_deb_several_plugins_one_reconcile(env, pkgs):
    env.dpkg("-i", str(pkgs["xdphooks"]))
    assert len(env.runs()) == 1
    env.apt("install", str(pkgs["firewall"]), str(pkgs["counter"]), str(pkgs["txbuggy"]))
    assert len(env.runs()) == 2, env.runs()
    assert env.chain() == ["firewall", "txbuggy", "counter"]
    env.dpkg("-r", "xdphooks-firewall", "xdphooks-counter")
    assert len(env.runs()) == 3, env.runs()
    assert env.chain() == ["txbuggy"]


def test_deb_reconcile_failure_keeps_old_chain(env, pkgs):
    env.dpkg("-i", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    before = env.iface_status()
    assert [p["name"] for p in before["programs"]] == ["firewall"]

    p = env.apt("install", str(pkgs["broken"]))
    assert p.returncode == 0
    # The trigger did not fail: xdphooks is fully configured, nothing pending.
    assert dpkg_status("xdphooks") == "ii"
    assert dpkg_status("xdphooks-broken") == "ii"
    assert "xdphooks" not in pu.sh("dpkg", "--audit").stdout
    after = env.iface_status()
    assert after["prog_id"] == before["prog_id"] == env.attached_prog_id()
    last = env.state().get("last_run", {})
    assert last.get("failed") or last.get("problems"), last

    env.apt("remove", "xdphooks-broken")
    assert env.chain() == ["firewall"]


def test_deb_reconcile_from_another_maintscript_defers(env, pkgs):
    """`xdphooks reconcile` run by another package's maintainer script only
    activates the xdphooks-reconcile trigger; dpkg runs it once, later."""
    env.dpkg("-i", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    n = len(env.runs())
    menv = dict(env.env, DPKG_MAINTSCRIPT_PACKAGE="xdphooks-firewall",
                DPKG_MAINTSCRIPT_NAME="postinst")
    p = pu.sh("/usr/bin/xdphooks", "reconcile", env=menv)
    assert "deferred" in p.stdout
    assert len(env.runs()) == n  # nothing ran yet
    assert dpkg_status("xdphooks") == "it"  # triggers-pending
    env.dpkg("--triggers-only", "--pending")
    assert dpkg_status("xdphooks") == "ii"
    runs = env.runs()
    assert len(runs) == n + 1 and runs[-1]["argv"] == ["reconcile", "--trigger=dpkg-triggered"]


def test_deb_framework_upgrade_keeps_chain(env, pkgs):
    env.dpkg("-i", str(pkgs["xdphooks"]), str(pkgs["firewall"]))
    env.block(env.veth.ip_b)
    before, n = env.iface_status(), len(env.runs())
    env.apt("install", str(pkgs["xdphooks-next"]))
    assert pu.sh("dpkg-query", "-W", "-f", "${Version}", "xdphooks").stdout == "0.1.1"
    assert len(env.runs()) == n + 1, env.runs()  # configure of the new version
    after = env.iface_status()
    assert after["prog_id"] == before["prog_id"] == env.attached_prog_id()  # prerm upgrade: kept
    assert env.veth.ip_b in env.blocklist()
    assert not env.ping_ok()
