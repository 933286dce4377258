"""Host side of the VM suite: boots each Debian kernel under virtme-ng and runs tests
there (tests/vm/run-in-vm.sh). A VM that cannot start fails this test; it is never
skipped silently. A VM that dies mid-suite is booted once more for the tests that had not
reported (run-in-vm.sh says so loudly); a test that failed stays failed.

What runs where (README, "What runs where"; docs/kernels.md):

* one kernel (``FULL_KERNEL``, 6.12) runs the whole VM suite — every ``vm`` test (freplace
  backend, live views, recovery, ...) — plus the matrix set below;
* every other kernel (5.10 from bullseye, 6.1, sid's 7.x) runs the matrix set only
  (``MATRIX`` in tests/vm/vm_results.py): static end to end and on the corpus, freplace end
  to end, live views, in both modes where the kernel allows them, and
  tests/vm/test_kernel_caps.py, which asserts the refusal sentence of what the kernel lacks.

Each run writes build/kernel-results/<kernel>.json (every test's outcome and the kernel's
capabilities as ``xdphooks doctor --capabilities-json`` probes them); scripts/kernel-table.py
turns the committed copies in docs/kernel-results/ into docs/kernels.md.

XDPHOOKS_VM_KERNELS (default "6.12 6.1 5.10 sid") picks the kernels. The runs start in
the background when the session starts (tests/vm_suites.py, a plugin registered by
tests/conftest.py), overlapping the host tests; each test_vm_suite[kernel] runs last and
waits for its own kernel's run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "vm"))
import vm_suites  # noqa: E402 - the runs, started by the plugin (or here when it is off)
from vm_suites import KERNELS  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_vm_suite(kernel):
    if os.environ.get("XDPHOOKS_IN_VM") == "1":
        pytest.skip("already inside the VM")
    if os.geteuid() != 0:
        pytest.fail("the VM suite needs root (it installs kernels/qemu when missing)")
    t0 = time.monotonic()
    run = vm_suites.run_kernel(kernel)
    waited = time.monotonic() - t0
    out = run.output()
    # shown by pytest -rA / on failure; also to the terminal for CI logs
    died = [ln for ln in out if "THE VM DIED" in ln or "RE-RUNNING ONCE" in ln]
    sys.stderr.write(f"\n--- VM suite on {kernel} ({run.took:.0f} s; this test waited "
                     f"{waited:.0f} s for it; log {run.log}) ---\n"
                     + "\n".join(died + out[-40:]) + "\n")
    assert not run.timed_out, (
        f"VM suite on kernel {kernel} stopped after {run.took:.0f} s, over its limit of "
        f"{vm_suites.time_limit()} s (XDPHOOKS_VM_TIMEOUT x 2 boots):\n" + "\n".join(out[-80:]))
    assert run.returncode == 0, (
        f"VM suite on kernel {kernel} failed (exit {run.returncode}; 90 = VM did not start "
        f"or report back):\n" + "\n".join(out[-80:]))
    assert any(" passed" in ln for ln in out), \
        f"VM suite on {kernel} ran no test:\n" + "\n".join(out[-3:])


# --- fast checks of the harness itself (no VM) -------------------------------------------

def _fake_run(d: Path, collected: list[str], done: dict[str, str]) -> Path:
    import json

    d.mkdir(parents=True)
    (d / "collected.txt").write_text("".join(n + "\n" for n in collected))
    with open(d / "results.jsonl", "w") as f:
        for n, outcome in done.items():
            f.write(json.dumps({"nodeid": n, "outcome": outcome, "message": ""}) + "\n")
        f.write('{"nodeid": "torn')  # the line a VM killed mid-write leaves
    return d


def test_dead_vm_reruns_only_unreported_and_a_failure_stays_a_failure(tmp_path):
    import vm_results

    tests = ["t::a", "t::b", "t::c", "t::d"]
    run1 = _fake_run(tmp_path / "run1", tests, {"t::a": "passed", "t::b": "failed"})
    assert vm_results.remaining(run1) == ["t::c", "t::d"]
    run2 = _fake_run(tmp_path / "run2", ["t::c", "t::d"], {"t::c": "passed", "t::d": "passed"})
    # t::b failed before the VM died: the merged run fails though the re-run passed
    assert vm_results.merge(tmp_path / "out.json", [run1, run2]) == 1
    run1ok = _fake_run(tmp_path / "run1ok", tests, {"t::a": "passed", "t::b": "passed"})
    assert vm_results.merge(tmp_path / "ok.json", [run1ok, run2]) == 0
    import json

    merged = json.loads((tmp_path / "ok.json").read_text())
    assert merged["runs"] == 2 and set(merged["tests"]) == set(tests)
    # which run it was, for docs/kernels.md's "run" row
    assert merged["commit"] != "unknown" and merged["date"] and len(merged["loadavg"].split()) == 3


def test_kernel_table_is_generated_from_committed_results():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "kernel-table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = list((REPO / "docs" / "kernel-results").glob("*.json"))
    assert runs, "no committed kernel results in docs/kernel-results/"


def _fake_runner(tmp_path: Path, monkeypatch, body: str) -> Path:
    """tests/vm/run-in-vm.sh replaced by ``body`` (bash; $1 is the kernel), logs and
    results kept under tmp_path."""
    fake = tmp_path / "run-in-vm.sh"
    fake.write_text("set -u\n" + body)
    monkeypatch.setattr(vm_suites, "RUNNER", fake)
    monkeypatch.setattr(vm_suites, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(vm_suites, "RESULTS_DIR", tmp_path / "results")
    return fake


def test_background_runs_one_at_a_time_beside_host_tests_then_two(tmp_path, monkeypatch):
    events = tmp_path / "events"
    # each "boot" reopens stdout truncating, as qemu opens /proc/self/fd/1 for its chardev
    _fake_runner(tmp_path, monkeypatch,
                 f'echo "start $1 $(date +%s.%N)" >> {events}\necho "first boot of $1"\n'
                 f'echo "second boot" > /proc/self/fd/1\n'
                 f'sleep 3\necho "end $1 $(date +%s.%N)" >> {events}\necho "1 passed"\n')
    sched = vm_suites.Scheduler(["a", "b", "c"], jobs=2)
    sched.begin()
    try:
        assert sched.runs["a"].done.wait(timeout=30)
        # c's test waits now: the host tests are over, two run at once, c among them
        run_c = sched.wait("c")
        run_b = sched.wait("b")
    finally:
        sched.stop()
    t = {tuple(ln.split()[:2]): float(ln.split()[2]) for ln in events.read_text().splitlines()}
    assert t["start", "b"] >= t["end", "a"]  # one at a time before anyone waited
    assert t["start", "c"] < t["end", "b"]   # two at once since
    for run in (run_b, run_c):
        assert run.returncode == 0 and not run.timed_out
        assert run.output() == [f"first boot of {run.kernel}", "second boot", "1 passed"]


def test_default_order_runs_a_kernel_when_its_test_asks(tmp_path, monkeypatch):
    """XDPHOOKS_VM_BACKGROUND unset (CI): no scheduler; run_kernel boots the run itself
    and returns it finished, with its output and exit status."""
    _fake_runner(tmp_path, monkeypatch, 'echo "boot of $1"\nsleep 1\necho "1 passed"\nexit 3\n')
    monkeypatch.setattr(vm_suites, "_scheduler", None)
    run = vm_suites.run_kernel("k")
    assert run.returncode == 3 and not run.timed_out
    assert run.output() == ["boot of k", "1 passed"]


def test_session_end_stops_a_run_with_its_own_process_groups(tmp_path, monkeypatch):
    pidfile = tmp_path / "grandchild"
    # like run-in-vm.sh's `timeout`, which puts vng and qemu in a process group of their own
    _fake_runner(tmp_path, monkeypatch,
                 f"setsid sleep 300 & echo $! > {pidfile}\nwait\n")
    sched = vm_suites.Scheduler(["a"], jobs=2)
    sched.begin()
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip() and sched.runs["a"].proc):
        assert time.monotonic() < deadline, "the fake run did not start"
        time.sleep(0.1)
    grandchild = int(pidfile.read_text())
    assert os.getpgid(grandchild) != os.getpgid(sched.runs["a"].proc.pid)
    t0 = time.monotonic()
    stopped = sched.stop()
    assert [r.kernel for r in stopped] == ["a"] and time.monotonic() - t0 < 20
    assert vm_suites._identity(grandchild) is None, "the run's own process group survived"
    assert sched.runs["a"].returncode is not None


def test_smoke_set_is_part_of_the_matrix_set_and_every_test_in_it_exists():
    from vm_results import MATRIX, SMOKE

    for nodeid in SMOKE:  # the guest's plugin marks MATRIX tests; -m selects the marked ones
        assert any(nodeid == m or nodeid.startswith((m + "::", m + "[")) for m in MATRIX), nodeid
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--collect-only", "-q", *SMOKE], cwd=REPO, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    collected = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert len(collected) >= len(SMOKE), proc.stdout[-3000:]
