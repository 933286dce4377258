"""Bad input, kind by kind (issue #6): one table-driven test on the real kernel.

Every kind starts from a good chain (plugin ``good``, program ``counter`` =
count_pass) running on a fresh namespaced veth, then introduces one defect —
almost always in a plugin named ``badguy`` — and runs ``xdphooks reconcile``.

It must:

* exit with the documented code (README: 0 converged, 1 error/nothing changed,
  3 partial; 2 usage) — nonzero for every kind except a corrupt state file,
  which the protocol says is rebuilt from the kernel and the pins;
* say so in ONE line that names the plugin (or, for what is not a plugin's
  fault — state, lock, bpffs, config, interfaces, root — the path or name
  concerned) and carries ``fix: <something concrete>``; no traceback, nothing
  said twice; only the verifier's own last lines may follow, and where the
  kernel gave some they are shown;
* leave the running chain alone: the same program id attached (asked of
  iproute2, not xdphooks), packets still counted by the good program's own
  pinned map, the state file's records unchanged;
* converge again: once the defect is removed, the next reconcile succeeds and
  has nothing to do.

Everything is real: compiled objects (tests/bpf/bad_*.bpf.c), files owned by
``nobody``, symlinks swapped in while discovery runs, interfaces deleted by a
hook in the middle of a reconcile, a process without CAP_SYS_ADMIN, an
unprivileged user. ``XDPHOOKS_SHOW_MESSAGES=1 pytest -s`` prints each kind's output.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from xdphooks import abi

from conftest import BUILD, REPO, TEST_BPF, destroy_veth_pair, make_veth_pair, sh

pytestmark = pytest.mark.kernel

NOBODY = 65534
BADGUY = "plugin 'badguy'"

GOOD = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="counter", object="count_pass.o", priority=50,
                           interfaces={ifaces!r})]
""")

BAD = textwrap.dedent("""
    from xdphooks import VerdictPolicy, XdpProgram, hookimpl
    IFACE = {iface!r}
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio!r},
                           interfaces=(IFACE,){extra})]
""")


# --- observing the kernel and the state independently --------------------------------


def attached_id(ns: str, dev: str) -> int:
    link = json.loads(sh("ip", "-j", "-n", ns, "link", "show", "dev", dev).stdout)[0]
    return (link.get("xdp") or {}).get("prog", {}).get("id", 0)


def read_counter(xh, veth=None) -> int:
    """The good program's packet count: from its pin, or (pins lost and not recovered)
    from the map of that name the attached program uses, asked of the kernel."""
    from xdphooks.kernel import libbpf

    pin = xh.bpffs / "xdphooks/maps/counter/pkt_count"
    fd = libbpf.obj_get(str(pin)) if pin.exists() or veth is None else kernel_map(veth)
    try:
        return struct.unpack("Q", libbpf.map_lookup(fd, struct.pack("I", 0), 8))[0]
    finally:
        os.close(fd)


def kernel_map(veth, suffix: str = "pkt_count") -> int:
    from xdphooks.kernel import libbpf

    with libbpf.fd_closing(libbpf.prog_fd_by_id(attached_id(veth.ns_a, veth.dev_a))) as pfd:
        _, ids = libbpf.prog_info(pfd, map_ids=True)
    for mid in ids:
        fd = libbpf.map_fd_by_id(mid)
        if libbpf.map_info(fd).name.decode().endswith(suffix):
            return fd
        os.close(fd)
    raise LookupError(f"no map *{suffix} in the attached program")


def state_file(xh) -> Path:
    return xh.root / "var/lib/xdphooks/state.json"


def state_records(xh) -> dict[str, tuple]:
    data = json.loads(state_file(xh).read_text())
    return {k: (r["prog_id"], r["fingerprint"], tuple(p["name"] for p in r["programs"]),
                tuple(p["prog_id"] for p in r["programs"]))
            for k, r in data["interfaces"].items()}


def nobody_python() -> list[str]:
    """argv prefix running xdphooks as ``nobody`` (the venv lives under /root, which
    nobody cannot enter: Debian's python3 with the same source tree and site dir)."""
    site = sysconfig.get_paths()["purelib"]
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "/usr/bin/env", f"PYTHONPATH={REPO}:{site}", "/usr/bin/python3", "-m", "xdphooks"]


# --- the per-kind context -----------------------------------------------------------


@dataclass
class Ctx:
    xh: Any
    veth: Any
    bpf_obj: Callable[[str], Path]
    scratch: Path  # root-owned 0755, outside the xdphooks root
    good_ifaces: list[str] = field(default_factory=list)
    config: str = 'mode = "static"\nhook_timeout = 2\n'
    undo: list[Callable[[], None]] = field(default_factory=list)
    pairs: list = field(default_factory=list)

    @property
    def iface(self) -> str:
        return self.veth.iface

    @property
    def badguy_path(self) -> Path:
        return self.xh.plugin_dir / "badguy.py"

    def badguy(self, obj: str = "bg.o", *, name: str = "bg", prio: int = 10,
               iface: str | None = None, extra: str = "", source: str | None = None) -> Path:
        """Install plugin ``badguy`` (removed again by the undo list)."""
        text = source if source is not None else BAD.format(
            name=name, obj=obj, prio=prio, iface=iface or self.iface, extra=extra)
        path = self.xh.add_plugin("badguy", text)
        self.undo.append(lambda: self.badguy_path.unlink(missing_ok=True))
        return path

    def bad_object(self, data: bytes | Path, name: str = "bg.o") -> Path:
        dst = self.xh.bpf_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        os.chmod(dst, 0o644)
        self.undo.append(lambda: dst.unlink(missing_ok=True))
        return dst

    def set_config(self, text: str) -> None:
        self.xh.write_config(text)
        self.undo.append(lambda: self.xh.write_config(self.config))

    def run(self, *args: str, env: dict | None = None, prefix: list[str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        e = dict(self.xh.env, **(env or {}))
        argv = (prefix or [sys.executable, "-m", "xdphooks"]) + list(args)
        return subprocess.run(argv, env=e, text=True, capture_output=True, timeout=timeout)

    def nobody_file(self, rel: str, text: str) -> Path:
        p = self.scratch / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(p.parent, 0o755)
        p.write_text(text)
        os.chown(p, NOBODY, NOBODY)
        return p


@dataclass
class Expect:
    who: str  # must be on the error line: the plugin, or the path/name concerned
    rc: int = 1
    detail: tuple[str, ...] = ()  # kernel lines expected beneath the error line (any of)
    run: Callable[[Ctx], subprocess.CompletedProcess] | None = None
    check: Callable[[Ctx, subprocess.CompletedProcess], None] | None = None
    same_state: bool = True  # state records unchanged by the bad run
    state_lost: bool = False  # the bad input is a lost state file: nothing to compare


KINDS: dict[str, Callable[[Ctx], Expect]] = {}
SETUPS: dict[str, Callable[[Ctx], None]] = {}


def kind(name: str, setup: Callable[[Ctx], None] | None = None):
    def deco(fn):
        assert name not in KINDS
        KINDS[name] = fn
        if setup:
            SETUPS[name] = setup
        return fn
    return deco


# --- objects -------------------------------------------------------------------------


def good_bytes(c: Ctx) -> bytes:
    return c.bpf_obj("count_pass").read_bytes()


def section(data: bytes, name: str) -> tuple[int, int]:
    from xdphooks.link import elf as E

    elf = E.read_elf("x.o", data)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    for s in elf.sections:
        if s.name == name:
            off, size = struct.unpack_from("<QQ", data, shoff + s.index * 64 + 24)
            return off, size
    raise LookupError(name)


def no_btf_object() -> Path:
    """count_pass built without -g: a valid BPF ELF without .BTF."""
    src, out = TEST_BPF / "count_pass.bpf.c", BUILD / "count_pass.nobtf.o"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        sh("clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
           f"-I{REPO / 'bpf'}", "-c", str(src), "-o", str(out))
    return out


@kind("missing_object")
def _(c):
    c.badguy(obj="nope.o")
    return Expect(BADGUY)


@kind("truncated_elf")
def _(c):
    data = good_bytes(c)
    c.bad_object(data[: len(data) // 2])
    c.badguy()
    return Expect(BADGUY)


@kind("corrupt_elf")
def _(c):
    data = bytearray(good_bytes(c))
    shoff, = struct.unpack_from("<Q", data, 0x28)
    rnd = random.Random(6)
    data[shoff:] = bytes(rnd.randrange(256) for _ in range(len(data) - shoff))
    c.bad_object(bytes(data))
    c.badguy()
    return Expect(BADGUY)


@kind("not_elf")
def _(c):
    c.bad_object(b"this is a shell script, not a BPF object\n" * 4)
    c.badguy()
    return Expect(BADGUY)


@kind("elf_not_bpf")
def _(c):
    c.bad_object(Path("/bin/true"))
    c.badguy()
    return Expect(BADGUY)


@kind("no_btf")
def _(c):
    c.bad_object(no_btf_object())
    c.badguy()
    return Expect(BADGUY)


@kind("corrupt_btf")
def _(c):
    data = bytearray(good_bytes(c))
    off, size = section(bytes(data), ".BTF")
    data[off: off + 4] = b"\xde\xad\xbe\xef"  # magic and version gone
    c.bad_object(bytes(data))
    c.badguy()
    return Expect(BADGUY)


@kind("verifier_rejection")
def _(c):
    c.bad_object(c.bpf_obj("bad_verifier"))
    c.badguy()
    return Expect(BADGUY, detail=("invalid access to packet",))


@kind("wrong_program_type")
def _(c):
    c.bad_object(c.bpf_obj("bad_socket"))  # a socket filter and a kprobe, no XDP
    c.badguy()
    return Expect(BADGUY)


@kind("duplicate_names")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(name="counter")  # the good plugin's program name
    return Expect(BADGUY)


@kind("priority_out_of_range")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(prio=5000)
    return Expect(BADGUY)


@kind("priority_out_of_range_config")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy()
    c.set_config(c.config + "[programs.bg]\npriority = 5000\n")
    return Expect(str(c.xh.config_file))


@kind("bad_policy")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(extra=', policy=VerdictPolicy.parse("tx=bounce")')
    return Expect(BADGUY)


@kind("bad_policy_config")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy()
    c.set_config(c.config + '[programs.bg]\npolicy = { tx = "bounce" }\n')
    return Expect(str(c.xh.config_file))


@kind("unknown_interface_netns")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=f"nosuchns{uuid.uuid4().hex[:6]}/eth0")
    return Expect(BADGUY)


@kind("invalid_interface_name")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=f"{c.veth.ns_a}/name-longer-than-ifnamsiz")
    return Expect(BADGUY)


def second_pair(c: Ctx) -> None:
    """A second veth whose chain (the good program too) gets the bad change."""
    pair = make_veth_pair("v")
    c.pairs.append(pair)
    c.good_ifaces.append(pair.iface)


VANISH_NOW = """
    import subprocess
    @hookimpl
    def xdphooks_validate_chain(interface, chain):
        # runs after planning, before anything is built: the interface goes away
        if str(interface) == {iface!r}:
            subprocess.run({cmd!r}, check=True)
"""

VANISH_DURING_BUILD = """
    import os, subprocess, sys
    @hookimpl
    def xdphooks_validate_chain(interface, chain):
        if str(interface) == {iface!r}:
            # plugin code runs in the plugin host, a child of the reconcile: stop its parent
            helper = subprocess.Popen([sys.executable, {helper!r}, str(os.getppid()),
                                       {run_dir!r}, *{cmd!r}], stdout=subprocess.PIPE)
            assert helper.stdout.readline() == b"watching\\n"
"""

# Started by the hook above: waits for run/xdphooks/build-*, which the coordinator makes
# just before the backend builds, then stops the reconcile (so its build cannot finish
# first), deletes the interface, and lets the reconcile go on to its swap.
STOP_AND_DELETE = """
import os, signal, subprocess, sys, time
pid, run_dir, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
print("watching", flush=True)
deadline = time.monotonic() + 30
while not any(n.startswith("build-") for n in os.listdir(run_dir)):
    if time.monotonic() > deadline:
        sys.exit("no build started")
    time.sleep(0.0002)
os.kill(pid, signal.SIGSTOP)
try:
    subprocess.run(cmd, check=True)
finally:
    os.kill(pid, signal.SIGCONT)
"""


def _vanishing(c: Ctx, cmd: list[str], hook: str = VANISH_NOW) -> Expect:
    b = c.pairs[0]
    helper = c.scratch / "stop_and_delete.py"
    helper.write_text(STOP_AND_DELETE)
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(source=BAD.format(name="bg", obj="bg.o", prio=10, iface=b.iface, extra="")
             + textwrap.dedent(hook.format(iface=b.iface, cmd=cmd, run_dir=str(run_dir(c)),
                                           helper=str(helper))))
    key_b = f"{b.ns_a}@{b.dev_a}"

    def check(c, proc):
        recs = state_records(c.xh)
        assert key_b not in recs, recs  # the vanished interface's record is dropped...
        assert not (c.xh.bpffs / "xdphooks/if" / key_b).exists()  # ...and its pins

    def restore_good():  # the follow-up reconcile: only the first veth is left
        c.xh.add_plugin("good", GOOD.format(ifaces=(c.iface,)))
    c.undo.append(restore_good)
    return Expect(b.iface, check=check, same_state=False)


SWAP_OBJECT = """
    import os
    @hookimpl
    def xdphooks_validate_chain(interface, chain):
        # runs after planning (the object was checked and digested), before the build:
        # the object is replaced, as a racing package transaction or an attacker would
        path = {path!r}
        with open(path + ".new", "wb") as f:
            f.write(open({other!r}, "rb").read())
        os.chmod(path + ".new", 0o644)
        os.replace(path + ".new", path)
"""


@kind("object_swapped_after_check")
def _(c):
    dst = c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(extra="", source=BAD.format(name="bg", obj="bg.o", prio=10, iface=c.iface,
                                         extra="")
             + textwrap.dedent(SWAP_OBJECT.format(path=str(dst),
                                                  other=str(c.bpf_obj("drop_icmp")))))
    return Expect(BADGUY)


@kind("interface_vanishes", setup=second_pair)
def _(c):
    b = c.pairs[0]
    return _vanishing(c, ["ip", "-n", b.ns_a, "link", "del", "dev", b.dev_a])


@kind("interface_vanishes_during_build", setup=second_pair)
def _(c):
    b = c.pairs[0]
    return _vanishing(c, ["ip", "-n", b.ns_a, "link", "del", "dev", b.dev_a],
                      hook=VANISH_DURING_BUILD)


@kind("netns_vanishes", setup=second_pair)
def _(c):
    b = c.pairs[0]
    return _vanishing(c, ["ip", "netns", "del", b.ns_a])


HOOK = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
    {body}
""")


@kind("plugin_raises")
def _(c):
    c.badguy(source=HOOK.format(body="    raise RuntimeError('database unreachable')"))
    return Expect(BADGUY)


@kind("plugin_wrong_type")
def _(c):
    c.badguy(source=HOOK.format(body="    return {'name': 'bg', 'object': 'bg.o'}"))
    return Expect(BADGUY)


@kind("plugin_hangs")
def _(c):
    c.badguy(source="import time\n" + HOOK.format(body="    time.sleep(600)"))
    return Expect(BADGUY)


@kind("plugin_import_error")
def _(c):
    c.badguy(source="from xdphooks import hookimpl\ndef xdphooks_programs(:\n    pass\n")
    return Expect(BADGUY)


@kind("too_many_programs")
def _(c):
    c.bad_object(c.bpf_obj("static_pass"))
    c.badguy(source=HOOK.format(body=(
        f"    return [XdpProgram(name=f'bg{{i}}', object='bg.o', priority=10,\n"
        f"                       interfaces=({c.iface!r},)) for i in range({abi.MAX_CHAIN + 1})]")))
    return Expect(BADGUY)


@kind("too_many_maps")
def _(c):
    c.bad_object(c.bpf_obj("bad_manymaps"))
    c.badguy()
    return Expect(BADGUY)


@kind("stack_too_deep")
def _(c):
    # fine alone; called, too deep over the root's frame (spliced, it would fit: the
    # 504 bytes share the root's frame, see tests/test_splice.py)
    c.bad_object(c.bpf_obj("bad_bigstack"))
    c.badguy(extra=", link='call'")
    return Expect(BADGUY, detail=("combined stack size",))


@kind("object_not_root_owned")
def _(c):
    os.chown(c.bad_object(c.bpf_obj("count_pass")), NOBODY, NOBODY)
    c.badguy()
    return Expect(BADGUY)


@kind("object_group_writable")
def _(c):
    os.chmod(c.bad_object(c.bpf_obj("count_pass")), 0o664)
    c.badguy()
    return Expect(BADGUY)


@kind("object_world_writable")
def _(c):
    os.chmod(c.bad_object(c.bpf_obj("count_pass")), 0o646)
    c.badguy()
    return Expect(BADGUY)


@kind("plugin_file_not_root_owned")
def _(c):
    c.bad_object(c.bpf_obj("count_pass"))
    os.chown(c.badguy(), NOBODY, NOBODY)
    return Expect(BADGUY)


def _evil(c: Ctx) -> tuple[Path, Path]:
    """A plugin file owned by nobody that would attach its own program if imported."""
    marker = c.scratch / "evil-ran"
    evil = c.nobody_file("evil/badguy.py", textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported as root")
        from xdphooks import XdpProgram, hookimpl
        @hookimpl
        def xdphooks_programs():
            return [XdpProgram(name="evil", object="count_pass.o", priority=1,
                               interfaces=({c.iface!r},))]
    """))
    return evil, marker


def _evil_not_run(c, proc):
    assert not (c.scratch / "evil-ran").exists(), "a file owned by nobody was imported as root"


@kind("symlink_plugin_file")
def _(c):
    evil, _ = _evil(c)
    os.symlink(evil, c.badguy_path)
    os.lchown(c.badguy_path, NOBODY, NOBODY)
    c.undo.append(lambda: c.badguy_path.unlink(missing_ok=True))
    return Expect(BADGUY, check=_evil_not_run)


@kind("symlink_plugin_dir")
def _(c):
    """/etc/xdphooks/plugins is a symlink planted by nobody, to nobody's directory
    (the file in it is root's: nobody can still swap it)."""
    evil, _ = _evil(c)
    os.chown(evil, 0, 0)
    os.chown(evil.parent, NOBODY, NOBODY)
    d = c.xh.admin_plugin_dir
    d.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(evil.parent, d)
    os.lchown(d, NOBODY, NOBODY)
    c.undo.append(lambda: d.unlink())
    return Expect(BADGUY, check=_evil_not_run)


@kind("symlink_race")
def _(c):
    """badguy.py is a proper root-owned file when discovery checks it; plugin 'aaswap'
    (imported first, between the check and badguy's import) swaps it for a symlink
    to a file owned by nobody."""
    evil, _ = _evil(c)
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy()
    swap = c.xh.add_plugin("aaswap", textwrap.dedent(f"""
        import os
        tmp = {str(c.badguy_path)!r} + ".new"
        os.symlink({str(evil)!r}, tmp)
        os.lchown(tmp, 65534, 65534)
        os.replace(tmp, {str(c.badguy_path)!r})
    """))
    c.undo.append(lambda: swap.unlink())
    return Expect(BADGUY, check=_evil_not_run)


@kind("corrupt_state")
def _(c):
    path = state_file(c.xh)
    path.write_text(path.read_text()[:200] + "\x00garbage")

    def check(c, proc):  # rebuilt from the kernel and the pins, as the protocol says
        assert json.loads(path.read_text())["version"] == 1
    return Expect(str(path), rc=0, check=check)


@kind("newer_state")
def _(c):
    path = state_file(c.xh)
    data = json.loads(path.read_text())
    data["version"] = 99
    newer = json.dumps(data).encode()
    path.write_bytes(newer)
    orig = json.dumps(dict(data, version=1)).encode()
    c.undo.append(lambda: path.write_bytes(orig))

    def check(c, proc):
        assert path.read_bytes() == newer  # never overwritten
    return Expect(str(path), check=check)


def run_dir(c: Ctx) -> Path:
    return c.xh.root / "run/xdphooks"


@kind("lock_dir_planted")
def _(c):
    d = run_dir(c)
    shutil.rmtree(d)
    d.mkdir(mode=0o777)
    os.chown(d, NOBODY, NOBODY)
    c.undo.append(lambda: shutil.rmtree(d))
    return Expect(str(d))


@kind("lock_symlink_planted")
def _(c):
    lock = run_dir(c) / "lock"
    lock.unlink()
    target = c.nobody_file("elsewhere/lock", "")
    os.symlink(target, lock)
    os.lchown(lock, NOBODY, NOBODY)
    c.undo.append(lambda: lock.unlink())
    return Expect(str(lock))


@kind("lock_file_foreign_owner")
def _(c):
    lock = run_dir(c) / "lock"
    os.chown(lock, NOBODY, NOBODY)
    c.undo.append(lambda: os.chown(lock, 0, 0))
    return Expect(str(lock))


@kind("no_bpffs_mount_refused")
def _(c):
    """An empty directory where no bpffs is mounted, and a process that may not mount:
    root without CAP_SYS_ADMIN (a confined container, say)."""
    d = c.scratch / "nobpffs"
    d.mkdir()
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin",
              sys.executable, "-m", "xdphooks"]
    return Expect(str(d), run=lambda c: c.run("reconcile", env={"XDPHOOKS_BPFFS": str(d)},
                                              prefix=prefix))


@kind("no_bpffs_not_a_directory")
def _(c):
    f = c.scratch / "bpffs-is-a-file"
    f.write_text("")
    return Expect(str(f), run=lambda c: c.run("reconcile", env={"XDPHOOKS_BPFFS": str(f)}))


@kind("non_root")
def _(c):
    def check(c, proc):
        before = state_file(c.xh).read_bytes()
        s = c.run("status", "--json", prefix=nobody_python())
        assert s.returncode == 0 and "Traceback" not in s.stderr, s.stderr
        data = json.loads(s.stdout)
        assert data["root"] is False
        (iface,) = data["interfaces"]
        assert [p["name"] for p in iface["programs"]] == ["counter"]
        assert iface["prog_id"] == attached_id(c.veth.ns_a, c.veth.dev_a)
        assert state_file(c.xh).read_bytes() == before  # read-only
    return Expect("needs root", check=check,
                  run=lambda c: c.run("reconcile", prefix=nobody_python()))


# --- issue 13: lost pins, lost state, mount namespaces, look-alikes, kernel refusals ---------


def lose_pins(c: Ctx) -> None:
    """The bpffs is lost and a fresh, empty one is mounted at the same place (a container
    restart, or a bpffs that lived in ip netns exec's private mount namespace)."""
    sh("umount", "-l", str(c.xh.bpffs))
    sh("mount", "-t", "bpf", "bpf", str(c.xh.bpffs))


def keep_state(c: Ctx) -> bytes:
    """The state file as it is now; the undo puts it back (the admin's backup)."""
    path = state_file(c.xh)
    data = path.read_bytes()
    c.undo.append(lambda: path.write_bytes(data))
    return data


def edit_record(c: Ctx, fn: Callable[[dict], None]) -> None:
    data = json.loads(keep_state(c))
    fn(data["interfaces"][f"{c.veth.ns_a}@{c.veth.dev_a}"])
    state_file(c.xh).write_text(json.dumps(data))


FOREIGN = "that xdphooks did not attach"


@kind("lost_pins")
def _(c):
    """Recognised by the ids in state.json, re-pinned from the kernel: converges, rc 0,
    and says what happened; the counter map keeps its contents."""
    before = read_counter(c.xh)
    lose_pins(c)

    def check(c, proc):
        assert read_counter(c.xh) >= before  # re-pinned, contents kept
        assert "nothing to do" in proc.stdout
    return Expect(c.iface, rc=0, check=check)


@kind("lost_state_and_pins")
def _(c):
    """Nothing records the chain any more: it is not provably ours, so it is left alone
    like any foreign program (restoring state.json from a backup is the fix)."""
    keep_state(c)
    state_file(c.xh).unlink()
    lose_pins(c)
    return Expect(FOREIGN, state_lost=True)


@kind("lost_pins_state_ids_tampered")
def _(c):
    """state.json names a map id the running program does not use: not recognised."""
    def bogus(rec):
        rec["pins"]["maps/counter/pkt_count"] += 1_000_000
    edit_record(c, bogus)
    lose_pins(c)
    return Expect(FOREIGN)


@kind("lost_pins_state_without_ids")
def _(c):
    """A state file from before issue 13 (no kernel ids recorded): nothing to recognise by."""
    def old(rec):
        for k in ("pins", "root_name", "root_tag"):
            rec.pop(k, None)
    edit_record(c, old)
    lose_pins(c)
    return Expect(FOREIGN)


@kind("private_mount_namespace")
def _(c):
    """Run inside a private mount namespace below a "host" one (a PID namespace's init,
    since this machine's PID 1 is not ours to inspect), with no bpffs mounted: the
    host's mount cannot show here, so it refuses instead of pinning into a bpffs that
    dies with the process."""
    d = c.scratch / "bpffs-private"
    d.mkdir()
    # the shell stays PID 1 in the "host" namespace ('; exit' keeps it from exec'ing)
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--propagation=private",
              "/bin/sh", "-c", 'unshare --mount --propagation=private "$@"; exit $?', "sh",
              sys.executable, "-m", "xdphooks"]
    return Expect(str(d), run=lambda c: c.run("reconcile", env={"XDPHOOKS_BPFFS": str(d)},
                                              prefix=prefix))


def new_pair(c: Ctx):
    pair = make_veth_pair("r")
    c.pairs.append(pair)
    return pair


def load_prog(c: Ctx, name: str, prog: str):
    from xdphooks.kernel import libbpf

    obj = libbpf.BpfObject(str(c.bpf_obj(name)))
    obj.load()
    c.undo.append(obj.close)
    return obj.program(prog).fd


@kind("foreign_program_named_like_ours")
def _(c):
    """Another interface runs a program named xdphooks_root with maps named xdph_counters
    and xdph_events: a name proves nothing, it is foreign."""
    from xdphooks.kernel import libbpf
    from xdphooks.kernel.netns import netns

    b = new_pair(c)
    fd = load_prog(c, "foreign_root", "xdphooks_root")
    with netns(b.ns_a):
        libbpf.xdp_attach(socket.if_nametoindex(b.dev_a), fd, libbpf.XDP_FLAGS_DRV_MODE)
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=b.iface)
    return Expect(f"{b.iface} already runs XDP program id")


@kind("jumbo_mtu_non_frags_program")
def _(c):
    """A veth whose peer has a 9000-byte MTU: the kernel refuses a program without
    multi-buffer support (ERANGE, with its own reason in the extack)."""
    b = new_pair(c)
    sh("ip", "-n", b.ns_b, "link", "set", b.dev_b, "mtu", "9000")
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=b.iface)

    def check(c, proc):
        assert "(ERANGE; the kernel says:" in proc.stderr and "MTU" in proc.stderr
        assert "not built for it" in proc.stderr and "xdp.frags" in proc.stderr
    return Expect(b.iface, check=check)


@kind("native_xdp_unsupported")
def _(c):
    """A bridge has no native XDP: EOPNOTSUPP, and the fix names xdp_mode = "skb"."""
    br = f"br{uuid.uuid4().hex[:6]}"
    sh("ip", "-n", c.veth.ns_a, "link", "add", br, "type", "bridge")
    c.undo.append(lambda: sh("ip", "-n", c.veth.ns_a, "link", "del", br, check=False))
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=f"{c.veth.ns_a}/{br}")

    def check(c, proc):
        assert "(EOPNOTSUPP)" in proc.stderr and 'xdp_mode = "skb"' in proc.stderr, proc.stderr
    return Expect(f"{c.veth.ns_a}/{br}", check=check)


@kind("takeover_blocked_by_bpf_link")
def _(c):
    """--takeover of an interface another tool holds through a bpf_link: netlink cannot
    replace it (EBUSY); the fix names bpftool."""
    from xdphooks.kernel import libbpf
    from xdphooks.kernel.netns import netns

    b = new_pair(c)
    fd = load_prog(c, "count_pass", "count_pass")
    with netns(b.ns_a):
        link = libbpf._lib.bpf_link_create(fd, socket.if_nametoindex(b.dev_a),
                                           libbpf.BPF_XDP, None)
    assert link >= 0
    c.undo.append(lambda: os.close(link))
    c.bad_object(c.bpf_obj("count_pass"))
    c.badguy(iface=b.iface)

    def check(c, proc):
        assert "(EBUSY)" in proc.stderr and "bpftool link" in proc.stderr, proc.stderr
    return Expect(b.iface, check=check, run=lambda c: c.run("reconcile", "--takeover"))


# --- the test ------------------------------------------------------------------------------


def ping(veth, n: int = 3) -> subprocess.CompletedProcess:
    return veth.exec_b("ping", "-c", str(n), "-i", "0.05", "-W", "1", veth.ip_a, check=False)


@pytest.mark.parametrize("name", list(KINDS))
def test_bad_input(name, xh, veth, bpf_obj):
    scratch = xh.root.parent / "scratch"
    scratch.mkdir(mode=0o755)
    c = Ctx(xh, veth, bpf_obj, scratch, good_ifaces=[veth.iface])
    try:
        # a) a good chain runs
        xh.write_config(c.config)
        xh.add_object(bpf_obj("count_pass"), "count_pass.o")
        if name in SETUPS:
            SETUPS[name](c)
        xh.add_plugin("good", GOOD.format(ifaces=tuple(c.good_ifaces)))
        xh.run("reconcile")
        pid = attached_id(veth.ns_a, veth.dev_a)
        assert pid > 0
        records = state_records(xh)
        assert records[f"{veth.ns_a}@{veth.dev_a}"][0] == pid

        # b) the bad input
        exp = KINDS[name](c)

        # c) one line naming the culprit and the fix, the documented exit code
        proc = exp.run(c) if exp.run else c.run("reconcile")
        out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert proc.returncode == exp.rc, out
        assert "Traceback" not in proc.stdout + proc.stderr, out
        lines = proc.stderr.splitlines()
        hits = [i for i, ln in enumerate(lines) if exp.who in ln and " fix: " in ln]
        assert hits, f"no line names {exp.who!r} with a fix\n{out}"
        if os.environ.get("XDPHOOKS_SHOW_MESSAGES"):
            print(f"\n[{name}] exit {proc.returncode}:\n{proc.stderr}")
        for i in hits:
            assert len(lines[i].split(" fix: ", 1)[1].strip()) >= 10, out
        assert len(lines) == len(set(lines)), f"something said twice\n{out}"
        beneath = [ln for ln in lines if not ln.startswith("xdphooks: ")]
        if exp.detail:  # the verifier's own last lines, not libbpf's chatter
            assert any(d in ln for d in exp.detail for ln in beneath), out
            assert not [ln for ln in beneath if ln.startswith("libbpf:")], out
            first = lines.index(beneath[0])
            assert first - 1 in hits, f"the verifier's lines must follow the error\n{out}"
        else:
            assert beneath == [], f"more than one line per message\n{out}"

        # d) the running chain is untouched and still counts packets
        assert attached_id(veth.ns_a, veth.dev_a) == pid, out
        n0 = read_counter(xh, veth)
        assert ping(veth).returncode == 0
        assert read_counter(xh, veth) >= n0 + 3
        if exp.state_lost:
            pass
        elif exp.same_state:
            assert state_records(xh) == records, out
        else:
            assert state_records(xh)[f"{veth.ns_a}@{veth.dev_a}"] == \
                records[f"{veth.ns_a}@{veth.dev_a}"]
        if exp.check:
            exp.check(c, proc)
    finally:
        for fn in reversed(c.undo):
            fn()
        c.undo.clear()
        for pair in c.pairs:
            destroy_veth_pair(pair.ns_a, pair.ns_b)

    # ... and converges again once the bad input is gone
    again = xh.run("reconcile")
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    assert attached_id(veth.ns_a, veth.dev_a) == pid
    assert state_records(xh)[f"{veth.ns_a}@{veth.dev_a}"] == records[f"{veth.ns_a}@{veth.dev_a}"]
    assert len(KINDS) >= 50
