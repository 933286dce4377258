#!/usr/bin/env python3
"""Static backend benchmark (issue 23): what the default chain costs against what a
hand-written program costs, in one run.

Per N in --ns (default 1, 10, 32, 64, 128), BPF_PROG_TEST_RUN on one UDP packet:
  mono      one hand-written program doing the N checks inline
  off       the spliced chain of N components, counters off
  on        the same chain, counters on (the default)
and their ratios to mono; ``cnt ns/prog`` = (on - off) / N, the counters' cost per
program and packet. Each component bounds-checks the Ethernet header and reads the
EtherType. Row ``128seg``: components with one map each, so the chain (> 64 maps) is
split into segments joined by tail calls; its monolith does the same N map reads.
``floor``: a program that only returns XDP_PASS (the test-run loop's own cost per
packet, included in every figure).

Then, per N, where the instructions go: the root's xlated/jited size (segment 0) and
per added slot, and the generator's own count per slot (ctx reload, epilogue when the
slot continues, what runs once when the chain ends at it, prologue, segment end).

Then the freplace dispatcher's counters, on this host: the host refuses freplace, so the
dispatcher runs with its placeholder slots (each a real BPF-to-BPF call returning an
unknown verdict that the policy continues on); on - off is what counting costs there.

Then third-party objects (tests/corpus): a chain of k copies of (xdp-tools'
xdpfilt_alw_all, selftests' xdping_server, selftests' test_xdp_vlan prognum1) against
the sum of the same programs run one by one (raw, and with the test-run floor taken out
of each standalone run).

Timing: the kernel's per-packet duration of each TEST_RUN (whole ns), --rounds
interleaved rounds, the mean of the middle half of the rounds (robust, and sub-ns: the
noise dithers the whole ns). Only ratios from one run count: the machine is shared. Needs root, clang and bpftool; mounts a private bpffs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from static_helpers import entry, make_ctx, private_bpffs  # noqa: E402
from xdphooks import abi  # noqa: E402
from xdphooks.backends import preflight as pf  # noqa: E402
from xdphooks.backends import static  # noqa: E402
from xdphooks.kernel import libbpf  # noqa: E402
from xdphooks.link import splice  # noqa: E402
from xdphooks import watchlease  # noqa: E402

NS = [1, 10, 32, 64, 128]
MITIGATION = Path("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
HEAD = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
WORK = """
static __always_inline int work(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	volatile __u16 proto;
	if (data + 14 > end)
		return XDP_DROP;
	proto = *(__u16 *)(data + 12);
	return proto == 0xffff ? XDP_DROP : XDP_PASS;
}
"""
MAPWORK = """
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, __u16); } cfg SEC(".maps");
static __always_inline int work(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	__u16 *bad = bpf_map_lookup_elem(&cfg, &zero);
	if (!bad || data + 14 > end)
		return XDP_DROP;
	return *(__u16 *)(data + 12) == *bad + 0xffff ? XDP_DROP : XDP_PASS;
}
"""
COMPONENT = """%s
SEC("xdp") int bench_comp(struct xdp_md *ctx) { return work(ctx); }
char _license[] SEC("license") = "GPL";
"""
MONO = """%s
SEC("xdp") int bench_mono(struct xdp_md *ctx)
{
#pragma unroll
	for (int i = 0; i < NCOMP; i++) {
		int r = work(ctx);
		asm volatile("" ::: "memory");
		if (r != XDP_PASS)
			return r;
	}
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""
FLOOR = HEAD + """SEC("xdp") int bench_floor(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""
#: (corpus case id, policy): third-party programs that let the UDP packet through
THIRD_PARTY = ("xdpfilt_alw_all", "xdping_server", "vlan_change")
COPIES = (1, 4, 10)


def cc(src: str, out: Path, *defs: str) -> Path:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    *defs, "-c", str(c), "-o", str(out)], check=True)
    return out


def load(path: Path, prog: str, keep: list, setup=None) -> int:
    obj = libbpf.BpfObject(str(path))
    for p in obj.programs():
        p.set_autoload(p.name == prog)
        if p.name == prog and p.type == 0:  # BPF_PROG_TYPE_UNSPEC: a legacy section name
            p.set_type(libbpf.BPF_PROG_TYPE_XDP)
    for m in obj.maps():
        if not m.internal:
            m.set_pin_path(None)
    obj.load()
    keep.append(obj)
    return obj.program(prog).fd


def time_ns(fd: int, pkt: bytes, repeat: int, want: int = abi.XDP_PASS) -> int:
    """The kernel's own per-packet time (whole ns). Wall time around the syscall is no
    use: each XDP test run swaps the XDP dispatcher in and out (text patching, ~20 ms)."""
    r = libbpf.prog_test_run(fd, pkt, repeat=repeat)
    assert r.retval == want, r.retval
    return r.duration_ns


def midmean(xs: list[float]) -> float:
    """Mean of the middle half: robust like a median, with sub-ns resolution from whole-ns
    rounds (the noise dithers them)."""
    xs = sorted(xs)
    q = len(xs) // 4
    mid = xs[q: len(xs) - q] or xs
    return sum(mid) / len(mid)


def root_sizes(prog_fd: int) -> tuple[int, int]:
    info, _ = libbpf.prog_info(prog_fd)
    return info.xlated_prog_len // 8, info.jited_prog_len


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--ns", default=",".join(map(str, NS)))
    ap.add_argument("--no-corpus", action="store_true", help="skip the third-party comparison")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="xh-bench-"))
    comp = cc(COMPONENT % (HEAD + WORK), tmp / "comp.o")
    mapcomp = cc(COMPONENT % (HEAD + MAPWORK), tmp / "mapcomp.o")
    pkt = pf.udp(40000, 53)
    fds: dict[tuple[str, str], int] = {}  # (row, variant) -> prog fd
    sizes: dict[tuple[str, str], tuple[int, int]] = {}
    costs: dict[tuple[str, str], dict[str, list]] = {}
    segs: dict[str, int] = {}
    keep: list = []
    rows = [str(n) for n in ns] + (["128seg"] if 128 in ns else [])
    with private_bpffs() as fs:
        fds[("floor", "mono")] = load(cc(FLOOR, tmp / "floor.o"), "bench_floor", keep)
        for row in rows:
            n = int(row.removesuffix("seg"))
            seg = row.endswith("seg")
            fds[(row, "mono")] = load(cc(MONO % (HEAD + (MAPWORK if seg else WORK)),
                                         tmp / f"mono{row}.o", f"-DNCOMP={n}"), "bench_mono", keep)
            for variant, counters in (("off", False), ("on", True), ("watch", True)):
                ctx = make_ctx(fs, [entry(f"r{row}{variant}c{i}", mapcomp if seg else comp)
                                    for i in range(n)], counters=counters)
                if variant == "watch":  # status --profile's instrumented build (issue 21)
                    ctx.instrument = splice.Instrument(prof_fd=watchlease.prof_map())
                b = static.build(ctx)
                keep.append(b)
                assert {s["link"] for s in b.slot_links} == {"spliced"}, b.slot_links
                fds[(row, variant)] = b.prog_fd
                sizes[(row, variant)] = root_sizes(b.prog_fd)
                costs[(row, variant)] = dict(splice.last_costs)
                if variant != "watch":  # its own maps may split the chain differently
                    segs[row] = len(splice.last_costs)
        disp = _dispatchers(ns, fds, keep)
        third = _third_party(fs, fds, keep) if not args.no_corpus else []
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for key, fd in fds.items():
                results.setdefault(key, []).append(time_ns(fd, pkt, args.repeat))
        for k in keep:
            k.close()

    def med(row, v):
        return midmean(results[(row, v)])

    mit = MITIGATION.read_text().strip() if MITIGATION.exists() else "n/a"
    print(f"# {MITIGATION.name}: {mit}")
    print(f"# ns/packet: BPF_PROG_TEST_RUN, repeat={args.repeat}, {args.rounds} interleaved "
          f"rounds, mean of the middle half; floor (XDP_PASS only) "
          f"{med('floor', 'mono'):.2f} ns")
    print(f"{'N':>6} {'segs':>4} | {'mono':>7} | {'off':>7} {'off/mono':>8} | {'on':>7} "
          f"{'on/mono':>8} | {'cnt ns/prog':>11} | {'off/prog':>8} {'on/prog':>8}  "
          "(ns per program over mono)")
    for row in rows:
        n = int(row.removesuffix("seg"))
        mono, off, on = med(row, "mono"), med(row, "off"), med(row, "on")
        print(f"{row:>6} {segs[row]:>4} | {mono:7.2f} | {off:7.2f} {off / mono:8.3f} | "
              f"{on:7.2f} {on / mono:8.3f} | {(on - off) / n:11.3f} | "
              f"{(off - mono) / n:8.3f} {(on - mono) / n:8.3f}")
    print()
    print("# watch (issue 21): 'on' IS the chain that runs when nobody watches (the "
          "generator's uninstrumented output is byte-identical: tests/test_splice.py), so "
          "the cost when off is 0 ns per slot by construction; 'watch' = status --profile's "
          "instrumented build (2 bpf_ktime_get_ns per slot + 2 per packet)")
    print(f"{'N':>6} | {'on':>7} {'watch':>8} | {'watch ns/prog':>13} | {'xlated on = chain':>17}")
    for row in rows:
        n = int(row.removesuffix("seg"))
        on, w = med(row, "on"), med(row, "watch")
        print(f"{row:>6} | {on:7.2f} {w:8.2f} | {(w - on) / n:13.3f} | "
              f"{sizes[(row, 'on')][0]:>17}")
    print()
    print("# instructions: root (segment 0) xlated / jited bytes; per added slot "
          "(N vs the first row); the generator's per-slot count (slot 1): ctx reload + "
          "epilogue when it continues | run once when the chain ends there; prologue; "
          "segment end")
    first = rows[0]
    for row in rows:
        n = int(row.removesuffix("seg"))
        for v in ("off", "on"):
            x, j = sizes[(row, v)]
            x1, j1 = sizes[(first, v)]
            n1 = int(first.removesuffix("seg"))
            per = (f"{(x - x1) / (n - n1):6.1f} insns {(j - j1) / (n - n1):6.1f} B"
                   if n > n1 and not row.endswith("seg") else f"{'-':>12} {'-':>8}")
            c0 = costs[(row, v)]["root0.o"]
            slot_costs = [c for c in c0 if isinstance(c, splice.SlotCost)]
            named = dict(c for c in c0 if isinstance(c, tuple))
            sc = slot_costs[1] if len(slot_costs) > 1 else slot_costs[0]
            print(f"{row:>6} {v:>3} | xlated {x:6} jited {j:7} | per slot {per} | "
                  f"gen: {sc.reload}+{sc.epilogue} | {sc.leaving}; prologue "
                  f"{named['prologue']}; segment end {named['segment_end']}")
    if disp:
        print()
        print("# freplace dispatcher, placeholder slots (called, not spliced), ns/packet")
        print(f"{'N':>6} | {'off':>7} | {'on':>7} {'on/off':>7} | {'cnt ns/prog':>11}")
        for n in disp:
            off, on = med(f"disp{n}", "off"), med(f"disp{n}", "on")
            print(f"{n:>6} | {off:7.2f} | {on:7.2f} {on / off:7.3f} | {(on - off) / n:11.3f}")
    if third:
        print()
        print("# third-party chain (k copies of " + ", ".join(THIRD_PARTY)
              + ") vs the sum of the same programs run one by one")
        print(f"{'k':>3} {'slots':>5} | {'sum':>7} | {'off':>7} {'off/sum':>7} "
              f"{'(-floor)':>8} | {'on':>7} {'on/sum':>7} {'(-floor)':>8}")
        floor = med("floor", "mono")
        alone = sum(med(f"alone-{cid}", "mono") for cid in THIRD_PARTY)
        alone_net = alone - len(THIRD_PARTY) * floor
        for k in COPIES:
            s, s_net = k * alone, k * alone_net
            off, on = med(f"tp{k}", "off"), med(f"tp{k}", "on")
            print(f"{k:>3} {k * len(THIRD_PARTY):>5} | {s:7.2f} | {off:7.2f} {off / s:7.3f} "
                  f"{(off - floor) / s_net:8.3f} | {on:7.2f} {on / s:7.3f} "
                  f"{(on - floor) / s_net:8.3f}")


class _Fds:
    """Closes the fds load_dispatcher returns, like the objects in ``keep``."""

    def __init__(self, *fds: int) -> None:
        self.fds = fds

    def close(self) -> None:
        import os
        for fd in self.fds:
            os.close(fd)


def _dispatchers(ns, fds, keep) -> list[int]:
    from xdphooks.backends.freplace import dispatcher_sizes, load_dispatcher, pick_dispatcher
    data = REPO / "xdphooks" / "data"
    cont = [abi.DECISION_RETURN] * abi.NR_POLICY
    cont[abi.POL_UNKNOWN] = abi.DECISION_CONTINUE  # the placeholders' verdict runs on
    out = []
    for n in ns:
        if n > max(dispatcher_sizes(data)):
            continue
        path = pick_dispatcher(data, n)
        for variant, counters in (("off", False), ("on", True)):
            prog, cnt, ev = load_dispatcher(path, [list(cont)] * n, counters=counters)
            keep.append(_Fds(prog, cnt, ev))
            fds[(f"disp{n}", variant)] = prog
        out.append(n)
    return out


def _third_party(fs, fds, keep) -> list:
    import corpus_support as cs
    cases = {c.id: c for c in cs.CASES}
    for cid in THIRD_PARTY:
        c = cases[cid]
        fds[(f"alone-{cid}", "mono")] = load(c.object_path(), c.program, keep)
    for k in COPIES:
        ents = [entry(f"tp{k}{cid}{i}", cases[cid].object_path(), program=cases[cid].program,
                      plugin=f"corpus-{cid}-{i}")
                for i in range(k) for cid in THIRD_PARTY]
        for variant, counters in (("off", False), ("on", True)):
            b = static.build(make_ctx(fs, ents, counters=counters))
            keep.append(b)
            fds[(f"tp{k}", variant)] = b.prog_fd
    return list(THIRD_PARTY)


if __name__ == "__main__":
    main()
