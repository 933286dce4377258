"""Which VM tests finished, written as they finish, so a VM that dies mid-suite still tells.

Two halves of one file format:

* a pytest plugin (``-p vm_results`` in the guest, with ``XDPHOOKS_VM_RESULTS`` naming a
  directory on the host-shared 9p mount): ``collected.txt`` once collection is done, then
  one JSON line per finished test in ``results.jsonl``, flushed and fsynced at once;
* a command for tests/vm/run-in-vm.sh on the host::

    python vm_results.py remaining DIR     # node ids collected but never reported
    python vm_results.py merge OUT DIR...  # one JSON of all runs (later runs win); exit 1
                                           # when any test failed in any run
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

COLLECTED = "collected.txt"
RESULTS = "results.jsonl"
#: The kernel matrix, run on every VM kernel (node ids, or their prefixes): the static
#: backend end to end and on the third-party corpus, the freplace backend end to end,
#: live views, and tests/vm/test_kernel_caps.py (capabilities; a jumbo-MTU chain that
#: works, or is refused naming the kernel, in both modes). Small on purpose: under
#: emulation one xdphooks command costs seconds; the full-suite kernel runs everything.
#: These tests get the ``matrix`` marker in the VM, so ``-m "vm or matrix"`` selects them
#: beside the ``vm`` tests (tests/test_vm_harness.py).
MATRIX = ("tests/test_e2e_core.py::test_plugin_attached_counts_packets_then_detached",
          "tests/test_e2e_core.py::test_rejected_program_leaves_running_chain",
          "tests/test_corpus.py::test_static_matches_standalone",
          "tests/test_freplace_e2e.py",
          "tests/test_live_views.py::test_trace_live_shows_each_packets_verdict_of_one_component",
          "tests/vm/test_kernel_caps.py")
#: The smoke set, run on every VM kernel but the full-suite one (tests/vm_suites.py), so
#: the four kernels fit in CI's time beside the host tests: of the matrix set, static end
#: to end, a slice of the corpus (one program per source project, plus the programs whose
#: outcome depends on a kernel feature: frags, adjust_meta, devmap, bpf-to-bpf calls, the
#: pre-5.3 AF_XDP program), freplace end to end, one live view (static: it needs
#: bpf_xdp_load_bytes, 5.18) and tests/vm/test_kernel_caps.py. The full-suite kernel
#: runs all of MATRIX.
SMOKE_CORPUS = ("xdp_tx", "adjust_tail_grow", "noinline_v4", "update_frags",
                "context_test_run", "devmap_redir", "tut_router", "katran",
                "xdpfilt_dny_udp", "xdpdump", "libxdp_dispatcher", "xsk_def_prog_5.3")
SMOKE = ("tests/test_e2e_core.py::test_plugin_attached_counts_packets_then_detached",
         *(f"tests/test_corpus.py::test_static_matches_standalone[{c}]" for c in SMOKE_CORPUS),
         "tests/test_freplace_e2e.py",
         "tests/test_live_views.py::test_trace_live_shows_each_packets_verdict_of_one_component"
         "[static]",
         "tests/vm/test_kernel_caps.py")


def _dir() -> Path | None:
    d = os.environ.get("XDPHOOKS_VM_RESULTS")
    return Path(d) if d else None


def _append(path: Path, line: str) -> None:
    # One write + fsync per test: the VM may be killed at any moment after it.
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


_outcome: dict[str, dict] = {}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "matrix: runs on every kernel of the VM matrix")


def pytest_collection_modifyitems(session, config, items) -> None:
    # runs before pytest's own -m deselection (plugins given with -p come first)
    for item in items:
        if any(item.nodeid == m or item.nodeid.startswith((m + "::", m + "["))
               for m in MATRIX):
            item.add_marker("matrix")


def pytest_collection_finish(session) -> None:
    d = _dir()
    if d is None:
        return
    (d / COLLECTED).write_text("".join(item.nodeid + "\n" for item in session.items))


def pytest_runtest_logreport(report) -> None:
    rec = _outcome.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
    if report.failed:
        rec["outcome"] = "failed" if report.when == "call" else "error"
        # the first "E " line says what failed (the command that timed out, the assert),
        # the last one where
        lines = (report.longreprtext or "").strip().splitlines()
        e_lines = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
        # ... and the command's own error line, when a command failed (xh.run's output)
        said = e_lines[:1] + [ln for ln in e_lines[1:] if "error" in ln or " fix: " in ln][:1]
        rec["message"] = " | ".join(said + lines[-1:])[:600]
    elif report.skipped and rec["outcome"] == "passed":
        rec["outcome"] = "skipped"
        lr = report.longrepr
        rec["message"] = str(lr[2] if isinstance(lr, tuple) else lr)[:400]
    if report.when == "call":
        rec["seconds"] = round(report.duration, 1)


def pytest_runtest_logfinish(nodeid, location) -> None:
    d = _dir()
    rec = _outcome.pop(nodeid, {"outcome": "error", "message": "no report"})
    if d is not None:
        _append(d / RESULTS, json.dumps({"nodeid": nodeid, **rec}))


# --- host side ---------------------------------------------------------------------------

def read(d: Path) -> tuple[list[str], dict[str, dict]]:
    collected = []
    if (d / COLLECTED).exists():
        collected = [ln for ln in (d / COLLECTED).read_text().splitlines() if ln]
    done: dict[str, dict] = {}
    if (d / RESULTS).exists():
        for ln in (d / RESULTS).read_text().splitlines():
            try:
                rec = json.loads(ln)
            except ValueError:  # the last line of a VM killed mid-write
                continue
            done[rec["nodeid"]] = rec
    return collected, done


def remaining(d: Path) -> list[str]:
    collected, done = read(d)
    return [n for n in collected if n not in done]


def provenance() -> dict:
    """Which run this was, for docs/kernels.md's "run" row: the commit (with "+changes"
    when the tree differed from it), the UTC date, the set run (``XDPHOOKS_VM_SET``, given
    by tests/vm_suites.py), the wall time since run-in-vm.sh started
    (``XDPHOOKS_VM_STARTED``) and the host's load averages at the end: timings on a
    loaded machine are not a kernel's."""
    import subprocess
    import time

    repo = Path(__file__).resolve().parent.parent.parent
    git = ["git", "-C", str(repo)]
    try:
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    started = os.environ.get("XDPHOOKS_VM_STARTED", "")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"commit": (commit + "+changes" if dirty else commit) or "unknown",
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "set": os.environ.get("XDPHOOKS_VM_SET", "custom"),
            "seconds": round(time.time() - int(started)) if started.isdigit() else None,
            "loadavg": load}


def merge(out: Path, dirs: list[Path]) -> int:
    tests: dict[str, dict] = {}
    failed_anywhere: list[str] = []
    for d in dirs:
        _, done = read(d)
        for nodeid, rec in done.items():
            if rec["outcome"] in ("failed", "error"):
                failed_anywhere.append(nodeid)
            tests[nodeid] = {k: v for k, v in rec.items() if k != "nodeid"}
    extra = {}
    for d in dirs:  # what the guest wrote besides (kernel release, capabilities)
        p = d / "guest.json"
        if p.exists():
            try:
                extra.update(json.loads(p.read_text()))
            except ValueError:
                pass
    data = {**extra, **provenance(), "runs": len(dirs), "tests": dict(sorted(tests.items()))}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    # A failure in the run that died is still a failure, whatever the re-run did.
    return 1 if failed_anywhere else 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "remaining":
        print("\n".join(remaining(Path(sys.argv[2]))))
    elif cmd == "merge":
        sys.exit(merge(Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]]))
    else:
        sys.exit(f"vm_results: unknown command {cmd!r}")
