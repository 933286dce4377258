"""A transaction cannot be torn by a signal; system faults are sentences (issue 20,
items 2 and 6).

Signals arrive at exact steps through the crash-injection points
(``XDPHOOKS_CRASH_AT=<point>:<SIGNAL>``, xdphooks/faults.py) and once from outside
(``kill -INT`` of a running reconcile). Faults are real: a read-only bind mount,
a tiny full tmpfs and an immutable directory over the test root's
``var/lib/xdphooks``. Every case ends with one clear line, the exit code that says
whether the kernel changed, state.json recording the program id the kernel runs
(``ip -j -n NS link show``), the chains attached and counting, one pinned
generation per interface and no build directory left.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import destroy_veth_pair, make_veth_pair, sh
from freplace_support import IN_VM, both_modes
from test_bad_input import nobody_python
from test_crash import attached_id, count, pinned_roots

pytestmark = pytest.mark.kernel
host_only = pytest.mark.skipif(IN_VM, reason="host test (the VM runs the both_modes cases)")

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object="count_pass.o", priority={prio},
                           interfaces={ifaces!r})]
""")


# --- helpers ------------------------------------------------------------------------


@pytest.fixture
def veth2():
    """A second interface, so that a stopped run has something left not done."""
    pair = make_veth_pair("h")
    try:
        yield pair
    finally:
        destroy_veth_pair(pair.ns_a, pair.ns_b)


def install(xh, name: str, prio: int, *veths) -> None:
    xh.add_plugin(name, PLUGIN.format(name=name, prio=prio,
                                      ifaces=tuple(v.iface for v in veths)))


def setup(xh, bpf_obj, mode: str, *veths) -> dict[str, int]:
    """The chain ``first`` on every interface; returns interface -> attached id."""
    xh.write_config(f'mode = "{mode}"\n' + ('xdp_mode = "skb"\n' if mode == "freplace" else ""))
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    install(xh, "first", 10, *veths)
    xh.run("reconcile")
    ids = {v.iface: attached_id(v) for v in veths}
    assert all(ids.values()), ids
    return ids


def run(xh, *args: str, point: str = "", wait: bool = True, umask: int | None = None):
    env = dict(xh.env, XDPHOOKS_CRASH_AT=point) if point else xh.env
    argv = [sys.executable, "-m", "xdphooks", *args]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    if not wait:
        return subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=pre)
    return subprocess.run(argv, env=env, text=True, capture_output=True, timeout=300,
                          preexec_fn=pre)


def wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run froze itself (``<point>:STOP``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before its stop point"
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached its stop point")


def resume(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def state(xh) -> dict:
    return json.loads(xh.state_file.read_text())


def recorded(xh, veth) -> tuple[int, list[str]]:
    rec = state(xh)["interfaces"].get(f"{veth.ns_a}@{veth.dev_a}")
    return (rec["prog_id"], [p["name"] for p in rec["programs"]]) if rec else (0, [])


def problem_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks:")]


def one_line(proc, *words: str) -> str:
    """The run said what happened in one line (no traceback) containing ``words``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    hits = [ln for ln in problem_lines(proc) if all(w in ln for w in words)]
    assert len(hits) == 1, f"expected one line with {words}:\n{proc.stderr}"
    print(f"\n[exit {proc.returncode}] {hits[0]}")
    return hits[0]


def counted(xh, veth) -> bool:
    """Packets on this interface meet a chain (the first component's pinned counter)."""
    before = count(xh)
    veth.exec_b("ping", "-c", "3", "-i", "0.2", "-W", "1", veth.ip_a, check=False)
    return count(xh) >= before + 3


def assert_true_to_kernel(xh, *veths, names: dict[str, list[str]]) -> None:
    """state.json records what the kernel runs, one generation pinned per interface
    (the one attached), packets counted, no build directory left."""
    for v in veths:
        kid = attached_id(v)
        assert kid, f"{v.iface}: nothing attached"
        assert recorded(xh, v) == (kid, names[v.iface]), (
            f"{v.iface}: kernel runs {kid}, state records {recorded(xh, v)}")
        assert list(pinned_roots(xh, v).values()) == [kid], pinned_roots(xh, v)
        assert counted(xh, v), f"{v.iface}: packets no longer meet the chain"
    assert not list(xh.run_dir.glob("build-*")), list(xh.run_dir.glob("build-*"))


def split(veths, old: dict[str, int]):
    """(changed, unchanged) interfaces after a stopped run."""
    changed = [v for v in veths if attached_id(v) != old[v.iface]]
    return changed, [v for v in veths if v not in changed]


# --- signals ---------------------------------------------------------------------------


@host_only
@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
@pytest.mark.parametrize("point", ["after-pin", "after-swap", "before-state-write"])
def test_signal_in_the_critical_section(xh, veth, veth2, bpf_obj, point, sig):
    """A signal between the first pin and the state write waits for the change to be
    recorded; the run then stops (the other interface keeps its old chain, exit 3)."""
    old = setup(xh, bpf_obj, "static", veth, veth2)
    install(xh, "second", 20, veth, veth2)
    proc = run(xh, "reconcile", point=f"{point}:{sig}")
    assert proc.returncode == 3, proc.stderr
    changed, unchanged = split([veth, veth2], old)
    assert len(changed) == 1 and len(unchanged) == 1, (changed, unchanged)
    (c,), (u,) = changed, unchanged
    line = one_line(proc, f"interrupted by SIG{sig} after replace {c.iface}")
    assert f"first → second on {c.iface}" in line and f"not done: replace {u.iface}" in line
    assert attached_id(u) == old[u.iface]
    assert_true_to_kernel(xh, veth, veth2, names={c.iface: ["first", "second"],
                                                  u.iface: ["first"]})
    # The next run finishes the job.
    again = xh.run("reconcile")
    assert f"replace  {u.iface}" in again.stdout
    assert_true_to_kernel(xh, veth, veth2, names={v.iface: ["first", "second"]
                                                  for v in (veth, veth2)})


@both_modes
def test_sigint_after_swap_single_interface(xh, veth, bpf_obj, mode):
    """Ctrl-C right after the attach was sent (the issue's case): the new chain is
    recorded, nothing is unpinned under it, and the run says so; nothing was left
    to do, so it converged (exit 0)."""
    old = setup(xh, bpf_obj, mode, veth)
    install(xh, "second", 20, veth)
    proc = run(xh, "reconcile", point="after-swap:INT")
    assert proc.returncode == 0, proc.stderr
    one_line(proc, f"interrupted by SIGINT after replace {veth.iface}", "nothing was left to do")
    assert attached_id(veth) != old[veth.iface]
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first", "second"]})
    assert xh.run("reconcile").stdout.strip() == "nothing to do"  # not "foreign"


@host_only
def test_error_after_the_swap_never_unpins_the_running_chain(xh, veth, bpf_obj):
    """An unexpected exception right after the swap (``after-swap:RAISE``): the clean-up
    used to unpin the generation the kernel now ran. It checks what is attached first:
    the new chain stays pinned and is recorded, with one warning line."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    proc = run(xh, "reconcile", point="after-swap:RAISE")
    assert proc.returncode == 0, proc.stderr
    one_line(proc, "InjectedFault after the swap", "the new chain runs and is recorded")
    assert attached_id(veth) != old[veth.iface]
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first", "second"]})
    assert xh.run("reconcile").stdout.strip() == "nothing to do"


@host_only
def test_external_kill_int_of_a_running_reconcile(xh, veth, veth2, bpf_obj):
    """A real ``kill -INT`` from another process while the run is between the swap and
    the state write (frozen there by ``after-swap:STOP``)."""
    old = setup(xh, bpf_obj, "static", veth, veth2)
    install(xh, "second", 20, veth, veth2)
    proc = run(xh, "reconcile", point="after-swap:STOP", wait=False)
    wait_stopped(proc)
    sh("kill", "-INT", str(proc.pid))
    done = resume(proc)
    assert done.returncode == 3, done.stderr
    (c,), (u,) = split([veth, veth2], old)
    one_line(done, f"interrupted by SIGINT after replace {c.iface}", f"not done: replace {u.iface}")
    assert_true_to_kernel(xh, veth, veth2, names={c.iface: ["first", "second"],
                                                  u.iface: ["first"]})


@host_only
def test_external_kill_int_before_any_change(xh, veth, bpf_obj):
    """``kill -INT`` while a plugin's hook runs (discovery): the run stops at once,
    nothing changed (exit 1)."""
    old = setup(xh, bpf_obj, "static", veth)
    mark = xh.root / "hook-running"
    xh.add_plugin("slow", textwrap.dedent(f"""
        import pathlib, time
        from xdphooks import hookimpl
        @hookimpl
        def xdphooks_programs():
            pathlib.Path({str(mark)!r}).touch()
            time.sleep(1.5)
            return []
    """))
    install(xh, "second", 20, veth)
    proc = run(xh, "reconcile", wait=False)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    sh("kill", "-INT", str(proc.pid))
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 1, err
    one_line(done, "interrupted by SIGINT before any change", "the kernel runs what it ran before")
    assert attached_id(veth) == old[veth.iface]
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first"]})


@host_only
def test_sighup_between_detach_and_state_write(xh, veth, veth2, bpf_obj):
    """A plugin removed: reconcile detaches its chain from both interfaces. SIGHUP
    right after the first detach: that detach is recorded, the other interface
    keeps its chain, recorded and pinned (exit 3)."""
    old = setup(xh, bpf_obj, "static", veth, veth2)
    (xh.plugin_dir / "first.py").unlink()
    proc = run(xh, "reconcile", point="after-detach:HUP")
    assert proc.returncode == 3, proc.stderr
    (gone,) = [v for v in (veth, veth2) if not attached_id(v)]
    (kept,) = [v for v in (veth, veth2) if attached_id(v)]
    one_line(proc, f"interrupted by SIGHUP after detach {gone.iface}", "no XDP program on",
             f"not done: detach {kept.iface}")
    assert attached_id(kept) == old[kept.iface]
    assert recorded(xh, gone) == (0, []) and not pinned_roots(xh, gone)
    assert_true_to_kernel(xh, kept, names={kept.iface: ["first"]})
    xh.run("reconcile")
    assert not attached_id(kept) and recorded(xh, kept) == (0, [])


@host_only
def test_sigterm_during_teardown(xh, veth, veth2, bpf_obj):
    """``teardown --all`` stopped after its first detach: that one is recorded as gone,
    the other chain still runs, recorded and pinned (exit 3)."""
    setup(xh, bpf_obj, "static", veth, veth2)
    proc = run(xh, "teardown", "--all", point="after-detach:TERM")
    assert proc.returncode == 3, proc.stderr
    line = one_line(proc, "interrupted by SIGTERM after detaching")
    gone = [v for v in (veth, veth2) if not attached_id(v)]
    (kept,) = [v for v in (veth, veth2) if attached_id(v)]
    assert len(gone) == 1 and f"still attached: {kept.iface}" in line
    assert recorded(xh, gone[0]) == (0, []) and not pinned_roots(xh, gone[0])
    assert_true_to_kernel(xh, kept, names={kept.iface: ["first"]})


# --- system faults on xdphooks' own files ----------------------------------------------


def ro_bind(path: Path):
    sh("mount", "--bind", str(path), str(path))
    sh("mount", "-o", "remount,bind,ro", str(path))


@host_only
def test_read_only_state_dir_after_the_swap(xh, veth, bpf_obj):
    """EROFS between the swap and the state write: the kernel changed, the line says
    so (exit 3), the old generation is not left pinned, the next run records the
    running chain from its pins."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    proc = run(xh, "reconcile", point="after-swap:STOP", wait=False)
    wait_stopped(proc)
    ro_bind(xh.state_dir)
    try:
        done = resume(proc)
        assert done.returncode == 3, done.stderr
        one_line(done, str(xh.state_file), "read-only filesystem (EROFS)",
                 f"{veth.iface} now runs the new chain", "— fix: remount it read-write")
        new = attached_id(veth)
        assert new != old[veth.iface]
        assert recorded(xh, veth) == (old[veth.iface], ["first"])  # the file could not change
        assert list(pinned_roots(xh, veth).values()) == [new]  # no second generation left
        assert counted(xh, veth)
        # Still read-only: the next run has nothing to change (the running chain is what
        # is wanted) but cannot record it: exit 1 and one line.
        ro = run(xh, "reconcile")
        assert ro.returncode == 1 and attached_id(veth) == new, ro.stderr
        one_line(ro, str(xh.state_file), "(EROFS)", "nothing was changed; only this run's result is not recorded")
    finally:
        sh("umount", str(xh.state_dir))
    assert xh.run("reconcile").returncode == 0
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first", "second"]})


@host_only
def test_full_state_dir_after_the_swap(xh, veth, bpf_obj):
    """ENOSPC between the swap and the state write (a tiny tmpfs filled while the run
    is frozen after the swap)."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    saved = {p.name: p.read_bytes() for p in xh.state_dir.iterdir() if p.is_file()}
    sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "xhfull", str(xh.state_dir))
    try:
        for name, data in saved.items():
            (xh.state_dir / name).write_bytes(data)
        proc = run(xh, "reconcile", point="after-swap:STOP", wait=False)
        wait_stopped(proc)
        fd = os.open(xh.state_dir / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        done = resume(proc)
        assert done.returncode == 3, done.stderr
        one_line(done, str(xh.state_file), "no space left", "(ENOSPC)",
                 f"{veth.iface} now runs the new chain", "— fix: free space there")
        new = attached_id(veth)
        assert new != old[veth.iface] and list(pinned_roots(xh, veth).values()) == [new]
        assert recorded(xh, veth) == (old[veth.iface], ["first"])
        (xh.state_dir / "filler").unlink()
        again = xh.run("reconcile")
        assert again.stdout.strip() == "nothing to do", again.stdout
        assert_true_to_kernel(xh, veth, names={veth.iface: ["first", "second"]})
    finally:
        sh("umount", "-l", str(xh.state_dir))


@host_only
def test_read_only_state_dir_before_the_run(xh, veth, bpf_obj):
    """EROFS found before the first change: nothing changes (exit 1), the line says
    so; no pins, no build directory left."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    ro_bind(xh.state_dir)
    try:
        proc = run(xh, "reconcile")
    finally:
        sh("umount", str(xh.state_dir))
    assert proc.returncode == 1, proc.stderr
    one_line(proc, str(xh.state_file), "(EROFS)", "nothing was changed")
    assert "nothing to do" not in proc.stdout
    assert attached_id(veth) == old[veth.iface]
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first"]})


@host_only
def test_immutable_state_dir(xh, veth, bpf_obj):
    """EPERM (chattr +i: even root may not create files there): nothing changes."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    sh("chattr", "+i", str(xh.state_dir))
    try:
        proc = run(xh, "reconcile")
    finally:
        sh("chattr", "-i", str(xh.state_dir))
    assert proc.returncode == 1, proc.stderr
    one_line(proc, str(xh.state_file), "(EPERM)", "chattr -i", "nothing was changed")
    assert attached_id(veth) == old[veth.iface]
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first"]})


@host_only
def test_read_only_run_dir(xh, veth, bpf_obj):
    """EROFS on /run/xdphooks (the lock's directory): one line naming it, exit 1."""
    old = setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755,ro", "xhro", str(xh.run_dir.parent))
    try:
        proc = run(xh, "reconcile")
    finally:
        sh("umount", str(xh.run_dir.parent))
    assert proc.returncode == 1, proc.stderr
    one_line(proc, str(xh.run_dir), "(EROFS)")
    assert attached_id(veth) == old[veth.iface]


# --- modes and leftovers ------------------------------------------------------------------


@host_only
def test_umask_077_keeps_status_and_history_readable(xh, veth, bpf_obj):
    """A first reconcile under root's umask 077 creates everything with its own
    modes; ``status`` and ``history`` then work as user nobody."""
    xh.write_config('mode = "static"\n')
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    install(xh, "first", 10, veth)
    proc = run(xh, "reconcile", umask=0o077)
    assert proc.returncode == 0, proc.stderr
    modes = {p: oct(os.stat(p).st_mode & 0o777) for p in
             (xh.state_dir, xh.state_file, xh.state_dir / "changes.log", xh.run_dir)}
    assert modes == {xh.state_dir: "0o755", xh.state_file: "0o644",
                     xh.state_dir / "changes.log": "0o644", xh.run_dir: "0o700"}, modes
    env = {k: v for k, v in xh.env.items() if k.startswith("XDPHOOKS")}
    st = subprocess.run(nobody_python() + ["status", "--json"], env=env, text=True,
                        capture_output=True, timeout=120)
    assert st.returncode == 0 and "Traceback" not in st.stderr, st.stderr
    (iface,) = json.loads(st.stdout)["interfaces"]
    assert iface["prog_id"] == attached_id(veth)
    hist = subprocess.run(nobody_python() + ["history"], env=env, text=True,
                          capture_output=True, timeout=120)
    assert hist.returncode == 0 and f"attach {veth.iface}" in hist.stdout, hist


@host_only
def test_killed_runs_build_dir_is_collected(xh, veth, bpf_obj):
    """SIGKILL while building (after-load) leaves a build directory; the next run,
    holding the lock, removes it."""
    setup(xh, bpf_obj, "static", veth)
    install(xh, "second", 20, veth)
    assert run(xh, "reconcile", point="after-load").returncode == -signal.SIGKILL
    left = list(xh.run_dir.glob("build-*"))
    assert left, "the killed run left no build directory: the case tests nothing"
    xh.run("reconcile")
    assert_true_to_kernel(xh, veth, names={veth.iface: ["first", "second"]})
