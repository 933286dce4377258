"""Issue 27 item 5: the guide for code you did not write.

docs/plugin-guide.md section 9's walkthrough for a vendor's prebuilt object is taken
from the guide's text (each ``<!-- prebuilt: PATH -->`` block is the file PATH; the
``build.sh`` block is run as it is) and builds a .deb and an .rpm that ship the vendor's
object byte for byte. Nothing is installed. packaging/new_plugin.py gives the new
package its own maintainer, licence and date, not the template's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, build_test_object, sh

GUIDE = REPO / "docs" / "plugin-guide.md"
BLOCK = re.compile(r"<!-- prebuilt: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.S)


def guide_files() -> dict[str, str]:
    files = {path: body + "\n" for path, body in BLOCK.findall(GUIDE.read_text())}
    assert {"acmefw.py", "xdphooks-acmefw.spec", "debian/control", "debian/rules",
            "debian/changelog", "debian/xdphooks-acmefw.xdphooks", "build.sh"} <= set(files)
    return files


def test_prebuilt_object_packages_from_the_guide(tmp_path):
    for tool in ("rpmbuild", "dpkg-buildpackage", "rpm", "dpkg-deb"):
        assert shutil.which(tool), f"{tool} is needed (scripts/install-deps.sh installs it)"
    d = tmp_path / "acmefw"
    for path, text in guide_files().items():
        (d / path).parent.mkdir(parents=True, exist_ok=True)
        (d / path).write_text(text)
    # the vendor's object: any XDP object stands for it; it must arrive unchanged
    vendor = d / "acme-xdp-fw.o"
    shutil.copyfile(build_test_object("count_pass"), vendor)
    want = hashlib.sha256(vendor.read_bytes()).hexdigest()
    env = {**os.environ, "src": str(REPO)}
    proc = subprocess.run(["bash", "-e", "build.sh"], cwd=d, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (rpm,) = (d / "rpmbuild" / "RPMS").rglob("xdphooks-acmefw-1.0-1*.rpm")
    (deb,) = tmp_path.glob("xdphooks-acmefw_1.0_*.deb")
    assert set(sh("rpm", "-qlp", str(rpm)).stdout.split()) == {
        "/usr/lib/xdphooks/bpf/acme-xdp-fw.o", "/usr/lib/xdphooks/plugins/acmefw.py"}
    assert "xdphooks >= 0.1" in sh("rpm", "-qp", "--requires", str(rpm)).stdout
    assert "xdphooks (>= 0.1)" in sh("dpkg-deb", "-f", str(deb), "Depends").stdout
    for pkg in (rpm, deb):
        out = tmp_path / f"x-{pkg.suffix[1:]}"
        out.mkdir()
        if pkg.suffix == ".deb":
            sh("dpkg-deb", "-x", str(pkg), str(out))
        else:
            cpio = subprocess.run(["rpm2cpio", str(pkg)], capture_output=True,
                                  check=True).stdout
            subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=out, check=True)
        obj = out / "usr/lib/xdphooks/bpf/acme-xdp-fw.o"
        assert hashlib.sha256(obj.read_bytes()).hexdigest() == want, pkg
        mod = (out / "usr/lib/xdphooks/plugins/acmefw.py").read_text()
        assert mod == guide_files()["acmefw.py"]


def test_new_plugin_is_the_authors_not_the_templates(tmp_path):
    env = {**os.environ, "DEBFULLNAME": "Ada Admin", "DEBEMAIL": "ada@example.org",
           "SOURCE_DATE_EPOCH": str(int(time.mktime((2027, 3, 1, 12, 0, 0, 0, 0, 0))))}
    sh(sys.executable, str(REPO / "packaging" / "new_plugin.py"), "portdrop", "--dest",
       str(tmp_path / "p"), "--licence", "MIT", env=env)
    p = tmp_path / "p"
    text = "\n".join(f.read_text() for f in p.rglob("*") if f.is_file())
    assert "xdphooks maintainers" not in text and "example.invalid>" not in text
    assert "2026" not in (p / "debian" / "changelog").read_text()
    assert "Maintainer: Ada Admin <ada@example.org>" in (p / "debian/control").read_text()
    assert " -- Ada Admin <ada@example.org>  Mon, 01 Mar 2027" in \
        (p / "debian/changelog").read_text()
    spec = (p / "xdphooks-portdrop.spec").read_text()
    assert re.search(r"(?m)^License:\s+MIT$", spec)
    assert "* Mon Mar 01 2027 Ada Admin <ada@example.org> - 1.0-1" in spec
    assert "License: MIT" in (p / "debian/copyright").read_text()
    assert "SPDX-License-Identifier: MIT" in (p / "portdrop.bpf.c").read_text()
    # no maintainer, no licence: refused in one line each, nothing written
    bare = {k: v for k, v in env.items() if k not in ("DEBFULLNAME", "DEBEMAIL")}
    for argv, say, e in ((["--licence", "MIT"], "needs its maintainer", bare),
                         ([], "needs its licence", env)):
        proc = subprocess.run([sys.executable, str(REPO / "packaging" / "new_plugin.py"), "x",
                               "--dest", str(tmp_path / "x"), *argv], env=e, text=True,
                              capture_output=True)
        assert proc.returncode == 2 and say in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()

