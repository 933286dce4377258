"""Issue 13 item 3: kernel errors as sentences, with the kernel's extack reason.

The table (xdphooks/kernel/errnos.py) is checked for coverage; the XDP attach
over rtnetlink (xdphooks/kernel/rtnl.py) is checked byte for byte in pure
tests and then made to fail for real on namespaced interfaces, each way the
kernel refuses an XDP attach: the error must carry the sentence for the errno
and the kernel's own reason (which libbpf's bpf_xdp_attach would have dropped).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import uuid

import pytest

from conftest import require_kernel, sh
from xdphooks.errors import KernelError
from xdphooks.kernel import errnos, rtnl

# --- the table -----------------------------------------------------------------------

#: every errno the issue names, and the usual ones from bpf(2) and rtnetlink
REQUIRED = ("ERANGE", "EBUSY", "EEXIST", "EOPNOTSUPP", "EINVAL", "E2BIG", "ENOSPC", "EPERM",
            "ENOMEM", "EACCES", "ENODEV", "ENOENT", "EBADF", "EFAULT", "EAGAIN")


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("op", [errnos.LOAD, errnos.ATTACH, errnos.LINK, errnos.PIN])
def test_every_errno_has_a_sentence_and_a_fix(name, op):
    err = getattr(errno, name)
    s = errnos.explain(op, err)
    assert s.text.endswith(f"({name})") and len(s.text) > 20
    assert os.strerror(err) not in s.text  # a sentence, not the C library's two words
    assert len(s.fix) >= 10


def test_same_errno_different_operation():
    assert errnos.explain(errnos.ATTACH, errno.EEXIST).text != \
        errnos.explain(errnos.PIN, errno.EEXIST).text
    assert "MTU" in errnos.explain(errnos.ATTACH, errno.ERANGE).text


def test_unknown_errno_and_libbpf_codes():
    assert errnos.explain(errnos.ANY, errno.EROFS).text.startswith(os.strerror(errno.EROFS))
    assert "verifier" in errnos.explain(errnos.LOAD, 4007).text
    assert errnos.explain(errnos.LINK, 524).text.endswith("(ENOTSUPP)")


def test_extack_follows_the_sentence():
    s = errnos.explain(errnos.ATTACH, errno.ERANGE, "veth: Peer MTU is too large to set XDP")
    assert s.text.endswith("; the kernel says: veth: Peer MTU is too large to set XDP")


# --- the netlink request and ack (pure) ---------------------------------------------------


def test_request_layout_matches_libbpf():
    msg = rtnl.xdp_request(7, 5, rtnl.XDP_FLAGS_REPLACE | 4, expected_fd=9, seq=3)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), 19, 0x5, 3)
    assert struct.unpack_from("=BxHiII", msg, 16)[2] == 7
    alen, akind = struct.unpack_from("=HH", msg, 32)
    assert akind == 43 | 0x8000 and 32 + alen == len(msg)
    attrs, pos = {}, 36
    while pos < len(msg):
        n, k = struct.unpack_from("=HH", msg, pos)
        attrs[k] = struct.unpack_from("=i", msg, pos + 4)[0]
        pos += n
    assert attrs == {1: 5, 3: 0x14, 8: 9}
    assert 8 not in _attrs(rtnl.xdp_request(7, 5, 1))  # no expected fd without REPLACE


def _attrs(msg):
    out, pos = {}, 36
    while pos < len(msg):
        n, k = struct.unpack_from("=HH", msg, pos)
        out[k] = msg[pos + 4:pos + n]
        pos += (n + 3) & ~3
    return out


def test_ack_with_extack_parsed():
    text = b"Active program does not match expected\0"
    tlv = struct.pack("=HH", 4 + len(text), 1) + text
    tlv += bytes(-len(tlv) % 4)
    body = struct.pack("=i", -errno.EEXIST) + struct.pack("=IHHII", 16, 19, 5, 3, 0) + tlv
    ack = struct.pack("=IHHII", 16 + len(body), 2, 0x100 | 0x200, 3, 0) + body
    assert rtnl.parse_ack(ack, 3) == (errno.EEXIST, "Active program does not match expected")
    assert rtnl.parse_ack(ack, 4) is None
    ok = struct.pack("=IHHII", 36, 2, 0x100, 3, 0) + struct.pack("=i", 0) + bytes(16)
    assert rtnl.parse_ack(ok, 3) == (0, "")


# --- the real kernel ------------------------------------------------------------------------


@pytest.fixture
def ns():
    require_kernel()
    name = f"xherr{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "add", "e0", "type", "veth", "peer", "name", "e1")
    sh("ip", "-n", name, "link", "add", "br0", "type", "bridge")
    for dev in ("e0", "e1", "br0"):
        sh("ip", "-n", name, "link", "set", dev, "up")
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def prog(bpf_obj):
    from xdphooks.kernel import libbpf

    obj = libbpf.BpfObject(str(bpf_obj("count_pass")))
    obj.load()
    fd = os.dup(obj.program("count_pass").fd)
    obj.close()
    try:
        yield fd
    finally:
        os.close(fd)


def _attach(ns, dev, prog_fd, flags, old=-1):
    from xdphooks.kernel import libbpf
    from xdphooks.kernel.netns import netns

    with netns(ns):
        libbpf.xdp_attach(socket_index(dev), prog_fd, flags, old)


def socket_index(dev):
    import socket

    return socket.if_nametoindex(dev)


def refused(ns, dev, prog_fd, flags, old=-1) -> KernelError:
    with pytest.raises(KernelError) as info:
        _attach(ns, dev, prog_fd, flags, old)
    return info.value


DRV, SKB, NOEXIST, REPLACE = 1 << 2, 1 << 1, 1 << 0, 1 << 4


def test_erange_jumbo_peer_mtu_with_a_non_frags_program(ns, prog):
    sh("ip", "-n", ns, "link", "set", "e1", "mtu", "9000")
    e = refused(ns, "e0", prog, DRV)
    assert e.errno == errno.ERANGE
    assert "MTU" in e.message and "the kernel says:" in e.message and "xdp.frags" in e.fix


def test_eexist_something_already_attached(ns, prog):
    _attach(ns, "e0", prog, DRV | NOEXIST)
    e = refused(ns, "e0", prog, DRV | NOEXIST)
    # 6.x: EBUSY "XDP program already attached" (the EBUSY sentence covers both causes)
    assert e.errno == errno.EBUSY and "already attached" in e.message, e.message


def test_eexist_running_program_is_not_the_expected_one(ns, prog, bpf_obj):
    from xdphooks.kernel import libbpf

    _attach(ns, "e0", prog, DRV | NOEXIST)
    other = libbpf.BpfObject(str(bpf_obj("drop_icmp")))
    other.load()
    try:
        wrong = other.programs()[0].fd
        e = refused(ns, "e0", prog, DRV | REPLACE, old=wrong)
    finally:
        other.close()
    assert e.errno == errno.EEXIST and "does not match expected" in e.message, e.message


def test_eopnotsupp_driver_without_native_xdp(ns, prog):
    e = refused(ns, "br0", prog, DRV)
    assert e.errno == errno.EOPNOTSUPP and "native" in e.message and "skb" in e.fix, e.message


def test_einval_two_modes_at_once(ns, prog):
    e = refused(ns, "e0", prog, DRV | SKB)
    # rtnetlink refuses this before dev_xdp_attach, without an extack message
    assert e.errno == errno.EINVAL and "invalid flags" in e.message, e.message


def test_ebusy_interface_held_by_a_bpf_link(ns, prog):
    from xdphooks.kernel import libbpf
    from xdphooks.kernel.netns import netns

    with netns(ns):
        fd = libbpf._lib.bpf_link_create(prog, socket_index("e0"), libbpf.BPF_XDP, None)
    assert fd >= 0, ctypes.get_errno()
    try:
        e = refused(ns, "e0", prog, DRV)
    finally:
        os.close(fd)
    assert e.errno == errno.EBUSY and "BPF link" in e.message and "bpftool link" in e.fix
    assert "replace active BPF XDP link" in e.message
    assert "the kernel says:" in e.message


def test_attach_and_detach_work(ns, prog):
    from xdphooks.kernel import libbpf
    from xdphooks.kernel.netns import netns

    _attach(ns, "e0", prog, SKB | NOEXIST)
    with netns(ns):
        idx = socket_index("e0")
        assert libbpf.xdp_query_id(idx, SKB) == libbpf.prog_info(prog)[0].id
        libbpf.xdp_detach(idx, SKB | REPLACE, prog)
        assert libbpf.xdp_query_id(idx) == 0
