"""Run a freshly loaded chain on canned packets before it may touch traffic."""

from __future__ import annotations

import struct

from ..errors import KernelError
from ..kernel import libbpf
from .base import BuildContext, BuiltChain

XDP_REDIRECT = 4


def _csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def ipv4(proto: int, payload: bytes, src: str = "198.18.0.2", dst: str = "198.18.0.1") -> bytes:
    sa, da = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, sa, da)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return eth(0x0800, hdr + payload)


def eth(ethertype: int, payload: bytes) -> bytes:
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + struct.pack("!H", ethertype) + payload


def udp(sport: int, dport: int, data: bytes = b"x" * 18, **kw) -> bytes:
    return ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, **kw)


def tcp(sport: int, dport: int, **kw) -> bytes:
    return ipv4(6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0) + b"\0" * 6, **kw)


CANNED = {
    "udp4": udp(40000, 53),
    "tcp4": tcp(40000, 80),
    "icmp4": ipv4(1, b"\x08\x00\xf7\xff" + b"\0" * 36),
    "ipv6": eth(0x86DD, b"\x60" + b"\0" * 5 + b"\x3b\x40" + b"\0" * 32 + b"\0" * 16),
    "arp": eth(0x0806, b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20),
    "runt": b"\0" * 14,
}


def preflight(ctx: BuildContext, built: BuiltChain) -> dict[str, int]:
    """Test-run the chain; any kernel error refuses it. Returns verdict per packet.

    The verdicts themselves are the plugins' business (a firewall may drop
    canned traffic); what must not happen is the run failing outright.
    """
    out = {}
    for name, pkt in CANNED.items():
        try:
            out[name] = libbpf.prog_test_run(built.prog_fd, pkt).retval
        except KernelError as e:
            raise KernelError(f"pre-flight test run of the new chain for {ctx.interface} failed "
                              f"on a {name} packet: {e.message}", errno=e.errno,
                              fix="the old chain keeps running; check the programs with "
                                  "xdphooks trace") from None
    return out
