#!/usr/bin/env python3
"""What the framework adds to installing one plugin package.

    .venv/bin/python bench/bench_pkg.py [--repeat N] [--json FILE]

For dnf (`dnf install ./xdphooks-firewall*.rpm`) and apt
(`apt-get install ./xdphooks-firewall_*.deb`), median wall time of:

- *without*: the framework is not installed, so no trigger fires. The
  package is the same build without its dependency on xdphooks
  (`build_all.py --no-requires`): identical payload, so the difference is
  the trigger and nothing else.
- *with*: the framework is installed with a live chain target (a namespaced
  veth), so the trigger runs a real `xdphooks reconcile` that attaches.

Also `dpkg -i`, which shows the trigger's cost without apt's own run-to-run
noise (apt-get alone varies by a second or more on a busy 2-core machine).
Target: with - without <= 1 s. Like the tests, it runs against a private
root and bpffs, and removes every package it installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import destroy_veth_pair, make_veth_pair  # noqa: E402
import pkg_support as pu  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(repeat: int) -> dict:
    normal = pu.build()
    nodeps = pu.build("--only", "firewall", "--no-requires", out=REPO / "build" / "pkgs-bench-nodeps")
    results: dict[str, dict[str, list[float]]] = {}
    veth = make_veth_pair("bp")
    gen = pu.pkg_env(veth, "bench")
    env = next(gen)
    try:
        for fmt in ("rpm", "deb", "dpkg"):
            if fmt == "dpkg":  # the trigger alone, without apt's own (noisy) work
                install = lambda p: env.dpkg("-i", str(p))  # noqa: E731
                remove = lambda n: env.dpkg("-P", n)  # noqa: E731
                add_fw = lambda: env.dpkg("-i", str(normal["deb"]["xdphooks"]))  # noqa: E731
                del_fw = lambda: env.dpkg("-P", "xdphooks")  # noqa: E731
            elif fmt == "rpm":
                install = lambda p: env.dnf("install", str(p))  # noqa: E731
                remove = lambda n: env.dnf("remove", n)  # noqa: E731
                add_fw = lambda: env.dnf("install", str(normal["rpm"]["xdphooks"]))  # noqa: E731
                del_fw = lambda: env.dnf("remove", "xdphooks")  # noqa: E731
            else:
                install = lambda p: env.apt("install", str(p))  # noqa: E731
                remove = lambda n: env.apt("purge", n)  # noqa: E731
                add_fw = lambda: env.apt("install", str(normal["deb"]["xdphooks"]))  # noqa: E731
                del_fw = lambda: env.apt("purge", "xdphooks")  # noqa: E731
            pkgfmt = "rpm" if fmt == "rpm" else "deb"
            r = results[fmt] = {"without": [], "with": [], "reconcile_runs": []}
            # Interleaved, so drift (apt's cache, page cache) hits both sides alike.
            for _ in range(repeat):
                r["without"].append(timed(lambda: install(nodeps[pkgfmt]["xdphooks-firewall"])))
                remove("xdphooks-firewall")
                add_fw()
                before = len(env.runs())
                r["with"].append(timed(lambda: install(normal[pkgfmt]["xdphooks-firewall"])))
                r["reconcile_runs"].append(len(env.runs()) - before)
                assert env.chain() == ["firewall"], env.chain()
                remove("xdphooks-firewall")
                del_fw()
    finally:
        try:
            next(gen)
        except StopIteration:
            pass
        destroy_veth_pair(veth.ns_a, veth.ns_b)
    summary = {}
    for fmt, r in results.items():
        without, with_ = statistics.median(r["without"]), statistics.median(r["with"])
        summary[fmt] = {"without_s": round(without, 3), "with_s": round(with_, 3),
                        "added_s": round(with_ - without, 3),
                        "samples": {k: [round(x, 3) for x in v] if k != "reconcile_runs" else v
                                    for k, v in r.items()}}
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pu.require_pkg_tools = lambda: None  # noqa: E731 (no pytest here)
    why = pu.tools_missing()
    if why:
        print(f"bench_pkg: cannot run: {why}", file=sys.stderr)
        return 2
    summary = bench(args.repeat)
    print(f"{'install one plugin':<22}{'without':>10}{'with':>10}{'added':>10}  (median of "
          f"{args.repeat}, seconds)")
    for fmt, label in (("rpm", "dnf install ./x.rpm"), ("deb", "apt-get install ./x.deb"),
                       ("dpkg", "dpkg -i x.deb")):
        s = summary[fmt]
        ok = "ok" if s["added_s"] <= 1.0 else "OVER 1 s"
        spread = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"  # noqa: E731
        print(f"{label:<22}{s['without_s']:>10.2f}{s['with_s']:>10.2f}{s['added_s']:>10.2f}  {ok}"
              f"   (ranges {spread(s['samples']['without'])} / {spread(s['samples']['with'])})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
