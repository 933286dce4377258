"""`xdphooks events` says which packet each event was: real datagrams through a veth.

A buggy "firewall" (tests/bpf/ev_udp_verdict.bpf.c) returns TX for UDP to port 7001
and ABORTED for UDP to port 7002; its policy logs both (tx = "log", aborted = "log"),
after a counter in slot 0. The peer namespace sends datagrams with known source
ports over IPv4 and IPv6; `events`, `events --json` and `events --pcap` must name
addresses, protocol, ports and length of each. One test per way the chain runs the
`log` decision: static spliced, static called (the generated epilogue calls the
rootlet's xdph_log) and freplace (the dispatcher calls the same function; VM only).
The decoder and the record layouts are checked without a kernel below.
"""

from __future__ import annotations

import json
import struct
import subprocess
import textwrap
import time

import pytest

from freplace_support import vm_only
from xdphooks import abi, counters, events, packet

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")

SEND = textwrap.dedent("""
    import socket, sys
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
    s.sendto(b"x" * int(sys.argv[4]), (sys.argv[1], int(sys.argv[3])))
""")
IP6_A, IP6_B = "fd00:e7::1", "fd00:e7::2"
# (source port, destination port, payload bytes, IPv6?) -> the event's verdict
SENT = [(40001, 7001, 14, False), (40002, 7001, 14, True), (40003, 7002, 14, False),
        (40004, 7001, 1000, False)]
VERDICT = {7001: "tx", 7002: "aborted"}

modes = pytest.mark.parametrize("how", [
    pytest.param("splice", marks=pytest.mark.kernel),
    pytest.param("call", marks=pytest.mark.kernel),
    pytest.param("freplace", marks=[pytest.mark.kernel, *vm_only]),
])


def install(xh, veth, bpf_obj, name, src, prio):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def fw_events(xh, want: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = [json.loads(ln) for ln in xh.run("events", "--json").stdout.splitlines()]
        got = [e for e in got if e["program"] == "fw"]
        if len(got) >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


@modes
def test_events_show_the_packet_of_each_logged_verdict(xh, veth, bpf_obj, how, tmp_path):
    if how == "freplace":
        config = 'mode = "freplace"\nxdp_mode = "skb"\n'
    else:
        config = 'mode = "static"\ncounters = true\n'
    config += '\n[programs.fw]\npolicy = { tx = "log", aborted = "log" }\n'
    if how == "call":
        config += 'link = "call"\n'
    xh.write_config(config)
    install(xh, veth, bpf_obj, "counter", "sv_count", 10)
    install(xh, veth, bpf_obj, "fw", "ev_udp_verdict", 20)
    xh.run("reconcile")
    st = json.loads(xh.run("status", "--json").stdout)["interfaces"][0]
    assert st["mode"] == ("freplace" if how == "freplace" else "static"), st
    if how != "freplace":
        fw = next(p for p in st["programs"] if p["name"] == "fw")
        assert fw["link"] == ("called" if how == "call" else "spliced"), fw
    for ns, dev, ip in ((veth.ns_a, veth.dev_a, IP6_A), (veth.ns_b, veth.dev_b, IP6_B)):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", dev, "nodad"],
                       check=True)
    for sport, dport, size, v6 in SENT:
        veth.exec_b("python3", "-c", SEND, IP6_A if v6 else veth.ip_a, str(sport), str(dport),
                    str(size))

    got = fw_events(xh, len(SENT))
    by_sport = {e["packet"]["sport"]: e for e in got if e["packet"] and "sport" in e["packet"]}
    assert sorted(by_sport) == [s[0] for s in SENT], got
    for sport, dport, size, v6 in SENT:
        ev = by_sport[sport]
        assert ev["verdict"] == VERDICT[dport], ev
        length = 14 + (40 if v6 else 20) + 8 + size
        src, dst = (IP6_B, IP6_A) if v6 else (veth.ip_b, veth.ip_a)
        assert ev["packet"] == {"len": length, "captured": min(length, abi.EVENT_SNAPLEN),
                                "l2": "IPv6" if v6 else "IPv4", "src": src, "dst": dst,
                                "proto": "udp", "sport": sport, "dport": dport}, ev
        assert ev["slot"] == 1 and ev["interface"] == veth.iface, ev
        assert len(bytes.fromhex(ev["packet_bytes"])) == min(length, abi.EVENT_SNAPLEN)

    text = xh.run("events").stdout
    assert (f"fw returned tx (logged, chain continued): IPv4 udp {veth.ip_b}:40001 -> "
            f"{veth.ip_a}:7001, 56 bytes") in text, text
    assert f"IPv6 udp [{IP6_B}]:40002 -> [{IP6_A}]:7001, 76 bytes" in text, text
    assert (f"fw returned aborted (logged, chain continued): IPv4 udp {veth.ip_b}:40003 -> "
            f"{veth.ip_a}:7002, 56 bytes") in text, text
    assert f"{veth.ip_b}:40004 -> {veth.ip_a}:7001, 1042 bytes" in text, text
    # drained once: a second read shows the same events, no duplicates
    assert xh.run("events").stdout.count("fw returned") == len(SENT)

    # --pcap: the captured headers, as tcpdump reads them
    pcap = tmp_path / "events.pcapng"
    proc = xh.run("events", "--pcap", str(pcap), veth.iface)
    assert "packet(s) of" in proc.stderr and f"written to {pcap}" in proc.stderr, proc.stderr
    dump = subprocess.run(["tcpdump", "-r", str(pcap), "-nn"], capture_output=True,
                          text=True, check=True).stdout
    assert len(dump.splitlines()) == len(SENT), dump
    for sport, dport, size, v6 in SENT:
        src = f"{IP6_B}.{sport}" if v6 else f"{veth.ip_b}.{sport}"
        dst = f"{IP6_A}.{dport}" if v6 else f"{veth.ip_a}.{dport}"
        # tcpdump names the payload by port (7001: AFS); its size is in the UDP header
        (ln,) = [ln for ln in dump.splitlines() if f"{src} > {dst}:" in ln]
        assert f"({size})" in ln or f"length {size}" in ln, ln


# --- without a kernel: the decoder and the record layouts -----------------------------


def eth(proto: int, vlans: tuple[int, ...] = ()) -> bytes:
    head = bytes(range(1, 13))
    for v in vlans:
        head += struct.pack("!HH", 0x8100, v)
    return head + struct.pack("!H", proto)


def ipv4(proto: int, l4: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + l4


def ipv6(nxt: int, l4: bytes) -> bytes:
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    return struct.pack("!IHBB", 6 << 28, len(l4), nxt, 64) + src + dst + l4


def test_decoder_names_vlan_tcp_icmp_and_ipv6_extension_headers():
    tcp = struct.pack("!HHIIHHHH", 443, 51000, 0, 0, 0x5002, 0, 0, 0)
    f = packet.decode(eth(0x0800, (100, 200)) + ipv4(6, tcp), 1500)
    assert f == {"len": 1500, "captured": 62, "vlan": [100, 200], "l2": "IPv4",
                 "src": "10.0.0.1", "dst": "10.0.0.2", "proto": "tcp", "sport": 443,
                 "dport": 51000}
    assert packet.summary(f) == "vlan 100.200 IPv4 tcp 10.0.0.1:443 -> 10.0.0.2:51000, 1500 bytes"
    f = packet.decode(eth(0x0800) + ipv4(1, bytes([8, 0, 0, 0])))
    assert (f["proto"], f["icmp_type"], f["icmp_code"]) == ("icmp", 8, 0)
    assert packet.summary(f) == "IPv4 icmp 10.0.0.1 -> 10.0.0.2 type 8 code 0, 38 bytes"
    # IPv6: hop-by-hop options, then ICMPv6 echo request
    hbh = bytes([58, 0]) + bytes(6)
    f = packet.decode(eth(0x86DD) + ipv6(0, hbh + bytes([128, 0, 0, 0])))
    assert (f["src"], f["proto"], f["icmp_type"]) == ("fd00::1", "icmpv6", 128)
    # a non-first IPv4 fragment has no ports
    f = packet.decode(eth(0x0800) + ipv4(17, struct.pack("!HH", 1, 2), frag=185))
    assert f["proto"] == "udp" and "sport" not in f and f["fragment"] == 1480
    # ARP: sender and target addresses; anything else: the EtherType
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bytes(6), bytes([10, 0, 0, 1]),
                      bytes(6), bytes([10, 0, 0, 9]))
    assert packet.summary(packet.decode(eth(0x0806) + arp)) == "ARP 10.0.0.1 -> 10.0.0.9, 42 bytes"
    assert packet.decode(eth(0x88CC))["l2"] == "LLDP"
    assert packet.decode(eth(0x1234))["l2"] == "0x1234"


def test_decoder_takes_any_bytes():
    import random

    rnd = random.Random(27)
    base = eth(0x86DD) + ipv6(0, bytes([44, 0]) + bytes(6)) + bytes(20)
    for n in range(3000):
        data = bytearray(base if n % 2 else eth(0x0800) + ipv4(17, bytes(8)))
        for _ in range(rnd.randint(0, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[:rnd.randint(0, len(data))])
        packet.summary(packet.decode(data, len(data)))  # never raises
    assert packet.summary(packet.decode(b"\x01\x02", 2)) == "(no Ethernet header captured), 2 bytes"


def test_ring_records_of_both_versions_decode():
    pkt = eth(0x0800) + ipv4(17, struct.pack("!HHHH", 5000, 53, 8, 0))
    rec = abi.EVENT.pack(123, 2, abi.XDP_TX, 7, 0, 1400, len(pkt), pkt)
    assert abi.EVENT.size == 32 + abi.EVENT_SNAPLEN
    ev = counters.decode_event(rec)
    assert (ev["ts_ns"], ev["slot"], ev["retval"], ev["ifindex"]) == (123, 2, abi.XDP_TX, 7)
    assert (ev["pkt_len"], ev["pkt"]) == (1400, pkt)
    old = counters.decode_event(abi.V2_EVENT.pack(5, 1, abi.XDP_ABORTED, 7, 0))
    assert (old["slot"], old["retval"], old["pkt_len"], old["pkt"]) == (1, 0, None, b"")


def test_events_log_records_without_a_packet_still_show():
    """A record drained from a version 2 chain (before this layout) has no packet."""
    old = {"ts_ns": 5_000_000_000, "interface": "ns/eth0", "program": "fw",
           "verdict": "tx", "generation": 3}
    assert events.line(old) == "      5.000000 ns/eth0: fw returned tx (logged, chain continued)"
    assert events.as_json(old)["packet"] is None
    new = dict(old, slot="1", packet_len="60",
               packet=(eth(0x0800) + ipv4(17, struct.pack("!HHHH", 1, 2, 8, 0))).hex())
    assert events.line(new).endswith(": IPv4 udp 10.0.0.1:1 -> 10.0.0.2:2, 60 bytes")
    assert events.as_json(new)["slot"] == 1
