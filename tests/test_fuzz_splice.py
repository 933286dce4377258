"""Differential fuzzing of the splicer: random component programs (C generated from a
small grammar, compiled by clang) chained spliced and called must give the same
verdicts, output bytes and counters on a packet corpus, whenever the verifier accepts
the spliced chain. Real kernel, real clang; XDPHOOKS_FUZZ_EXAMPLES scales the run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from static_helpers import entry, make_ctx, private_bpffs
from xdphooks.backends import preflight as pf
from xdphooks.backends import static
from xdphooks.counters import read_counters
from xdphooks.kernel import libbpf

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "fuzz-splice"
EXAMPLES = int(os.environ.get("XDPHOOKS_FUZZ_EXAMPLES", "25"))
CORPUS = [pf.udp(40000, 53), pf.udp(1234, 9), pf.tcp(40000, 80), pf.CANNED["icmp4"],
          pf.CANNED["udp6"], pf.CANNED["arp"], b"\0" * 14, bytes(range(64)) * 3]

HEAD = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32);
         __type(value, __u64); } cnt SEC(".maps");
"""

verdict = st.sampled_from(["XDP_PASS", "XDP_PASS", "XDP_DROP", "XDP_TX", "XDP_ABORTED",
                           "XDP_REDIRECT", "7"])
offset = st.integers(0, 60)


@st.composite
def statement(draw, depth=0):
    kind = draw(st.sampled_from(["if_byte", "count", "stack", "call", "loop", "ret"]
                                if depth < 2 else ["count", "stack", "ret"]))
    if kind == "if_byte":
        off, val = draw(offset), draw(st.integers(0, 255))
        body = draw(statement(depth + 1))
        return (f"if (d + {off + 1} <= e && ((__u8 *)d)[{off}] {draw(st.sampled_from(['==', '<', '>']))}"
                f" {val}) {{ {body} }}")
    if kind == "count":
        return (f"{{ __u32 k = {draw(st.integers(0, 3))}; __u64 *v = bpf_map_lookup_elem(&cnt, &k);"
                f" if (v) *v += {draw(st.integers(1, 9))}; }}")
    if kind == "stack":
        n = draw(st.sampled_from([8, 16, 40, 64, 128]))
        return (f"{{ volatile __u8 buf[{n}]; __builtin_memset((void *)buf, {draw(st.integers(0, 9))},"
                f" {n}); acc += buf[acc & {n - 1}]; }}")
    if kind == "call":
        return f"acc += helper(ctx, {draw(st.integers(0, 50))});"
    if kind == "loop":
        n = draw(st.integers(1, 6))
        return f"for (int i = 0; i < {n}; i++) {{ acc += i; if (acc == {draw(st.integers(0, 30))}) break; }}"
    return f"return {draw(verdict)};"


@st.composite
def component(draw):
    stmts = draw(st.lists(statement(), min_size=1, max_size=6))
    final = draw(st.sampled_from(["XDP_PASS", "XDP_PASS", "acc & 1 ? XDP_PASS : XDP_DROP",
                                  "(acc % 5)"]))
    return HEAD + f"""
static __attribute__((noinline)) int helper(struct xdp_md *ctx, int x)
{{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	if (d + 2 > e) return x;
	return x + ((__u8 *)d)[1];
}}
SEC("xdp") int fuzz_comp(struct xdp_md *ctx)
{{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	__u32 acc = 0;
	{' '.join(stmts)}
	return {final};
}}
char _license[] SEC("license") = "GPL";
"""


RAN: list[bool] = []


def compile_c(src: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(src.encode()).hexdigest()[:16]
    obj = OUT / f"{h}.o"
    if not obj.exists():
        c = OUT / f"{h}.c"
        c.write_text(src)
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        "-c", str(c), "-o", str(obj)], check=True, capture_output=True)
    return obj


@pytest.fixture(scope="module")
def fs():
    with private_bpffs() as base:
        yield base


def outcome(fs, objs, link, tag):
    entries = [entry(f"{tag}{i}", o, "drop=continue,tx=continue", link=link)
               for i, o in enumerate(objs)]
    try:
        built = static.build(make_ctx(fs, entries, counters=True), preflight=False)
    except Exception as e:  # noqa: BLE001 - the verifier may refuse a random program
        return ("refused", type(e).__name__)
    try:
        runs = []
        for p in CORPUS:
            r = libbpf.prog_test_run(built.prog_fd, p)
            runs.append(r.retval)
        return ("ran", runs, read_counters(built.pins["counters"], len(objs)),
                [s["link"] for s in built.slot_links])
    finally:
        built.close()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(component(), min_size=1, max_size=3))
def test_spliced_behaves_like_called(fs, sources):
    objs = [compile_c(s) for s in sources]
    tag = hashlib.sha256("".join(sources).encode()).hexdigest()[:6]
    spliced = outcome(fs, objs, "splice", f"s{tag}")
    called = outcome(fs, objs, "call", f"c{tag}")
    if called[0] == "refused":
        RAN.append(False)
        return  # the verifier's call, on both forms of a random program
    RAN.append(True)
    assert spliced[0] == "ran", f"called chain ran, spliced refused: {spliced}"
    assert spliced[1:3] == called[1:3]
    assert "spliced" in spliced[3]


def test_fuzz_compared_most_examples():
    """The comparison above is not vacuous: most random chains did load and run."""
    assert len(RAN) >= EXAMPLES // 2 and sum(RAN) >= len(RAN) // 2, RAN
