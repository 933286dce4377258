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
Run as root:  .venv/bin/python bench/bench_reconcile.py [--rounds 9] [--tree DIR]
(--tree: time another checkout's xdphooks package, e.g. the previous commit's).
"""

from __future__ import annotations

import argparse
import os
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


def timed(argv, env=None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (time.perf_counter() - t) * 1000


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
        self.n, self.obj = n, obj
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

    def run(self, *args: str) -> float:
        return timed(self.xh(*args), self.env)

    def teardown(self) -> None:
        subprocess.run(self.xh("teardown", "--all"), env=self.env, check=True,
                       capture_output=True)

    def close(self) -> None:
        subprocess.run(self.xh("teardown", "--all"), env=self.env, capture_output=True)
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
    ap.add_argument("--tree", type=Path, default=REPO,
                    help="directory holding the xdphooks package to time (default: this repo)")
    ap.add_argument("--skip", action="append", default=[],
                    help="leave a case out (build128, txn10)")
    args = ap.parse_args()
    tree = args.tree.resolve()
    # what an installed package ships: its bytecode, so no run compiles a module again
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "xdphooks")],
                   check=True, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    base = Path(tempfile.mkdtemp(prefix="xh-bench-"))
    os.chmod(base, 0o755)
    obj = build_test_object("count_pass")
    load_before = loadavg()
    cases = ["python", "ip-link", "noop", "attach1"] + \
        [c for c in ("build128", "txn10") if c not in args.skip]
    res: dict[str, list[float]] = {k: [] for k in cases}
    scen: dict[str, Scenario] = {}
    try:
        scen["one"] = Scenario(base, "one", 1, obj, tree)
        scen["one"].install()
        if "build128" in cases:
            scen["c128"] = Scenario(base, "c128", 128, obj, tree)
            scen["c128"].install()
        if "txn10" in cases:
            scen["t10"] = Scenario(base, "t10", 10, obj, tree)
        one = scen["one"]
        for _ in range(args.rounds):
            res["python"].append(timed([sys.executable, "-c", "pass"]))
            one.teardown()
            res["attach1"].append(one.run("reconcile", "-q"))
            res["noop"].append(one.run("reconcile", "-q"))
            one.teardown()
            p = one.pair
            res["ip-link"].append(timed(["ip", "-n", p.ns_a, "link", "set", "dev", p.dev_a,
                                         "xdpdrv", "obj", str(obj), "sec", "xdp"]))
            subprocess.run(["ip", "-n", p.ns_a, "link", "set", "dev", p.dev_a, "xdpdrv",
                            "off"], check=True)
            if "build128" in cases:
                scen["c128"].teardown()
                res["build128"].append(scen["c128"].run("reconcile", "-q"))
            if "txn10" in cases:
                t10 = scen["t10"]
                t10.teardown()
                t10.remove()
                t10.run("reconcile", "-q")  # the state before: no plugin, nothing attached
                t10.install()
                res["txn10"].append(t10.run("reconcile", "-q", "--trigger=dpkg-triggered"))
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench: {' '.join(map(str, e.cmd))} failed: {e.stderr.decode().strip()}")
    finally:
        for s in scen.values():
            s.close()
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"cold reconcile wall time, {args.rounds} rounds interleaved (ms); tree {tree}")
    print(f"load average before {load_before}, after {loadavg()}; {os.cpu_count()} CPUs; "
          f"{mitigation()}")
    print(f"{'case':<10} {'median':>8} {'min':>8} {'max':>8} {'/python':>8} {'/ip-link':>9} "
          f"{'target':>8}")
    for k, v in res.items():
        target = TARGETS.get(k)
        verdict = "" if target is None else f"{target:6.0f} {'OK' if med[k] <= target else 'MISSED'}"
        print(f"{k:<10} {med[k]:8.1f} {min(v):8.1f} {max(v):8.1f} "
              f"{med[k] / med['python']:8.2f} {med[k] / med['ip-link']:9.2f}  {verdict}")
    print(f"above the interpreter floor: noop {med['noop'] - med['python']:.1f} ms, "
          f"attach1 {med['attach1'] - med['python']:.1f} ms")


if __name__ == "__main__":
    main()
