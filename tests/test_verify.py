"""The object that runs is the object the package shipped (xdphooks/verify.py).

Real packages, built here with dpkg-deb and rpmbuild, are installed into the
host's dpkg and rpm databases; each owns a BPF object in the test root's
libdir. The chain is attached from the packaged object; then the object is
modified on disk: reconcile refuses it in one line naming the package and the
file, with the fix, and the running chain keeps running (same program id,
still counting packets); ``[programs.NAME] verify = false`` lets the local
build in. ``status --json`` shows the package and the digest it recorded.
Every package is removed afterwards, also on failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from conftest import one_program, sh
from xdphooks import config, verify
from xdphooks.pkg import rpm as pkg_rpm
from xdphooks.planner import ObjectFacts

pytestmark = [pytest.mark.kernel, pytest.mark.pkg]
REPO = Path(__file__).resolve().parent.parent


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"PACKAGE TOOLS MISSING: {', '.join(missing)} "
                    "(scripts/install-deps.sh installs them)")


def build_deb(tmp: Path, name: str, dst: Path, src: Path) -> Path:
    """A package owning one file, ``dst``, with the md5sums dpkg keeps."""
    root = tmp / f"deb-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    target = root / str(dst).lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copyfile(src, target)
    target.chmod(0o644)
    (root / "DEBIAN" / "control").write_text(textwrap.dedent(f"""\
        Package: {name}
        Version: 1.0-1
        Architecture: all
        Maintainer: xdphooks tests <tests@example.invalid>
        Description: xdphooks verify test package
        """))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    (root / "DEBIAN" / "md5sums").write_text(f"{md5}  {str(dst).lstrip('/')}\n")
    out = tmp / f"{name}.deb"
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out))
    return out


def build_rpm(tmp: Path, name: str, dst: Path, src: Path) -> Path:
    top = tmp / f"rpm-{name}"
    for d in ("SPECS", "SOURCES", "BUILD", "RPMS", "BUILDROOT"):
        (top / d).mkdir(parents=True)
    shutil.copyfile(src, top / "SOURCES" / "obj.o")
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(textwrap.dedent(f"""\
        Name: {name}
        Version: 1.0
        Release: 1
        Summary: xdphooks verify test package
        License: GPL-2.0-only
        BuildArch: noarch
        Source0: obj.o
        # a BPF object: no stripping, no brp scripts
        %global __os_install_post %{{nil}}
        %description
        xdphooks verify test package
        %install
        install -D -m 0644 %{{SOURCE0}} %{{buildroot}}{dst}
        %files
        {dst}
        """))
    sh("rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec))
    (out,) = (top / "RPMS" / "noarch").glob("*.rpm")
    return out


@pytest.fixture
def packaged(xh, bpf_obj, tmp_path):
    """install(fmt, object name) -> installed path; removes the packages at the end."""
    _need("dpkg-deb", "dpkg", "rpmbuild", "rpm")
    debs, rpms = [], []

    def install(fmt: str, objname: str, src: Path) -> Path:
        dst = xh.bpf_dir / objname
        name = f"vfytest-{fmt}-{uuid.uuid4().hex[:8]}"
        if fmt == "deb":
            pkg = build_deb(tmp_path, name, dst, src)
            debs.append(name)
            sh("dpkg", "-i", str(pkg))
        else:
            pkg = build_rpm(tmp_path, name, dst, src)
            rpms.append(name)
            sh("rpm", "-i", "--nodeps", str(pkg))
        assert dst.read_bytes() == src.read_bytes()
        return dst

    try:
        yield install
    finally:
        for name in debs:
            sh("dpkg", "--purge", name, check=False)
        for name in rpms:
            sh("rpm", "-e", "--nodeps", name, check=False)


def _send(veth, n: int) -> None:
    for _ in range(n):
        veth.exec_b("python3", "-c", "import socket; socket.socket(socket.AF_INET, "
                    f"socket.SOCK_DGRAM).sendto(b'x', ('{veth.ip_a}', 4000))")


def _packets(xh) -> int:
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    return iface["programs"][0]["packets"]


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_modified_packaged_object_is_refused_and_the_chain_keeps_running(
        fmt, xh, veth, bpf_obj, packaged):
    obj = packaged(fmt, f"vfy_{fmt}.o", bpf_obj("sv_count"))
    xh.write_config('mode = "static"\n')
    xh.add_plugin("vfy", one_program("vfy", obj.name, 10, veth.iface))
    xh.run("reconcile")
    running = veth.attached_id()
    assert running
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    ver = iface["programs"][0]["verified"]
    algo = "md5" if fmt == "deb" else ver["algorithm"]
    assert ver["package"].startswith(f"vfytest-{fmt}-") and ver["package"].endswith(f"({fmt})")
    assert ver["ok"] is True and ver["algorithm"] == algo
    assert ver["digest"] == hashlib.new(algo, obj.read_bytes()).hexdigest()
    if fmt == "rpm":  # the rpm module (the packaged CLI's python) and rpm -qf agree
        via_module = subprocess.run(
            ["/usr/bin/python3", "-c", "import dataclasses, json, sys; sys.path.insert(0, "
             f"{str(REPO)!r}); from xdphooks.pkg import rpm; r = rpm.record(sys.argv[1]); "
             "print(json.dumps(dataclasses.asdict(r) if r else None))", str(obj)],
            capture_output=True, text=True, check=True).stdout
        assert json.loads(via_module) == dataclasses.asdict(pkg_rpm.record_cli(str(obj)))

    # a different, valid BPF object where the package's file was (same owner, mode)
    shutil.copyfile(bpf_obj("sv_icmp_drop"), obj)
    r = xh.run("reconcile", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "not the file package" in ln]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    pkgname = ver["package"].split("_")[0].split("-1.0")[0]
    assert "plugin 'vfy'" in line and str(obj) in line and pkgname in line, line
    assert ("apt-get install --reinstall" if fmt == "deb" else "dnf reinstall") in line
    assert "[programs.vfy] verify = false" in line and "Traceback" not in r.stderr
    # the chain that ran keeps running, and counting
    assert veth.attached_id() == running
    before = _packets(xh)
    _send(veth, 3)
    assert _packets(xh) >= before + 3
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    assert iface["programs"][0]["verified"]["ok"] is False
    # plan and reconcile --check say the same without changing anything
    assert "not the file package" in xh.run("plan", check=False).stdout
    chk = xh.run("reconcile", "--check", check=False)
    assert chk.returncode == 4, chk.stdout + chk.stderr

    # the admin vouches for a local build
    xh.write_config('mode = "static"\n\n[programs.vfy]\nverify = false\n')
    xh.run("reconcile")
    assert veth.attached_id() not in (0, running)


def test_unowned_objects_follow_the_trust_rules_only(tmp_path):
    obj = tmp_path / "xdphooks" / "free.o"
    obj.parent.mkdir()
    obj.write_bytes(b"\x7fELF" + b"\0" * 60)
    facts = ObjectFacts(str(obj), "d")
    assert verify.record(str(obj)) is None
    assert verify.check(facts, ("free",), False, "/etc/xdphooks/xdphooks.toml") is facts


def test_verify_key_is_a_boolean():
    assert config.parse({"programs": {"fw": {"verify": False}}}).programs["fw"].verify is False
    assert config.parse({"programs": {"fw": {}}}).programs["fw"].verify is True
    with pytest.raises(config.ConfigError, match=r"\[programs.fw\] verify must be true or false"):
        config.parse({"programs": {"fw": {"verify": "no"}}})


def test_rpm_query_takes_the_path_as_data(monkeypatch, tmp_path):
    """No shell: a path with shell syntax reaches rpm as one argument."""
    seen = []

    def fake_run(argv, **kw):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "not owned")

    monkeypatch.setattr(pkg_rpm.subprocess, "run", fake_run)
    monkeypatch.setattr(pkg_rpm.shutil, "which", lambda *a, **k: "/usr/bin/rpm")
    evil = str(tmp_path / "x; touch pwned $(id).o")
    assert pkg_rpm.record_cli(evil) is None
    assert seen and seen[0][-1] == evil and seen[0][-2] == "--"
