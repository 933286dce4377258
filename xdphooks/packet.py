"""What a packet's first bytes say: L2 protocol and VLANs, addresses, L4 protocol, ports.

The chain's events (``xdphooks events``) carry the first ``abi.EVENT_SNAPLEN`` bytes of
the packet that was logged; this turns them into the facts an administrator needs to
find the flow: Ethernet type (through 802.1Q/802.1ad tags), IPv4/IPv6 source and
destination (ARP: sender and target), the L4 protocol (IPv6 extension headers walked),
TCP/UDP/SCTP ports or ICMP type and code, and the packet's length. Pure and total: any
bytes give an answer, a header cut short by the capture is just not reported.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
_L2 = {ETH_P_IP: "IPv4", ETH_P_IPV6: "IPv6", ETH_P_ARP: "ARP", 0x88CC: "LLDP",
       0x8863: "PPPoE-discovery", 0x8864: "PPPoE", 0x8847: "MPLS", 0x88F7: "PTP"}
L4_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp",
            58: "icmpv6", 132: "sctp"}
_PORTS = (6, 17, 132)  # tcp, udp, sctp: source and destination port first
_ICMP = (1, 58)
#: IPv6 extension headers walked to the L4 header: hop-by-hop, routing, fragment,
#: destination options (AH is left as the protocol: its payload is not parsed)
_IPV6_EXT = (0, 43, 44, 60)


def decode(data: bytes, length: int | None = None) -> dict[str, Any]:
    """Facts from a packet's first bytes ``data`` (``length``: the whole packet's).
    Keys present only when known: l2, vlan, src, dst, proto, sport, dport, icmp_type,
    icmp_code, fragment; always len and captured."""
    facts: dict[str, Any] = {"len": len(data) if length is None else length,
                             "captured": len(data)}
    if len(data) < 14:
        return facts
    off, eth = 14, struct.unpack_from("!H", data, 12)[0]
    vlans = []
    while eth in (ETH_P_8021Q, ETH_P_8021AD) and len(data) >= off + 4:
        tci, eth = struct.unpack_from("!HH", data, off)
        vlans.append(tci & 0x0FFF)
        off += 4
    if vlans:
        facts["vlan"] = vlans
    facts["l2"] = _L2.get(eth, f"0x{eth:04x}")
    if eth == ETH_P_IP:
        _ipv4(data, off, facts)
    elif eth == ETH_P_IPV6:
        _ipv6(data, off, facts)
    elif eth == ETH_P_ARP and len(data) >= off + 28 and data[off + 4:off + 6] == b"\x06\x04":
        facts["src"] = str(ipaddress.IPv4Address(data[off + 14:off + 18]))
        facts["dst"] = str(ipaddress.IPv4Address(data[off + 24:off + 28]))
    return facts


def _ipv4(data: bytes, off: int, facts: dict[str, Any]) -> None:
    if len(data) < off + 20 or data[off] >> 4 != 4:
        return
    ihl = (data[off] & 0x0F) * 4
    frag = struct.unpack_from("!H", data, off + 6)[0]
    facts["src"] = str(ipaddress.IPv4Address(data[off + 12:off + 16]))
    facts["dst"] = str(ipaddress.IPv4Address(data[off + 16:off + 20]))
    if frag & 0x3FFF:  # more fragments, or an offset: ports only in the first
        facts["fragment"] = (frag & 0x1FFF) * 8
    # a header length below the minimum is malformed: the protocol, no ports from it
    _l4(data, off + ihl, data[off + 9], facts, first=not frag & 0x1FFF and ihl >= 20)


def _ipv6(data: bytes, off: int, facts: dict[str, Any]) -> None:
    if len(data) < off + 40 or data[off] >> 4 != 6:
        return
    facts["src"] = str(ipaddress.IPv6Address(data[off + 8:off + 24]))
    facts["dst"] = str(ipaddress.IPv6Address(data[off + 24:off + 40]))
    nxt, off, first = data[off + 6], off + 40, True
    for _ in range(8):  # a bound: a packet is not trusted to end its own chain
        if nxt not in _IPV6_EXT or len(data) < off + 8:
            break
        if nxt == 44:  # fragment header, 8 bytes
            frag = struct.unpack_from("!H", data, off + 2)[0]
            facts["fragment"] = frag & 0xFFF8
            first = not frag & 0xFFF8
            nxt, off = data[off], off + 8
        else:
            nxt, off = data[off], off + (data[off + 1] + 1) * 8
    if nxt in _IPV6_EXT:
        return  # extension headers beyond the captured bytes: the protocol is unknown
    _l4(data, off, nxt, facts, first)


def _l4(data: bytes, off: int, proto: int, facts: dict[str, Any], first: bool) -> None:
    facts["proto"] = L4_NAMES.get(proto, str(proto))
    if not first:
        return
    if proto in _PORTS and len(data) >= off + 4:
        facts["sport"], facts["dport"] = struct.unpack_from("!HH", data, off)
    elif proto in _ICMP and len(data) >= off + 2:
        facts["icmp_type"], facts["icmp_code"] = data[off], data[off + 1]


def _host(addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def summary(facts: dict[str, Any]) -> str:
    """One line: ``[vlan 100 ]IPv4 udp 198.18.1.2:40000 -> 198.18.1.1:9, 50 bytes``."""
    parts = [f"vlan {'.'.join(str(v) for v in facts['vlan'])}"] if facts.get("vlan") else []
    if "l2" not in facts:
        parts.append("(no Ethernet header captured)")
    else:
        parts.append(facts["l2"])
    if "proto" in facts:
        parts.append(facts["proto"])
    if "src" in facts:
        parts.append(f"{_host(facts['src'], facts.get('sport'))} -> "
                     f"{_host(facts['dst'], facts.get('dport'))}")
    if "icmp_type" in facts:
        parts.append(f"type {facts['icmp_type']} code {facts['icmp_code']}")
    if "fragment" in facts:
        parts.append(f"fragment offset {facts['fragment']}")
    return " ".join(parts) + f", {facts['len']} bytes"


__all__ = ["decode", "summary", "L4_NAMES"]
