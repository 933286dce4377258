#!/usr/bin/env python3
"""Build the xdphooks framework and the sample plugins as .rpm and .deb.

    packaging/build-all.sh [--out build/pkgs] [--only NAME,...] [--formats rpm,deb]
                           [--version NAME=VER] [--plugin-dir DIR] [--no-requires]
                           [--force] [-j N]

Everything is built from the working tree, installs nothing on the host and
needs no network: rpmbuild --nodeps (the rpmdb of a Debian host is empty) and
dpkg-buildpackage -d with dh-xdphooks taken from the tree (PERL5LIB, PATH).
Builds are reproducible (SOURCE_DATE_EPOCH from the changelogs) and cached: an
output directory whose inputs did not change is reused as is.

The result is OUT/*.rpm, OUT/*.deb and OUT/manifest.json:
``{"rpm": {"xdphooks": "xdphooks-0.1.0-1.x86_64.rpm", ...}, "deb": {...}}``
keyed by package name, paths relative to OUT.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PLUGINS = ("firewall", "counter", "txbuggy", "template")
# 2026-11-24 00:00:00 UTC, the date in every changelog here.
SOURCE_DATE_EPOCH = 1795478400
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


# --- plugins ------------------------------------------------------------------


@dataclass
class Plugin:
    name: str  # plugin name, e.g. "firewall"
    src: Path  # plugins/firewall

    @property
    def package(self) -> str:
        return f"xdphooks-{self.name}"

    @property
    def spec(self) -> Path:
        return self.src / f"{self.package}.spec"


def find_plugin(directory: Path) -> Plugin:
    specs = sorted(directory.glob("xdphooks-*.spec"))
    if len(specs) != 1:
        raise SystemExit(f"{directory}: expected exactly one xdphooks-NAME.spec, found {len(specs)}")
    return Plugin(specs[0].stem.removeprefix("xdphooks-"), directory)


def framework_version() -> str:
    text = (REPO / "xdphooks" / "__init__.py").read_text()
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise SystemExit("xdphooks/__init__.py has no __version__")
    return m.group(1)


# --- helpers ------------------------------------------------------------------


def files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".o"))]
    return out


def copy_tree(src: Path, dst: Path) -> None:
    # Objects are never copied: the package builds compile them from source.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*SKIP, "*.pyc", "*.o"),
                    dirs_exist_ok=True)


def tree_digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for top in paths:
        for f in files_under(top):
            h.update(str(f.relative_to(top.parent)).encode() + b"\0")
            h.update(oct(f.stat().st_mode & 0o111).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def run(argv: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> None:
    base = {k: v for k, v in os.environ.items()
            if k in ("HOME", "LANG", "TERM", "TMPDIR", "USER", "LOGNAME")}
    base.update(PATH=CLEAN_PATH, LC_ALL="C.UTF-8", TZ="UTC",
                SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    base.update(env or {})
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.run(argv, cwd=cwd, env=base, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}); log {log}:\n{tail}")


def set_deb_version(changelog: Path, version: str) -> None:
    text = changelog.read_text()
    changelog.write_text(re.sub(r"^(\S+) \([^)]*\)", rf"\1 ({version})", text, count=1))


def deterministic_tar(out: Path, prefix: str, members: dict[str, Path]) -> None:
    """A .tar.gz of {name in archive: source}, byte-identical for the same input."""
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, src in sorted(members.items()):
            for f in files_under(src):
                rel = f"{prefix}/{arcname}" if src.is_file() else \
                    f"{prefix}/{arcname}/{f.relative_to(src)}"
                info = tarfile.TarInfo(rel)
                data = f.read_bytes()
                info.size = len(data)
                info.mode = 0o755 if f.stat().st_mode & 0o111 else 0o644
                info.mtime = SOURCE_DATE_EPOCH
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))
    with out.open("wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=SOURCE_DATE_EPOCH,
                                             filename="") as gz:
        gz.write(buf.getvalue())


# --- builders -----------------------------------------------------------------


@dataclass
class Job:
    fmt: str  # rpm | deb
    name: str  # source package name
    fn: object
    outputs: dict[str, str] = field(default_factory=dict)


def rpm_common(work: Path, out: Path) -> list[str]:
    return [
        "rpmbuild", "-bb", "--nodeps", "--quiet",
        "--define", f"_topdir {work}",
        "--define", f"_rpmdir {out}",
        "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
        "--define", "_buildhost xdphooks-build",
        "--define", "use_source_date_epoch_as_buildtime 1",
        "--define", "clamp_mtime_to_source_date_epoch 1",
        "--define", "_binary_payload w2.zstdio",
    ]


def build_framework_rpm(stage: Path, out: Path, version: str, pysrc: Path) -> None:
    work = stage / "rpm-xdphooks"
    shutil.rmtree(work, ignore_errors=True)
    (work / "SOURCES").mkdir(parents=True)
    deterministic_tar(work / "SOURCES" / f"xdphooks-{version}.tar.gz", f"xdphooks-{version}", {
        "xdphooks": pysrc,
        "bpf": REPO / "bpf",
        "packaging": REPO / "packaging",
        "rpm": REPO / "rpm",
        "man": REPO / "man",
        "completions": REPO / "completions",
    })
    run(rpm_common(work, out) + [
        "--define", f"_sourcedir {work / 'SOURCES'}",
        "--define", f"xh_version {version}",
        str(REPO / "rpm" / "xdphooks.spec"),
    ], work / "build.log")


def build_plugin_rpm(stage: Path, out: Path, plugin: Plugin, version: str,
                     no_requires: bool) -> None:
    work = stage / f"rpm-{plugin.package}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "SOURCES").mkdir(parents=True)
    copy_tree(plugin.src, work / "SOURCES")
    argv = rpm_common(work, out) + [
        "--load", str(REPO / "rpm" / "macros.xdphooks"),
        "--define", f"_sourcedir {work / 'SOURCES'}",
        "--define", f"pkg_version {version}",
    ]
    spec = work / "SOURCES" / plugin.spec.name
    if no_requires:  # benchmark control: identical payload, no dependency
        text = spec.read_text().replace("%xdphooks_requires\n", "")
        spec.write_text(text)
    run(argv + [str(spec)], work / "build.log")


def dpkg_buildpackage(srcdir: Path, out: Path, env: dict | None = None) -> None:
    run(["dpkg-buildpackage", "-b", "-us", "-uc", "-d", "--no-pre-clean"],
        srcdir.parent / "build.log", cwd=srcdir, env=env)
    for f in sorted(srcdir.parent.glob("*.deb")):
        shutil.move(str(f), out / f.name)


def build_framework_deb(stage: Path, out: Path, version: str, pysrc: Path) -> None:
    work = stage / "deb-xdphooks"
    shutil.rmtree(work, ignore_errors=True)
    src = work / f"xdphooks-{version}"
    src.mkdir(parents=True)
    copy_tree(pysrc, src / "xdphooks")
    copy_tree(REPO / "bpf", src / "bpf")
    copy_tree(REPO / "packaging", src / "packaging")
    copy_tree(REPO / "man", src / "man")
    copy_tree(REPO / "completions", src / "completions")
    copy_tree(REPO / "deb" / "dh-xdphooks", src / "deb" / "dh-xdphooks")
    copy_tree(REPO / "deb" / "debian", src / "debian")
    shutil.copy(REPO / "packaging" / "systemd" / "xdphooks.service", src / "debian" / "xdphooks.service")
    set_deb_version(src / "debian" / "changelog", version)
    dpkg_buildpackage(src, out)


def build_plugin_deb(stage: Path, out: Path, plugin: Plugin, version: str,
                     no_requires: bool) -> None:
    work = stage / f"deb-{plugin.package}"
    shutil.rmtree(work, ignore_errors=True)
    src = work / f"{plugin.package}-{version}"
    src.mkdir(parents=True)
    copy_tree(plugin.src, src)
    set_deb_version(src / "debian" / "changelog", version)
    dh = REPO / "deb" / "dh-xdphooks"
    # dh-sequence-xdphooks from the tree: nothing needs to be installed.
    env = {"PERL5LIB": str(dh), "PATH": f"{dh}:{CLEAN_PATH}"}
    if no_requires:
        (work / "nodeps").mkdir()
        dpkg_buildpackage(src, work / "nodeps", env)
        for deb in (work / "nodeps").glob("*.deb"):
            strip_deb_depends(deb, out / deb.name, work)
    else:
        dpkg_buildpackage(src, out, env)


def strip_deb_depends(deb: Path, dst: Path, work: Path) -> None:
    """Benchmark control: the same .deb without its Depends line."""
    tree = work / "repack"
    shutil.rmtree(tree, ignore_errors=True)
    run(["dpkg-deb", "-R", str(deb), str(tree)], work / "build.log")
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(line for line in control.read_text().splitlines(True)
                               if not line.startswith("Depends:")))
    run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(dst)], work / "build.log")


# --- main ---------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "build" / "pkgs")
    ap.add_argument("--only", default="", help="comma-separated: xdphooks, firewall, ...")
    ap.add_argument("--formats", default="rpm,deb")
    ap.add_argument("--version", action="append", default=[], metavar="NAME=VER",
                    help="version of a plugin (or xdphooks); default: 1.0 / __version__")
    ap.add_argument("--plugin-dir", action="append", type=Path, default=[],
                    help="extra plugin directory (repeatable)")
    ap.add_argument("--no-requires", action="store_true",
                    help="plugins without dependency on xdphooks (benchmark control)")
    ap.add_argument("--python-src", type=Path, default=REPO / "xdphooks",
                    help="the xdphooks Python package to ship (default: the working tree's)")
    ap.add_argument("--force", action="store_true", help="ignore the cache")
    ap.add_argument("--repo", type=Path, metavar="DIR",
                    help="also publish signed apt and dnf repositories in DIR "
                    "(packaging/publish_repos.py; needs --sign-key)")
    ap.add_argument("--sign-key", metavar="KEYID", help="gpg key signing --repo")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    return ap.parse_args(argv)


def build(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    # Two builds into one OUT (a test run and a demo at once) would wipe each other's stage.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = _build_locked(args, out)
        if args.repo:  # under the lock: another build into OUT would wipe what we publish
            import publish_repos  # next to this file

            if not args.sign_key:
                raise RuntimeError("--repo needs --sign-key KEYID (a gpg key in GNUPGHOME)")
            publish_repos.publish(out, args.repo.resolve(), args.sign_key,
                                  tuple(f for f in args.formats.split(",") if f))
        return manifest


def _build_locked(args: argparse.Namespace, out: Path) -> dict:
    formats = [f for f in args.formats.split(",") if f]
    versions = dict(v.split("=", 1) for v in args.version)
    plugins = [find_plugin(REPO / "plugins" / p) for p in SAMPLE_PLUGINS]
    plugins += [find_plugin(d.resolve()) for d in args.plugin_dir]
    only = {n for n in args.only.split(",") if n}
    want_framework = not only or "xdphooks" in only
    plugins = [p for p in plugins if not only or p.name in only or p.package in only]
    fw_version = versions.get("xdphooks", framework_version())

    pysrc = args.python_src.resolve()
    inputs = [pysrc, REPO / "bpf", REPO / "packaging", REPO / "rpm", REPO / "deb",
              REPO / "man", REPO / "completions"]
    inputs += [p.src for p in plugins]
    built_by = {k: v for k, v in vars(args).items() if k not in ("repo", "sign_key")}
    digest = tree_digest(inputs, json.dumps([sorted(built_by.items(), key=str),
                                             [str(p.src) for p in plugins]], default=str))
    stamp = out / ".inputs"
    manifest_file = out / "manifest.json"
    if not args.force and stamp.exists() and stamp.read_text() == digest and manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if all((out / f).exists() for fmt in manifest.values() for f in fmt.values()):
            return manifest

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stage = REPO / "build" / "stage" / hashlib.sha256(str(out).encode()).hexdigest()[:8]
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)

    jobs = []
    if want_framework:
        if "rpm" in formats:
            jobs.append(lambda: build_framework_rpm(stage, out, fw_version, pysrc))
        if "deb" in formats:
            jobs.append(lambda: build_framework_deb(stage, out, fw_version, pysrc))
    for p in plugins:
        ver = versions.get(p.name, versions.get(p.package, "1.0"))
        if "rpm" in formats:
            jobs.append(lambda p=p, ver=ver: build_plugin_rpm(stage, out, p, ver, args.no_requires))
        if "deb" in formats:
            jobs.append(lambda p=p, ver=ver: build_plugin_deb(stage, out, p, ver, args.no_requires))

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for fut in [pool.submit(j) for j in jobs]:
            fut.result()

    manifest: dict[str, dict[str, str]] = {"rpm": {}, "deb": {}}
    for f in sorted(out.glob("*.rpm")):
        name = subprocess.run(["rpm", "-qp", "--qf", "%{NAME}", str(f)], text=True,
                              capture_output=True, check=True).stdout
        manifest["rpm"][name] = f.name
    for f in sorted(out.glob("*.deb")):
        manifest["deb"][f.name.split("_")[0]] = f.name
    manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    stamp.write_text(digest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    try:
        manifest = build(argv)
    except RuntimeError as e:
        print(f"build-all: {e}", file=sys.stderr)
        return 1
    out = parse_args(argv).out
    for fmt in ("rpm", "deb"):
        for name, f in sorted(manifest.get(fmt, {}).items()):
            print(f"{out / f}")
    print(f"build-all: {sum(map(len, manifest.values()))} packages in "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
