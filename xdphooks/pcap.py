"""pcapng output of ``trace --live --pcap``: what ``tcpdump -r`` and Wireshark read.

One Section Header Block, one Interface Description Block (LINKTYPE_ETHERNET, the
snap length, nanosecond timestamps: if_tsresol 9), then one Enhanced Packet Block
per captured packet, whose ``opt_comment`` says where it was captured:

    xdphooks slot=<N> program=<name> at=<entry|exit> verdict=<verdict|-> chain=<decision|->

(``tshark -r FILE -T fields -e frame.comment`` prints it; tcpdump shows only the
packets). Each block is flushed as written, so ``| tcpdump -r -`` shows packets live.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT, IF_SNAPLEN, IF_TSRESOL = 0, 1, 8, 9


def _pad(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def comment(slot: int, program: str, where: str, verdict: str, decision: str) -> str:
    return (f"xdphooks slot={slot} program={program} at={where} verdict={verdict} "
            f"chain={decision}")


class PcapngWriter:
    def __init__(self, out: BinaryIO, snaplen: int, name: str = "",
                 tool: str = "xdphooks trace --live") -> None:
        self.out = out
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _option(
            OPT_COMMENT, tool.encode()) + _option(OPT_END, b"")
        idb_opts = _option(IF_TSRESOL, bytes([9]))
        if name:
            idb_opts = _option(2, name.encode()) + idb_opts  # if_name
        idb = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + idb_opts + \
            _option(OPT_END, b"")
        self._write(_block(_SHB, shb) + _block(_IDB, idb))

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def packet(self, ts_ns: int, data: bytes, orig_len: int, note: str) -> None:
        """One packet, ``ts_ns`` since the epoch (nanoseconds)."""
        body = struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                           max(orig_len, len(data))) + _pad(data) + \
            _option(OPT_COMMENT, note.encode()) + _option(OPT_END, b"")
        self._write(_block(_EPB, body))


__all__ = ["PcapngWriter", "comment", "LINKTYPE_ETHERNET"]
