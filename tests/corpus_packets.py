"""The packets the corpus differential test runs through every object.

Built with struct (scapy is not needed for this): IPv4/IPv6 TCP/UDP/ICMP, ARP, VLAN
and QinQ, runts, IP options, fragments, IP-in-IP, and lengths that hit the special
cases of the adjust_tail selftests. Addresses are documentation ranges, as in the
pre-flight packets (xdphooks/backends/preflight.py), whose helpers are reused.
"""

from __future__ import annotations

import struct

from xdphooks.backends.preflight import (DST4, MAC_DST, MAC_SRC, SRC4, _csum, eth, ipv4,
                                         ipv6, tcp_hdr, udp_hdr)

VIP_PORT = 80  # the TCP port the load-balancer objects are configured for (setup hooks)


def _a4(addr: str) -> bytes:
    return bytes(map(int, addr.split(".")))


def ipv4_raw(proto: int, payload: bytes, *, ihl_options: bytes = b"", frag: int = 0x4000,
             src: str = SRC4, dst: str = DST4) -> bytes:
    """An IPv4 frame with options and any fragment field (flags << 13 | offset)."""
    opts = ihl_options + b"\0" * (-len(ihl_options) % 4)
    ihl = 5 + len(opts) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 7, frag, 64,
                      proto, 0, _a4(src), _a4(dst)) + opts
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return eth(0x0800, hdr + payload)


def icmp4(icmp_type: int, seq: int, size: int = 64) -> bytes:
    """An ICMP echo (request 8 / reply 0) of ``size`` bytes with a valid checksum."""
    body = struct.pack("!BBHHH", icmp_type, 0, 0, 0x1234, seq) + bytes(range(size - 8))
    body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
    return body


def tcp_flags(sport: int, dport: int, flags: int) -> bytes:
    hdr = bytearray(tcp_hdr(sport, dport))
    hdr[13] = flags
    return bytes(hdr)


def vlan(tpid: int, vid: int, inner_type: int, payload: bytes) -> bytes:
    return MAC_DST + MAC_SRC + struct.pack("!HHH", tpid, vid, inner_type) + payload


def _ip4_payload(frame: bytes) -> bytes:
    return frame[14:]


def build() -> dict[str, bytes]:
    udp4 = ipv4(17, udp_hdr(40000, 53, b"corpus-udp12"))  # 54 bytes: the selftests' pkt_v4
    icmp6 = struct.pack("!BBHHH", 128, 0, 0, 0x1234, 1) + b"corpus6!"
    pkts = {
        "udp4": udp4,
        "tcp4_syn": ipv4(6, tcp_flags(40000, VIP_PORT, 0x02)),
        "tcp4_ack": ipv4(6, tcp_flags(40001, VIP_PORT, 0x10) + b"payload-after-handshake"),
        "icmp4_echo": ipv4(1, icmp4(8, 1)),
        "icmp4_reply": ipv4(1, icmp4(0, 1), src=DST4, dst=SRC4),
        "udp6": ipv6(17, udp_hdr(40000, 53, b"corpus-udp6-payload")),
        "tcp6_syn": ipv6(6, tcp_flags(40000, VIP_PORT, 0x02)),  # 74 bytes: pkt_v6
        "icmp6_echo": ipv6(58, icmp6),
        "arp": eth(0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_SRC,
                                       _a4(SRC4), b"\0" * 6, _a4(DST4)), dst=b"\xff" * 6),
        "vlan100_udp4": vlan(0x8100, 100, 0x0800, _ip4_payload(udp4)),
        "vlan4011_udp4": vlan(0x8100, 4011, 0x0800, _ip4_payload(udp4)),
        "qinq_udp4": MAC_DST + MAC_SRC + struct.pack("!HHHHH", 0x88A8, 4011, 0x8100, 100, 0x0800)
        + _ip4_payload(udp4),
        "runt14": b"\x02" * 14,
        "trunc_ip4": eth(0x0800, b"\x45\x00\x00\x40\x00\x01"),
        "ip4_options_udp": ipv4_raw(17, udp_hdr(40000, 53), ihl_options=b"\x94\x04\x00\x00"
                                    + b"\x01" * 4),  # router alert + NOPs
        "ip4_frag_first": ipv4_raw(17, udp_hdr(40000, 53, b"x" * 32), frag=0x2000),
        "ip4_frag_later": ipv4_raw(17, b"y" * 40, frag=0x0000 | 185),
        "ipip_udp4": ipv4_raw(4, _ip4_payload(udp4), src="198.51.100.1", dst="198.51.100.2"),
        "udp4_64": ipv4(17, udp_hdr(40000, 53, b"z" * 22)),  # 64 bytes: grow by 128
        "udp4_128": ipv4(17, udp_hdr(40000, 53, b"w" * 86)),  # 128 bytes: grow to the page
        "udp4_1500": ipv4(17, udp_hdr(40000, 4789, bytes(1458))),
    }
    assert len(pkts["udp4"]) == 54 and len(pkts["tcp6_syn"]) == 74
    assert len(pkts["udp4_64"]) == 64 and len(pkts["udp4_128"]) == 128
    return pkts


PACKETS = build()
