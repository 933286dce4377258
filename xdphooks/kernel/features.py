"""Kernel features the backends themselves depend on while building, probed, not
guessed from the version. A leaf below the backends: capabilities.py lists these
with the rest for ``xdphooks doctor``; the backends ask here (no import cycle).
"""

from __future__ import annotations

import functools
import os


def raw_xdp_prog(insns: list[tuple[int, int, int, int, int]], prog_flags: int = 0) -> int:
    """Load a few raw instructions as an XDP program; returns the fd (raises OSError)."""
    import ctypes

    from . import libbpf

    class Opts(ctypes.Structure):  # the head of struct bpf_prog_load_opts (libbpf >= 0.7)
        _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int),
                    ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
                    ("prog_flags", ctypes.c_uint32)]

    raw = b"".join(op.to_bytes(1, "little") + ((src << 4) | dst).to_bytes(1, "little")
                   + off.to_bytes(2, "little", signed=True) + imm.to_bytes(4, "little", signed=True)
                   for op, dst, src, off, imm in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    opts = Opts(sz=ctypes.sizeof(Opts), prog_flags=prog_flags)
    fn = libbpf._lib.bpf_prog_load
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                   ctypes.c_size_t, ctypes.c_void_p]
    fd: int = fn(libbpf.BPF_PROG_TYPE_XDP, b"xdph_cap", b"GPL", buf, len(insns), ctypes.byref(opts))
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd


EXIT = (0x95, 0, 0, 0, 0)
RET_PASS = (0xb7, 0, 0, 0, 2)  # r0 = XDP_PASS


def frags() -> tuple[bool, str]:
    try:
        os.close(raw_xdp_prog([RET_PASS, EXIT], prog_flags=1 << 5))  # BPF_F_XDP_HAS_FRAGS
        return True, "XDP programs load with BPF_F_XDP_HAS_FRAGS"
    except OSError as e:
        return False, f"BPF_F_XDP_HAS_FRAGS refused ({e.strerror}): multi-buffer packets need Linux 5.18"


@functools.lru_cache(maxsize=None)
def has_frags() -> bool:
    """Multi-buffer XDP (Linux 5.18): probed once per process."""
    return frags()[0]
