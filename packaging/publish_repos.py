#!/usr/bin/env python3
"""Publish built packages as signed repositories: apt (apt-ftparchive + gpg) and
dnf (createrepo_c + a signed repomd.xml, rpmsign'd packages).

    packaging/build-all.sh --repo DIR --sign-key KEYID [build options]
    packaging/publish_repos.py --out build/pkgs --repo DIR --sign-key KEYID

Reads OUT/manifest.json (packaging/build_all.py) and writes:

- ``DIR/apt/``: a flat repository (``deb [signed-by=...] URL/apt ./``):
  the .debs, ``Packages``/``Packages.gz``, ``Release`` signed as ``InRelease``
  (clearsigned) and ``Release.gpg`` (detached), and the public key as
  ``xdphooks-archive-keyring.gpg`` (binary, for ``signed-by``);
- ``DIR/dnf/``: the .rpms signed with rpmsign, ``repodata/`` from createrepo_c
  with ``repomd.xml.asc`` (detached, armored), and the public key as
  ``RPM-GPG-KEY-xdphooks`` (for ``gpgkey=``; use ``gpgcheck=1`` and
  ``repo_gpgcheck=1``).

Publishing again into the same DIR adds the new packages (an upgrade): older
versions stay in the pool, as on a real mirror. The key is taken from gpg's
keyring (GNUPGHOME); nothing here handles a passphrase: sign on a machine or
agent that holds the key. Every tool runs with an argument list, no shell.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = "stable"
ORIGIN = "xdphooks"


def _run(*argv: str, cwd: Path | None = None, stdout=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, text=stdout is None)
    if proc.returncode:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return proc


def _tool(name: str, package: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise RuntimeError(f"{name} is not installed — fix: apt-get install {package}")
    return path


def publish_apt(debs: list[Path], repo: Path, key: str) -> Path:
    ftp, gpg = _tool("apt-ftparchive", "apt-utils"), _tool("gpg", "gnupg")
    apt = repo / "apt"
    apt.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, apt / deb.name)
    packages = _run(ftp, "packages", ".", cwd=apt).stdout
    (apt / "Packages").write_text(packages)
    with gzip.GzipFile(apt / "Packages.gz", "wb", mtime=0) as gz:
        gz.write(packages.encode())
    for old in ("Release", "InRelease", "Release.gpg"):
        (apt / old).unlink(missing_ok=True)
    release = _run(ftp, "-o", f"APT::FTPArchive::Release::Origin={ORIGIN}",
                   "-o", f"APT::FTPArchive::Release::Label={ORIGIN}",
                   "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
                   "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
                   "release", ".", cwd=apt).stdout
    (apt / "Release").write_text(release)
    _run(gpg, "--batch", "--yes", "--local-user", key, "--clearsign", "--output",
         str(apt / "InRelease"), str(apt / "Release"))
    _run(gpg, "--batch", "--yes", "--local-user", key, "--armor", "--detach-sign", "--output",
         str(apt / "Release.gpg"), str(apt / "Release"))
    with open(apt / "xdphooks-archive-keyring.gpg", "wb") as f:
        _run(gpg, "--batch", "--export", key, stdout=f)
    return apt


def publish_dnf(rpms: list[Path], repo: Path, key: str) -> Path:
    cr, gpg = _tool("createrepo_c", "createrepo-c"), _tool("gpg", "gnupg")
    rpmsign = _tool("rpmsign", "rpm")
    dnf = repo / "dnf"
    dnf.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        dst = dnf / rpm.name
        shutil.copy2(rpm, dst)
        _run(rpmsign, "--define", f"_gpg_name {key}", "--define", f"__gpg {gpg}", "--define",
             f"_gpg_path {os.environ.get('GNUPGHOME', Path.home() / '.gnupg')}",
             "--addsign", str(dst))
    _run(cr, "--quiet", "--update", str(dnf))
    (dnf / "repodata" / "repomd.xml.asc").unlink(missing_ok=True)
    _run(gpg, "--batch", "--yes", "--local-user", key, "--armor", "--detach-sign", "--output",
         str(dnf / "repodata" / "repomd.xml.asc"), str(dnf / "repodata" / "repomd.xml"))
    with open(dnf / "RPM-GPG-KEY-xdphooks", "w") as f:
        _run(gpg, "--batch", "--armor", "--export", key, stdout=f)
    return dnf


def publish(out: Path, repo: Path, key: str, formats: tuple[str, ...] = ("deb", "rpm")) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    if "deb" in formats and manifest.get("deb"):
        publish_apt([out / f for f in manifest["deb"].values()], repo, key)
    if "rpm" in formats and manifest.get("rpm"):
        publish_dnf([out / f for f in manifest["rpm"].values()], repo, key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="packaging/build-all.sh's --out")
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--sign-key", required=True, metavar="KEYID")
    ap.add_argument("--formats", default="rpm,deb")
    args = ap.parse_args(argv)
    try:
        publish(args.out, args.repo, args.sign_key, tuple(args.formats.split(",")))
    except RuntimeError as e:
        print(f"publish-repos: {e}", file=sys.stderr)
        return 1
    print(f"publish-repos: {args.repo}/apt and {args.repo}/dnf signed with {args.sign_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
