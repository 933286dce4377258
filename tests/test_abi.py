"""xdphooks/abi.py mirrors bpf/xdphooks_config.h: clang checks that both sides agree.

Each Python constant and layout becomes a C11 ``_Static_assert`` compiled against
the header for the BPF target, so a number changed on one side only fails here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from xdphooks import abi

REPO = Path(__file__).resolve().parent.parent


def assertions() -> list[str]:
    eq = [
        ("XDPHOOKS_MAX_SLOTS", abi.MAX_SLOTS), ("XDPHOOKS_MAX_CHAIN", abi.MAX_CHAIN),
        ("XDPHOOKS_MAX_SEGMENTS", abi.MAX_SEGMENTS), ("XDPHOOKS_MAGIC", abi.MAGIC),
        ("XDPHOOKS_VERSION", abi.VERSION), ("XDPH_CONTINUE", abi.DECISION_CONTINUE),
        ("XDPH_RETURN", abi.DECISION_RETURN), ("XDPH_LOG", abi.DECISION_LOG),
        ("XDPH_POL_UNKNOWN", abi.POL_UNKNOWN), ("XDPH_NR_POLICY", abi.NR_POLICY),
        ("XDPHOOKS_EVENTS_SIZE", abi.EVENTS_SIZE),
        ("sizeof(struct xdphooks_config)",
         abi.CONFIG_HEADER.size + abi.MAX_SLOTS * abi.NR_POLICY),
        ("__builtin_offsetof(struct xdphooks_config, policy)", abi.CONFIG_HEADER.size),
        ("sizeof(struct xdphooks_counters)", abi.COUNTERS_SIZE),
        ("XDPH_COUNTERS_KEY", abi.COUNTERS_KEY),
        ("sizeof(((struct xdphooks_counters *)0)->verdicts[0])", abi.COUNTERS_ROW.size),
        ("__builtin_offsetof(struct xdphooks_counters, verdicts[3][XDPH_POL_TX])",
         abi.counter_offset(3, abi.XDP_TX)),
        ("__builtin_offsetof(struct xdphooks_counters, verdicts[255][XDPH_POL_UNKNOWN])",
         abi.counter_offset(255, abi.POL_UNKNOWN)),
        ("sizeof(struct xdphooks_event)", abi.EVENT.size),
        ("__builtin_offsetof(struct xdp_md, ingress_ifindex)", abi.XDP_MD_INGRESS_IFINDEX),
    ]
    eq += [(f"XDPH_POL_{key.upper()}", i) for i, key in enumerate(abi.POLICY_KEYS)]
    return [f"_Static_assert({c} == {v}, \"{c} != {v} (xdphooks/abi.py)\");" for c, v in eq]


def test_python_abi_matches_the_header(tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.fail("clang is needed to check the ABI (scripts/install-deps.sh installs it)")
    src = tmp_path / "abi_check.c"
    src.write_text("#include <linux/bpf.h>\n#include \"xdphooks_config.h\"\n"
                   + "\n".join(assertions()) + "\n")
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                               text=True).stdout.strip()
    proc = subprocess.run([clang, "-target", "bpf", "-fsyntax-only", "-I", str(REPO / "bpf"),
                           "-I", f"/usr/include/{multiarch}", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_encoded_config_has_the_header_layout():
    blob = abi.encode_config([[0, 1, 0, 2, 1, 1]], counters=True)
    assert len(blob) == abi.CONFIG_HEADER.size + abi.MAX_SLOTS * abi.NR_POLICY
    magic, version, nr, counters, events = abi.CONFIG_HEADER.unpack_from(blob)
    assert (magic, version, nr, counters, events) == (abi.MAGIC, abi.VERSION, 1, 1, 1)
    assert blob[abi.CONFIG_HEADER.size:abi.CONFIG_HEADER.size + abi.NR_POLICY] == bytes([0, 1, 0, 2, 1, 1])
