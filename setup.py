"""Build hook: the BPF objects in xdphooks/data/ are compiled from bpf/ when the
package is built (``pip install .``, ``pip wheel .``, ``python -m build``), so a
wheel or an install from a checkout has its rootlet and dispatcher objects.

Everything ``make -C bpf`` builds is built: no list of objects here. An sdist
carries the objects it was made with, so installing it needs no compiler; a
checkout without them needs clang, and says so in one line when it is missing.
Metadata lives in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE / "bpf"
DATA_DIR = HERE / "xdphooks" / "data"
MISSING = "__xdphooks_no_clang__"


def _make(*args: str, clang: str) -> subprocess.CompletedProcess:
    # no host CFLAGS for bpf/Makefile (as deb/debian/rules and the rpm spec: they
    # are not for clang -target bpf)
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "CPPFLAGS", "LDFLAGS")}
    return subprocess.run(["make", "-C", str(BPF_DIR), f"CLANG={clang}", *args], text=True,
                          capture_output=True, env=env)


def objects_up_to_date() -> bool:
    """Would ``make`` compile nothing? (dry run with a compiler that cannot exist)"""
    if shutil.which("make") is None or not any(DATA_DIR.glob("*.o")):
        return False
    dry = _make("-n", clang=MISSING)
    return dry.returncode == 0 and MISSING not in dry.stdout


def build_bpf(required: bool) -> None:
    clang = os.environ.get("CLANG", "clang")
    if shutil.which(clang) is None or shutil.which("make") is None:
        if objects_up_to_date():
            return  # an sdist with its objects: nothing to compile
        if not required:
            print("xdphooks: warning: clang or make not found; this sdist carries no BPF "
                  "objects, so installing it will need clang", file=sys.stderr)
            return
        tool = "make" if shutil.which("make") is None else clang
        sys.exit(f"xdphooks: error: building xdphooks compiles its BPF objects from bpf/, and "
                 f"{tool!r} is not installed — fix: install clang, make and libbpf headers "
                 "(apt install clang make libbpf-dev / dnf install clang make libbpf-devel), "
                 "set CLANG=/path/to/clang, or install from an sdist that carries "
                 "xdphooks/data/*.o")
    done = _make(clang=clang)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        sys.exit(f"{tail}\nxdphooks: error: compiling bpf/ failed (make -C bpf, above) — fix: "
                 "install libbpf headers (libbpf-dev / libbpf-devel) and a clang with the BPF "
                 "target")


class BuildPy(build_py):
    def run(self) -> None:
        build_bpf(required=True)
        self.__dict__.pop("data_files", None)  # collected again, with the new objects
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        build_bpf(required=False)
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
