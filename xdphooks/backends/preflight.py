"""Run a freshly loaded chain on canned packets before it may touch traffic."""

from __future__ import annotations

import errno
import struct

from ..abi import Decision
from ..errors import KernelError
from ..kernel import libbpf
from .base import BuildContext

XDP_REDIRECT = 4


# Canned packets, shared by both backends' pre-flight and by ``xdphooks trace``.
# Addresses are documentation ranges (192.0.2.0/24, 2001:db8::/32), never a real
# peer: plugin authors can tell pre-flight packets from traffic (docs/plugin-guide.md).
SRC4, DST4 = "192.0.2.1", "192.0.2.2"
SRC6, DST6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
MAC_SRC, MAC_DST = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(ethertype: int, payload: bytes, dst: bytes = MAC_DST) -> bytes:
    return dst + MAC_SRC + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, payload: bytes, src: str = SRC4, dst: str = DST4) -> bytes:
    sa, da = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, sa, da)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return eth(0x0800, hdr + payload)


def ipv6(nh: int, payload: bytes) -> bytes:
    return eth(0x86DD, struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, SRC6, DST6)
               + payload)


def udp_hdr(sport: int, dport: int, data: bytes = b"xdphooks") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp_hdr(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)


def udp(sport: int, dport: int, **kw) -> bytes:
    """An Ethernet/IPv4/UDP frame (``src``/``dst`` addresses as keywords)."""
    return ipv4(17, udp_hdr(sport, dport), **kw)


def tcp(sport: int, dport: int, **kw) -> bytes:
    """An Ethernet/IPv4/TCP SYN frame."""
    return ipv4(6, tcp_hdr(sport, dport), **kw)


def arp() -> bytes:
    return eth(0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_SRC,
                                   bytes(map(int, SRC4.split("."))), b"\0" * 6,
                                   bytes(map(int, DST4.split(".")))), dst=b"\xff" * 6)


CANNED = {
    "udp4": udp(40000, 53),
    "tcp4": tcp(40000, 80),
    "icmp4": ipv4(1, b"\x08\x00\xf7\xff" + b"\0" * 36),
    "udp6": ipv6(17, udp_hdr(40000, 53)),
    "arp": arp(),
    "runt": b"\0" * 14,
}


def preflight(ctx: BuildContext, prog_fd: int, stub: int | None = None) -> dict[str, int]:
    """Test-run a (trial) chain on the canned packets; returns the verdict per packet.

    The verdicts themselves are the plugins' business (a firewall may drop canned
    traffic); what refuses the chain is the run failing, a verdict no policy lets out
    (above XDP_REDIRECT with no program returning unknown values), or ``stub``: what
    an unreplaced freplace slot returns.
    """
    forward_unknown = any(e.policy.decision("unknown") is Decision.RETURN
                          for e in ctx.chain.entries)
    out = {}
    for name, pkt in CANNED.items():
        try:
            out[name] = libbpf.prog_test_run(prog_fd, pkt).retval
        except KernelError as e:
            raise KernelError(f"interface {ctx.interface}: pre-flight test run ({name} packet) "
                              f"failed: {e.message}", errno=e.errno, log=e.log,
                              fix="the old chain keeps running; check the programs with "
                                  "xdphooks trace") from None
        if stub is not None and out[name] == stub:
            raise KernelError(f"interface {ctx.interface}: pre-flight of the new chain: a "
                              f"dispatcher slot ran unreplaced ({name} packet)",
                              errno=errno.EINVAL,
                              fix="the old chain keeps running; report this as a bug")
        if out[name] > XDP_REDIRECT and not forward_unknown:
            raise KernelError(f"interface {ctx.interface}: pre-flight test run ({name} packet) "
                              f"returned {out[name]}, which no policy allows",
                              fix="report this as an xdphooks bug")
    return out
