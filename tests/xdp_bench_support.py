"""xdp-tools' xdp-bench object (xdp_basic.bpf.c), as Debian's xdp-tools 1.3.1 ships it.

xdp-bench embeds its BPF objects in the binary (a libbpf skeleton); the object of
``xdp-bench drop|pass|tx`` is the one whose symbol table names ``xdp_basic.bpf.c``.
It is extracted here at test time, unmodified (its sha256 is checked), not vendored:
tests/corpus/PROVENANCE.md says where it comes from. Its maps have no max_entries:
xdp-bench sizes them before load (xdp_sample's sample_setup_maps) and sets
``nr_cpus`` and ``action`` in its .rodata; ``own_loader_settings`` is that, as data.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from xdphooks.link import elf as E

XDP_BENCH = Path("/usr/sbin/xdp-bench")
#: sha256 of the extracted object from xdp-tools 1.3.1-1 (Debian 12)
XDP_BASIC_SHA256 = "4c5d167960dce45b499c12c09cb26ee7f7a891763bdc2c0c295a47846ddd2049"
OUT = Path(__file__).resolve().parent.parent / "build" / "xdp-bench" / "xdp_basic.bpf.o"
PROGRAM = "xdp_basic_prog"
EM_BPF = 247
#: xdp_sample.h's constants that size the maps (XDP_REDIRECT_ERR_MAX, XDP_ACTION_MAX)
REDIRECT_ERR_MAX, ACTION_MAX = 7, 5


def extract() -> Path:
    """The xdp_basic object out of /usr/sbin/xdp-bench (AssertionError if absent)."""
    assert XDP_BENCH.exists(), f"{XDP_BENCH} missing: install Debian's xdp-tools"
    data = XDP_BENCH.read_bytes()
    off = data.find(b"\x7fELF\x02\x01\x01", 1)
    while off >= 0:
        machine = struct.unpack_from("<H", data, off + 18)[0]
        if machine == EM_BPF:
            shoff = struct.unpack_from("<Q", data, off + 0x28)[0]
            shentsize, shnum = struct.unpack_from("<HH", data, off + 0x3A)
            blob = data[off: off + shoff + shentsize * shnum]
            elf = E.read_elf("xdp-bench", blob)
            if any(s.type == E.STT_FILE and s.name == "xdp_basic.bpf.c" for s in elf.symbols):
                assert hashlib.sha256(blob).hexdigest() == XDP_BASIC_SHA256, \
                    "xdp-bench's xdp_basic object is not the one PROVENANCE.md records"
                OUT.parent.mkdir(parents=True, exist_ok=True)
                if not OUT.exists() or OUT.read_bytes() != blob:
                    OUT.write_bytes(blob)
                return OUT
        off = data.find(b"\x7fELF\x02\x01\x01", off + 1)
    raise AssertionError(f"no xdp_basic.bpf.c object embedded in {XDP_BENCH}")


def own_loader_settings(ncpu: int) -> dict[str, dict[str, int]]:
    """What xdp-bench sets with bpf_map__set_max_entries before load."""
    return {"rx_cnt": {"max_entries": ncpu},
            "rxq_cnt": {"max_entries": 1},
            "redir_err_cnt": {"max_entries": REDIRECT_ERR_MAX * ncpu},
            "cpumap_enqueue_cnt": {"max_entries": ncpu * ncpu},
            "cpumap_kthread_cnt": {"max_entries": ncpu},
            "exception_cnt": {"max_entries": ACTION_MAX * ncpu},
            "devmap_xmit_cnt": {"max_entries": ncpu}}


def datarec_totals(fd: int) -> tuple[int, int, int]:
    """(processed, dropped, issue) summed over every key (and CPU, for a per-CPU map)
    of an array of struct datarec (64 bytes: processed, dropped, issue, …). In 1.3.1
    rx_cnt is a BPF_F_MMAPABLE ARRAY keyed by CPU."""
    from xdphooks.kernel import libbpf

    info = libbpf.map_info(fd)
    n = libbpf.num_possible_cpus() if info.type == 6 else 1  # BPF_MAP_TYPE_PERCPU_ARRAY
    tot = [0, 0, 0]
    for k in range(info.max_entries):
        raw = libbpf.map_lookup(fd, struct.pack("<I", k), info.value_size * n) or b""
        for c in range(len(raw) // 64):
            for i, v in enumerate(struct.unpack_from("<QQQ", raw, c * 64)):
                tot[i] += v
    return tuple(tot)  # type: ignore[return-value]
