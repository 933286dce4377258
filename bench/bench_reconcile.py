#!/usr/bin/env python3
"""Wall time of a cold `xdphooks reconcile` process (issue: core, target <= 150 ms).

Cases, each a fresh interpreter, interleaved in rounds:
  noop      - nothing to do (chain already attached and up to date)
  attach1   - attaching one program to an empty veth (teardown between rounds)
  baseline  - `ip link set dev X xdpdrv obj O` (iproute2's own attach, one process)
  python    - `python -c pass` (interpreter start-up floor)
Run as root:  .venv/bin/python bench/bench_reconcile.py [--rounds 15]
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
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import build_test_object, destroy_veth_pair, make_veth_pair  # noqa: E402


def timed(argv, env=None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xh-bench-"))
    os.chmod(base, 0o755)
    root, bpffs = base / "root", base / "bpffs"
    (root / "usr/lib/xdphooks/plugins").mkdir(parents=True)
    (root / "usr/lib/xdphooks/bpf").mkdir(parents=True)
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    pair = make_veth_pair("bench")
    obj = build_test_object("count_pass")
    shutil.copy(obj, root / "usr/lib/xdphooks/bpf/count.o")
    (root / "usr/lib/xdphooks/plugins/count.py").write_text(
        "from xdphooks import XdpProgram, hookimpl\n@hookimpl\ndef xdphooks_programs():\n"
        f"    return [XdpProgram(name='count', object='count.o', interfaces=('{pair.iface}',))]\n")
    env = dict(os.environ, XDPHOOKS_ROOT=str(root), XDPHOOKS_BPFFS=str(bpffs), XDPHOOKS_NO_SYSLOG="1")
    xh = [sys.executable, "-m", "xdphooks"]
    res: dict[str, list[float]] = {k: [] for k in ("python", "noop", "attach1", "baseline")}
    try:
        for _ in range(args.rounds):
            subprocess.run(xh + ["teardown", "--all"], env=env, check=True, capture_output=True)
            res["attach1"].append(timed(xh + ["reconcile", "-q"], env))
            res["noop"].append(timed(xh + ["reconcile", "-q"], env))
            subprocess.run(xh + ["teardown", "--all"], env=env, check=True, capture_output=True)
            res["baseline"].append(timed(["ip", "-n", pair.ns_a, "link", "set", "dev", pair.dev_a,
                                          "xdpdrv", "obj", str(obj), "sec", "xdp"]))
            subprocess.run(["ip", "-n", pair.ns_a, "link", "set", "dev", pair.dev_a, "xdpdrv", "off"],
                           check=True)
            res["python"].append(timed([sys.executable, "-c", "pass"]))
    finally:
        subprocess.run(xh + ["teardown", "--all"], env=env, capture_output=True)
        destroy_veth_pair(pair.ns_a, pair.ns_b)
        subprocess.run(["umount", str(bpffs)])
        shutil.rmtree(base, ignore_errors=True)
    print(f"cold reconcile wall time, {args.rounds} rounds interleaved (ms)")
    print(f"{'case':<10} {'median':>8} {'min':>8} {'max':>8}")
    for k, v in res.items():
        print(f"{k:<10} {statistics.median(v):8.1f} {min(v):8.1f} {max(v):8.1f}")
    b = statistics.median(res["baseline"])
    print(f"ratio attach1/ip-link-baseline: {statistics.median(res['attach1']) / b:.2f}x; "
          f"target <= 150 ms: noop {'OK' if statistics.median(res['noop']) <= 150 else 'MISSED'}, "
          f"attach1 {'OK' if statistics.median(res['attach1']) <= 150 else 'MISSED'}")


if __name__ == "__main__":
    main()
