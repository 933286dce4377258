"""Issue 13 item 4: a wheel built from a checkout works.

A copy of the checkout without any compiled object (as a fresh ``git clone``
is) is built into a wheel by pip; the build hook (setup.py) must compile
everything ``make -C bpf`` builds into the wheel. The wheel goes into a clean
venv (``--no-index``: the dependencies come from this project's .venv, linked in
one by one, never the framework itself), and that venv's ``xdphooks`` command
attaches a chain to a namespaced veth that then counts real packets. Without
clang the build stops with one line saying what to install.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, sh

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

DEPS = ("pluggy", "filelock", "pyroute2", "rpm")
#: offline build-isolation requirements (setuptools, wheel): pip's find-links
FIND_LINKS = [p for p in (os.environ.get("PIP_FIND_LINKS", ""), "/opt/pypi/files") if p]


def checkout_copy(dst: Path) -> Path:
    """The source tree as a clone has it: no .o, no venv, no build output."""
    ign = shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__", ".git",
                                 "*.o", ".pytest_cache", ".hypothesis")
    shutil.copytree(REPO, dst, ignore=ign)
    assert not list((dst / "xdphooks" / "data").glob("*.o"))
    return dst


def pip_wheel(src: Path, out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    links = [a for p in FIND_LINKS for a in ("--find-links", p)]
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                           *links, "-w", str(out), str(src)], text=True, capture_output=True,
                          env=env, timeout=900)


def link_dependencies(venv: Path) -> None:
    """Make the dependencies (only those) importable in ``venv`` from the .venv."""
    deps = venv / "deps"
    deps.mkdir()
    for name in DEPS:
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or ()
                if not str(f).startswith("..") and Path(str(f)).parts[0] != "__pycache__"}
        for top in tops:
            target = Path(dist.locate_file(top))
            if target.exists() and not (deps / top).exists() and top != "xdphooks":
                (deps / top).symlink_to(target)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "xdphooks-test-deps.pth").write_text(f"{deps}\n")


PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="counter", object="count_pass.o", interfaces=({iface!r},))]
""")


def test_wheel_from_a_checkout_attaches_a_chain(xh, veth, bpf_obj, tmp_path):
    src = checkout_copy(tmp_path / "src")
    built = pip_wheel(src, tmp_path / "dist")
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("xdphooks-*.whl")
    made = sorted(p.name for p in (src / "xdphooks" / "data").glob("*.o"))  # what make built
    assert made, "the build hook compiled nothing"
    with zipfile.ZipFile(wheel) as z:
        shipped = sorted(Path(n).name for n in z.namelist() if n.startswith("xdphooks/data/")
                         and n.endswith(".o"))
    assert shipped == made

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", str(venv))
    link_dependencies(venv)
    inst = subprocess.run([str(venv / "bin/pip"), "install", "--no-index", str(wheel)],
                          text=True, capture_output=True, timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr  # dependencies satisfied, offline
    where = sh(str(venv / "bin/python"), "-c", "import xdphooks; print(xdphooks.__file__)",
               cwd=tmp_path).stdout.strip()
    assert where.startswith(str(venv)), where

    xh.write_config('mode = "static"\n')
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("counter", PLUGIN.format(iface=veth.iface))
    run = subprocess.run([str(venv / "bin/xdphooks"), "reconcile"], env=xh.env, cwd=tmp_path,
                         text=True, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    link = json.loads(sh("ip", "-j", "-n", veth.ns_a, "link", "show", "dev", veth.dev_a).stdout)[0]
    assert (link.get("xdp") or {}).get("prog", {}).get("id", 0) > 0
    veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "1", veth.ip_a)
    st = subprocess.run([str(venv / "bin/xdphooks"), "status", "--json"], env=xh.env,
                        cwd=tmp_path, text=True, capture_output=True, timeout=60)
    (iface,) = json.loads(st.stdout)["interfaces"]
    assert iface["programs"][0]["packets"] >= 3, iface


def test_wheel_build_without_clang_says_what_to_install(tmp_path):
    src = checkout_copy(tmp_path / "src")
    env = dict(os.environ, CLANG="/nonexistent/clang")
    built = pip_wheel(src, tmp_path / "dist", env)
    assert built.returncode != 0
    out = built.stdout + built.stderr
    (line,) = [ln for ln in out.splitlines() if "xdphooks: error:" in ln]
    assert "/nonexistent/clang" in line and "fix: install clang" in line, out
    assert not list((tmp_path / "dist").glob("*.whl"))
