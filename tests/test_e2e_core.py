"""End to end on the real kernel: drop-in plugin → chain on a namespaced veth.

Observed independently of xdphooks: iproute2 says what is attached, ping
sends real packets, the program's own pinned map counts them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import textwrap
import threading

import pytest

from conftest import sh

pytestmark = pytest.mark.kernel

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")


def attached_id(ns: str, dev: str) -> int:
    out = sh("ip", "-j", "-n", ns, "link", "show", "dev", dev).stdout
    link = json.loads(out)[0]
    return (link.get("xdp") or {}).get("prog", {}).get("id", 0)


def read_u64_map(path) -> int:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(path))
    try:
        val = libbpf.map_lookup(fd, struct.pack("I", 0), 8)
        return struct.unpack("Q", val)[0]
    finally:
        os.close(fd)


def ping(veth, count=5):
    return veth.exec_b("ping", "-c", str(count), "-i", "0.2", "-W", "1", veth.ip_a, check=False)


def install(xh, veth, bpf_obj, name="counter", src="count_pass", prio=50):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def test_plugin_attached_counts_packets_then_detached(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj)
    out = xh.run("plan").stdout
    assert "attach" in out and "counter(50)" in out
    xh.run("reconcile")
    pid = attached_id(veth.ns_a, veth.dev_a)
    assert pid > 0
    assert ping(veth).returncode == 0
    count = read_u64_map(xh.bpffs / "xdphooks/maps/counter/pkt_count")
    assert count >= 5  # every echo request crossed the program (plus ARP)

    # Nothing to do afterwards, and a second reconcile touches no kernel object.
    assert "nothing to do" in xh.run("plan").stdout
    gen_before = sorted(p.name for p in (xh.bpffs / "xdphooks/if").rglob("g*"))
    assert "nothing to do" in xh.run("reconcile").stdout
    assert attached_id(veth.ns_a, veth.dev_a) == pid
    assert sorted(p.name for p in (xh.bpffs / "xdphooks/if").rglob("g*")) == gen_before

    status = json.loads(xh.run("status", "--json").stdout)
    (iface,) = status["interfaces"]
    assert iface["name"] == veth.dev_a and iface["netns"] == veth.ns_a
    assert iface["prog_id"] == pid and iface["attached"] is True
    assert [p["name"] for p in iface["programs"]] == ["counter"]

    # Removing the plugin file and reconciling detaches it.
    (xh.plugin_dir / "counter.py").unlink()
    xh.run("reconcile")
    assert attached_id(veth.ns_a, veth.dev_a) == 0
    assert not (xh.bpffs / "xdphooks/if").exists() or not any((xh.bpffs / "xdphooks/if").iterdir())
    assert ping(veth, 2).returncode == 0


def test_teardown_all_leaves_no_pins(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj)
    xh.run("reconcile")
    assert attached_id(veth.ns_a, veth.dev_a) > 0
    xh.run("teardown", "--all")
    assert attached_id(veth.ns_a, veth.dev_a) == 0
    assert not (xh.bpffs / "xdphooks").exists()


def test_drop_program_really_drops(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj, name="icmpfw", src="drop_icmp")
    assert ping(veth, 2).returncode == 0
    xh.run("reconcile")
    assert ping(veth, 3).returncode != 0


def test_rejected_program_leaves_running_chain(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj)
    xh.run("reconcile")
    pid = attached_id(veth.ns_a, veth.dev_a)
    install(xh, veth, bpf_obj, name="bad", src="bad_verifier", prio=10)
    proc = xh.run("reconcile", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "plugin 'bad'" in err and "fix" in err, err
    assert attached_id(veth.ns_a, veth.dev_a) == pid  # the old chain keeps running
    assert ping(veth, 2).returncode == 0
    status = json.loads(xh.run("status", "--json").stdout)
    assert status["last_run"]["failed"]


def test_foreign_program_left_alone_unless_takeover(xh, veth, bpf_obj):
    obj = bpf_obj("count_pass")
    veth.exec_a("ip", "link", "set", "dev", veth.dev_a, "xdpdrv", "obj", str(obj), "sec", "xdp")
    foreign = attached_id(veth.ns_a, veth.dev_a)
    assert foreign
    install(xh, veth, bpf_obj, name="icmpfw", src="drop_icmp")
    proc = xh.run("reconcile", check=False)
    assert proc.returncode == 1 and "did not attach" in proc.stderr and "--takeover" in proc.stderr
    assert attached_id(veth.ns_a, veth.dev_a) == foreign
    xh.run("reconcile", "--takeover")
    assert attached_id(veth.ns_a, veth.dev_a) not in (0, foreign)


def test_two_reconciles_at_once_converge(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj)
    install(xh, veth, bpf_obj, name="icmpfw", src="drop_icmp", prio=10)
    results = []

    def run():
        results.append(xh.run("reconcile", check=False))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert "nothing to do" in xh.run("plan").stdout
    status = json.loads(xh.run("status", "--json").stdout)
    assert [p["name"] for p in status["interfaces"][0]["programs"]] == ["icmpfw", "counter"]


def test_non_root_reconcile_refused_status_works(xh, veth, bpf_obj):
    install(xh, veth, bpf_obj)
    xh.run("reconcile")
    os.chmod(xh.root.parent, 0o755)
    env = xh.env
    # The test interpreter lives under /root; an unprivileged user runs Debian's python3
    # with the same source tree and pure-Python dependencies.
    import sysconfig

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = sysconfig.get_paths()["purelib"]
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "/usr/bin/env", f"PYTHONPATH={repo}:{site}", "/usr/bin/python3", "-m", "xdphooks"]
    r = subprocess.run(cmd + ["reconcile"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "needs root" in r.stderr
    s = subprocess.run(cmd + ["status", "--json"], env=env, capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    data = json.loads(s.stdout)
    assert data["root"] is False and data["interfaces"][0]["programs"][0]["name"] == "counter"


def test_watch_attaches_interfaces_created_later(xh, bpf_obj):
    """A veth created after the watcher started (inside a namespace) gets its chain."""
    import subprocess as sp
    import sys
    import time
    import uuid

    from conftest import destroy_veth_pair

    ns = f"xhw{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        xh.add_object(bpf_obj("count_pass"), "count_pass.o")
        xh.add_plugin("late", PLUGIN.format(name="late", obj="count_pass.o", prio=50,
                                            iface=f"{ns}/late*"))
        watcher = sp.Popen([sys.executable, "-m", "xdphooks", "watch", "--seconds", "20"],
                           env=xh.env, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
        try:
            time.sleep(3)  # let it open its sockets
            sh("ip", "-n", ns, "link", "add", "late0", "type", "veth", "peer", "name", "late1")
            for _ in range(50):
                if attached_id(ns, "late0"):
                    break
                time.sleep(0.2)
            assert attached_id(ns, "late0") > 0
            assert attached_id(ns, "late1") > 0
        finally:
            watcher.kill()
            out, err = watcher.communicate()
        assert "hotplug: attach" in out, out + err
    finally:
        destroy_veth_pair(ns)
