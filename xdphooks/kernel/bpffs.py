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
import errno
import os
import stat
from pathlib import Path

from ..errors import XdphooksError
from ..paths import PIN_TREE

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


# --- removal, confined ------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fd_fs_type(fd: int) -> int:
    buf = ctypes.create_string_buffer(256)
    if _libc.fstatfs(fd, buf) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _refuse(path, why: str) -> XdphooksError:
    from ..errors import PermissionRefused

    return PermissionRefused(f"refusing to remove {path}: {why}; xdphooks removes only inside "
                             f"its own pin tree (<bpffs>/{PIN_TREE}) on a bpffs",
                             fix=f"nothing was removed; if {path} is a stale xdphooks pin "
                                 "directory remove it by hand, then run 'xdphooks reconcile' "
                                 "(it rebuilds the state from the kernel)")


def _confine(path: Path, root: Path | None) -> tuple[str, list[str]]:
    """(the pin tree's directory, the path's components below it), checked lexically:
    no '.' or '..' anywhere, and below ``root`` (given) or below the outermost
    directory named ``xdphooks`` that is on a bpffs. The kernel's view is checked
    after, on the opened directories (O_NOFOLLOW, fstatfs)."""
    text = os.fspath(path)
    full = text if text.startswith("/") else os.path.join(os.getcwd(), text)
    parts = [p for p in full.split("/") if p]
    if any(p in (".", "..") or "\0" in p for p in parts):
        raise _refuse(path, "it is not a plain path ('.' or '..' in it)")
    if root is not None:
        rparts = [p for p in os.path.normpath(os.path.abspath(root)).split("/") if p]
        if parts[:len(rparts)] != rparts:
            raise _refuse(path, f"it is not under {root}")
        return "/" + "/".join(rparts), parts[len(rparts):]
    for i, p in enumerate(parts):
        anchor = Path("/" + "/".join(parts[:i + 1]))
        # (a pin tree not there at all, on a bpffs: nothing to remove, nothing refused)
        if p == PIN_TREE and (is_bpffs(anchor) or not os.path.lexists(anchor)
                              and is_bpffs(anchor.parent)):
            return str(anchor), parts[i + 1:]
    raise _refuse(path, f"no directory named {PIN_TREE} on a bpffs contains it")


def _open_dir(name: str, dir_fd: int | None, shown) -> int:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(shown, f"{name} is a symlink or not a directory") from None
        raise
    if fd_fs_type(fd) != BPF_FS_MAGIC:
        os.close(fd)
        raise _refuse(shown, f"{name} is not on a bpffs")
    return fd


def rmtree(path: Path, root: Path | None = None) -> None:
    """Remove a pin directory tree (unlinking pins drops their references), only inside
    xdphooks' own pin tree on a bpffs: ``root`` (the pin root) when given, else the
    outermost ``xdphooks`` directory on a bpffs above ``path``. Every directory is
    opened with O_NOFOLLOW and checked to be on a bpffs (fstatfs), and everything
    is removed relative to those descriptors, so neither a symlink nor a '..' nor
    a mount can lead outside. Refused (nothing removed): PermissionRefused."""
    anchor, rel = _confine(path, root)
    fds: list[int] = []
    try:
        try:
            fds.append(_open_dir(anchor, None, path))
            for comp in rel[:-1]:
                fds.append(_open_dir(comp, fds[-1], path))
        except FileNotFoundError:
            return  # nothing there to remove
        if not rel:  # the pin tree itself (teardown --all)
            _empty(fds[0], path)
            try:
                os.rmdir(anchor)
            except FileNotFoundError:
                pass
            return
        _remove(fds[-1], rel[-1], path)
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _remove(dir_fd: int, name: str, shown) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = _open_dir(name, dir_fd, shown)
        try:
            _empty(fd, shown)
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    else:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _empty(dir_fd: int, shown) -> None:
    for name in os.listdir(dir_fd):
        _remove(dir_fd, name, shown)
