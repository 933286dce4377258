#!/usr/bin/env python3
"""Static backend benchmark: ns/packet via BPF_PROG_TEST_RUN, plus control-plane times.

Variants per N (each component does the same small work: bounds-check the
Ethernet header and read the EtherType):
  spliced     the default static chain: N components inlined into the generated root
              (counters off)
  spliced+cnt same, counters on
  static      rootlet + N rewritten components, every slot called (link = "call";
              counters off)
  static+cnt  same, counters on
  mono        one hand-written program doing the N checks inline
  tailcall    N programs chained with bpf_tail_call (the kernel stops a chain after
              33 tail calls, so N=64 really runs 34 programs)
  calls       floor for any call-based chain: a minimal hand-built 2-object
              rootlet (libbpf linker) that only does `r = slot_i(ctx); if (r !=
              XDP_PASS) return r;` per slot -- no config, no policy, no counters.
              On hosts with return-thunk mitigations (SRSO Safe RET, retbleed;
              see /sys/devices/system/cpu/vulnerabilities) every BPF-to-BPF
              `ret` goes through the thunk, which costs several ns; the static
              backend cannot be cheaper than this column.
Rounds interleave the variants; we report medians and min-max of the per-round
averages (each a TEST_RUN with `repeat` iterations, 10^6 by default).
Needs root, clang (to build the bench objects) and a private bpffs (mounted here).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from static_helpers import entry, make_ctx, private_bpffs  # noqa: E402
from xdphooks.backends import preflight as pf  # noqa: E402
from xdphooks.backends import static  # noqa: E402
from xdphooks.kernel import libbpf  # noqa: E402

NS = [1, 2, 5, 10, 32, 64]
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
COMPONENT = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
%s
SEC("xdp") int bench_comp(struct xdp_md *ctx) { return work(ctx); }
char _license[] SEC("license") = "GPL";
""" % WORK
MONO = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
%s
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
""" % WORK
TAIL = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
%s
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 65);
	 __type(key, __u32); __type(value, __u32); } jmp SEC(".maps");
#define P(n) SEC("xdp") int tc_##n(struct xdp_md *ctx) { int r = work(ctx); \\
	if (r != XDP_PASS) return r; bpf_tail_call(ctx, &jmp, n + 1); return XDP_PASS; }
%s
char _license[] SEC("license") = "GPL";
""" % (WORK, " ".join(f"P({i})" for i in range(64)))
SLOTS64 = " ".join(f"X({i})" for i in range(64))
CALL_ROOT = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#define X(n) extern int fslot_##n(struct xdp_md *ctx);
%s
#undef X
SEC("xdp") int call_root(struct xdp_md *ctx)
{
	int r;
#define X(n) if (n < NCOMP) { r = fslot_##n(ctx); if (r != XDP_PASS) return r; }
	%s
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
""" % (SLOTS64, SLOTS64)
CALL_SLOTS = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
%s
#define X(n) __attribute__((noinline)) int fslot_##n(struct xdp_md *ctx) { return work(ctx); }
%s
char _license[] SEC("license") = "GPL";
""" % (WORK, SLOTS64)
VARIANTS = ("spliced", "spliced+cnt", "static", "static+cnt", "mono", "tailcall", "calls")


def cc(src: str, out: Path, *defs: str) -> Path:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    *defs, "-c", str(c), "-o", str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ns", default=",".join(map(str, NS)))
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="xh-bench-"))
    comp = cc(COMPONENT, tmp / "comp.o")
    tail = cc(TAIL, tmp / "tail.o")
    call_slots = cc(CALL_SLOTS, tmp / "call_slots.o")
    pkt = pf.udp(40000, 53)
    results: dict[tuple[str, int], list[float]] = {}
    cp: dict[tuple[int, str], dict[str, list[float]]] = {}
    keep = []
    with private_bpffs() as fs:
        fds: dict[tuple[str, int], int] = {}
        for n in ns:
            for name in ("spliced", "static"):
                cp[(n, name)] = {"rewrite_link": [], "load": [], "preflight": []}
            for link, name in (("splice", "spliced"), ("call", "static")):
                for counters in (False, True):
                    for _ in range(3 if not counters else 1):
                        b = static.build(make_ctx(fs, [entry(f"c{i}", comp, link=link)
                                                       for i in range(n)], counters=counters))
                        for k, v in static.last_timings.items():
                            cp[(n, name)][k].append(v)
                        keep.append(b)
                    assert {s["link"] for s in b.slot_links} == {name if name == "spliced"
                                                                   else "called"}, b.slot_links
                    fds[(f"{name}+cnt" if counters else name, n)] = b.prog_fd
            mono = libbpf.BpfObject(str(cc(MONO, tmp / f"mono{n}.o", f"-DNCOMP={n}")))
            mono.load()
            keep.append(mono)
            fds[("mono", n)] = mono.program("bench_mono").fd
            t = libbpf.BpfObject(str(tail))
            t.load()
            keep.append(t)
            jmp = t.map("jmp").fd
            for i in range(n):
                libbpf.map_update(jmp, i.to_bytes(4, "little"),
                                  t.program(f"tc_{i}").fd.to_bytes(4, "little"))
            fds[("tailcall", n)] = t.program("tc_0").fd
            linked = tmp / f"calls{n}.o"
            libbpf.link_objects(str(linked), [str(cc(CALL_ROOT, tmp / f"call_root{n}.o",
                                                     f"-DNCOMP={n}")), str(call_slots)])
            c = libbpf.BpfObject(str(linked))
            c.load()
            keep.append(c)
            fds[("calls", n)] = c.program("call_root").fd
        for _ in range(args.rounds):
            for key, fd in fds.items():
                r = libbpf.prog_test_run(fd, pkt, repeat=args.repeat)
                assert r.retval == 2, (key, r.retval)
                results.setdefault(key, []).append(r.duration_ns)
        for k in keep:
            k.close()

    def med(v, n):
        return statistics.median(results[(v, n)])

    def rng(v, n):
        x = results[(v, n)]
        return f"{min(x)}-{max(x)}"

    print(f"# ns/packet, BPF_PROG_TEST_RUN repeat={args.repeat}, {args.rounds} interleaved "
          f"rounds, median (min-max)")
    mitigation = Path("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
    print(f"# {mitigation.name}: "
          f"{mitigation.read_text().strip() if mitigation.exists() else 'n/a'}")
    print(f"{'N':>3} | " + " | ".join(f"{v:>15}" for v in VARIANTS)
          + f" | {'spliced/mono':>12} | {'called/mono':>11} | {'cnt ns/prog':>11} | ns/extra prog "
          + ", ".join(VARIANTS))
    base = ns[0]
    for n in ns:
        extra = []
        for v in VARIANTS:
            extra.append("-" if n == base else
                         f"{(med(v, n) - med(v, base)) / (n - base):.2f}")
        cnt = (med("spliced+cnt", n) - med("spliced", n)) / n
        print(f"{n:>3} | " + " | ".join(f"{med(v, n):>5} ({rng(v, n):>8})" for v in VARIANTS)
              + f" | {med('spliced', n) / max(med('mono', n), 1):>12.2f}"
              + f" | {med('static', n) / max(med('mono', n), 1):>11.2f} | {cnt:>11.2f} | "
              + ", ".join(extra))
    print()
    print("# control plane (ms, median of 4 builds): rewrite+link(+generate), load (incl. "
          "verifier), pre-flight (4 test runs + counter reset)")
    for n in ns:
        for name in ("spliced", "static"):
            print(f"{n:>3} {name:<8}| " + " | ".join(
                f"{k} {statistics.median(v) * 1000:7.1f}" for k, v in cp[(n, name)].items()))


if __name__ == "__main__":
    main()
