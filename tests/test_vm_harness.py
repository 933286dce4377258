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

XDPHOOKS_VM_KERNELS (default "6.12 6.1 5.10 sid") picks the kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "vm" / "run-in-vm.sh"
KERNELS = os.environ.get("XDPHOOKS_VM_KERNELS", "6.12 6.1 5.10 sid").split()
FULL_KERNEL = "6.12"
sys.path.insert(0, str(REPO / "tests" / "vm"))
from vm_results import MATRIX  # noqa: E402 - one list, also used by the guest's plugin
RESULTS_DIR = REPO / "build" / "kernel-results"


def vm_args(kernel: str) -> list[str]:
    """pytest arguments for one kernel: the full VM suite or the matrix set."""
    args = ["-q", "-rs", "-m", "vm or matrix"]
    return args if kernel == FULL_KERNEL else args + list(MATRIX)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_vm_suite(kernel):
    if os.environ.get("XDPHOOKS_IN_VM") == "1":
        pytest.skip("already inside the VM")
    if os.geteuid() != 0:
        pytest.fail("the VM suite needs root (it installs kernels/qemu when missing)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDPHOOKS_VM_RESULTS_OUT=str(RESULTS_DIR / f"{kernel}.json"))
    t0 = time.monotonic()
    # two boots at most (run-in-vm.sh re-runs once what a dead VM had not reported)
    proc = subprocess.run(["bash", str(RUNNER), kernel, "--", *vm_args(kernel)],
                          cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=2 * int(os.environ.get("XDPHOOKS_VM_TIMEOUT", "2400")) + 240)
    took = time.monotonic() - t0
    out = proc.stdout.splitlines()
    # shown by pytest -rA / on failure; also to the terminal for CI logs
    died = [ln for ln in out if "THE VM DIED" in ln or "RE-RUNNING ONCE" in ln]
    sys.stderr.write(f"\n--- VM suite on {kernel} ({took:.0f} s) ---\n"
                     + "\n".join(died + out[-40:]) + "\n")
    assert proc.returncode == 0, (
        f"VM suite on kernel {kernel} failed (exit {proc.returncode}; 90 = VM did not start "
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


def test_kernel_table_is_generated_from_committed_results():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "kernel-table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = list((REPO / "docs" / "kernel-results").glob("*.json"))
    assert runs, "no committed kernel results in docs/kernel-results/"
