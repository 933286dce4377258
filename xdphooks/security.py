"""Trust checks for files and directories that root will act on.

The rule everywhere: a path is trusted only if it and every directory on the
way are owned by root and not writable by group or others, and it is not a
symlink somebody else could have planted. Checked with ``lstat``/``O_NOFOLLOW``
so the check and the use see the same file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import PermissionRefused


def check_trusted_file(path: Path, what: str, plugin: str | None = None) -> os.stat_result:
    """Refuse a file that is a symlink, not regular, not root-owned, or writable by others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    if stat.S_ISLNK(st.st_mode):
        raise PermissionRefused(f"{what} {path} is a symlink; refusing to follow it",
                                plugin=plugin, fix="replace the symlink with the real file")
    if not stat.S_ISREG(st.st_mode):
        raise PermissionRefused(f"{what} {path} is not a regular file", plugin=plugin,
                                fix="install a regular file there")
    _check_owner_mode(path, st, what, plugin)
    if st.st_size > size_limit(what):
        raise PermissionRefused(too_big(path, what, st.st_size, size_limit(what)),
                                plugin=plugin, fix=f"check {path}: no real one is that big")
    check_trusted_dirs(path.parent, what, plugin)
    return st


def check_trusted_dirs(path: Path, what: str, plugin: str | None = None) -> None:
    """Every directory from ``path`` up to / must be root-owned and not group/world-writable
    (sticky world-writable dirs such as /tmp are accepted, as systemd does)."""
    cur = Path(os.path.abspath(path))
    while True:
        st = os.lstat(cur)
        if stat.S_ISLNK(st.st_mode):
            # A symlinked directory is fine only if root owns the link and its target checks out.
            if st.st_uid != 0:
                raise PermissionRefused(f"{what}: directory {cur} is a symlink owned by uid "
                                        f"{st.st_uid}", plugin=plugin,
                                        fix=f"remove the symlink {cur} (rm {cur})")
            check_trusted_dirs(Path(os.path.realpath(cur)), what, plugin)
        else:
            sticky = st.st_mode & stat.S_ISVTX
            if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky):
                raise PermissionRefused(
                    f"{what}: directory {cur} is owned by uid {st.st_uid} with mode "
                    f"{stat.S_IMODE(st.st_mode):o}", plugin=plugin,
                    fix=f"chown root:root {cur} && chmod go-w {cur}")
        if cur.parent == cur:
            return
        cur = cur.parent


def _check_owner_mode(path: Path, st: os.stat_result, what: str, plugin: str | None,
                      owners: tuple[int, ...] = (0,)) -> None:
    if st.st_uid not in owners:
        raise PermissionRefused(f"{what} {path} is owned by uid {st.st_uid}, not root",
                                plugin=plugin, fix=f"chown root:root {path}")
    if st.st_mode & 0o022:
        raise PermissionRefused(f"{what} {path} is writable by group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):o})", plugin=plugin,
                                fix=f"chmod go-w {path}")


#: Size limits of what xdphooks reads (SECURITY.md, "Files xdphooks reads"). A BPF
#: object is a few KiB to a few MiB (BTF included); 64 MiB is far above any real
#: one and far below what would exhaust memory. Plugin files, the config, the
#: state and the caches are text written by people or by xdphooks: 1 MiB is
#: generous for them (the state file gets its own, larger limit in state.py).
OBJECT_MAX = 64 << 20
TEXT_MAX = 1 << 20


def size_limit(what: str) -> int:
    """The limit for a kind of file: BPF objects are big, everything else is text."""
    return OBJECT_MAX if "object" in what else TEXT_MAX


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink"))


def file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_checked(path: Path, what: str, plugin: str | None = None, *,
                 limit: int | None = None, trusted: bool = True,
                 owners: tuple[int, ...] = (0,)) -> bytes:
    """The one way xdphooks reads a file it acts on: never blocks, never follows a
    symlink, never reads more than ``limit`` bytes (default :func:`size_limit`).

    Opened with O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC, so a FIFO or a device planted at
    the path cannot stall the run (the lock held); the opened file is then checked
    by fstat: regular, and with ``trusted``, owned by one of ``owners`` and not
    writable by group or others. Refusals are :class:`PermissionRefused` naming
    the file (and ``plugin``) with a fix; a missing file is FileNotFoundError."""
    limit = size_limit(what) if limit is None else limit
    pre = os.lstat(path)  # a device is not even opened (opening some has effects)
    if not stat.S_ISREG(pre.st_mode) and not stat.S_ISLNK(pre.st_mode):
        raise PermissionRefused(f"{what} {path} is {file_kind(pre.st_mode)}, not a regular file",
                                plugin=plugin,
                                fix=f"remove {path} and install a regular file there")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermissionRefused(f"{what} {path} is a symlink; refusing to follow it",
                                    plugin=plugin,
                                    fix=f"replace the symlink {path} with the real file") from None
        if e.errno == errno.ENXIO:  # a socket (or a device without a driver)
            raise PermissionRefused(f"{what} {path} is not a regular file", plugin=plugin,
                                    fix=f"remove {path} and install a regular file there") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermissionRefused(f"{what} {path} is {file_kind(st.st_mode)}, not a regular "
                                    "file", plugin=plugin,
                                    fix=f"remove {path} and install a regular file there")
        if trusted:
            _check_owner_mode(path, st, what, plugin, owners)
        if st.st_size > limit:
            raise PermissionRefused(too_big(path, what, st.st_size, limit), plugin=plugin,
                                    fix=f"check {path}: no real one is that big (limits: "
                                        "SECURITY.md, 'Files xdphooks reads')")
        os.set_blocking(fd, True)
        chunks, left = [], limit + 1  # a file growing after fstat is cut off, and refused
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > limit:
            raise PermissionRefused(too_big(path, what, len(data), limit), plugin=plugin,
                                    fix=f"check {path}; it grew while being read")
        return data
    finally:
        os.close(fd)


def too_big(path: Path, what: str, size: int, limit: int) -> str:
    return f"{what} {path} is {_mib(size)}, over the {_mib(limit)} limit for a {what}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.4g} MiB" if n >= 1 << 20 else f"{n} bytes"


def read_trusted(path: Path, what: str, plugin: str | None = None,
                 limit: int | None = None) -> bytes:
    """A trusted file's bytes: every directory on the way and the file itself root-owned
    and not writable by others, read without blocking or following symlinks
    (:func:`read_checked`)."""
    check_trusted_dirs(path.parent, what, plugin)
    return read_checked(path, what, plugin, limit=limit)


def read_regular(path: Path | str, what: str, plugin: str | None = None,
                 limit: int | None = None) -> bytes:
    """A file's bytes where ownership is checked elsewhere (xdphooks' own build copies):
    still regular, bounded, non-blocking, no symlink followed."""
    return read_checked(Path(path), what, plugin, limit=limit, trusted=False)


def is_root() -> bool:
    """The one test for "may we change the system": effective uid 0 (capabilities
    alone are not enough, the state and pins are root-owned)."""
    return os.geteuid() == 0


def ensure_private_dir(path: Path, mode: int = 0o700) -> None:
    """Create (or accept) a root-only directory; refuse one planted by someone else."""
    try:
        os.makedirs(path.parent, mode=0o755, exist_ok=True)
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise PermissionRefused(f"{path} is not a directory (planted symlink?)",
                                fix=f"remove {path} and run again")
    if st.st_uid != os.geteuid():
        raise PermissionRefused(f"{path} is owned by uid {st.st_uid}; refusing to use it",
                                fix=f"remove {path} and run again as root")
    if stat.S_IMODE(st.st_mode) & 0o022:
        os.chmod(path, mode)
