"""The package builds themselves: contents, BPF objects intact, reproducibility,
and the rpm/deb metadata the transaction tests rely on. Installs nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import pkg_support as pu

pytestmark = [pytest.mark.pkg]
EM_BPF = 247


@pytest.fixture(scope="module")
def pkgs():
    pu.require_pkg_tools()
    return pu.build()


def extract(pkg: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if pkg.suffix == ".deb":
        pu.sh("dpkg-deb", "-x", str(pkg), str(dest))
    else:
        cpio = subprocess.run(["rpm2cpio", str(pkg)], capture_output=True, check=True).stdout
        subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=dest, check=True)
    return dest


def elf_machine(path: Path) -> int:
    hdr = path.read_bytes()[:20]
    assert hdr[:4] == b"\x7fELF", path
    return int.from_bytes(hdr[18:20], "little" if hdr[5] == 1 else "big")


@pytest.mark.parametrize("fmt", ["rpm", "deb"])
def test_every_object_is_bpf(pkgs, fmt, tmp_path):
    """Distribution CFLAGS must not turn a BPF object into a host object, nor strip it."""
    objects = []
    for name, pkg in pkgs[fmt].items():
        root = extract(pkg, tmp_path / name)
        objects += list(root.rglob("*.o"))
    assert len(objects) >= 4 + 1 + 5  # four plugins, the rootlet, the dispatchers
    bad = {str(o.relative_to(tmp_path)): elf_machine(o) for o in objects if elf_machine(o) != EM_BPF}
    assert not bad, bad


def test_package_contents(pkgs, tmp_path):
    rpm = {n: set(pu.sh("rpm", "-qpl", str(p)).stdout.split()) for n, p in pkgs["rpm"].items()}
    deb = {n: set(line.split()[-1].lstrip(".") for line in
                  pu.sh("dpkg-deb", "-c", str(p)).stdout.splitlines())
           for n, p in pkgs["deb"].items()}
    for files in (rpm["xdphooks-firewall"], deb["xdphooks-firewall"]):
        assert {"/usr/lib/xdphooks/plugins/firewall.py",
                "/usr/lib/xdphooks/bpf/firewall.bpf.o"} <= files
    for files in (rpm["xdphooks"], deb["xdphooks"]):
        assert "/usr/bin/xdphooks" in files
        assert "/usr/lib/xdphooks/python/xdphooks/cli.py" in files
        assert any(f.endswith("/xdphooks.service") for f in files)
        # node_exporter textfile writer (opt-in timer) and the live-view tracers
        assert any(f.endswith("/xdphooks-metrics.service") for f in files)
        assert any(f.endswith("/xdphooks-metrics.timer") for f in files)
        assert "/usr/lib/xdphooks/python/xdphooks/data/slot_trace.o" in files
        assert "/usr/lib/xdphooks/python/xdphooks/data/slot_profile.o" in files
        assert any(f.endswith("/90-xdphooks.rules") for f in files)
    # rpm enables the boot unit through its preset (the .deb through dh_installsystemd)
    assert "/usr/lib/systemd/system-preset/90-xdphooks.preset" in rpm["xdphooks"]
    assert "/usr/lib/rpm/macros.d/macros.xdphooks" in rpm["xdphooks-rpm-macros"]
    dnf_plugindir = pu.sh("/usr/bin/python3", "-c",
                          "import dnf.const; print(dnf.const.PLUGINPATH)").stdout.strip()
    assert f"{dnf_plugindir}/xdphooks.py" in rpm["xdphooks"]
    assert "/usr/share/perl5/Debian/Debhelper/Sequence/xdphooks.pm" in deb["dh-xdphooks"]
    assert "/usr/bin/dh_xdphooks" in deb["dh-xdphooks"]
    # No bytecode caches left behind in the plugin directories.
    assert not any("__pycache__" in f for f in rpm["xdphooks-firewall"] | deb["xdphooks-firewall"])


def test_metadata(pkgs):
    rpm = pkgs["rpm"]
    # Lua scriptlets, AutoReqProv off: installable on a host whose rpmdb is empty.
    reqs = pu.sh("rpm", "-qp", "--requires", str(rpm["xdphooks"])).stdout.splitlines()
    assert all(r.startswith("rpmlib(") for r in reqs), reqs
    assert pu.sh("rpm", "-qp", "--requires", str(rpm["xdphooks-firewall"])).stdout.count(
        "xdphooks >= 0.1") == 1
    trig = pu.sh("rpm", "-qp", "--filetriggers", str(rpm["xdphooks"])).stdout
    assert "transfiletriggerin scriptlet (using <lua>) -- /usr/lib/xdphooks/bpf/, " \
           "/usr/lib/xdphooks/plugins/" in trig
    assert "transfiletriggerpostun" in trig
    assert pu.sh("rpm", "-qp", "--qf", "%{ARCH}", str(rpm["xdphooks-firewall"])).stdout != "noarch"

    deb = pkgs["deb"]
    triggers = pu.sh("dpkg-deb", "-I", str(deb["xdphooks"]), "triggers").stdout
    assert "interest-noawait /usr/lib/xdphooks/plugins" in triggers
    assert "interest-noawait xdphooks-reconcile" in triggers
    fields = pu.sh("dpkg-deb", "-f", str(deb["dh-xdphooks"]), "Provides").stdout
    assert "dh-sequence-xdphooks" in fields
    assert "xdphooks (>= 0.1)" in pu.sh("dpkg-deb", "-f", str(deb["xdphooks-firewall"]),
                                         "Depends").stdout
    assert pu.sh("dpkg-deb", "-f", str(deb["xdphooks-firewall"]), "Architecture").stdout.strip() \
        != "all"
    # Plugin packages need no maintainer scripts of their own.
    assert "postinst" not in pu.sh("dpkg-deb", "-I", str(deb["xdphooks-firewall"])).stdout


def test_dh_xdphooks_rejects_host_objects(tmp_path):
    """dh_xdphooks refuses a .o that is not BPF (e.g. built with host CFLAGS)."""
    pu.require_pkg_tools()
    d = pu.make_broken_plugin(tmp_path)
    (d / "Makefile").write_text("all:\n\tcc -c -x c /dev/null -o broken.bpf.o\nclean:\n")
    proc = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc", "-d"], cwd=d,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{pu.REPO / 'deb/dh-xdphooks'}:{pu.CLEAN_PATH}",
                               "PERL5LIB": str(pu.REPO / "deb/dh-xdphooks"), "HOME": "/root",
                               "LC_ALL": "C.UTF-8"})
    assert proc.returncode != 0
    assert "not a BPF object" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_reproducible(pkgs, tmp_path):
    """Two clean builds of the plugin packages are byte-identical."""
    a = pu.build("--only", "firewall", "--force", out=tmp_path / "a")
    b = pu.build("--only", "firewall", "--force", out=tmp_path / "b")
    for fmt in ("rpm", "deb"):
        pa, pb = a[fmt]["xdphooks-firewall"], b[fmt]["xdphooks-firewall"]
        assert pa.read_bytes() == pb.read_bytes(), (pa, pb)
    shutil.rmtree(tmp_path, ignore_errors=True)
