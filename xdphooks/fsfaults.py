"""A system fault on one of xdphooks' own files (state, change log, run and build
directories, lock) as one sentence: which path, what the system said, what to do."""

from __future__ import annotations

import errno
from pathlib import Path

from .errors import XdphooksError

_WHAT = {
    errno.EROFS: ("is on a read-only filesystem",
                  "remount it read-write (findmnt -T {dir} names the mount; "
                  "mount -o remount,rw MOUNTPOINT)"),
    errno.ENOSPC: ("cannot be written: no space left on its filesystem",
                   "free space there (df {dir})"),
    errno.EDQUOT: ("cannot be written: root's disk quota is exhausted",
                   "raise the quota or free space (quota -u root)"),
    errno.EACCES: ("cannot be written: permission denied although we are root",
                   "clear the immutable flag (lsattr -d {dir}; chattr -i) or the LSM rule "
                   "(journalctl -k | grep -i denied) on it"),
    errno.EPERM: ("cannot be written: operation not permitted although we are root",
                  "clear the immutable or append-only flag (lsattr -d {dir} {path}; "
                  "chattr -i -a)"),
    errno.EIO: ("cannot be written: I/O error",
                "check the disk (journalctl -k) and the filesystem"),
}


def describe(path: Path, err: OSError) -> tuple[str, str]:
    """(message, fix) for ``err`` met on ``path``."""
    what, fix = _WHAT.get(err.errno or 0, (
        f"cannot be used: {err.strerror or err} ({errno.errorcode.get(err.errno or 0, '?')})",
        "check the path and its filesystem"))
    code = errno.errorcode.get(err.errno or 0, "")
    return (f"{path} {what}{f' ({code})' if code and code not in what else ''}",
            fix.format(dir=path.parent, path=path))


def fault(path: Path, err: OSError, then: str = "", retry: str = "") -> XdphooksError:
    """One error line: ``PATH is ... (ERRNO); THEN — fix: ...; RETRY``."""
    msg, fix = describe(path, err)
    return XdphooksError(f"{msg}{'; ' + then if then else ''}",
                         fix=f"{fix}{', then ' + retry if retry else ''}")
