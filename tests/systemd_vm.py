"""Host side of the systemd VM tests (tests/test_systemd_vm.py): the cached
Debian 12 root, ext4 disk images made from it, and qemu runs.

- The root (tests/vm/systemd/build-rootfs.sh) is cached outside the checkout,
  in ``$XDPHOOKS_VM_CACHE`` (default /var/cache/xdphooks-test) as
  ``vm-<hash>/rootfs``; the hash covers the recipe and the host's kernels, so
  a changed recipe or a new kernel builds a new root.
- Disks are made with ``mkfs.ext4 -d`` from a directory: no loop mounts. The
  VM gets the root disk (/dev/vda) and a job disk (/dev/vdb) with the guest
  script, the packages and an ``out/`` directory the guest fills; it is read
  back with ``debugfs`` after qemu exits.
- qemu runs with software emulation (this host's nested KVM does not boot),
  its serial console goes to a file, and it is always killed on timeout.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE_DIR = REPO / "tests" / "vm" / "systemd"
RECIPE = RECIPE_DIR / "build-rootfs.sh"
CACHE = Path(os.environ.get("XDPHOOKS_VM_CACHE", "/var/cache/xdphooks-test"))
TOOLS = ("debootstrap", "mkfs.ext4", "debugfs", "qemu-system-x86_64", "dpkg", "dnf")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def missing_tool() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for t in TOOLS:
        if shutil.which(t, path=CLEAN_ENV["PATH"]) is None:
            return f"{t} missing (scripts/install-deps.sh installs it)"
    return None


def kernel(version: str) -> tuple[Path, Path]:
    """/boot's vmlinuz and initrd for "6.1" or "6.12" (the newest such)."""
    found = sorted(glob.glob(f"/boot/vmlinuz-{version}.*"))
    if not found:
        raise FileNotFoundError(f"no /boot/vmlinuz-{version}.* (linux-image package missing)")
    vmlinuz = Path(found[-1])
    initrd = Path(str(vmlinuz).replace("vmlinuz-", "initrd.img-"))
    if not initrd.exists():
        raise FileNotFoundError(f"{initrd} missing")
    return vmlinuz, initrd


def recipe_hash() -> str:
    h = hashlib.sha256(RECIPE.read_bytes())
    for k in sorted(glob.glob("/boot/vmlinuz-*")):
        h.update(k.encode())
    return h.hexdigest()[:16]


@dataclass
class RootCache:
    path: Path  # vm-<hash>; the root is path/rootfs
    build_seconds: float | None  # None: taken from the cache

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


def cached_root() -> RootCache:
    """The built root, building it (once, under a lock) when missing."""
    CACHE.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = CACHE / f"vm-{recipe_hash()}"
    with open(CACHE / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "complete").exists():
            return RootCache(dest, None)
        tmp = CACHE / f"{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.monotonic()
        proc = subprocess.run(["bash", str(RECIPE), str(tmp)], env=CLEAN_ENV, text=True,
                              capture_output=True, timeout=1800, stdin=subprocess.DEVNULL)
        if proc.returncode:
            raise RuntimeError(f"{RECIPE.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        took = time.monotonic() - t0
        (tmp / "complete").write_text(f"{took:.1f}\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    _prune(dest)
    return RootCache(dest, took)


def _prune(keep: Path) -> None:
    """Roots of older recipes go (about 180 MB each), unless another run is building one."""
    for old in CACHE.glob("vm-*"):
        if old == keep or old.suffix or not old.is_dir():
            continue
        with open(CACHE / f"{old.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
            os.unlink(lock.name)


def run(*argv: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), text=True, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
    if proc.returncode:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def make_disk(src: Path, image: Path, size: str, label: str) -> None:
    """An ext4 image holding src's tree (owners and modes kept), sparse."""
    image.unlink(missing_ok=True)
    run("mkfs.ext4", "-q", "-F", "-L", label, "-d", str(src), str(image), size)


def read_out(job_image: Path, dest: Path) -> Path:
    """Copy the job disk's out/ directory to dest/out."""
    dest.mkdir(parents=True, exist_ok=True)
    run("debugfs", "-R", f"rdump /out {dest}", str(job_image))
    return dest / "out"


@dataclass
class QemuRun:
    seconds: float
    returncode: int | None  # None: killed on timeout
    console: str


def boot(version: str, root_image: Path, job_image: Path, console: Path,
         timeout: float) -> QemuRun:
    """Boot root_image with /boot's kernel VERSION until the guest powers off
    (reboots inside stay in the same qemu); killed after timeout seconds."""
    vmlinuz, initrd = kernel(version)
    argv = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
            "-smp", os.environ.get("XDPHOOKS_VM_CPUS", "2"), "-m", "1024",
            "-display", "none", "-monitor", "none", "-nic", "none",
            "-serial", f"file:{console}",
            "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=1",
            "-drive", f"file={root_image},format=raw,if=virtio",
            "-drive", f"file={job_image},format=raw,if=virtio"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        rc = None
    took = time.monotonic() - t0
    text = console.read_text(errors="replace") if console.exists() else ""
    return QemuRun(took, rc, text + (f"\n[qemu stderr]\n{err}" if err else ""))
