"""Issue 27 item 5: the guide for a third-party project with its own headers and Makefile.

docs/plugin-guide.md section 9's tinyfw walkthrough is taken from the guide's text (each
``<!-- thirdparty: PATH -->`` block is the file PATH; the ``build.sh`` block is run as it
is) next to the project's release tarball, made from tests/thirdparty/tinyfw/ (its
include/parsing_helpers.h is xdp-tutorial's, vendored in tests/corpus/). It must build a
.deb and an .rpm that ship the object the project's own Makefile built from its own
headers, and that object must chain: reconciled in a private root, it drops the UDP port
listed in its map and passes the others, real packets through a veth. Nothing is
installed into the host's package database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

from conftest import REPO, sh

GUIDE = REPO / "docs" / "plugin-guide.md"
BLOCK = re.compile(r"<!-- thirdparty: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.S)
PROJECT = REPO / "tests" / "thirdparty" / "tinyfw"
#: the project's third-party header, vendored once (provenance: tests/corpus/PROVENANCE.md)
PARSING_HELPERS = REPO / "tests" / "corpus" / "xdp-tutorial" / "common" / "parsing_helpers.h"
VERSION = "1.2"
OBJ, MOD = "/usr/lib/xdphooks/bpf/tinyfw.bpf.o", "/usr/lib/xdphooks/plugins/tinyfw.py"
SEND = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for port in map(int, sys.argv[2:]):\n    s.sendto(b'tinyfw', (sys.argv[1], port))\n")


def guide_files() -> dict[str, str]:
    files = {path: body + "\n" for path, body in BLOCK.findall(GUIDE.read_text())}
    assert {"tinyfw.py", "xdphooks-tinyfw.spec", "debian/control", "debian/rules",
            "debian/changelog", "debian/copyright", "debian/source/format",
            "debian/xdphooks-tinyfw.xdphooks", "build.sh"} <= set(files), sorted(files)
    return files


def release_tarball(dest: Path) -> Path:
    """tinyfw-VERSION.tar.gz as its project would publish it: sources, headers, Makefile."""
    out = dest / f"tinyfw-{VERSION}.tar.gz"
    top = f"tinyfw-{VERSION}"
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(PROJECT.rglob("*")):
            rel = path.relative_to(PROJECT)
            if path.is_file() and rel.parts[0] != "build":
                tar.add(path, f"{top}/{rel}")
        tar.add(PARSING_HELPERS, f"{top}/include/parsing_helpers.h")
    return out


def extract(pkg: Path, out: Path) -> Path:
    out.mkdir()
    if pkg.suffix == ".deb":
        sh("dpkg-deb", "-x", str(pkg), str(out))
    else:
        cpio = subprocess.run(["rpm2cpio", str(pkg)], capture_output=True, check=True).stdout
        subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=out, check=True)
    return out


def check_object(path: Path) -> None:
    """What the project's Makefile builds from its headers: an XDP object with BTF."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_BPF", (path, elf["e_machine"])
        names = {s.name for s in elf.iter_sections()}
        syms = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()}
    assert {"xdp", ".maps", ".BTF", ".BTF.ext"} <= names, names
    assert {"tinyfw", "deny_ports"} <= syms


def test_thirdparty_project_packages_from_the_guide_and_chains(tmp_path, xh, veth):
    for tool in ("rpmbuild", "dpkg-buildpackage", "rpm", "dpkg-deb", "rpm2cpio", "cpio"):
        assert shutil.which(tool), f"{tool} is needed (scripts/install-deps.sh installs it)"
    d = tmp_path / "xdphooks-tinyfw"
    files = guide_files()
    for path, text in files.items():
        (d / path).parent.mkdir(parents=True, exist_ok=True)
        (d / path).write_text(text)
    release_tarball(d)
    env = {**os.environ, "src": str(REPO)}
    for var in ("XDPHOOKS_ROOT", "XDPHOOKS_BPFFS", "XDPHOOKS_LIBDIR"):
        env.pop(var, None)
    proc = subprocess.run(["bash", "-e", "build.sh"], cwd=d, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the project's own Makefile built it, with its own flags, from its own headers
    assert "-Iinclude" in proc.stdout + proc.stderr and "-fstack-protector" not in \
        proc.stdout + proc.stderr
    (rpm,) = (d / "rpmbuild" / "RPMS").rglob(f"xdphooks-tinyfw-{VERSION}-1*.rpm")
    (deb,) = d.glob(f"xdphooks-tinyfw_{VERSION}-1_*.deb")
    listed = set(sh("rpm", "-qlp", str(rpm)).stdout.split())
    assert {OBJ, MOD} <= listed and not listed - {OBJ, MOD} - {
        p for p in listed if p.startswith("/usr/share/licenses/")}, listed
    assert "xdphooks >= 0.1" in sh("rpm", "-qp", "--requires", str(rpm)).stdout
    assert "xdphooks (>= 0.1)" in sh("dpkg-deb", "-f", str(deb), "Depends").stdout
    deb_files = {ln.split()[-1].lstrip(".") for ln in sh("dpkg-deb", "-c", str(deb)).stdout
                 .splitlines() if not ln.endswith("/")}
    assert {OBJ, MOD} <= deb_files, deb_files
    for pkg in (rpm, deb):
        out = extract(pkg, tmp_path / f"x-{pkg.suffix[1:]}")
        check_object(out / OBJ.lstrip("/"))
        assert (out / MOD.lstrip("/")).read_text() == files["tinyfw.py"]

    # the packaged object chains: the guide's module and the .deb's object in a private
    # root, on a veth with a permanent neighbour each way (no ARP/ND in the counts)
    xh.add_plugin("tinyfw", files["tinyfw.py"])
    xh.add_object(tmp_path / "x-deb" / OBJ.lstrip("/"))
    xh.write_config(f'default_interfaces = ["{veth.iface}"]\n')
    assert "attach" in xh.run("reconcile").stdout
    pin = xh.bpffs / "xdphooks" / "maps" / "tinyfw" / "deny_ports"
    sh("bpftool", "map", "update", "pinned", str(pin), "key", "9", "0", "value",
       *["0"] * 16)
    for ns, dev, ip, peer in ((veth.ns_b, veth.dev_b, veth.ip_a, (veth.ns_a, veth.dev_a)),
                              (veth.ns_a, veth.dev_a, veth.ip_b, (veth.ns_b, veth.dev_b))):
        mac = json.loads(sh("ip", "-j", "-n", peer[0], "link", "show", peer[1]).stdout)[0]
        sh("ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac["address"], "dev", dev,
           "nud", "permanent")
    veth.exec_b("python3", "-c", SEND, veth.ip_a, "9", "9", "9", "53", "53")
    (hits,) = json.loads(sh("bpftool", "-j", "map", "dump", "pinned", str(pin)).stdout)
    # 3 frames of 48 bytes (Ethernet, IPv4, UDP, 6 bytes of payload), counted by the
    # project's own struct tinyfw_hits from include/tinyfw.h
    assert hits["formatted"] == {"key": 9, "value": {"packets": 3, "bytes": 3 * 48}}, hits
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    (prog,) = iface["programs"]
    assert prog["name"] == "tinyfw" and prog["verdicts"]["drop"] == 3, prog
    assert prog["verdicts"]["pass"] >= 2, prog
