"""Static backend with real packets: a 3-program chain on a namespaced veth.

The peer namespace sends ICMP echo requests and UDP datagrams to port 9; the
chain is counter (passes) -> udp9 (returns TX for UDP/9, policy tx=log) ->
icmpdrop (drops ICMP). Checked: per-program packets/verdicts in
``status --json``, the logged TX events in ``xdphooks events``, and that a
relink (a 4th program) keeps the counter's own pinned map.
"""

from __future__ import annotations

import json
import os
import struct
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

N_PING, N_UDP = 4, 7
SEND_UDP = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(sys.argv[2])):
        s.sendto(b"xdphooks", (sys.argv[1], 9))
        time.sleep(0.02)
""")


def install(xh, veth, bpf_obj, name, src, prio):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def programs(xh) -> dict[str, dict]:
    status = json.loads(xh.run("status", "--json").stdout)
    (iface,) = status["interfaces"]
    assert iface["mode"] == "static", iface
    return {p["name"]: p for p in iface["programs"]}


def wait_for(xh, pred, timeout=5.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        progs = programs(xh)
        if pred(progs) or time.monotonic() > deadline:
            return progs
        time.sleep(0.1)


def pinned_u64(path) -> int:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(path))
    try:
        return struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", 0), 8))[0]
    finally:
        os.close(fd)


def test_static_chain_counts_real_packets_and_survives_relink(xh, veth, bpf_obj):
    for ns in (veth.ns_a, veth.ns_b):  # fewer unrelated packets (IPv6 ND/MLD)
        xh_sysctl = ("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        os.system(f"ip netns exec {ns} {' '.join(xh_sysctl)} >/dev/null 2>&1")
    xh.write_config('mode = "static"\ncounters = true\n\n'
                    '[programs.udp9]\npolicy = { tx = "log" }\n')
    install(xh, veth, bpf_obj, "counter", "sv_count", 10)
    install(xh, veth, bpf_obj, "udp9", "sv_udp9_tx", 20)
    install(xh, veth, bpf_obj, "icmpdrop", "sv_icmp_drop", 30)
    xh.run("reconcile")
    progs = programs(xh)
    assert list(progs) == ["counter", "udp9", "icmpdrop"]
    assert all(p["packets"] == 0 for p in progs.values()), progs  # pre-flight left nothing
    pin = xh.bpffs / "xdphooks/maps/counter/sv_pkts"
    own0 = pinned_u64(pin)  # the pre-flight test runs went through the program's own map

    # ICMP: dropped by the last program (the pings fail, ARP still resolves)
    ping = veth.exec_b("ping", "-c", str(N_PING), "-i", "0.2", "-W", "1", veth.ip_a, check=False)
    assert ping.returncode != 0, ping.stdout
    # UDP to port 9: TX by udp9, logged and continued, passed by the rest
    veth.exec_b("python3", "-c", SEND_UDP, veth.ip_a, str(N_UDP))

    progs = wait_for(xh, lambda p: p["udp9"]["verdicts"]["tx"] >= N_UDP
                     and p["icmpdrop"]["verdicts"]["drop"] >= N_PING)
    c, u, d = progs["counter"], progs["udp9"], progs["icmpdrop"]
    assert u["verdicts"]["tx"] == N_UDP, progs
    assert d["verdicts"]["drop"] == N_PING, progs
    # every program ran on every packet (nothing but the pings ended the chain
    # early, and they end it in the last program); the rest was passed
    total = c["packets"]
    assert total >= N_PING + N_UDP, progs
    assert u["packets"] == d["packets"] == total, progs
    assert c["verdicts"] == {**c["verdicts"], "pass": total, "drop": 0, "tx": 0}, progs
    assert u["verdicts"]["pass"] == total - N_UDP, progs
    assert d["verdicts"]["pass"] == total - N_PING, progs
    for p in progs.values():
        assert p["verdicts"]["aborted"] == p["verdicts"]["redirect"] == 0, progs
    # the counter program's own map saw the same packets
    own = pinned_u64(pin)
    assert own - own0 == total, (own0, own, progs)

    # the logged TX verdicts
    out = xh.run("events").stdout
    logged = [ln for ln in out.splitlines() if "udp9 returned tx (logged, chain continued)" in ln]
    assert len(logged) == N_UDP, out
    # drained from the ring into the event log once: a second read adds no duplicates
    again = xh.run("events").stdout
    assert again.count("udp9 returned tx") == N_UDP

    # relink with a 4th program: the counter's pinned map keeps its value
    old_id = json.loads(xh.run("status", "--json").stdout)["interfaces"][0]["prog_id"]
    install(xh, veth, bpf_obj, "counter2", "sv_count", 40)
    xh.run("reconcile")
    # events outlive the generation that recorded them
    assert xh.run("events").stdout.count("udp9 returned tx") == N_UDP
    status = json.loads(xh.run("status", "--json").stdout)
    (iface,) = status["interfaces"]
    assert [p["name"] for p in iface["programs"]] == ["counter", "udp9", "icmpdrop", "counter2"]
    assert iface["prog_id"] != old_id and iface["attached"] is True
    assert pinned_u64(pin) >= own  # survived (and kept counting)
    assert pinned_u64(xh.bpffs / "xdphooks/maps/counter2/sv_pkts") <= pinned_u64(pin)

    # and the new chain works: UDP/9 still TX-logged by udp9, now in slot 1 of 4
    veth.exec_b("python3", "-c", SEND_UDP, veth.ip_a, "2")
    progs = wait_for(xh, lambda p: p["udp9"]["verdicts"]["tx"] >= 2)
    assert progs["udp9"]["verdicts"]["tx"] == 2, progs
    assert progs["counter2"]["packets"] == progs["counter"]["packets"] >= 2, progs
    assert pinned_u64(pin) >= own + 2
