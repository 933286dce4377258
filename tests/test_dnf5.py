"""Real dnf5 transactions (issue 25): the framework and sample plugin rpms installed,
upgraded and removed with Debian sid's dnf5 in a sid root (tests/dnf5/build-root.sh,
debootstrapped once and cached), against a namespaced veth of this host.

The root runs as a small container, not a chroot: ``unshare --mount --pid --fork
--root=ROOT --mount-proc``, so its first process is its PID 1 and xdphooks sees a running
system (in a chroot it would only record a pending reconcile for the next boot, which is
what the ``--installroot`` test checks). It shares this host's kernel and network
namespace; the veths live in namespaces of their own (bind-mounted /run/netns), and
xdphooks gets a private bpffs and a private XDPHOOKS_ROOT inside the root. Everything is
a mount of this test (an overlay over the cached root), undone at the end.

Asserted from xdphooks' change log (``xdphooks history --json``): one change per
transaction, made by the rpm file triggers (an upgrade fires two trigger runs, the second
finds nothing to do); the actions line's callback, filter and options
(rpm/xdphooks.actions) select each online transaction once and no ``--installroot`` one.
The dnf5 version that ran is printed (docs/kernels.md records it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

import pkg_support as pu
from conftest import sh

pytestmark = [pytest.mark.pkg, pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BUILD_ROOT = REPO / "tests" / "dnf5" / "build-root.sh"
XH_ROOT = "/xh/root"  # XDPHOOKS_ROOT inside the container
XH_BPFFS = "/xh/bpffs"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def sid_root():
    proc = sh("bash", str(BUILD_ROOT), check=False, timeout=3000)
    if proc.returncode != 0:
        why = f"no dnf5 root: {proc.stderr.strip()} — fix: see tests/dnf5/build-root.sh"
        if os.environ.get("XDPHOOKS_REQUIRE_PKG"):
            pytest.fail(why)
        pytest.skip("DNF5 TESTS SKIPPED: " + why)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pkgs():
    return pu.package_set("rpm")


class Box:
    """An overlay of the sid root, run as a container (see the module's docstring)."""

    def __init__(self, lower: Path, veth) -> None:
        self.base = Path(f"/tmp/xh-dnf5-{uuid.uuid4().hex[:8]}")
        self.veth = veth
        self.top = self.base / "merged"
        self.mounts: list[Path] = []
        for d in ("upper", "work", "merged", "oupper", "owork"):
            (self.base / d).mkdir(parents=True)
        self._mount("-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={self.base / 'upper'},workdir={self.base / 'work'}",
                    target=self.top)
        self._mount("--bind", "/dev", target=self.top / "dev")
        self._mount("--bind", "/sys", target=self.top / "sys")
        (self.top / "run/netns").mkdir(parents=True, exist_ok=True)
        self._mount("--rbind", "/run/netns", target=self.top / "run/netns")
        self._mount("-t", "bpf", "bpf", target=self.top / XH_BPFFS.lstrip("/"))
        # the offline target of --installroot: another overlay of the same root
        self._mount("-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={self.base / 'oupper'},workdir={self.base / 'owork'}",
                    target=self.top / "offline")
        shutil.copyfile("/etc/resolv.conf", self.top / "etc/resolv.conf")
        for root in (self.top, self.top / "offline"):
            cfg = root / XH_ROOT.lstrip("/") / "etc/xdphooks"
            (cfg / "plugins").mkdir(parents=True)
            (cfg / "xdphooks.toml").write_text(f'default_interfaces = ["{veth.iface}"]\n')
            (cfg / "plugins" / "zz_runprobe.py").write_text(pu.RUN_PROBE)
        (self.top / "xh/pkgs").mkdir(parents=True)

    def _mount(self, *args: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        sh("mount", *args, str(target))
        self.mounts.append(target)

    def close(self) -> None:
        for m in reversed(self.mounts):
            sh("umount", "-R", "-l", str(m), check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def add_action_probe(self) -> None:
        """An actions file beside the package's: rpm/xdphooks.actions' callback, package
        filter, direction and options, with a command that leaves one file per run.
        (dnf5 reads an action's stdout as its own protocol, so the `status --brief` report
        of the real line is not shown; what the options select is what this counts.)"""
        line = next(ln for ln in (REPO / "rpm" / "xdphooks.actions").read_text().splitlines()
                    if ln.strip() and not ln.startswith("#"))
        head = ":".join(line.split(":")[:4])
        d = self.top / "etc/dnf/libdnf5-plugins/actions.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / "zz-xdphooks-test.actions").write_text(f"{head}:/usr/bin/mktemp /tmp/xh-action.XXXXXX\n")

    def action_runs(self) -> int:
        return len(list((self.top / "tmp").glob("xh-action.*")))

    def add_rpm(self, path: Path) -> str:
        shutil.copyfile(path, self.top / "xh/pkgs" / path.name)
        return f"/xh/pkgs/{path.name}"

    def run(self, *argv: str, check: bool = True, timeout: float = 600):
        env = {"PATH": PATH, "LC_ALL": "C.UTF-8", "XDPHOOKS_ROOT": XH_ROOT,
               "XDPHOOKS_BPFFS": XH_BPFFS, "XDPHOOKS_LIBDIR": "/usr/lib/xdphooks",
               "XDPHOOKS_NO_SYSLOG": "1"}
        return sh("unshare", "--mount", "--pid", "--fork", f"--root={self.top}", "--mount-proc",
                  "--", "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv,
                  check=check, timeout=timeout)

    def dnf5(self, *args: str, check: bool = True):
        # the "local" plugin (sid enables it) runs createrepo_c after each transaction to
        # keep a repository of what was installed: no part of this test, and it fails here
        return self.run("dnf5", "-y", "--setopt=reposdir=/nonexistent", "--disable-plugin=local",
                        "--setopt=install_weak_deps=False", "--releasever=1", *args, check=check)

    def history(self, root: str = "") -> list[dict]:
        log = self.top / root.lstrip("/") / XH_ROOT.lstrip("/") / "var/lib/xdphooks/changes.log"
        if not log.exists():
            return []
        # the command while the framework is installed; after its erase, the file it reads
        cli = not root and (self.top / "usr/bin/xdphooks").exists()
        proc = self.run("/usr/bin/xdphooks", "history", "--json") if cli else None
        lines = proc.stdout.splitlines() if proc else log.read_text().splitlines()
        return [json.loads(ln) for ln in lines if ln.strip()]

    def runs(self, root: str = "") -> list[dict]:
        log = self.top / root.lstrip("/") / XH_ROOT.lstrip("/") / "runs.log"
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    def chain(self) -> list[str]:
        status = json.loads(self.run("/usr/bin/xdphooks", "status", "--json").stdout)
        for iface in status.get("interfaces", []):
            if iface.get("name") == self.veth.dev_a and iface.get("netns") == self.veth.ns_a:
                return [p["name"] for p in iface.get("programs", [])]
        return []


@pytest.fixture
def box(sid_root, veth):
    b = Box(sid_root, veth)
    try:
        yield b
    finally:
        # erase what is still installed, so no chain stays on the veth
        b.dnf5("remove", "xdphooks*", check=False)
        b.close()


def test_dnf5_transactions_reconcile_once_each(box, pkgs):
    version = box.run("dnf5", "--version").stdout.strip().splitlines()[0]
    print(f"dnf5 that ran: {version}")  # evidence for -rA; docs/kernels.md records it
    assert version.startswith("dnf5 version 5."), version
    fw, firewall, counter = (box.add_rpm(pkgs[n]) for n in ("xdphooks", "firewall", "counter"))
    fw11 = box.add_rpm(pkgs["firewall-1.1"])

    box.add_action_probe()

    def transaction(*args: str) -> tuple[str, list[dict], list[dict]]:
        h0, r0, a0 = len(box.history()), len(box.runs()), box.action_runs()
        p = box.dnf5(*args)
        out = p.stdout + p.stderr
        # rpm/xdphooks.actions' post_transaction line: once per transaction
        assert box.action_runs() - a0 == 1, f"actions line ran {box.action_runs() - a0} times"
        print(f"dnf5 {' '.join(args)}: {len(box.runs()) - r0} trigger run(s), "
              f"{len(box.history()) - h0} change(s), 1 actions run")
        return out, box.history()[h0:], box.runs()[r0:]

    # install: the file triggers reconcile once; one change; the actions line reports
    out, changes, runs = transaction("install", fw, firewall)
    assert [r["argv"] for r in runs] == [["reconcile", "--trigger=rpm"]], (runs, out)
    assert [c["action"] for c in changes] == ["attach"], (changes, out)
    assert changes[0]["trigger"] == "rpm" and "xdphooks-firewall" in changes[0]["packages"]
    assert box.chain() == ["firewall"]

    out, changes, runs = transaction("install", counter)
    assert len(runs) == 1 and len(changes) == 1, (runs, changes, out)
    assert box.chain() == ["firewall", "counter"]

    # upgrade: the in and postun triggers both fire; the second finds nothing to do
    out, changes, runs = transaction("upgrade", fw11)
    assert len(changes) == 1, (changes, out)
    assert 1 <= len(runs) <= 2, runs
    assert box.run("rpm", "-q", "--qf", "%{VERSION}", "xdphooks-firewall").stdout == "1.1"
    assert box.chain() == ["firewall", "counter"]

    out, changes, runs = transaction("remove", "xdphooks-counter")
    assert len(runs) == 1 and len(changes) == 1, (runs, changes, out)
    assert box.chain() == ["firewall"]

    out, changes, runs = transaction("remove", "xdphooks")
    print("erase of the framework:", changes, runs)
    # %preun tears the chains down: one change, and no trigger reconciles afterwards
    assert [c["action"] for c in changes] == ["teardown"] and runs == [], (changes, runs, out)
    assert box.veth.attached_id() == 0, out
    assert box.run("rpm", "-qa", "xdphooks*").stdout.strip() == ""


def test_dnf5_installroot_leaves_the_chain_to_first_boot(box, pkgs):
    fw, firewall = (box.add_rpm(pkgs[n]) for n in ("xdphooks", "firewall"))
    box.add_action_probe()
    p = box.dnf5("--installroot=/offline", "install", fw, firewall)
    out = p.stdout + p.stderr
    pending = box.top / "offline" / XH_ROOT.lstrip("/") / "var/lib/xdphooks/pending"
    assert pending.exists(), out
    assert json.loads(pending.read_text())["trigger"] == "rpm"
    assert "recorded; xdphooks.service applies it at boot" in out, out
    assert box.veth.attached_id() == 0, "an offline install touched the running kernel"
    assert box.history("/offline") == []
    # enabled=host-only: the actions line does not run for an --installroot
    assert box.action_runs() == 0, out
    box.dnf5("--installroot=/offline", "remove", "xdphooks*")
