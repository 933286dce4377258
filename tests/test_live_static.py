"""Live views of a running static chain on a namespaced veth, with real packets:
``trace --live`` (fexit on the slot function) and ``status --profile``
(fentry/fexit timing, kernel run-time statistics for the chain).

The peer namespace sends UDP datagrams to port 9; the chain is counter (passes
everything) -> udp9 (returns TX for UDP/9, policy tx=log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.kernel

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")

SEND_UDP = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.monotonic() + float(sys.argv[3])
    n = 0
    while n < int(sys.argv[2]) and time.monotonic() < end:
        s.sendto(b"xdphooks", (sys.argv[1], 9))
        n += 1
        time.sleep(float(sys.argv[4]))
""")


def install(xh, veth, bpf_obj, name, src, prio):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def quiet(veth):
    for ns in (veth.ns_a, veth.ns_b):  # no IPv6 ND/MLD noise in the counts
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1"], check=False, capture_output=True)


def send_udp(veth, n, seconds=20.0, gap=0.01):
    """Start sending n UDP/9 datagrams from the peer namespace (bounded in time)."""
    return subprocess.Popen(["ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SEND_UDP,
                             veth.ip_a, str(n), str(seconds), str(gap)])


@pytest.fixture
def chain(xh, veth, bpf_obj):
    quiet(veth)
    xh.write_config('mode = "static"\ncounters = true\n\n[programs.udp9]\npolicy = { tx = "log" }\n')
    install(xh, veth, bpf_obj, "counter", "sv_count", 10)
    install(xh, veth, bpf_obj, "udp9", "sv_udp9_tx", 20)
    xh.run("reconcile")
    return xh, veth


def xh_popen(xh, *args):
    return subprocess.Popen([sys.executable, "-m", "xdphooks", *args], env=xh.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_trace_live_shows_each_packets_verdict_of_one_component(chain):
    xh, veth = chain
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "5",
                      "--seconds", "20")
    try:
        first = tracer.stdout.readline()  # printed once the tracer is attached
        if not first:
            pytest.fail(tracer.communicate(timeout=10)[1])
        assert first.startswith("live trace of udp9 (slot 1, called)"), first
        sender = send_udp(veth, 5)
        out, err = tracer.communicate(timeout=30)
        sender.wait(timeout=30)
    finally:
        tracer.kill()
    assert tracer.returncode == 0, err
    lines = out.strip().splitlines()
    pkts = [ln for ln in lines if " B  " in ln]
    assert len(pkts) == 5, out
    for ln in pkts:  # udp9 returns TX for UDP/9, the policy logs it and continues
        assert " tx " in ln and "IPv4/UDP" in ln and "chain: log" in ln, ln
        assert f"{14 + 20 + 8 + 8:>5} B" in ln, ln  # eth + ip + udp + 8 bytes payload
    assert lines[-1].startswith("5 packet(s)"), lines[-1]
    # the tracer is gone afterwards: no tracing links remain on the root program
    from xdphooks.kernel import libbpf
    status = json.loads(xh.run("status", "--json").stdout)
    root_id = status["interfaces"][0]["prog_id"]
    for lid in libbpf.link_ids():
        fd = libbpf.link_fd_by_id(lid)
        try:
            assert libbpf.link_info(fd).target_obj_id != root_id
        finally:
            os.close(fd)


def test_trace_live_is_bounded_in_time_and_names_missing_program(chain):
    xh, veth = chain
    t0 = time.monotonic()
    proc = xh.run("trace", "--live", veth.iface, "counter", "--count", "1000",
                  "--seconds", "1", timeout=30)
    assert time.monotonic() - t0 < 15
    assert proc.stdout.strip().splitlines()[-1].endswith("tracer detached")
    bad = xh.run("trace", "--live", veth.iface, "nosuch", check=False)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "counter, udp9" in lines[0], bad.stderr


def test_status_profile_times_each_program_on_live_traffic(chain):
    xh, veth = chain
    sender = send_udp(veth, 100000, seconds=8.0, gap=0.002)
    try:
        time.sleep(0.5)
        proc = xh.run("status", "--profile", "2", "--json", timeout=60)
    finally:
        sender.kill()
        sender.wait()
    data = json.loads(proc.stdout)
    (iface,) = data["interfaces"]
    assert iface["packets"] > 50, iface  # kernel run-time stats of the root program
    assert iface["ns_per_packet"] > 0
    progs = {p["name"]: p for p in iface["programs"]}
    for name in ("counter", "udp9"):
        p = progs[name]
        assert p["link"] == "called" and p["note"] == "", p
        # each program ran once per packet of the chain (give or take the edges of
        # the window: the probes are attached before the kernel stats are sampled)
        assert abs(p["calls"] - iface["packets"]) <= max(5, iface["packets"] // 10), (p, iface)
        assert 0 < p["ns_per_call"] < 1_000_000, p
    text = xh.run("status", "--profile", "0.2").stdout
    assert "counter" in text and "NS/PKT" in text
