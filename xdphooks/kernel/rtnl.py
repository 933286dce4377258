"""XDP attach over rtnetlink, with the kernel's extended ack.

libbpf's ``bpf_xdp_attach`` sends the same RTM_SETLINK/IFLA_XDP request but
drops the extack the kernel answers with ("Peer MTU is too large to set XDP",
"Active program does not match expected", "Underlying driver does not support
XDP in native mode"…), which is often the only thing that says *why*. Sending
the request ourselves (a few dozen lines of stdlib ``struct``, no new
dependency, no extra round trip on success) keeps that sentence. A probe after a
failed libbpf attach would have to repeat a write with another outcome possible
in between; this way the one request that failed is the one explained.

The socket is opened per call in the caller's network namespace (the
coordinator enters the interface's namespace around the call).
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # the ack does not echo our request back
NETLINK_EXT_ACK = 11  # ... but carries the kernel's message
RTM_SETLINK = 19
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_ACK_TLVS = 0x200
NLA_F_NESTED = 0x8000
IFLA_XDP = 43
IFLA_XDP_FD, IFLA_XDP_FLAGS, IFLA_XDP_EXPECTED_FD = 1, 3, 8
NLMSGERR_ATTR_MSG = 1
XDP_FLAGS_REPLACE = 1 << 4

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_NLATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """errno plus the kernel's extack message ('' when it gave none)."""

    def __init__(self, err: int, extack: str) -> None:
        super().__init__(err, os.strerror(err))
        self.extack = extack


def _attr(kind: int, payload: bytes) -> bytes:
    data = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def xdp_request(ifindex: int, prog_fd: int, flags: int, expected_fd: int = -1,
                seq: int = 1) -> bytes:
    """The RTM_SETLINK message (pure; what libbpf's bpf_xdp_attach sends)."""
    nested = _attr(IFLA_XDP_FD, struct.pack("=i", prog_fd))
    if flags:
        nested += _attr(IFLA_XDP_FLAGS, struct.pack("=I", flags))
    if flags & XDP_FLAGS_REPLACE:
        nested += _attr(IFLA_XDP_EXPECTED_FD, struct.pack("=i", expected_fd))
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + _attr(IFLA_XDP | NLA_F_NESTED,
                                                                       nested)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK,
                          seq, 0) + body


def parse_ack(data: bytes, seq: int) -> tuple[int, str] | None:
    """(errno, extack message) of the ack for ``seq`` in ``data`` (0 = success), or
    None when ``data`` holds no ack for it (pure)."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and mseq == seq:
            err, = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
            msg = ""
            if flags & NLM_F_ACK_TLVS:
                # error code, then the request's header (CAP_ACK: header only), then TLVs
                pos, end = off + _NLMSGHDR.size + 4 + _NLMSGHDR.size, off + length
                while pos + _NLATTR.size <= end:
                    alen, akind = _NLATTR.unpack_from(data, pos)
                    if alen < _NLATTR.size:
                        break
                    if akind & 0x3FFF == NLMSGERR_ATTR_MSG:
                        msg = data[pos + _NLATTR.size: pos + alen].split(b"\0", 1)[0] \
                            .decode(errors="replace")
                    pos += (alen + 3) & ~3
            return -err, msg
        off += (length + 3) & ~3
    return None


def xdp_set(ifindex: int, prog_fd: int, flags: int, expected_fd: int = -1) -> None:
    """Attach (``prog_fd`` >= 0) or detach (-1) XDP on ``ifindex``; raises
    :class:`NetlinkError` with the kernel's errno and extack message."""
    seq = 1
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as sk:
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                sk.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass  # older kernels: no extack, the errno alone still says something
        sk.bind((0, 0))
        sk.sendto(xdp_request(ifindex, prog_fd, flags, expected_fd, seq), (0, 0))
        while True:
            ack = parse_ack(sk.recv(65536), seq)
            if ack is not None:
                break
    err, msg = ack
    if err:
        raise NetlinkError(err, msg)
