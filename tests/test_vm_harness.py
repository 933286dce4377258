"""Host side of the VM suite: boots each Debian kernel under virtme-ng and
runs the ``vm``-marked tests there (tests/vm/run-in-vm.sh). A VM that cannot
start fails this test; it is never skipped silently.

XDPHOOKS_VM_KERNELS (default "6.1 6.12") picks the kernels.
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
KERNELS = os.environ.get("XDPHOOKS_VM_KERNELS", "6.1 6.12").split()


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_vm_suite(kernel):
    if os.environ.get("XDPHOOKS_IN_VM") == "1":
        pytest.skip("already inside the VM")
    if os.geteuid() != 0:
        pytest.fail("the VM suite needs root (it installs kernels/qemu when missing)")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(RUNNER), kernel, "--", "-q", "-rs"],
                          cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          timeout=int(os.environ.get("XDPHOOKS_VM_TIMEOUT", "2400")) + 120)
    took = time.monotonic() - t0
    # shown by pytest -rA / on failure; also to the terminal for CI logs
    sys.stderr.write(f"\n--- VM suite on {kernel} ({took:.0f} s) ---\n"
                     + "\n".join(proc.stdout.splitlines()[-40:]) + "\n")
    assert proc.returncode == 0, (
        f"VM suite on kernel {kernel} failed (exit {proc.returncode}; 90 = VM did not start "
        f"or report back):\n" + "\n".join(proc.stdout.splitlines()[-80:]))
    last = proc.stdout.strip().splitlines()[-3:]
    assert any(" passed" in ln for ln in proc.stdout.splitlines()), \
        f"VM suite on {kernel} ran no test:\n" + "\n".join(last)
