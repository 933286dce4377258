"""Helpers for the package tests (tests/test_pkg_*.py): build packages, run real
dnf/rpm/dpkg/apt transactions against a private xdphooks root, and clean up.

How a package test stays off the host's xdphooks:

- The packages install for real (/usr/bin/xdphooks, /usr/lib/xdphooks/...),
  but every transaction runs with ``XDPHOOKS_ROOT`` (config, state, lock under
  a private directory), ``XDPHOOKS_LIBDIR=/usr/lib/xdphooks`` (the files the
  packages installed) and ``XDPHOOKS_BPFFS`` (a private bpffs mount) in its
  environment. rpm (sh and Lua scriptlets), dnf, dpkg and apt pass the
  environment through to scriptlets and triggers unchanged; this is checked
  by ``test_pkg_env_reaches_scriptlets``.
- Tests refuse to run if xdphooks packages or /usr/lib/xdphooks already exist
  on the machine, and remove every package they installed, even on failure.
- Reconcile runs are counted with a probe plugin dropped into the private
  root's admin plugin directory (``<root>/etc/xdphooks/plugins``): it appends a
  line to ``<root>/runs.log`` whenever a ``reconcile`` loads plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import sh
from xdphooks.paths import Paths

REPO = Path(__file__).resolve().parent.parent
PKG_OUT = REPO / "build" / "pkgs"
LIBDIR = Path("/usr/lib/xdphooks")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 300

# Packages the tests may install; all of them are removed in teardown.
RPM_NAMES = ("xdphooks", "xdphooks-firewall", "xdphooks-counter", "xdphooks-txbuggy",
             "xdphooks-example", "xdphooks-broken", "xdphooks-rpm-macros")
DEB_NAMES = ("xdphooks-firewall", "xdphooks-counter", "xdphooks-txbuggy", "xdphooks-example",
             "xdphooks-broken", "xdphooks", "dh-xdphooks")

RUN_PROBE = '''\
"""Test probe (tests/pkg_support.py): counts reconcile runs in <root>/runs.log."""
import json, os, sys, time
from xdphooks import hookimpl

@hookimpl
def xdphooks_programs():
    if "reconcile" in sys.argv:
        with open(os.path.join(os.environ["XDPHOOKS_ROOT"], "runs.log"), "a") as fh:
            fh.write(json.dumps({"time": time.time(), "argv": sys.argv[1:],
                                 "dpkg": os.environ.get("DPKG_MAINTSCRIPT_PACKAGE", "")}) + "\\n")
    return []
'''


# --- preconditions ----------------------------------------------------------------


def tools_missing() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for tool in ("rpmbuild", "dnf", "dpkg-buildpackage", "apt-get", "clang", "bpftool", "ip"):
        if shutil.which(tool, path=CLEAN_PATH) is None:
            return f"{tool} missing"
    for mod in ("pluggy", "filelock", "pyroute2"):
        if sh("/usr/bin/python3", "-c", f"import {mod}", check=False).returncode:
            return f"/usr/bin/python3 cannot import {mod} (apt-get install python3-{mod})"
    return None


def require_pkg_tools() -> None:
    why = tools_missing()
    if why:
        if os.environ.get("XDPHOOKS_REQUIRE_KERNEL") or os.environ.get("XDPHOOKS_REQUIRE_PKG"):
            pytest.fail(f"PACKAGE TESTS CANNOT RUN: {why}")
        pytest.skip(f"PACKAGE TESTS SKIPPED: {why}")


def installed_rpms() -> list[str]:
    out = sh("rpm", "-qa", "--qf", "%{NAME}\n", check=False).stdout.split()
    return [n for n in out if n in RPM_NAMES]


def installed_debs() -> list[str]:
    out = sh("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *DEB_NAMES,
             check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if len(line.split()) > 1 and line.split()[1][:2] != "un"]


def refuse_if_host_has_xdphooks() -> None:
    """Never run over a real installation: its state and chains are not ours."""
    if installed_rpms() or installed_debs():
        pytest.fail(f"xdphooks packages are installed on this machine "
                    f"({installed_rpms() + installed_debs()}); the package tests would "
                    f"replace them. Remove them first (or a previous run left them: "
                    f"`dnf remove 'xdphooks*'`, `dpkg -P xdphooks-* xdphooks dh-xdphooks`).")
    if LIBDIR.exists() and any(LIBDIR.rglob("*.py")):
        pytest.fail(f"{LIBDIR} exists without an xdphooks package; refusing to touch it")


# --- building -------------------------------------------------------------------


def build(*args: str, out: Path = PKG_OUT) -> dict:
    """packaging/build_all.py into OUT (cached); returns {fmt: {package: path}}.

    ``XDPHOOKS_PKG_PYTHON_SRC=DIR`` builds the framework from another copy of
    the xdphooks package (e.g. with a local fix) instead of the working tree's.
    """
    if os.environ.get("XDPHOOKS_PKG_PYTHON_SRC"):
        args = ("--python-src", os.environ["XDPHOOKS_PKG_PYTHON_SRC"], *args)
    proc = sh("/usr/bin/python3", str(REPO / "packaging" / "build_all.py"), "--out", str(out),
              *args, timeout=900)
    manifest = json.loads((out / "manifest.json").read_text())
    return {fmt: {name: out / f for name, f in files.items()} for fmt, files in manifest.items()
            } | {"_log": proc.stderr}


def build_test_set(tmp: Path | None = None) -> dict:
    """Everything the transaction tests install: the normal set, firewall 1.1 and
    the verifier-rejected "broken" plugin (made from plugins/template)."""
    broken = make_broken_plugin(tmp or REPO / "build" / "test-plugins")
    return {
        "v10": build(),
        "v11": build("--only", "firewall", "--version", "firewall=1.1",
                     out=REPO / "build" / "pkgs-test-v11"),
        "broken": build("--only", "broken", "--plugin-dir", str(broken),
                        out=REPO / "build" / "pkgs-test-broken"),
        "fw-next": build("--only", "xdphooks", "--version", "xdphooks=0.1.1",
                         out=REPO / "build" / "pkgs-test-fw-next"),
    }


def make_broken_plugin(dest: Path) -> Path:
    """Copy plugins/template as plugin "broken", whose program the verifier rejects.

    Also exercises the template workflow: copy, rename, build.
    """
    src = REPO / "plugins" / "template"
    d = dest / "broken"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("*.bpf.o", "__pycache__"))
    for path in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            text = path.read_text()
            path.write_text(text.replace("example", "broken"))
        if "example" in path.name:
            path.rename(path.with_name(path.name.replace("example", "broken")))
    c = d / "broken.bpf.c"
    # Reads packet data without a bounds check: the verifier refuses the load.
    c.write_text(c.read_text().replace(
        "\treturn XDP_PASS;\n}",
        "\treturn *(unsigned char *)(long)ctx->data == 0xff ? XDP_DROP : XDP_PASS;\n}"))
    return d


# --- a private xdphooks root driven through real transactions ---------------------


@dataclass
class PkgEnv:
    base: Path
    veth: object  # conftest.VethPair

    @property
    def paths(self) -> Paths:
        """Where the packaged xdphooks keeps things in this test (XDPHOOKS_* below)."""
        return Paths(self.base / "root", self.base / "bpffs", LIBDIR)

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def bpffs(self) -> Path:
        return self.paths.bpffs

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDPHOOKS_", "PYTHON"))}
        env.update(PATH=CLEAN_PATH, LC_ALL="C.UTF-8",
                   XDPHOOKS_ROOT=str(self.root), XDPHOOKS_LIBDIR=str(LIBDIR),
                   XDPHOOKS_BPFFS=str(self.bpffs), XDPHOOKS_NO_SYSLOG="1",
                   DEBIAN_FRONTEND="noninteractive")
        return env

    # -- setup / teardown
    def setup(self) -> None:
        self.paths.admin_plugin_dir.mkdir(parents=True)
        os.chmod(self.base, 0o755)
        self.bpffs.mkdir()
        sh("mount", "-t", "bpf", "bpf", str(self.bpffs))
        self.write_config()
        (self.paths.admin_plugin_dir / "zz_runprobe.py").write_text(RUN_PROBE)

    def write_config(self, extra: str = "") -> None:
        self.paths.config_file.write_text(
            f'default_interfaces = ["{self.veth.iface}"]\n{extra}')

    def cleanup(self) -> list[str]:
        """Remove every package (with the test env, so removal scripts use this root)."""
        problems = []
        rpms = installed_rpms()
        if rpms:
            p = self.dnf("remove", *rpms, check=False)
            if p.returncode:
                problems.append(f"dnf remove: {p.stdout}{p.stderr}")
                sh("rpm", "-e", "--nodeps", "--noscripts", *installed_rpms(), check=False)
        debs = installed_debs()
        if debs:
            p = self.run("dpkg", "--purge", *debs, check=False)
            if p.returncode:
                problems.append(f"dpkg --purge: {p.stdout}{p.stderr}")
        if installed_rpms() or installed_debs():
            problems.append(f"still installed: {installed_rpms() + installed_debs()}")
        sh("umount", "-l", str(self.bpffs), check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        return problems

    # -- commands
    def run(self, *argv: str, check: bool = True, timeout: float = TIMEOUT
            ) -> subprocess.CompletedProcess:
        return sh(*argv, check=check, env=self.env, timeout=timeout)

    def dnf(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dnf", "-y", "-q", "--setopt=reposdir=/nonexistent",
                        "--setopt=install_weak_deps=False", "--releasever=1", *args,
                        check=check)

    def apt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                        "--no-install-recommends", *args, check=check)

    def dpkg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dpkg", *args, check=check)

    def xdphooks(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("/usr/bin/xdphooks", *args, check=check)

    # -- observations
    def status(self) -> dict:
        return json.loads(self.xdphooks("status", "--json").stdout)

    def chain(self) -> list[str]:
        """Program names running on the test veth, in order ([] if no chain)."""
        for iface in self.status().get("interfaces", []):
            if iface.get("name") == self.veth.dev_a and iface.get("netns") == self.veth.ns_a:
                return [p["name"] for p in iface.get("programs", [])]
        return []

    def iface_status(self) -> dict:
        for iface in self.status().get("interfaces", []):
            if iface.get("name") == self.veth.dev_a and iface.get("netns") == self.veth.ns_a:
                return iface
        return {}

    def runs(self) -> list[dict]:
        log = self.root / "runs.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    def state(self) -> dict:
        f = self.paths.state_file
        return json.loads(f.read_text()) if f.exists() else {}

    def generation(self) -> int:
        return int(self.state().get("generation", 0))

    def attached_prog_id(self) -> int | None:
        """The XDP program the kernel has on the test veth (independent of xdphooks)."""
        out = sh("ip", "-n", self.veth.ns_a, "-j", "link", "show", "dev", self.veth.dev_a).stdout
        xdp = json.loads(out)[0].get("xdp") or {}
        return xdp.get("prog", {}).get("id") or (xdp.get("attached") or [{}])[0].get(
            "prog", {}).get("id")

    # -- the firewall's blocklist, through its pin
    @property
    def blocklist_pin(self) -> Path:
        return self.paths.map_pin_dir("firewall") / "blocklist"

    def block(self, ip: str) -> None:
        key = ip.split(".")
        sh("bpftool", "map", "update", "pinned", str(self.blocklist_pin), "key", *key,
           "value", *["0"] * 8)

    def blocklist(self) -> dict[str, int]:
        out = json.loads(sh("bpftool", "-j", "map", "dump", "pinned",
                            str(self.blocklist_pin)).stdout)
        res = {}
        for e in out:
            k = e.get("key") or e.get("formatted", {}).get("key")
            v = e.get("value") or e.get("formatted", {}).get("value")
            if isinstance(k, list):
                k = ".".join(str(int(b, 16)) for b in k)
            if isinstance(v, list):
                v = int.from_bytes(bytes(int(b, 16) for b in v), "little")
            res[str(k)] = int(v)
        return res

    def ping_ok(self) -> bool:
        """Can the peer reach the chain side? (ICMP, three tries, 1 s each.)"""
        for _ in range(3):
            if self.veth.exec_b("ping", "-c", "1", "-W", "1", self.veth.ip_a,
                                check=False).returncode == 0:
                return True
        return False


def pkg_env(veth, tag: str):
    """Fixture body: a PkgEnv with private root/bpffs; every package removed afterwards."""
    require_pkg_tools()
    refuse_if_host_has_xdphooks()
    base = Path(f"/tmp/xhpkg-{tag}-{uuid.uuid4().hex[:8]}")
    env = PkgEnv(base, veth)
    env.setup()
    try:
        yield env
    finally:
        problems = env.cleanup()
        if problems:
            raise AssertionError("package test cleanup: " + "; ".join(problems))


def wait_for(pred, timeout: float = 5.0, step: float = 0.1):
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


__all__ = ["PkgEnv", "build", "build_test_set", "make_broken_plugin", "pkg_env",
           "require_pkg_tools", "sh", "wait_for", "installed_debs", "installed_rpms", "REPO",
           "PKG_OUT"]


def package_set(fmt: str) -> dict[str, Path]:
    """The packages the transaction tests install, by short name, for "rpm" or "deb"."""
    require_pkg_tools()
    sets = build_test_set()
    v10 = sets["v10"][fmt]
    return {"xdphooks": v10["xdphooks"],
            **{n.removeprefix("xdphooks-"): p for n, p in v10.items() if n.startswith("xdphooks-")},
            "firewall-1.1": sets["v11"][fmt]["xdphooks-firewall"],
            "broken": sets["broken"][fmt]["xdphooks-broken"],
            "xdphooks-next": sets["fw-next"][fmt]["xdphooks"]}


def fixtures(fmt: str, tag: str | None = None):
    """The ``pkgs`` (module scope) and ``env`` fixtures of a package test module:
    ``pkgs, env = pkg_support.fixtures("rpm")``."""

    @pytest.fixture(scope="module")
    def pkgs():
        return package_set(fmt)

    @pytest.fixture
    def env(veth):
        yield from pkg_env(veth, tag or fmt)

    return pkgs, env
