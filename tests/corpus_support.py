"""The third-party XDP corpus (tests/corpus/): what is in it, how each object is built,
and how one program is run standalone and chained, for tests/test_corpus.py.

Provenance and licences are in tests/corpus/PROVENANCE.md; this module is the
machine-readable half (sources, include paths, flags, which program, map setup,
and why an object cannot be chained yet).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from corpus_packets import VIP_PORT
from static_helpers import entry, make_ctx, private_bpffs
from xdphooks.abi import BPF_F_XDP_HAS_FRAGS
from xdphooks.backends.base import set_frags
from xdphooks.backends.preflight import DST4
from xdphooks.errors import XdphooksError
from xdphooks.kernel import libbpf
from xdphooks.model import VerdictPolicy

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"
BUILD = REPO / "build" / "corpus"
PASS_OBJ = "static_pass"  # the PASS-everything neighbours (tests/bpf/static_pass.bpf.c)
XDP_TOOLS = Path("/usr/lib/x86_64-linux-gnu/bpf")  # Debian's xdp-tools 1.3.1 objects
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_UNSPEC = 0

#: The policy of the program under test: every verdict ends the chain there, so the
#: chain's result is the component's own result whatever it returns.
ALL_RETURN = VerdictPolicy.parse("pass=return")


# --- sources and how they are compiled --------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One vendored C file; ``include`` dirs are relative to tests/corpus/."""

    path: str  # relative to tests/corpus/
    include: tuple[str, ...] = ()
    cflags: tuple[str, ...] = ()
    vmlinux: bool = False  # needs a vmlinux.h generated from this kernel's BTF

    @property
    def stem(self) -> str:
        return self.path.replace("/", "__").removesuffix(".c")


LINUX = ("linux",)  # test_iptunnel_common.h, xdping.h
SELFTEST_FLAGS = ("-mcpu=v3", "-D__TARGET_ARCH_x86")  # as tools/testing/selftests/bpf/Makefile


def _vmlinux_h() -> Path:
    """vmlinux.h of the running kernel (bpftool), the way the selftests generate it."""
    out = BUILD / "include" / "vmlinux.h"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                              "format", "c"], check=True, capture_output=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(res.stdout)
        tmp.replace(out)
    return out


def build_source(src: Source) -> Path:
    """Compile ``src`` (cached by mtime of everything under its tree and the shim)."""
    c = CORPUS / src.path
    out = BUILD / f"{src.stem}.o"
    tree = CORPUS / src.path.split("/")[0]
    newest = max(p.stat().st_mtime for p in [c, *tree.rglob("*.h"), *(CORPUS / "shim").rglob("*.h")])
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    argv = ["clang", "-O2", "-g", "-target", "bpf", *src.cflags,
            f"-I{CORPUS / 'shim'}", "-I/usr/include/x86_64-linux-gnu"]
    argv += [f"-I{CORPUS / d}" for d in src.include]
    if src.vmlinux:
        argv.append(f"-I{_vmlinux_h().parent}")
    tmp = out.with_suffix(".o.tmp")
    res = subprocess.run([*argv, "-c", str(c), "-o", str(tmp)], capture_output=True, text=True)
    if res.returncode:
        raise AssertionError(f"corpus source {src.path} does not compile:\n{res.stderr[-3000:]}")
    tmp.replace(out)
    return out


def prebuild() -> None:
    """Compile every corpus source now (tests/vm/run-in-vm.sh does this on the host)."""
    for src in {c.source for c in CASES if c.source is not None and not c.vm_skip}:
        build_source(src)


# --- map setup hooks ----------------------------------------------------------------------

class MapAccess:
    """What a setup hook gets: update a map of the program under test by name."""

    def __init__(self, fd_of: Callable[[str], int]) -> None:
        self._fd_of = fd_of

    def update(self, name: str, key: bytes, value: bytes) -> None:
        libbpf.map_update(self._fd_of(name), key, value)

    @property
    def ncpu(self) -> int:
        return libbpf.num_possible_cpus()


def _a4(addr: str) -> bytes:
    return bytes(map(int, addr.split(".")))


def setup_iptunnel(m: MapAccess) -> None:
    """test_xdp.c / test_xdp_loop.c: tunnel TCP to DST4:80 in IPIP to 198.51.100.9."""
    key = struct.pack("<4s12xHHB3x", _a4(DST4), struct.unpack("<H", struct.pack("!H", VIP_PORT))[0],
                      2, 6)  # struct vip {daddr, dport (be), family AF_INET, protocol}
    val = struct.pack("<4s12x4s12xH6s2x", _a4("198.51.100.8"), _a4("198.51.100.9"), 2,
                      b"\x02\x00\x00\x00\x00\x99")  # struct iptnl_info
    m.update("vip2tnl", key, val)


def setup_xdping(m: MapAccess) -> None:
    """xdping_kern.c client: expect the reply with seq 1 from DST4 (struct pinginfo)."""
    m.update("ping_map", _a4(DST4), struct.pack("<QHHI10Q", 0, struct.unpack(
        "<H", struct.pack("!H", 1))[0], 4, 0, *([0] * 10)))


def setup_tutorial_redirect(m: MapAccess) -> None:
    """xdp-tutorial packet03 redirect_map: our source MAC goes to lo (ifindex 1)."""
    from xdphooks.backends.preflight import MAC_SRC
    m.update("tx_port", struct.pack("<i", 0), struct.pack("<i", 1))
    m.update("redirect_params", MAC_SRC, b"\x02\x00\x00\x00\x00\x77")


def setup_devmap_helpers(m: MapAccess) -> None:
    """test_xdp_with_devmap_helpers.c: dm_ports[1] -> lo, no program."""
    m.update("dm_ports", struct.pack("<I", 1), struct.pack("<Ii", 1, -1))  # key 1: the source


def setup_redirect_map(m: MapAccess) -> None:
    """xdp_redirect_map.c: tx_port[0] -> lo."""
    m.update("tx_port", struct.pack("<i", 0), struct.pack("<i", 1))


KATRAN_RING = 65537  # RING_SIZE, katran/lib/bpf/balancer_consts.h


def setup_katran(m: MapAccess) -> None:
    """Katran: one TCP VIP DST4:80 (vip_num 0) whose whole ring points at real 1."""
    port = struct.unpack("<H", struct.pack("!H", VIP_PORT))[0]
    m.update("vip_map", struct.pack("<4s12xHB1x", _a4(DST4), port, 6), struct.pack("<II", 0, 0))
    m.update("reals", struct.pack("<I", 1), struct.pack("<4s12xB3x", _a4("198.51.100.20"), 0))
    m.update("ctl_array", struct.pack("<I", 0), b"\x02\x00\x00\x00\x00\x42\0\0")
    one = struct.pack("<I", 1)
    for i in range(KATRAN_RING):
        m.update("ch_rings", struct.pack("<I", i), one)


def setup_xdpfilt_ports(m: MapAccess) -> None:
    """xdp-filter: port 53 matched as UDP destination (MAP_FLAG_DST|MAP_FLAG_UDP)."""
    key = struct.unpack("<H", struct.pack("!H", 53))[0]
    m.update("filter_ports", struct.pack("<I", key), struct.pack("<Q", 0x2 | 0x8) * m.ncpu)


# --- the corpus ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """A backend cannot chain the program yet: ``match`` is a regex the error must match."""

    match: str
    why: str


@dataclass(frozen=True)
class Case:
    id: str
    program: str  # the entry function
    source: Source | None = None
    shipped: str | None = None  # an installed object (xdp-tools) instead of a source
    setup: Callable[[MapAccess], None] | None = None
    static: Expect | None = None
    freplace: Expect | None = None
    standalone: Expect | None = None  # the object does not even load on its own here
    name_program: bool = True  # pass program= in the chain entry (several programs)
    vm_skip: str | None = None  # why the freplace (VM) run leaves it out

    def object_path(self) -> Path:
        if self.source is not None:
            return build_source(self.source)
        return XDP_TOOLS / self.shipped


def _sel(name: str, **kw) -> Source:
    return Source(f"linux/progs/{name}", LINUX, SELFTEST_FLAGS, **kw)


def _tut(name: str) -> Source:
    return Source(f"xdp-tutorial/{name}")


KATRAN = Source("katran/katran/lib/bpf/balancer.bpf.c", ("katran",))

NO_LICENCE = Expect(r"has no license section \(SEC\(\"license\"\)",
                    "the object has no license section; the static chain is one GPL program")

SYNPROXY_UNLOADABLE = Expect(
    r"xdp_synproxy_kern\.o failed: (Argument list too long|No such process|.*\((E2BIG|ESRCH)\))",
    "it does not load even standalone: built with clang 14 it exceeds the verifier's "
    "1M-instruction limit (E2BIG), and it needs nf_conntrack's kfuncs (ESRCH without them)")

CASES: list[Case] = [
    # Linux selftests (v6.1.192)
    Case("xdp_dummy", "xdp_dummy_prog", _sel("xdp_dummy.c")),
    Case("xdp_tx", "xdp_tx", _sel("xdp_tx.c")),
    Case("adjust_tail_shrink", "_xdp_adjust_tail_shrink", _sel("test_xdp_adjust_tail_shrink.c")),
    Case("adjust_tail_grow", "_xdp_adjust_tail_grow", _sel("test_xdp_adjust_tail_grow.c")),
    Case("test_xdp", "_xdp_tx_iptunnel", _sel("test_xdp.c"), setup=setup_iptunnel),
    Case("test_xdp_loop", "_xdp_tx_iptunnel", _sel("test_xdp_loop.c"), setup=setup_iptunnel),
    Case("noinline_v4", "balancer_ingress_v4", _sel("test_xdp_noinline.c")),
    Case("noinline_v6", "balancer_ingress_v6", _sel("test_xdp_noinline.c")),
    Case("vlan_drop_4011", "xdp_prognum0", _sel("test_xdp_vlan.c")),
    Case("vlan_change", "xdp_prognum1", _sel("test_xdp_vlan.c")),
    Case("vlan_remove_outer", "xdp_prognum2", _sel("test_xdp_vlan.c")),
    Case("vlan_remove_outer2", "xdp_prognum3", _sel("test_xdp_vlan.c")),
    Case("xdping_client", "xdping_client", _sel("xdping_kern.c"), setup=setup_xdping),
    Case("xdping_server", "xdping_server", _sel("xdping_kern.c")),
    Case("xdpwall", "edgewall", _sel("xdpwall.c")),
    Case("update_frags", "xdp_adjust_frags", _sel("test_xdp_update_frags.c")),
    Case("context_test_run", "xdp_context", _sel("test_xdp_context_test_run.c")),
    Case("devmap_redir", "xdp_redir_prog", _sel("test_xdp_with_devmap_helpers.c"),
         setup=setup_devmap_helpers),
    Case("redirect_map_0", "xdp_redirect_map_0", _sel("xdp_redirect_map.c"),
         setup=setup_redirect_map),
    Case("synproxy", "syncookie_xdp", _sel("xdp_synproxy_kern.c", vmlinux=True),
         standalone=SYNPROXY_UNLOADABLE,
         vm_skip="it does not load standalone (checked on the host), and its 1M-instruction "
                 "verifier run takes minutes under emulation"),
    # xdp-tutorial
    Case("tut_patch_ports", "xdp_patch_ports_func", _tut("packet-solutions/xdp_prog_kern_02.c")),
    Case("tut_vlan_swap", "xdp_vlan_swap_func", _tut("packet-solutions/xdp_prog_kern_02.c")),
    Case("tut_icmp_echo", "xdp_icmp_echo_func", _tut("packet-solutions/xdp_prog_kern_03.c")),
    Case("tut_redirect_map", "xdp_redirect_map_func", _tut("packet-solutions/xdp_prog_kern_03.c"),
         setup=setup_tutorial_redirect),
    Case("tut_router", "xdp_router_func", _tut("packet-solutions/xdp_prog_kern_03.c")),
    Case("tut_vlan01", "xdp_vlan_01", _tut("packet-solutions/xdp_vlan01_kern.c"),
         static=NO_LICENCE),
    Case("tut_vlan02", "xdp_vlan_02", _tut("packet-solutions/xdp_vlan02_kern.c"),
         static=NO_LICENCE),
    # Katran
    Case("katran", "balancer_ingress", KATRAN, setup=setup_katran),
    # xdp-tools 1.3.1 as Debian ships it (objects, not vendored sources)
    Case("xdpfilt_dny_udp", "xdpfilt_dny_udp", shipped="xdpfilt_dny_udp.o",
         setup=setup_xdpfilt_ports),
    Case("xdpfilt_alw_all", "xdpfilt_alw_all", shipped="xdpfilt_alw_all.o",
         setup=setup_xdpfilt_ports),
    Case("xdpdump", "xdpdump", shipped="xdpdump_xdp.o"),
    Case("xsk_def_prog", "xsk_def_prog", shipped="xsk_def_xdp_prog.o"),
    Case("xsk_def_prog_5.3", "xsk_def_prog", shipped="xsk_def_xdp_prog_5.3.o"),
    Case("libxdp_dispatcher", "xdp_dispatcher", shipped="xdp-dispatcher.o"),
    Case("libxdp_pass", "xdp_pass", shipped="xdp-dispatcher.o"),
]


# --- running one program -----------------------------------------------------------------------

Outcome = tuple  # ("ret", retval, data_out) or ("error", errno)


def _test_run(prog_fd: int, pkt: bytes) -> Outcome:
    try:
        r = libbpf.prog_test_run(prog_fd, pkt)
    except XdphooksError as e:
        return ("error", getattr(e, "errno", None))
    return ("ret", r.retval, bytes(r.data_out))


def run_standalone(case: Case, packets: dict[str, bytes]) -> dict[str, Outcome]:
    """The object as its own loader would run it: only this program, private maps."""
    obj = libbpf.BpfObject(str(case.object_path()))
    try:
        for p in obj.programs():
            p.set_autoload(p.name == case.program)
            if p.name == case.program and p.type == BPF_PROG_TYPE_UNSPEC:
                p.set_type(BPF_PROG_TYPE_XDP)  # legacy section names (xdp_foo, redirect_map_0)
            if p.name == case.program:
                # as a chain does: a kernel before 5.18 refuses BPF_F_XDP_HAS_FRAGS outright,
                # so an xdp.frags program runs single-buffer there, standalone and chained
                set_frags(p, bool(p.flags & BPF_F_XDP_HAS_FRAGS))
        for m in obj.maps():
            if not m.internal:
                m.set_pin_path(None)  # LIBBPF_PIN_BY_NAME would pin under /sys/fs/bpf
        obj.load()
        if case.setup:
            case.setup(MapAccess(lambda name: obj.map(name).fd))
        fd = obj.program(case.program).fd
        return {k: _test_run(fd, v) for k, v in packets.items()}
    finally:
        obj.close()


@dataclass
class ChainRun:
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def run_chained(case: Case, packets: dict[str, bytes], backend, between: bool,
                pass_obj: Path) -> dict[str, Outcome]:
    """``case`` alone in a chain, or between two PASS-everything programs."""
    obj = case.object_path()
    me = entry("corpus", obj, ALL_RETURN, program=case.program if case.name_program else None,
               plugin=f"corpus-{case.id}")
    ents = [entry("before", pass_obj), me, entry("after", pass_obj)] if between else [me]
    with private_bpffs() as fs:
        built = backend.build(make_ctx(fs, ents))
        try:
            fds: dict[str, int] = {}

            def fd_of(name: str) -> int:
                if name not in fds:
                    fds[name] = libbpf.obj_get(built.maps["corpus"][name])
                return fds[name]

            try:
                if case.setup:
                    case.setup(MapAccess(fd_of))
            finally:
                for fd in fds.values():
                    os.close(fd)
            return {k: _test_run(built.prog_fd, v) for k, v in packets.items()}
        finally:
            built.close()


def describe(outcome: Outcome) -> str:
    if outcome[0] == "error":
        return f"error errno={outcome[1]}"
    return f"ret={outcome[1]} len={len(outcome[2])}"


def first_error_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()
