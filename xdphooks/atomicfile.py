"""Replace a file so that readers see the old or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644, durable: bool = False) -> None:
    """A temporary file in the same directory, renamed over ``path``. Its name is
    ``.NAME.XXXX``, so a reader globbing for ``*.prom`` or ``*.json`` skips it.
    ``durable``: fsync the file and the directory too (state that must outlive a
    crash); a cache does not need it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
