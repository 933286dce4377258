"""Trust checks for files and directories that root will act on.

The rule everywhere: a path is trusted only if it and every directory on the
way are owned by root and not writable by group or others, and it is not a
symlink somebody else could have planted. Checked with ``lstat``/``O_NOFOLLOW``
so the check and the use see the same file.
"""

from __future__ import annotations

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


def _check_owner_mode(path: Path, st: os.stat_result, what: str, plugin: str | None) -> None:
    if st.st_uid != 0:
        raise PermissionRefused(f"{what} {path} is owned by uid {st.st_uid}, not root",
                                plugin=plugin, fix=f"chown root:root {path}")
    if st.st_mode & 0o022:
        raise PermissionRefused(f"{what} {path} is writable by group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):o})", plugin=plugin,
                                fix=f"chmod go-w {path}")


def read_trusted(path: Path, what: str, plugin: str | None = None) -> bytes:
    """Open without following symlinks, check the opened file, read it."""
    check_trusted_dirs(path.parent, what, plugin)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == 40:  # ELOOP: it is a symlink
            raise PermissionRefused(f"{what} {path} is a symlink; refusing to follow it",
                                    plugin=plugin, fix="replace the symlink with the real file")
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PermissionRefused(f"{what} {path} is not a regular file", plugin=plugin)
        _check_owner_mode(path, st, what, plugin)
        return f.read()


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
