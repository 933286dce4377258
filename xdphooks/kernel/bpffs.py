"""bpffs: check that the pin root is one, mount one if asked.

A bpffs mounted inside a private mount namespace (``ip netns exec`` makes one,
and so does ``unshare -m``) vanishes with the last process in it, and the pins
with it: the chain keeps running, unrecognisable by name. So xdphooks mounts a
bpffs only in the host's mount namespace (that of PID 1): from a private one it
enters the host's in a short-lived child to mount there, and refuses when the
mount does not show up where this process looks.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import XdphooksError

BPF_FS_MAGIC = 0xCAFE4A11
CLONE_NEWNS = 0x00020000
HOST_NS = "/proc/1/ns/mnt"  # the host's mount namespace: PID 1's
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def fs_type(path: Path) -> int:
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is the first long
    if _libc.statfs(os.fsencode(path), buf) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def is_bpffs(path: Path) -> bool:
    try:
        return fs_type(path) == BPF_FS_MAGIC
    except OSError:
        return False


def ensure(path: Path, mount: bool = True) -> None:
    """Make sure ``path`` is on a bpffs, mounting one there if it is not."""
    if is_bpffs(path):
        return
    if not mount:
        raise XdphooksError(f"{path} is not a bpffs mount", fix=f"mount -t bpf bpf {path}")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        what = "not a directory" if isinstance(e, (FileExistsError, NotADirectoryError)) \
            else e.strerror
        raise XdphooksError(f"no bpffs at {path}, and no directory can be made there to mount "
                            f"one ({what})",
                            fix="pass --bpffs DIR (or XDPHOOKS_BPFFS) naming a directory, "
                                "normally /sys/fs/bpf") from None
    if private_mount_ns():
        err = _mount_in_host_ns(path)
        if err == 0 and is_bpffs(path):
            return  # mounted in the host's namespace, and it propagated to ours
        why = (f"mounted one in the host's mount namespace, but it does not show here"
               if err == 0 else f"mounting one in the host's mount namespace failed: "
               f"{os.strerror(err)}")
        raise XdphooksError(f"no bpffs at {path}, and this process runs in a private mount "
                            "namespace (ip netns exec? unshare -m?) where a bpffs would vanish "
                            f"with the process, its pins with it; {why}",
                            fix=f"run xdphooks in the host's mount namespace (for an interface in "
                                f"a network namespace name it NETNS/IFNAME instead of using ip "
                                f"netns exec), or mount -t bpf bpf {path} on the host first")
    if _mount(path) != 0:
        err = ctypes.get_errno()
        raise XdphooksError(f"no bpffs at {path} and mounting one failed: {os.strerror(err)}",
                            fix=f"mount -t bpf bpf {path}, or pass --bpffs DIR")


def _mount(path: Path) -> int:
    return _libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, b"mode=0700")


def _ns_id(link: str) -> tuple[int, int]:
    st = os.stat(link)
    return st.st_dev, st.st_ino


def private_mount_ns() -> bool:
    """Does this process run in a mount namespace other than the host's? False when
    that cannot be told (no /proc, or PID 1 not ours to inspect: a confined container)."""
    try:
        return _ns_id("/proc/self/ns/mnt") != _ns_id(HOST_NS)
    except OSError:
        return False


def _mount_in_host_ns(path: Path) -> int:
    """Mount a bpffs at ``path`` in the host's mount namespace; 0 or an errno. A forked
    child does it: setns(CLONE_NEWNS) is refused to a multi-threaded process, and the
    caller stays where it was."""
    path = Path(os.path.abspath(path))  # setns moves the child's cwd to the host's root
    pid = os.fork()
    if pid == 0:  # child: syscalls only, then _exit
        err = 0
        try:
            fd = os.open(HOST_NS, os.O_RDONLY | os.O_CLOEXEC)
            if _libc.setns(fd, CLONE_NEWNS) != 0:
                err = ctypes.get_errno()
            else:
                os.makedirs(path, mode=0o700, exist_ok=True)
                if not is_bpffs(path) and _mount(path) != 0:
                    err = ctypes.get_errno()
        except OSError as e:
            err = e.errno or 1
        os._exit(min(err, 255))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def rmtree(path: Path) -> None:
    """Remove a pin directory tree (unlinking pins drops their references)."""
    if not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            rmtree(child)
        else:
            child.unlink(missing_ok=True)
    path.rmdir()
