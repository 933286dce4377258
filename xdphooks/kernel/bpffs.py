"""bpffs: check that the pin root is one, mount a private one if asked."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import XdphooksError

BPF_FS_MAGIC = 0xCAFE4A11
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
    if _libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise XdphooksError(f"no bpffs at {path} and mounting one failed: {os.strerror(err)}",
                            fix=f"mount -t bpf bpf {path}, or pass --bpffs DIR")


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
