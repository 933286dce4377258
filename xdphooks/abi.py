"""The ABI shared with the BPF side: mirrors ``bpf/xdphooks_config.h``.

Every number the control plane exchanges with the rootlet, the generated root
(link/splice.py) and the freplace dispatcher lives here once: decision codes,
policy indexes, the config blob, the counters and events layouts, and the names
of the objects' maps and functions. ``tests/test_abi.py`` compiles the header
and checks that both sides agree.
"""

from __future__ import annotations

import enum
import struct

#: XDP return codes (enum xdp_action)
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
#: offsetof(struct xdp_md, ingress_ifindex)
XDP_MD_INGRESS_IFINDEX = 12

MAX_SLOTS = 128  # XDPHOOKS_MAX_SLOTS: per linked program / dispatcher config
MAX_CHAIN = 256  # XDPHOOKS_MAX_CHAIN: programs in one static chain (counters rows)
MAX_SEGMENTS = 32  # XDPHOOKS_MAX_SEGMENTS: linked programs joined by tail calls (kernel: 33)
MAGIC = 0x58445048  # 'XDPH'
VERSION = 3  # 2: counters in one per-CPU value; 3: events carry the packet's first bytes

# decision codes (XDPH_CONTINUE, XDPH_RETURN, XDPH_LOG)
DECISION_CONTINUE, DECISION_RETURN, DECISION_LOG = 0, 1, 2


class Decision(str, enum.Enum):
    """What the chain does with one program's verdict (a policy's word for a code)."""

    CONTINUE = "continue"  #: run the next program
    RETURN = "return"  #: the chain ends with this verdict
    LOG = "log"  #: record an event naming program and verdict, then continue

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


DECISION_CODES = {Decision.CONTINUE: DECISION_CONTINUE, Decision.RETURN: DECISION_RETURN,
                  Decision.LOG: DECISION_LOG}
# policy indexes: the XDP action values, then "unknown" for anything else
POLICY_KEYS: tuple[str, ...] = ("aborted", "drop", "pass", "tx", "redirect", "unknown")
POL_UNKNOWN = 5
NR_POLICY = len(POLICY_KEYS)

#: BPF_PROG_LOAD flag: the program handles multi-buffer packets (jumbo MTU)
BPF_F_XDP_HAS_FRAGS = 1 << 5


def is_frags_section(section: str) -> bool:
    """libbpf's rule: an XDP program in SEC("xdp.frags") (or "xdp.frags/...") declares
    that it handles multi-buffer packets; a chain is loaded with BPF_F_XDP_HAS_FRAGS
    only when every program in it does."""
    return section == "xdp.frags" or section.startswith("xdp.frags/")


# names in the BPF objects
ROOT_PROG = "xdphooks_root"
COUNTERS_MAP = "xdph_counters"
EVENTS_MAP = "xdph_events"
ROOT_MAPS = (COUNTERS_MAP, EVENTS_MAP)
SEGMENTS_MAP = "xdph_segments"  # PROG_ARRAY: segment k of a chain at key k
LOG_FUNCTION = "xdph_log"
SLOT_FUNCTION = "xdph_slot_{}"

# struct xdphooks_config
CONFIG_HEADER = struct.Struct("<IIIII")  # magic, version, nr_slots, counters, events

# struct xdphooks_counters {u64 verdicts[MAX_CHAIN][NR_POLICY];}: the ONE value (key
# COUNTERS_KEY) of PERCPU_ARRAY xdph_counters. Slot n's verdict v is the u64 at
# counter_offset(n, v); its packets are the sum of its verdicts (one per run).
COUNTERS_KEY = 0
COUNTER = struct.Struct("<Q")
COUNTERS_ROW = struct.Struct(f"<{NR_POLICY}Q")  # one slot's verdicts
COUNTERS_SIZE = MAX_CHAIN * COUNTERS_ROW.size  # sizeof(struct xdphooks_counters)


def counter_offset(slot: int, policy_index: int = 0) -> int:
    """Byte offset of slot ``slot``'s counter for verdict ``policy_index`` (POLICY_KEYS
    order) in the counters value."""
    return slot * COUNTERS_ROW.size + policy_index * COUNTER.size


#: version 1's layout (PERCPU_ARRAY, key = slot, {u64 packets; u64 verdicts[6]}): a
#: chain pinned before an upgrade keeps it until its next rebuild, and status reads it
V1_SLOT_STATS = struct.Struct(f"<{1 + NR_POLICY}Q")

# struct xdphooks_event {u64 ts_ns; u32 slot, retval, ifindex, flags, pkt_len, cap_len;
# u8 pkt[EVENT_SNAPLEN];}: written by xdph_log() (bpf/xdphooks_log.h)
EVENT_SNAPLEN = 128
EVENT = struct.Struct(f"<QIIIIII{EVENT_SNAPLEN}s")
#: version 2's record (no packet): a chain pinned before an upgrade writes it until its
#: next rebuild, and counters.read_events reads both, told apart by their size
V2_EVENT = struct.Struct("<QIIII")
EVENTS_SIZE = 64 * 1024


def encode_config(codes: list[list[int]], counters: bool, events: bool | None = None) -> bytes:
    """struct xdphooks_config for slots with decision ``codes`` (POLICY_KEYS order).
    ``events`` defaults to "some slot logs"."""
    if events is None:
        events = any(DECISION_LOG in c for c in codes)
    blob = bytearray(CONFIG_HEADER.pack(MAGIC, VERSION, len(codes), int(counters), int(events)))
    table = bytearray(MAX_SLOTS * NR_POLICY)
    for i, c in enumerate(codes):
        table[i * NR_POLICY:(i + 1) * NR_POLICY] = bytes(c)
    return bytes(blob + table)
