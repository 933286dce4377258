#!/usr/bin/env python3
"""Wall time of cold `xdphooks reconcile` processes: every control-plane figure of
issue 23 item 3, as medians over interleaved rounds and as ratios to their baselines.

Cases, each a fresh interpreter (what a package trigger starts), interleaved in rounds:
  python     `python -c pass`: the interpreter's start-up floor (baseline)
  ip-link    `ip link set dev X xdpdrv obj O`: iproute2's own attach, one process (baseline)
  noop       reconcile with nothing to do (the chain attached and up to date)
  attach1    reconcile attaching one program to an empty veth (teardown between rounds)
  build128   reconcile attaching a 128-program chain (128 plugins, 128 objects, each with
             a map of its own: more than 64 maps, so two segments) to an empty veth
  txn10      what a package transaction installing 10 plugins adds: the one reconcile
             its trigger runs (--trigger=dpkg-triggered), attaching the 10 new programs.
             dpkg's interest-noawait trigger (rpm: %transfiletriggerin) runs it once per
             transaction, whatever the package count; bench_pkg.py counts those runs in
             real dpkg/rpm transactions. dpkg's own unpacking is not in this figure.
Targets (issue 23): noop <= 100 ms, attach1 <= 200 ms, build128 <= 1 s, txn10 <= 0.5 s.

The children run with bytecode caches written and used (PYTHONDONTWRITEBYTECODE is
dropped and the package compiled first), as an installed package's are: otherwise every
run compiles the modules it imports again.  The machine may be shared: the load average
is printed before and after, and only medians and ratios from one run compare.
Run as root:  .venv/bin/python bench/bench_reconcile.py [--rounds 9] [--tree DIR]...
(--tree: time another checkout's xdphooks package, e.g. the previous commit's; given
twice, before and after are timed in the same rounds and compared).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import build_test_object, destroy_veth_pair, make_veth_pair  # noqa: E402

TARGETS = {"noop": 100.0, "attach1": 200.0, "build128": 1000.0, "txn10": 500.0}
PLUGIN = ("from xdphooks import XdpProgram, hookimpl\n@hookimpl\ndef xdphooks_programs():\n"
          "    return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, "
          "interfaces=({iface!r},))]\n")


#: CPU ms (user + sys, the process and every child it waited for) of each timed run, by
#: the argv's case: a figure a loaded machine inflates far less than wall time
CPU: list[float] = []


def timed(argv, env=None, cwd=None) -> float:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    wall = (time.perf_counter() - t) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
    return wall


class Scenario:
    """A private root and bpffs with ``n`` one-program plugins on a veth of its own."""

    def __init__(self, base: Path, tag: str, n: int, obj: Path, tree: Path) -> None:
        self.root, self.bpffs = base / tag / "root", base / tag / "bpffs"
        self.plugins = self.root / "usr/lib/xdphooks/plugins"
        self.objects = self.root / "usr/lib/xdphooks/bpf"
        self.plugins.mkdir(parents=True)
        self.objects.mkdir(parents=True)
        self.bpffs.mkdir()
        subprocess.run(["mount", "-t", "bpf", "bpf", str(self.bpffs)], check=True)
        self.pair = make_veth_pair(tag[:4])
        self.n, self.obj, self.tree = n, obj, tree
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XDPHOOKS_ROOT=str(self.root), XDPHOOKS_BPFFS=str(self.bpffs),
                   XDPHOOKS_NO_SYSLOG="1", XDPHOOKS_DISABLE_ENTRY_POINTS="1",
                   PYTHONPATH=str(tree))
        self.env = env

    def install(self) -> None:
        """The plugins' files, as a package transaction leaves them."""
        for i in range(self.n):
            name = f"p{i:03d}"
            shutil.copy(self.obj, self.objects / f"{name}.o")
            (self.plugins / f"{name}.py").write_text(PLUGIN.format(
                name=name, obj=f"{name}.o", prio=100 + i, iface=self.pair.iface))

    def remove(self) -> None:
        for d in (self.plugins, self.objects):
            for f in d.iterdir():
                f.unlink()

    def xh(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "xdphooks", *args]

    # the tree is the working directory too: `python -m` puts it first on sys.path
    def run(self, *args: str) -> float:
        return timed(self.xh(*args), self.env, self.tree)

    def teardown(self) -> None:
        subprocess.run(self.xh("teardown", "--all"), env=self.env, cwd=self.tree, check=True,
                       capture_output=True)

    def close(self) -> None:
        subprocess.run(self.xh("teardown", "--all"), env=self.env, cwd=self.tree,
                       capture_output=True)
        destroy_veth_pair(self.pair.ns_a, self.pair.ns_b)
        subprocess.run(["umount", str(self.bpffs)])


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" 1")[0].rsplit(" ", 2)[0]


def mitigation() -> str:
    try:
        return "spec_rstack_overflow: " + Path(
            "/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow").read_text().strip()
    except OSError:
        return "spec_rstack_overflow: (not reported)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--tree", type=Path, action="append", default=[],
                    help="directory holding the xdphooks package to time (default: this "
                    "repo); twice (before, after): both timed in the same rounds")
    ap.add_argument("--skip", action="append", default=[],
                    help="leave a case out (build128, txn10)")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree] or [REPO]
    for tree in trees:  # what an installed package ships: its bytecode, compiled once
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "xdphooks")],
                       check=True, stdout=subprocess.DEVNULL, env={
                           k: v for k, v in os.environ.items()
                           if k != "PYTHONDONTWRITEBYTECODE"})
    base = Path(tempfile.mkdtemp(prefix="xh-bench-"))
    os.chmod(base, 0o755)
    obj = build_test_object("count_pass")
    load_before = loadavg()
    xh_cases = ["noop", "attach1"] + [c for c in ("build128", "txn10") if c not in args.skip]
    res: dict[str, list[float]] = {"python": [], "ip-link": []}
    res.update({f"{c}@{i}": [] for i in range(len(trees)) for c in xh_cases})
    cpu: dict[str, list[float]] = {k: [] for k in res}

    def add(key: str, wall: float) -> None:
        res[key].append(wall)
        cpu[key].append(CPU[-1])
    scen: dict[str, Scenario] = {}
    try:
        for i, tree in enumerate(trees):
            scen[f"one@{i}"] = Scenario(base, f"one{i}", 1, obj, tree)
            scen[f"one@{i}"].install()
            if "build128" in xh_cases:
                scen[f"c128@{i}"] = Scenario(base, f"c128{i}", 128, obj, tree)
                scen[f"c128@{i}"].install()
            if "txn10" in xh_cases:
                scen[f"t10@{i}"] = Scenario(base, f"t10{i}", 10, obj, tree)
        for _ in range(args.rounds):
            add("python", timed([sys.executable, "-c", "pass"]))
            p = scen["one@0"].pair
            scen["one@0"].teardown()
            add("ip-link", timed(["ip", "-n", p.ns_a, "link", "set", "dev", p.dev_a,
                                  "xdpdrv", "obj", str(obj), "sec", "xdp"]))
            subprocess.run(["ip", "-n", p.ns_a, "link", "set", "dev", p.dev_a, "xdpdrv",
                            "off"], check=True)
            for i in range(len(trees)):
                one = scen[f"one@{i}"]
                one.teardown()
                add(f"attach1@{i}", one.run("reconcile", "-q"))
                add(f"noop@{i}", one.run("reconcile", "-q"))
                if "build128" in xh_cases:
                    scen[f"c128@{i}"].teardown()
                    add(f"build128@{i}", scen[f"c128@{i}"].run("reconcile", "-q"))
                if "txn10" in xh_cases:
                    t10 = scen[f"t10@{i}"]
                    t10.teardown()
                    t10.remove()
                    t10.run("reconcile", "-q")  # the state before: no plugin, nothing attached
                    t10.install()
                    add(f"txn10@{i}", t10.run("reconcile", "-q",
                                                     "--trigger=dpkg-triggered"))
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench: {' '.join(map(str, e.cmd))} failed: {e.stderr.decode().strip()}")
    finally:
        for s in scen.values():
            s.close()
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"cold reconcile wall time, {args.rounds} rounds interleaved (ms)")
    for i, tree in enumerate(trees):
        print(f"  tree {i}: {tree}")
    print(f"load average before {load_before}, after {loadavg()}; {os.cpu_count()} CPUs; "
          f"{mitigation()}")
    print(f"{'case':<12} {'median':>8} {'min':>8} {'max':>8} {'/python':>8} {'/ip-link':>9} "
          f"{'/tree 0':>8} {'target':>8}")
    for k, v in res.items():
        case, _, i = k.partition("@")
        target = TARGETS.get(case)
        verdict = "" if target is None else \
            f"{target:6.0f} {'OK' if med[k] <= target else 'MISSED'}"
        vs0 = f"{med[k] / med[f'{case}@0']:8.2f}" if i and i != "0" else f"{'':8}"
        print(f"{k:<12} {med[k]:8.1f} {min(v):8.1f} {max(v):8.1f} "
              f"{med[k] / med['python']:8.2f} {med[k] / med['ip-link']:9.2f} {vs0}  {verdict}")
    print("CPU time (user + sys of the process and its children, ms; less inflated by load)")
    for k, v in cpu.items():
        case, _, i = k.partition("@")
        vs0 = f"  /tree 0 {statistics.median(v) / statistics.median(cpu[f'{case}@0']):.2f}" \
            if i and i != "0" else ""
        print(f"{k:<12} {statistics.median(v):8.1f} {min(v):8.1f} {max(v):8.1f}{vs0}")
    for i in range(len(trees)):
        print(f"tree {i} above the interpreter floor: noop "
              f"{med[f'noop@{i}'] - med['python']:.1f} ms, attach1 "
              f"{med[f'attach1@{i}'] - med['python']:.1f} ms")


if __name__ == "__main__":
    main()
