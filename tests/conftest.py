"""Shared fixtures: private roots, a private bpffs, and namespaced veth pairs.

Nothing here touches the host's interfaces, /etc or /sys/fs/bpf: every test
gets its own ``--root`` and bpffs mount, and every namespace it creates is
removed even when the test fails.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from xdphooks.model import ChainEntry, Link, VerdictPolicy
from xdphooks.paths import Paths

# the VM suites start in the background when the session starts (tests/vm_suites.py)
pytest_plugins = ["vm_suites"]

REPO = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def sh(*argv: str, check: bool = True, env: dict | None = None, timeout: float | None = None,
       **kw) -> subprocess.CompletedProcess:
    """Run a command given as an argv list (never a shell string), output captured, no
    stdin; ``check``: a non-zero exit fails with the command's output."""
    proc = subprocess.run(list(argv), text=True, capture_output=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def entry(name: str, obj, policy: str | VerdictPolicy | None = None, program: str | None = None,
          priority: int = 50, pin_maps=None, plugin: str | None = None,
          link: str = "splice") -> ChainEntry:
    """A resolved chain entry for backend tests: plugin ``test-NAME``, the object's digest."""
    pol = VerdictPolicy.parse(policy) if isinstance(policy, str) else policy or VerdictPolicy()
    return ChainEntry(name, plugin or f"test-{name}", str(obj), program, priority, pol,
                      pin_maps=pin_maps, digest=digest(obj), link=Link(link))


def have_kernel_bpf() -> str | None:
    """None if this machine can run the kernel tests, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "iproute2 missing"
    return None


def require_kernel() -> None:
    why = have_kernel_bpf()
    if why:
        # Loud on purpose: CI sets XDPHOOKS_REQUIRE_KERNEL so a skip is a failure.
        if os.environ.get("XDPHOOKS_REQUIRE_KERNEL"):
            pytest.fail(f"KERNEL TESTS CANNOT RUN: {why}")
        pytest.skip(f"KERNEL TESTS SKIPPED: {why}")


@dataclass
class VethPair:
    """Two namespaces joined by a veth: ``ns_a/dev_a`` (where chains go) <-> ``ns_b/dev_b``."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    ip_a: str
    ip_b: str

    @property
    def iface(self) -> str:
        """The ``NETNS/IFNAME`` spelling xdphooks uses for the chain side."""
        return f"{self.ns_a}/{self.dev_a}"

    def exec_a(self, *argv: str, **kw):
        return sh("ip", "netns", "exec", self.ns_a, *argv, **kw)

    def exec_b(self, *argv: str, **kw):
        return sh("ip", "netns", "exec", self.ns_b, *argv, **kw)

    def attached_id(self) -> int:
        """Id of the XDP program on the chain side (0: none), as ip link shows it."""
        link = json.loads(sh("ip", "-j", "-n", self.ns_a, "link", "show", "dev",
                             self.dev_a).stdout)[0]
        return (link.get("xdp") or {}).get("prog", {}).get("id", 0)


def make_veth_pair(tag: str = "t") -> VethPair:
    n = next(_counter)
    uid = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"xh{tag}{uid}a", f"xh{tag}{uid}b"
    dev_a, dev_b = f"xa{uid}", f"xb{uid}"
    octet = 1 + (os.getpid() * 7 + n) % 250
    ip_a, ip_b = f"198.18.{octet}.1", f"198.18.{octet}.2"
    sh("ip", "netns", "add", ns_a)
    try:
        sh("ip", "netns", "add", ns_b)
        sh("ip", "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
           "netns", ns_b)
        sh("ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", dev_a)
        sh("ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", dev_b)
        for ns, dev in ((ns_a, dev_a), (ns_b, dev_b)):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # veth native XDP needs the peer to have an XDP program or GRO for XDP_TX/REDIRECT;
        # PASS/DROP need nothing more.
    except Exception:
        destroy_veth_pair(ns_a, ns_b)
        raise
    return VethPair(ns_a, ns_b, dev_a, dev_b, ip_a, ip_b)


def destroy_veth_pair(*namespaces: str) -> None:
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def veth():
    require_kernel()
    pair = make_veth_pair()
    try:
        yield pair
    finally:
        destroy_veth_pair(pair.ns_a, pair.ns_b)


@dataclass(frozen=True)
class XdphooksEnv(Paths):
    """A private xdphooks installation (its Paths: root dir, bpffs mount) and a runner."""

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XDPHOOKS_ROOT"] = str(self.root)
        env["XDPHOOKS_BPFFS"] = str(self.bpffs)
        env.pop("XDPHOOKS_LIBDIR", None)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "xdphooks", *args], env=self.env,
                              text=True, capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"xdphooks {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def write_config(self, text: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)

    def add_plugin(self, name: str, source: str, admin: bool = False) -> Path:
        d = self.admin_plugin_dir if admin else self.plugin_dir
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{name}.py"
        path.write_text(source)
        os.chmod(path, 0o644)
        return path

    def add_object(self, src: Path, name: str | None = None) -> Path:
        self.bpf_dir.mkdir(parents=True, exist_ok=True)
        dst = self.bpf_dir / (name or src.name)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
        return dst


@pytest.fixture
def xh(tmp_path_factory):
    """A private root and a private bpffs mount; torn down afterwards."""
    require_kernel()
    base = Path(f"/tmp/xh-{uuid.uuid4().hex[:8]}")
    root, bpffs = base / "root", base / "bpffs"
    root.mkdir(parents=True)
    os.chmod(base, 0o755)
    bpffs.mkdir()
    sh("mount", "-t", "bpf", "bpf", str(bpffs))
    env = XdphooksEnv(root, bpffs)
    try:
        yield env
    finally:
        env.run("teardown", "--all", check=False)
        sh("umount", "-l", str(bpffs), check=False)
        shutil.rmtree(base, ignore_errors=True)


# --- BPF objects used by the tests ------------------------------------------------

TEST_BPF = REPO / "tests" / "bpf"
BUILD = REPO / "build" / "tests-bpf"


def build_test_object(name: str) -> Path:
    """Compile tests/bpf/<name>.bpf.c (cached by mtime) and return the .o path."""
    src = TEST_BPF / f"{name}.bpf.c"
    out = BUILD / f"{name}.bpf.o"
    # A source may #include another test source or a bpf/ header: any newer one rebuilds.
    newest = max(p.stat().st_mtime for p in [src, *TEST_BPF.glob("*.bpf.c"),
                                             *(REPO / "bpf").glob("*.h")])
    if not out.exists() or out.stat().st_mtime < newest:
        BUILD.mkdir(parents=True, exist_ok=True)
        sh("clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
           f"-I{REPO / 'bpf'}", "-c", str(src), "-o", str(out))
    return out


@pytest.fixture(scope="session")
def bpf_obj():
    return build_test_object


#: a drop-in plugin declaring one program; extra XdpProgram fields go in ``extra``
#: (Python source, e.g. "constants={'x': 1}")
ONE_PROGRAM_PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, VerdictPolicy, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio},
                           interfaces=({iface!r},), {extra})]
""")


def one_program(name: str, obj: str, prio: int, iface: str, extra: str = "") -> str:
    return ONE_PROGRAM_PLUGIN.format(name=name, obj=obj, prio=prio, iface=iface, extra=extra)


def mode_config(mode: str) -> str:
    """xdphooks.toml for a backend test: freplace tests run in skb mode (as the rest of
    the VM suite), static ones natively."""
    return f'mode = "{mode}"\n' + ('xdp_mode = "skb"\n' if mode == "freplace" else "")
