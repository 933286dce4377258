"""Thin, typed ctypes bindings to libbpf.so.1 (libbpf >= 1.0 semantics).

Only what xdphooks needs. Every failing call raises :class:`KernelError`
carrying errno and whatever libbpf printed while it ran (verifier logs
included), so callers can show the last lines instead of a bare errno.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import KernelError, VerifierError
from . import errnos, rtnl

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # find_library would fork ldconfig

c_void_p, c_int, c_char_p, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t
c_uint32, c_uint64 = ctypes.c_uint32, ctypes.c_uint64

BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_EXT = 28
BPF_MAP_TYPE_PROG_ARRAY, BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH = 3, 14, 25
BPF_F_RDONLY_PROG = 1 << 7
BPF_XDP = 37

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODES = {"skb": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE, "hw": XDP_FLAGS_HW_MODE}


# --- libbpf log capture ----------------------------------------------------

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_log: list[str] = []
_print_buf = ctypes.create_string_buffer(1 << 20)  # reused: libbpf prints hundreds of lines


@_PRINT_FN
def _print_cb(level: int, fmt: bytes, args: int) -> int:
    # va_list is an array type on x86-64/arm64, so it arrives as a pointer
    # that vsnprintf can consume directly.
    # va_list can be consumed only once, so no size probe: one buffer large enough
    # for a verifier log line dump (libbpf prints the whole log in one message).
    n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, args)
    _log.append(_print_buf.raw[: min(max(n, 0), len(_print_buf) - 1)].decode(errors="replace"))
    return 0


_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print.restype = c_void_p
_lib.libbpf_set_print(_print_cb)


def take_log() -> str:
    text = "".join(_log)
    _log.clear()
    return text


def _fail(what: str, err: int | None = None, cls: type[KernelError] = KernelError,
          op: str = errnos.ANY, extack: str = "") -> KernelError:
    """The error for a failed call: the errno as a sentence (kernel/errnos.py)."""
    err = err if err is not None else ctypes.get_errno()
    err = abs(err)
    said = errnos.explain(op, err, extack)
    return cls(f"{what}: {said.text}", errno=err, log=take_log(), fix=said.fix)


def _sig(name: str, res, *args) -> None:
    fn = getattr(_lib, name)
    fn.restype = res
    fn.argtypes = list(args)


# --- signatures --------------------------------------------------------------

_sig("bpf_object__open_file", c_void_p, c_char_p, c_void_p)
_sig("bpf_object__load", c_int, c_void_p)
_sig("bpf_object__close", None, c_void_p)
_sig("bpf_object__name", c_char_p, c_void_p)
_sig("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
_sig("bpf_object__next_map", c_void_p, c_void_p, c_void_p)
_sig("bpf_object__find_program_by_name", c_void_p, c_void_p, c_char_p)
_sig("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
_sig("bpf_program__name", c_char_p, c_void_p)
_sig("bpf_program__section_name", c_char_p, c_void_p)
_sig("bpf_program__type", c_int, c_void_p)
_sig("bpf_program__set_type", c_int, c_void_p, c_int)
_sig("bpf_program__set_expected_attach_type", c_int, c_void_p, c_int)
_sig("bpf_program__set_attach_target", c_int, c_void_p, c_int, c_char_p)
_sig("bpf_program__set_autoload", c_int, c_void_p, ctypes.c_bool)
_sig("bpf_program__flags", ctypes.c_uint32, c_void_p)
_sig("bpf_program__set_flags", c_int, c_void_p, ctypes.c_uint32)
_sig("bpf_program__fd", c_int, c_void_p)
_sig("bpf_program__attach_freplace", c_void_p, c_void_p, c_int, c_char_p)
_sig("bpf_program__attach_trace", c_void_p, c_void_p)
_sig("bpf_enable_stats", c_int, c_int)
_sig("bpf_link__fd", c_int, c_void_p)
_sig("bpf_link__pin", c_int, c_void_p, c_char_p)
_sig("bpf_link__destroy", c_int, c_void_p)
_sig("bpf_link__disconnect", None, c_void_p)
_sig("bpf_map__name", c_char_p, c_void_p)
_sig("bpf_map__fd", c_int, c_void_p)
_sig("bpf_map__is_internal", ctypes.c_bool, c_void_p)
_sig("bpf_map__set_pin_path", c_int, c_void_p, c_char_p)
_sig("bpf_map__reuse_fd", c_int, c_void_p, c_int)
_sig("bpf_map__set_initial_value", c_int, c_void_p, c_void_p, c_size_t)
_sig("bpf_map__initial_value", c_void_p, c_void_p, ctypes.POINTER(c_size_t))
_sig("bpf_map__value_size", c_uint32, c_void_p)
_sig("bpf_map__key_size", c_uint32, c_void_p)
_sig("bpf_map__type", c_int, c_void_p)
_sig("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
_sig("bpf_map__map_flags", c_uint32, c_void_p)
_sig("bpf_map__set_map_flags", c_int, c_void_p, c_uint32)
_sig("bpf_xdp_attach", c_int, c_int, c_int, c_uint32, c_void_p)
_sig("bpf_xdp_detach", c_int, c_int, c_uint32, c_void_p)
_sig("bpf_xdp_query_id", c_int, c_int, c_int, ctypes.POINTER(c_uint32))
_sig("bpf_prog_test_run_opts", c_int, c_int, c_void_p)
_sig("bpf_obj_pin", c_int, c_int, c_char_p)
_sig("bpf_obj_get", c_int, c_char_p)
_sig("bpf_prog_get_fd_by_id", c_int, c_uint32)
_sig("bpf_map_get_fd_by_id", c_int, c_uint32)
_sig("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(c_uint32))
_sig("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
_sig("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
_sig("bpf_map_delete_elem", c_int, c_int, c_void_p)
_sig("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
_sig("bpf_prog_get_next_id", c_int, c_uint32, ctypes.POINTER(c_uint32))
_sig("bpf_map_get_next_id", c_int, c_uint32, ctypes.POINTER(c_uint32))
_sig("bpf_link_get_next_id", c_int, c_uint32, ctypes.POINTER(c_uint32))
_sig("libbpf_num_possible_cpus", c_int)
_sig("libbpf_probe_bpf_prog_type", c_int, c_int, c_void_p)
_sig("bpf_linker__new", c_void_p, c_char_p, c_void_p)
_sig("bpf_linker__add_file", c_int, c_void_p, c_char_p, c_void_p)
_sig("bpf_linker__finalize", c_int, c_void_p)
_sig("bpf_linker__free", None, c_void_p)


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
        ("data_size_in", c_uint32), ("data_size_out", c_uint32),
        ("ctx_in", c_void_p), ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32),
        ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32),
        ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32),
    ]


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info (uapi), as far as xdphooks reads it."""

    _fields_ = [
        ("type", c_uint32), ("id", c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", c_uint32), ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64), ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64), ("created_by_uid", c_uint32), ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64), ("name", ctypes.c_char * 16), ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32), ("netns_dev", c_uint64), ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32), ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64), ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32), ("func_info_rec_size", c_uint32), ("func_info", c_uint64),
        ("nr_func_info", c_uint32), ("nr_line_info", c_uint32), ("line_info", c_uint64),
        ("jited_line_info", c_uint64), ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32), ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32), ("prog_tags", c_uint64), ("run_time_ns", c_uint64),
        ("run_cnt", c_uint64), ("recursion_misses", c_uint64), ("verified_insns", c_uint32),
        ("attach_btf_obj_id", c_uint32), ("attach_btf_id", c_uint32),
    ]


class BpfMapInfo(ctypes.Structure):
    _fields_ = [
        ("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32),
        ("value_size", c_uint32), ("max_entries", c_uint32), ("map_flags", c_uint32),
        ("name", ctypes.c_char * 16), ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32), ("netns_dev", c_uint64),
        ("netns_ino", c_uint64), ("btf_id", c_uint32), ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32), ("_pad", c_uint32), ("map_extra", c_uint64),
    ]


# --- objects -------------------------------------------------------------------


@dataclass
class Program:
    ptr: int

    @property
    def name(self) -> str:
        return _lib.bpf_program__name(self.ptr).decode()

    @property
    def section(self) -> str:
        return _lib.bpf_program__section_name(self.ptr).decode()

    @property
    def type(self) -> int:
        return _lib.bpf_program__type(self.ptr)

    @property
    def fd(self) -> int:
        return _lib.bpf_program__fd(self.ptr)

    def set_autoload(self, on: bool) -> None:
        _check(_lib.bpf_program__set_autoload(self.ptr, on), "bpf_program__set_autoload")

    @property
    def flags(self) -> int:
        """BPF_PROG_LOAD's prog_flags (libbpf sets BPF_F_XDP_HAS_FRAGS for SEC("xdp.frags"))."""
        return _lib.bpf_program__flags(self.ptr)

    def set_flags(self, flags: int) -> None:
        _check(_lib.bpf_program__set_flags(self.ptr, flags), "bpf_program__set_flags")

    def set_type(self, prog_type: int) -> None:
        _check(_lib.bpf_program__set_type(self.ptr, prog_type), "bpf_program__set_type")

    def set_expected_attach_type(self, attach_type: int) -> None:
        _check(_lib.bpf_program__set_expected_attach_type(self.ptr, attach_type),
               "bpf_program__set_expected_attach_type")

    def set_attach_target(self, target_fd: int, func: str) -> None:
        _check(_lib.bpf_program__set_attach_target(self.ptr, target_fd, func.encode()),
               f"bpf_program__set_attach_target({func})")

    def attach_freplace(self, target_fd: int, func: str) -> "Link":
        link = _lib.bpf_program__attach_freplace(self.ptr, target_fd, func.encode())
        if not link:
            raise _fail(f"attach_freplace({self.name} -> {func})", op=errnos.LINK)
        return Link(link)

    def attach_trace(self) -> "Link":
        """fentry/fexit: attach to the target set with set_attach_target() before load."""
        link = _lib.bpf_program__attach_trace(self.ptr)
        if not link:
            raise _fail(f"attach {self.name}")
        return Link(link)


@dataclass
class Link:
    ptr: int

    @property
    def fd(self) -> int:
        return _lib.bpf_link__fd(self.ptr)

    def pin(self, path: str) -> None:
        _check(_lib.bpf_link__pin(self.ptr, path.encode()), f"pin link at {path}", errnos.PIN)

    def disconnect(self) -> None:
        """Keep the kernel link alive after destroy() (it is pinned)."""
        _lib.bpf_link__disconnect(self.ptr)

    def destroy(self) -> None:
        if self.ptr:
            _lib.bpf_link__destroy(self.ptr)
            self.ptr = 0


@dataclass
class Map:
    ptr: int

    @property
    def name(self) -> str:
        return _lib.bpf_map__name(self.ptr).decode()

    @property
    def fd(self) -> int:
        return _lib.bpf_map__fd(self.ptr)

    @property
    def internal(self) -> bool:
        return bool(_lib.bpf_map__is_internal(self.ptr))

    @property
    def value_size(self) -> int:
        return _lib.bpf_map__value_size(self.ptr)

    @property
    def type(self) -> int:
        return _lib.bpf_map__type(self.ptr)

    @property
    def map_flags(self) -> int:
        return _lib.bpf_map__map_flags(self.ptr)

    def set_map_flags(self, flags: int) -> None:
        _check(_lib.bpf_map__set_map_flags(self.ptr, flags), f"set flags of map {self.name}")

    def set_pin_path(self, path: str | None) -> None:
        _check(_lib.bpf_map__set_pin_path(self.ptr, path.encode() if path else None),
               f"set pin path of map {self.name}")

    def reuse_fd(self, fd: int) -> None:
        _check(_lib.bpf_map__reuse_fd(self.ptr, fd), f"reuse fd for map {self.name}")

    def initial_value(self) -> bytes:
        size = c_size_t()
        ptr = _lib.bpf_map__initial_value(self.ptr, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value) if ptr else b""

    def set_initial_value(self, data: bytes) -> None:
        _check(_lib.bpf_map__set_initial_value(self.ptr, data, len(data)),
               f"set initial value of map {self.name}")


class BpfObject:
    """An opened (and maybe loaded) libbpf object; close() releases fds."""

    def __init__(self, path: str) -> None:
        take_log()
        ptr = _lib.bpf_object__open_file(os.fsencode(path), None)
        if not ptr:
            raise _fail(f"cannot open BPF object {path}")
        self.ptr: int = ptr
        self.path = path

    def programs(self) -> list[Program]:
        out, cur = [], None
        while True:
            cur = _lib.bpf_object__next_program(self.ptr, cur)
            if not cur:
                return out
            out.append(Program(cur))

    def maps(self) -> list[Map]:
        out, cur = [], None
        while True:
            cur = _lib.bpf_object__next_map(self.ptr, cur)
            if not cur:
                return out
            out.append(Map(cur))

    def program(self, name: str) -> Program:
        ptr = _lib.bpf_object__find_program_by_name(self.ptr, name.encode())
        if not ptr:
            raise KernelError(f"no program {name!r} in {self.path}", errno=_errno.ENOENT)
        return Program(ptr)

    def map(self, name: str) -> Map:
        ptr = _lib.bpf_object__find_map_by_name(self.ptr, name.encode())
        if not ptr:
            raise KernelError(f"no map {name!r} in {self.path}", errno=_errno.ENOENT)
        return Map(ptr)

    def load(self) -> None:
        take_log()
        if _lib.bpf_object__load(self.ptr) != 0:
            err = ctypes.get_errno()
            log = take_log()
            cls = VerifierError if ("processed" in log or "verif" in log.lower()
                                    or err in (_errno.EACCES, _errno.EINVAL)) else KernelError
            said = errnos.explain(errnos.LOAD, err)
            raise cls(f"loading {os.path.basename(self.path)} failed: {said.text}",
                      errno=err, log=log, fix=said.fix)

    def close(self) -> None:
        if self.ptr:
            _lib.bpf_object__close(self.ptr)
            self.ptr = 0

    def __enter__(self) -> "BpfObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check(rc: int, what: str, op: str = errnos.ANY) -> None:
    if rc < 0:
        raise _fail(what, -rc if rc != -1 else None, op=op)


# --- static linker -------------------------------------------------------------


def link_objects(output: str, inputs: list[str]) -> None:
    """Link BPF objects with libbpf's static linker into ``output``."""
    take_log()
    linker = _lib.bpf_linker__new(os.fsencode(output), None)
    if not linker:
        raise _fail("bpf_linker__new")
    try:
        for path in inputs:
            rc = _lib.bpf_linker__add_file(linker, os.fsencode(path), None)
            if rc < 0:
                raise _fail(f"linking {os.path.basename(path)}", -rc)
        rc = _lib.bpf_linker__finalize(linker)
        if rc < 0:
            raise _fail("finalizing linked object", -rc)
    finally:
        _lib.bpf_linker__free(linker)


# --- XDP attach ------------------------------------------------------------------


def xdp_query_id(ifindex: int, flags: int = 0) -> int:
    """Id of the XDP program attached to ``ifindex`` (0 if none)."""
    pid = c_uint32(0)
    _check(_lib.bpf_xdp_query_id(ifindex, flags, ctypes.byref(pid)), f"query XDP on ifindex {ifindex}")
    return pid.value


def xdp_attach(ifindex: int, prog_fd: int, flags: int, old_prog_fd: int = -1) -> None:
    """bpf_xdp_attach's request, sent over rtnetlink by kernel/rtnl.py so that the
    kernel's extack reason reaches the error (libbpf drops it)."""
    what = "XDP detach" if prog_fd < 0 else "XDP attach"
    try:
        rtnl.xdp_set(ifindex, prog_fd, flags, old_prog_fd)
    except rtnl.NetlinkError as e:
        raise _fail(f"{what} on ifindex {ifindex}", e.errno, op=errnos.ATTACH,
                    extack=e.extack) from None


def xdp_detach(ifindex: int, flags: int, old_prog_fd: int = -1) -> None:
    xdp_attach(ifindex, -1, flags, old_prog_fd)


# --- test run ------------------------------------------------------------------------


@dataclass
class TestRun:
    retval: int
    duration_ns: int
    data_out: bytes


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> TestRun:
    out = ctypes.create_string_buffer(max(len(data) + 256, 4096))
    inp = ctypes.create_string_buffer(data, len(data))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    opts.data_in = ctypes.cast(inp, c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(out, c_void_p)
    opts.data_size_out = len(out)
    opts.repeat = repeat
    rc = _lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc < 0:
        raise _fail("BPF_PROG_TEST_RUN", -rc)
    return TestRun(opts.retval, opts.duration, out.raw[: opts.data_size_out])


# --- fds, pins, info -------------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    _check(_lib.bpf_obj_pin(fd, os.fsencode(path)), f"pin at {path}", errnos.PIN)


def obj_get(path: str) -> int:
    fd = _lib.bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise _fail(f"open pinned object {path}", op=errnos.PIN)
    return fd


def prog_fd_by_id(prog_id: int) -> int:
    fd = _lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise _fail(f"open program id {prog_id}")
    return fd


def map_fd_by_id(map_id: int) -> int:
    fd = _lib.bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise _fail(f"open map id {map_id}")
    return fd


def prog_info(fd: int, map_ids: bool = False) -> tuple[BpfProgInfo, list[int]]:
    info = BpfProgInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "prog info")
    ids: list[int] = []
    if map_ids and info.nr_map_ids:
        n = info.nr_map_ids
        arr = (c_uint32 * n)()
        info2 = BpfProgInfo()
        info2.nr_map_ids = n
        info2.map_ids = ctypes.addressof(arr)
        size = c_uint32(ctypes.sizeof(info2))
        _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(size)),
               "prog map ids")
        ids = list(arr)
    return info, ids


def map_info(fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return info


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    val = ctypes.create_string_buffer(value_size)
    rc = _lib.bpf_map_lookup_elem(fd, key, val)
    if rc < 0:
        if ctypes.get_errno() == _errno.ENOENT:
            return None
        raise _fail("map lookup")
    return val.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    _check(_lib.bpf_map_update_elem(fd, key, value, flags), "map update")


def map_keys(fd: int, key_size: int) -> Iterator[bytes]:
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    while _lib.bpf_map_get_next_key(fd, cur, nxt) == 0:
        yield nxt.raw
        cur = ctypes.create_string_buffer(nxt.raw, key_size)


def _ids(fn) -> list[int]:
    out, cur, nxt = [], 0, c_uint32()
    while fn(cur, ctypes.byref(nxt)) == 0:
        out.append(nxt.value)
        cur = nxt.value
    return out


def prog_ids() -> list[int]:
    return _ids(_lib.bpf_prog_get_next_id)


def map_ids() -> list[int]:
    return _ids(_lib.bpf_map_get_next_id)


def link_ids() -> list[int]:
    return _ids(_lib.bpf_link_get_next_id)


BPF_STATS_RUN_TIME = 0


def enable_stats() -> int:
    """BPF_ENABLE_STATS: run_time_ns/run_cnt are counted while the returned fd is
    open (no sysctl to restore, nothing left on if we die)."""
    fd = _lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise _fail("enable BPF run-time statistics", -fd if fd != -1 else None)
    return fd


def num_possible_cpus() -> int:
    return _lib.libbpf_num_possible_cpus()


@contextmanager
def fd_closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


# --- freplace (dynamic backend) ----------------------------------------------------

BTF_KIND_FUNC = 12

_sig("btf__load_from_kernel_by_id", c_void_p, c_uint32)
_sig("btf__find_by_name_kind", ctypes.c_int32, c_void_p, c_char_p, c_uint32)
_sig("btf__free", None, c_void_p)
_sig("btf__raw_data", c_void_p, c_void_p, ctypes.POINTER(c_uint32))


def btf_raw_by_id(btf_id: int) -> bytes:
    """The raw bytes of a loaded BTF object (a program's or map's), by its kernel id."""
    btf = _lib.btf__load_from_kernel_by_id(btf_id)
    if not btf:
        raise _fail(f"load BTF id {btf_id}")
    try:
        size = c_uint32(0)
        ptr = _lib.btf__raw_data(btf, ctypes.byref(size))
        if not ptr:
            raise _fail(f"raw data of BTF id {btf_id}")
        return ctypes.string_at(ptr, size.value)
    finally:
        _lib.btf__free(btf)
_sig("bpf_link_create", c_int, c_int, c_int, c_int, c_void_p)
_sig("bpf_link_get_fd_by_id", c_int, c_uint32)


class _LinkCreateOpts(ctypes.Structure):
    """struct bpf_link_create_opts (libbpf 1.1 layout; sz makes it forward compatible)."""

    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("iter_info", c_void_p),
                ("iter_info_len", c_uint32), ("target_btf_id", c_uint32),
                ("_union", ctypes.c_uint8 * 32)]


def prog_btf_func_id(prog_fd: int, func: str) -> int:
    """BTF id of the FUNC ``func`` in the BTF of a loaded program (e.g. a dispatcher slot)."""
    info, _ = prog_info(prog_fd)
    if not info.btf_id:
        raise KernelError(f"program id {info.id} has no BTF", errno=_errno.EINVAL)
    btf = _lib.btf__load_from_kernel_by_id(info.btf_id)
    if not btf:
        raise _fail(f"load BTF id {info.btf_id}")
    try:
        tid = _lib.btf__find_by_name_kind(btf, func.encode(), BTF_KIND_FUNC)
        if tid < 0:
            raise KernelError(f"no function {func!r} in the BTF of program id {info.id}",
                              errno=_errno.ENOENT)
        return tid
    finally:
        _lib.btf__free(btf)


_sig("btf__type_by_id", c_void_p, c_void_p, c_uint32)
_sig("btf__name_by_offset", c_char_p, c_void_p, c_uint32)


def prog_main_func(prog_fd: int) -> str:
    """Name of a loaded program's entry function, from its BTF (func_info[0]); the
    kernel's program name is cut at 15 characters."""
    info, _ = prog_info(prog_fd)
    if not info.btf_id or not info.nr_func_info:
        raise KernelError(f"program id {info.id} has no BTF", errno=_errno.EINVAL)
    recs = (c_uint32 * (2 * info.nr_func_info))()  # bpf_func_info {insn_off, type_id}
    info2 = BpfProgInfo()
    info2.nr_func_info, info2.func_info_rec_size = info.nr_func_info, 8
    info2.func_info = ctypes.addressof(recs)
    size = c_uint32(ctypes.sizeof(info2))
    _check(_lib.bpf_obj_get_info_by_fd(prog_fd, ctypes.byref(info2), ctypes.byref(size)),
           "prog func info")
    btf = _lib.btf__load_from_kernel_by_id(info.btf_id)
    if not btf:
        raise _fail(f"load BTF id {info.btf_id}")
    try:
        t = _lib.btf__type_by_id(btf, recs[1])
        if not t:
            raise KernelError(f"program id {info.id}: bad BTF func id", errno=_errno.EINVAL)
        return _lib.btf__name_by_offset(btf, ctypes.c_uint32.from_address(t).value).decode()
    finally:
        _lib.btf__free(btf)


def freplace_link_create(prog_fd: int, target_fd: int, func: str) -> int:
    """Attach an already loaded EXT program to ``func`` of another program.

    This is freplace multi-attach (kernel >= 5.10): the program is not
    reloaded, keeps its maps and state, and may stay linked elsewhere too.
    Returns the new link's fd.
    """
    btf_id = prog_btf_func_id(target_fd, func)
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), target_btf_id=btf_id)
    take_log()
    fd = _lib.bpf_link_create(prog_fd, target_fd, 0, ctypes.byref(opts))
    if fd < 0:
        raise _fail(f"freplace link to {func}", -fd if fd != -1 else None, op=errnos.LINK)
    return fd


def link_fd_by_id(link_id: int) -> int:
    fd = _lib.bpf_link_get_fd_by_id(link_id)
    if fd < 0:
        raise _fail(f"open link id {link_id}")
    return fd


@dataclass
class LinkInfo:
    type: int
    id: int
    prog_id: int
    target_obj_id: int  # tracing/freplace links: target program id
    target_btf_id: int


def link_info(fd: int) -> LinkInfo:
    buf = (c_uint32 * 32)()
    size = c_uint32(ctypes.sizeof(buf))
    _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(buf), ctypes.byref(size)), "link info")
    # struct bpf_link_info: type, id, prog_id, then (8-byte aligned union, at
    # word 4) for tracing links: attach_type, target_obj_id, target_btf_id
    return LinkInfo(buf[0], buf[1], buf[2], buf[5], buf[6])



# --- ring buffers ------------------------------------------------------------------

_RB_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_sig("ring_buffer__new", c_void_p, c_int, _RB_SAMPLE_FN, c_void_p, c_void_p)
_sig("ring_buffer__poll", c_int, c_void_p, c_int)
_sig("ring_buffer__consume", c_int, c_void_p)
_sig("ring_buffer__free", None, c_void_p)
_RB_STOP = -_errno.ECANCELED  # a callback's "enough": libbpf keeps the sample consumed, stops


class RingBuffer:
    """libbpf's consumer of a BPF_MAP_TYPE_RINGBUF (``ring_buffer__new``).

    ``on_sample(data: bytes) -> bool`` is called per record; returning False
    stops this poll/consume after that record (it stays consumed). Consumed
    records are gone for every other reader of the ring.
    """

    def __init__(self, map_fd: int, on_sample) -> None:
        def cb(_ctx, data, size):
            try:
                more = on_sample(ctypes.string_at(data, size))
            except BaseException:  # noqa: BLE001 - never unwind through libbpf's C frames
                self._error = True
                return _RB_STOP
            return 0 if more is not False else _RB_STOP

        self._error = False
        self._cb = _RB_SAMPLE_FN(cb)  # kept referenced as long as libbpf may call it
        take_log()
        ptr = _lib.ring_buffer__new(map_fd, self._cb, None, None)
        if not ptr:
            raise _fail("ring_buffer__new")
        self.ptr: int = ptr

    def _done(self, rc: int, what: str) -> int:
        if self._error:
            raise KernelError(f"{what}: the sample callback raised", errno=_errno.EINVAL)
        if rc == _RB_STOP:
            return 0
        if rc < 0:
            raise _fail(what, -rc)
        return rc

    def consume(self) -> int:
        """Read what is there now, without waiting; number of records handled."""
        return self._done(_lib.ring_buffer__consume(self.ptr), "ring_buffer__consume")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for records (epoll), then read them."""
        return self._done(_lib.ring_buffer__poll(self.ptr, timeout_ms), "ring_buffer__poll")

    def close(self) -> None:
        if self.ptr:
            _lib.ring_buffer__free(self.ptr)
            self.ptr = 0

    def __enter__(self) -> "RingBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
