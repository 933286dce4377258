"""Packages from signed repositories, not files: ``packaging/build-all.sh --repo
DIR --sign-key KEY`` publishes an apt repository (apt-ftparchive, InRelease and
Release.gpg) and a dnf repository (createrepo_c, repomd.xml.asc, rpmsign'd
packages), served here on loopback HTTP. apt and dnf install the framework and
the firewall from them with signature checking on, upgrade the firewall when
1.1 is published, and remove it; the chain follows each step on a namespaced
veth. A tampered repository is refused by the package manager before xdphooks
runs (the run probe records no reconcile). The key is made for the test in a
private GNUPGHOME; apt and dnf use private lists, caches and source files, so
the host's own repositories are neither read nor changed.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import pkg_support as pu
from conftest import sh

pytestmark = [pytest.mark.pkg, pytest.mark.slow]

BUILD_ALL = pu.REPO / "packaging" / "build-all.sh"
OUT_V10 = pu.REPO / "build" / "pkgs-repos"  # private: other tests rebuild build/pkgs
OUT_V11 = pu.REPO / "build" / "pkgs-repos-v11"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    """(GNUPGHOME, fingerprint) of a signing key made for this test."""
    for tool in ("gpg", "apt-ftparchive", "createrepo_c", "rpmsign"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing (scripts/install-deps.sh installs it)")
    home = Path(f"/tmp/xhgpg-{uuid.uuid4().hex[:8]}")
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    sh("gpg", "--batch", "--passphrase", "", "--quick-gen-key",
       "xdphooks test archive <archive@example.invalid>", "ed25519", "sign", "never", env=env)
    fpr = [ln.split(":")[9] for ln in sh("gpg", "--batch", "--with-colons", "--list-keys",
                                         env=env).stdout.splitlines() if ln.startswith("fpr")][0]
    try:
        yield home, fpr
    finally:
        sh("gpgconf", "--kill", "all", env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)


def publish(key, repo: Path, out: Path, *args: str) -> None:
    """packaging/build-all.sh builds into OUT and publishes into REPO."""
    home, fpr = key
    sh(str(BUILD_ALL), "--out", str(out), "--repo", str(repo), "--sign-key", fpr, *args,
       env={**os.environ, "GNUPGHOME": str(home)}, timeout=1200)


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (an ephemeral port) -> (dir, base URL)."""
    root = Path(f"/tmp/xhrepo-{uuid.uuid4().hex[:8]}")
    root.mkdir()
    os.chmod(root, 0o755)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env(veth):
    yield from pu.pkg_env(veth, "repo")


# --- apt -------------------------------------------------------------------------------


class Apt:
    """apt-get with private sources, lists and archive cache."""

    def __init__(self, env, base: Path, url: str, keyring: Path):
        self.env, self.base = env, base
        for d in ("lists/partial", "archives/partial"):
            (base / d).mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        self.sources = base / "xdphooks.list"
        self.sources.write_text(f"deb [signed-by={keyring}] {url}/apt ./\n")

    def opts(self) -> list[str]:
        return ["-o", f"Dir::Etc::SourceList={self.sources}",
                "-o", "Dir::Etc::SourceParts=/nonexistent",
                "-o", f"Dir::State::Lists={self.base / 'lists'}",
                "-o", f"Dir::Cache::Archives={self.base / 'archives'}",
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                "-o", "APT::Sandbox::User=root"]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.env.apt(*self.opts(), *args, check=check)


def deb_version(pkg: str) -> str:
    return sh("dpkg-query", "-W", "-f", "${Version}", pkg, check=False).stdout


def test_apt_repository(env, key, served, tmp_path):
    repo, url = served
    publish(key, repo, OUT_V10, "--only", "xdphooks,firewall", "--formats", "deb")
    assert {"InRelease", "Release.gpg", "Packages", "xdphooks-archive-keyring.gpg"} <= \
        {p.name for p in (repo / "apt").iterdir()}
    keyring = tmp_path / "keyring.gpg"  # the admin's copy, not the served one
    shutil.copy(repo / "apt" / "xdphooks-archive-keyring.gpg", keyring)
    apt = Apt(env, tmp_path / "apt", url, keyring)

    apt("update")
    apt("install", "xdphooks", "xdphooks-firewall")
    assert deb_version("xdphooks-firewall") == "1.0"
    assert env.chain() == ["firewall"] and env.ping_ok()
    runs = len(env.runs())

    # 1.1 published into the same repository: apt-get upgrade picks it up
    publish(key, repo, OUT_V11, "--only", "firewall", "--formats", "deb",
            "--version", "firewall=1.1")
    apt("update")
    p = apt("upgrade")
    assert deb_version("xdphooks-firewall") == "1.1", p.stdout
    assert env.chain() == ["firewall"] and len(env.runs()) > runs
    (iface,) = [i for i in env.status()["interfaces"] if i["name"] == env.veth.dev_a]
    assert iface["programs"][0]["verified"]["ok"] is True
    assert iface["programs"][0]["verified"]["package"].startswith("xdphooks-firewall_1.1")

    apt("remove", "xdphooks-firewall")
    assert deb_version("xdphooks-firewall") in ("", "1.1") and env.chain() == []
    assert "install ok installed" not in sh("dpkg-query", "-W", "-f", "${Status}",
                                            "xdphooks-firewall", check=False).stdout

    # Tampered: the Release file changed after signing. apt refuses the repository,
    # so it cannot install from it, and xdphooks never runs.
    fresh = Apt(env, tmp_path / "apt-tampered", url, keyring)
    inrel = repo / "apt" / "InRelease"
    inrel.write_text(inrel.read_text().replace("Suite: stable", "Suite: stab1e"))
    (repo / "apt" / "Release.gpg").unlink()
    runs = len(env.runs())
    p = fresh("update", check=False)
    said = p.stdout + p.stderr
    assert p.returncode != 0 and ("BADSIG" in said or "not signed" in said), said
    p = fresh("install", "xdphooks-firewall", check=False)
    assert p.returncode != 0, p.stdout + p.stderr
    assert deb_version("xdphooks-firewall") in ("", "1.1")
    assert "install ok installed" not in sh("dpkg-query", "-W", "-f", "${Status}",
                                            "xdphooks-firewall", check=False).stdout
    assert len(env.runs()) == runs


# --- dnf -------------------------------------------------------------------------------


def rpm_version(pkg: str) -> str:
    p = sh("rpm", "-q", "--qf", "%{VERSION}", pkg, check=False)
    return p.stdout if p.returncode == 0 else ""


def dnf_cmd(env, base: Path, url: str, keyfile: Path, *args: str,
            check: bool = True) -> subprocess.CompletedProcess:
    reposdir = base / "repos.d"
    if not reposdir.exists():
        reposdir.mkdir(parents=True)
        (reposdir / "xdphooks.repo").write_text(
            "[xdphooks-test]\nname=xdphooks test repository\n"
            f"baseurl={url}/dnf\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
            f"gpgkey=file://{keyfile}\nmetadata_expire=0\nskip_if_unavailable=False\n")
    return env.run("dnf", "-y", "-q", f"--setopt=reposdir={reposdir}",
                   f"--setopt=cachedir={base / 'cache'}", "--setopt=install_weak_deps=False",
                   "--setopt=skip_if_unavailable=False", "--releasever=1", *args, check=check)


def _drop_test_keys() -> None:
    """dnf imported the test key into the rpmdb (gpg-pubkey-*): take it out again."""
    out = sh("rpm", "-q", "gpg-pubkey", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\t%{SUMMARY}\n",
             check=False).stdout
    for line in out.splitlines():
        nvr, _, summary = line.partition("\t")
        if "archive@example.invalid" in summary:
            sh("rpm", "-e", nvr, check=False)


def test_dnf_repository(env, key, served, tmp_path):
    repo, url = served
    publish(key, repo, OUT_V10, "--only", "xdphooks,firewall", "--formats", "rpm")
    assert (repo / "dnf" / "repodata" / "repomd.xml.asc").exists()
    keyfile = tmp_path / "RPM-GPG-KEY-xdphooks"
    shutil.copy(repo / "dnf" / "RPM-GPG-KEY-xdphooks", keyfile)
    base = tmp_path / "dnf"
    try:
        dnf_cmd(env, base, url, keyfile, "install", "xdphooks", "xdphooks-firewall")
        assert rpm_version("xdphooks-firewall") == "1.0"
        assert env.chain() == ["firewall"] and env.ping_ok()
        # the packages themselves carry the repository's signature
        assert "OK" in sh("rpm", "-K", str(next((repo / "dnf").glob("xdphooks-firewall-*.rpm")))
                          ).stdout

        publish(key, repo, OUT_V11, "--only", "firewall", "--formats", "rpm",
                "--version", "firewall=1.1")
        dnf_cmd(env, base, url, keyfile, "upgrade", "--refresh")
        assert rpm_version("xdphooks-firewall") == "1.1"
        assert env.chain() == ["firewall"]

        dnf_cmd(env, base, url, keyfile, "remove", "xdphooks-firewall")
        assert rpm_version("xdphooks-firewall") == "" and env.chain() == []

        # Tampered: repomd.xml changed after it was signed. dnf refuses the metadata.
        md = repo / "dnf" / "repodata" / "repomd.xml"
        md.write_text(md.read_text().replace("<revision>", "<revision>1"))
        runs = len(env.runs())
        p = dnf_cmd(env, tmp_path / "dnf-tampered", url, keyfile, "install",
                    "xdphooks-firewall", check=False)
        said = p.stdout + p.stderr
        assert p.returncode != 0 and "signature" in said.lower(), said
        assert rpm_version("xdphooks-firewall") == "" and len(env.runs()) == runs
    finally:
        _drop_test_keys()
