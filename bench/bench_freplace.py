#!/usr/bin/env python3
"""xdphooks' freplace dispatcher vs libxdp's, side by side in one run.

Run inside the VM (the host kernel refuses freplace; ratios only mean
something when both run on the same kernel):

    tests/vm/run-in-vm.sh 6.12 --cmd '.venv/bin/python bench/bench_freplace.py'

For k = 1..N (default 10) it adds program k to both chains -- xdphooks with
the freplace backend (build + pin + atomic XDP replace + drop of the old
generation, in-process) and libxdp with ``xdp-loader load`` (a process per
program, as an admin would) -- timing each addition, then measures ns per
packet of each root program with BPF_PROG_TEST_RUN (repeat R). Both chains
hold the same object (tests/bpf/fr_tag.bpf.c: map lookups, a packet write,
XDP_PASS). Interfaces: a veth pair inside a private network namespace.

Each k also builds (never attaches) the same xdphooks chain with the other counters
setting, so the table shows the counters' cost per program (issue 23: one lookup per
packet in the dispatcher's prologue, one add per slot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, text=True, capture_output=True)


def outer(args) -> int:
    """Make a namespace with a veth pair, re-run this script inside it, clean up."""
    ns = f"xhbench{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "xhb0", "type", "veth", "peer", "name", "xhb1")
        for dev in ("xhb0", "xhb1", "lo"):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        env = dict(os.environ, XDPH_BENCH_INNER="1")
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, *sys.argv[1:]],
                              env=env).returncode
    finally:
        sh("ip", "netns", "del", ns, check=False)


def inner(args) -> int:
    import socket

    from conftest import build_test_object
    from freplace_support import digest, packet
    from xdphooks.backends import freplace
    from xdphooks.backends.base import BuildContext, PreviousChain
    from xdphooks.kernel import libbpf
    from xdphooks.model import Chain, ChainEntry, InterfaceRef, VerdictPolicy
    from xdphooks.paths import Paths

    obj = build_test_object("fr_tag")
    if not Path("/sys/fs/bpf").is_mount():
        sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
    base = Path(tempfile.mkdtemp(prefix="xhbench-"))
    bpffs = base / "bpffs"
    bpffs.mkdir()
    sh("mount", "-t", "bpf", "bpf", str(bpffs))
    paths = Paths(root=base / "root", bpffs=bpffs)
    if_x, if_l = "xhb0", "xhb1"
    idx_x, idx_l = socket.if_nametoindex(if_x), socket.if_nametoindex(if_l)
    skb = libbpf.XDP_FLAGS_SKB_MODE
    pkt = packet()
    rows = []
    cur = None  # (built, gen_dir, entries)
    try:
        for k in range(1, args.max + 1):
            # --- xdphooks: add program k ------------------------------------------
            entries = [ChainEntry(f"p{i}", "bench", str(obj), "fr_tag", 50 + i, VerdictPolicy(),
                                  digest=digest(obj)) for i in range(k)]
            chain = Chain(InterfaceRef("", if_x), tuple(entries), mode="freplace")
            t0 = time.perf_counter()
            prev = (PreviousChain(cur[1], {e.name: e.digest for e in cur[2]}) if cur else None)
            work = base / f"w{k}"
            work.mkdir()
            ctx = BuildContext(chain.interface, chain, paths, work, REPO / "xdphooks" / "data",
                               args.counters == "on", prev)
            built = freplace.build(ctx)
            gen_dir = paths.gen_pin_dir(chain.interface.key, k, chain.fingerprint())
            gen_dir.mkdir(parents=True)
            for name, fd in built.pins.items():
                libbpf.obj_pin(fd, str(gen_dir / name))
            if cur:
                libbpf.xdp_attach(idx_x, built.prog_fd, skb | libbpf.XDP_FLAGS_REPLACE,
                                  old_prog_fd=cur[0].prog_fd)
                cur[0].close()
                shutil.rmtree(cur[1])
            else:
                libbpf.xdp_attach(idx_x, built.prog_fd, skb)
            t_x = time.perf_counter() - t0
            cur = (built, gen_dir, entries)
            twin_work = base / f"w{k}twin"
            twin_work.mkdir()
            twin = freplace.build(BuildContext(chain.interface, chain, paths, twin_work,
                                               REPO / "xdphooks" / "data",
                                               args.counters != "on", None))

            # --- libxdp: xdp-loader load program k ----------------------------------
            t0 = time.perf_counter()
            r = sh("xdp-loader", "load", "-m", "skb", if_l, str(obj), "-n", "fr_tag", check=False)
            t_l = time.perf_counter() - t0
            if r.returncode != 0:
                print(f"xdp-loader load #{k} failed: {r.stderr.strip()}", file=sys.stderr)
                return 1
            lid = libbpf.xdp_query_id(idx_l, 0)
            lfd = libbpf.prog_fd_by_id(lid)

            # --- data plane ------------------------------------------------------------
            def ns(fd):
                runs = [libbpf.prog_test_run(fd, pkt, args.repeat).duration_ns
                        for _ in range(args.rounds)]
                return statistics.median(runs)

            ns_x, ns_l, ns_t = ns(built.prog_fd), ns(lfd), ns(twin.prog_fd)
            os.close(lfd)
            twin.close()
            on, off = (ns_x, ns_t) if args.counters == "on" else (ns_t, ns_x)
            rows.append({"k": k, "xdphooks_ns": ns_x, "libxdp_ns": ns_l,
                         "counters_ns_per_prog": (on - off) / k,
                         "xdphooks_add_ms": t_x * 1e3, "libxdp_add_ms": t_l * 1e3})
            print(f"k={k}: {ns_x} ns vs {ns_l} ns; add {t_x*1e3:.1f} ms vs {t_l*1e3:.1f} ms",
                  file=sys.stderr, flush=True)
    finally:
        sh("xdp-loader", "unload", "--all", if_l, check=False)
        try:
            libbpf.xdp_detach(idx_x, skb)
        except Exception:  # noqa: BLE001
            pass
        if cur:
            cur[0].close()
        sh("umount", "-l", str(bpffs), check=False)
        shutil.rmtree(base, ignore_errors=True)

    mit = Path("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
    print(f"\n# spec_rstack_overflow: {mit.read_text().strip() if mit.exists() else 'n/a'}")
    print(f"kernel {os.uname().release}; BPF_PROG_TEST_RUN repeat={args.repeat}, "
          f"median of {args.rounds}; xdphooks counters {args.counters}; program add = build+pin+replace (xdphooks, in-process) "
          f"vs `xdp-loader load` (process)\n")
    print("| k | xdphooks ns/pkt | libxdp ns/pkt | ratio | counters ns/prog | "
          "xdphooks add k (ms) | xdp-loader add k (ms) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['xdphooks_ns']} | {r['libxdp_ns']} | "
              f"{r['xdphooks_ns'] / max(r['libxdp_ns'], 1):.2f} | "
              f"{r['counters_ns_per_prog']:.2f} | {r['xdphooks_add_ms']:.1f} | "
              f"{r['libxdp_add_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=10, help="programs (libxdp allows 10)")
    ap.add_argument("--repeat", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--counters", choices=("on", "off"), default="on",
                    help="xdphooks per-slot counters (libxdp has none)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_freplace: needs root (inside the VM)", file=sys.stderr)
        return 2
    return inner(args) if os.environ.get("XDPH_BENCH_INNER") else outer(args)


if __name__ == "__main__":
    sys.exit(main())
