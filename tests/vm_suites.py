"""The VM suites of tests/test_vm_harness.py, optionally started in the background when the
session starts, so the emulated kernels run while the host tests do (a pytest plugin,
registered by tests/conftest.py).

OFF by default (``XDPHOOKS_VM_BACKGROUND=1`` turns it on): measured from a fresh clone on
this 2-core machine (2026-12-08), a VM beside the host tests stretched the host part to
30 minutes and the 6.12 suite past its 2400 s boot limit (re-run in a second boot), and
two emulated VMs at once took as long as one after the other, so the whole command took
longer than the old order (VM suites after the host tests, one at a time). Under TCG an
emulated VM keeps both cores busy; overlapping pays only on a machine with more cores.
How, when on:How:

* at the end of collection, when ``test_vm_suite[<kernel>]`` items are selected (and this
  is not the guest), those items are moved to the end of the session and their kernels'
  runs (tests/vm/run-in-vm.sh) are queued, in the order of the items (the full-suite
  kernel first: it is the longest);
* ONE run at a time while host tests run (a second emulated VM beside them slows both
  and puts the guests' 120 s command timeouts at risk); once the session reaches the
  VM suite tests and nothing else runs, up to ``XDPHOOKS_VM_JOBS`` (default 2) at once;
* ``test_vm_suite[<kernel>]`` waits for its own run and checks it as before (exit status,
  a " passed" line, the death-and-re-run lines); each run's output is also in
  build/vm-logs/<kernel>.log;
* a run still going when the session ends (-x, Ctrl-C, a deselected kernel) is stopped,
  with its whole process tree (run-in-vm.sh's ``timeout`` puts vng and qemu in a process
  group of their own), and that is said.

Off (the default), each run starts when its test runs, one after the other, after the host
tests (the VM suite items are still moved to the end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "vm" / "run-in-vm.sh"
RESULTS_DIR = REPO / "build" / "kernel-results"
LOG_DIR = REPO / "build" / "vm-logs"
KERNELS = os.environ.get("XDPHOOKS_VM_KERNELS", "6.12 6.1 5.10 sid").split()
#: the kernel that runs the whole VM suite and the matrix set (MATRIX); the others run the
#: smoke set (SMOKE, tests/vm/vm_results.py)
FULL_KERNEL = "6.12"
TEST_NAME = "test_vm_suite"
TEST_FILE = "test_vm_harness.py"
sys.path.insert(0, str(REPO / "tests" / "vm"))
from vm_results import SMOKE  # noqa: E402 - beside MATRIX, which the guest's plugin marks


def vm_args(kernel: str) -> list[str]:
    """pytest arguments for one kernel: the full VM suite and the whole matrix set
    (``-m "vm or matrix"``), or the smoke set (a subset of the matrix set)."""
    args = ["-q", "-rs", "-m", "vm or matrix"]
    return args if kernel == FULL_KERNEL else args + list(SMOKE)


def time_limit() -> int:
    """Seconds one kernel's run may take: two boots at most (run-in-vm.sh re-runs once
    what a dead VM had not reported), each limited by run-in-vm.sh itself."""
    return 2 * int(os.environ.get("XDPHOOKS_VM_TIMEOUT", "2400")) + 240


@dataclass
class Run:
    kernel: str
    log: Path
    proc: subprocess.Popen | None = None
    copier: threading.Thread | None = None
    started: float = 0.0
    ended: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, XDPHOOKS_VM_RESULTS_OUT=str(RESULTS_DIR / f"{self.kernel}.json"),
                   XDPHOOKS_VM_SET="full" if self.kernel == FULL_KERNEL else "smoke")
        self.started = time.monotonic()
        # Through a pipe, not the log file itself: qemu opens its output chardevs
        # (/proc/self/fd/1 and 2) truncating, so a file would keep only the last boot.
        self.proc = subprocess.Popen(
            ["bash", str(RUNNER), self.kernel, "--", *vm_args(self.kernel)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)  # a stop reaches it
        self.copier = threading.Thread(target=self._copy, name=f"vm-log-{self.kernel}",
                                       daemon=True)
        self.copier.start()

    def _copy(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log, "wb") as out:
            for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
                out.write(chunk)
                out.flush()

    def poll(self) -> bool:
        """True once finished (or stopped for its time limit)."""
        if self.proc is None or self.done.is_set():
            return self.done.is_set()
        rc = self.proc.poll()
        if rc is None and time.monotonic() - self.started > time_limit():
            self.timed_out = True
            stop_tree(self.proc)
            rc = self.proc.wait()
        if rc is None:
            return False
        if self.copier is not None:
            self.copier.join(timeout=30)  # the output's last lines (pytest's summary)
        self.returncode, self.ended = rc, time.monotonic()
        self.done.set()
        return True

    @property
    def took(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def output(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:  # gone meanwhile
        pass
    return kids


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) of a live process, None once it is gone or a zombie: a pid
    that came back as another process is not that one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else (pid, fields[19])


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to the run and every process under it (listed before any dies, so none is
    re-parented out of reach), SIGKILL to those still there after 30 s."""
    tree, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        ident = _identity(pid)
        if ident:
            tree.append(ident)
        todo += _children(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while True:
            proc.poll()  # reaps our own child
            tree = [t for t in tree if _identity(t[0]) == t]
            if not tree or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not tree:
            break
    proc.wait()


class Scheduler:
    """Starts the queued runs, one at a time until ``wide()``, then up to ``jobs``."""

    def __init__(self, kernels: list[str], jobs: int) -> None:
        self.runs = {k: Run(k, LOG_DIR / f"{k}.log") for k in kernels}
        self.queue = list(kernels)
        self.jobs = jobs
        self.slots = 1
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="vm-suites", daemon=True)

    def begin(self) -> None:
        self.thread.start()

    def wide(self) -> None:
        with self.cond:
            self.slots = self.jobs
            self.cond.notify_all()

    def first(self, kernel: str) -> None:
        """Start ``kernel`` next (its test is waiting for it)."""
        with self.cond:
            if kernel in self.queue:
                self.queue.remove(kernel)
                self.queue.insert(0, kernel)
                self.cond.notify_all()

    def _loop(self) -> None:
        with self.cond:
            while not self.stopping:
                running = [r for r in self.runs.values() if r.proc and not r.poll()]
                while self.queue and len(running) < self.slots:
                    run = self.runs[self.queue.pop(0)]
                    run.start()
                    running.append(run)
                if not self.queue and not running:
                    return
                self.cond.wait(timeout=2)

    def wait(self, kernel: str) -> Run:
        run = self.runs[kernel]
        self.first(kernel)
        self.wide()
        while not run.done.wait(timeout=5):
            if not self.thread.is_alive():  # stopped, or its loop failed: poll here
                if run.proc is None:
                    run.start()
                run.poll()
        return run

    def stop(self) -> list[Run]:
        """Stop what still runs (the session ended first); the runs stopped."""
        with self.cond:
            self.stopping = True
            self.queue.clear()
            self.cond.notify_all()
        stopped = []
        for run in self.runs.values():
            if run.proc is not None and not run.poll():
                stop_tree(run.proc)
                run.poll()
                stopped.append(run)
        return stopped


_scheduler: Scheduler | None = None


def run_kernel(kernel: str) -> Run:
    """The finished run of ``kernel``: the background one, or one started now."""
    if _scheduler is not None and kernel in _scheduler.runs:
        return _scheduler.wait(kernel)
    run = Run(kernel, LOG_DIR / f"{kernel}.log")
    run.start()
    while not run.poll():
        time.sleep(5)
    return run


# --- the pytest plugin -------------------------------------------------------------------

def _is_suite(item) -> bool:
    return (getattr(item, "originalname", None) == TEST_NAME
            and item.path.name == TEST_FILE and hasattr(item, "callspec"))


def pytest_collection_modifyitems(session, config, items) -> None:
    # last: the host tests run while the VMs do; the waits come after them
    suites = [i for i in items if _is_suite(i)]
    if suites:
        items[:] = [i for i in items if not _is_suite(i)] + suites


def pytest_collection_finish(session) -> None:
    global _scheduler
    if (os.environ.get("XDPHOOKS_IN_VM") == "1" or os.geteuid() != 0
            or os.environ.get("XDPHOOKS_VM_BACKGROUND", "0") != "1"):
        return  # the test itself says why it cannot run (or runs in the old order)
    kernels = [i.callspec.params["kernel"] for i in session.items if _is_suite(i)]
    if not kernels or session.config.option.collectonly:
        return
    _scheduler = Scheduler(kernels, max(1, int(os.environ.get("XDPHOOKS_VM_JOBS", "2"))))
    _scheduler.begin()
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"vm-suites: VM suites for {', '.join(kernels)} run in the background "
                      f"from now, one at a time beside the host tests, up to "
                      f"{_scheduler.jobs} at once after them; logs in "
                      f"{LOG_DIR.relative_to(REPO)}/")


def pytest_sessionfinish(session, exitstatus) -> None:
    global _scheduler
    if _scheduler is None:
        return
    stopped = _scheduler.stop()
    _scheduler = None
    if stopped:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        for run in stopped:
            line = (f"vm-suites: STOPPED the VM suite on {run.kernel} after {run.took:.0f} s: "
                    f"the session ended before its test took its result (log: {run.log})")
            if tr is not None:
                tr.write_line(line)
            else:
                sys.stderr.write(line + "\n")
