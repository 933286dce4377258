"""Can this kernel run the dynamic (freplace) backend?

Loads the smallest shipped dispatcher plus a tiny extension program into its
first slot, links it and test-runs the result. The answer is cached per boot
(keyed by ``/proc/sys/kernel/random/boot_id``) in ``<run dir>/probe.json``, so
``mode = "auto"`` costs one probe per boot. Never raises.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from ..atomicfile import write_atomic
from ..errors import XdphooksError
from ..paths import DATA_DIR
from ..security import ensure_private_dir, read_checked

CACHE_NAME = "probe.json"
PROBE_PROG = "xdph_probe_ext"
XDP_TX = 3


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _try(data_dir: Path) -> tuple[bool, str]:
    from ..kernel import libbpf
    from . import dispatcher  # the dispatcher alone: freplace.py imports this probe

    disp_path = dispatcher.pick_dispatcher(data_dir, 1)
    fds: list[int] = []
    try:
        disp_fd, cnt_fd, ev_fd = dispatcher.load_dispatcher(
            disp_path, [[1, 1, 0, 1, 1, 1]], counters=False, events=False)
        fds += [disp_fd, cnt_fd, ev_fd]
        obj = libbpf.BpfObject(str(disp_path))
        try:
            for p in obj.programs():
                p.set_autoload(p.name == PROBE_PROG)
            prog = obj.program(PROBE_PROG)
            prog.set_type(libbpf.BPF_PROG_TYPE_EXT)
            prog.set_expected_attach_type(0)
            prog.set_attach_target(disp_fd, dispatcher.slot_name(0))
            obj.load()
            link = prog.attach_freplace(disp_fd, dispatcher.slot_name(0))
            fds.append(os.dup(link.fd))
            link.destroy()
            ext_fd = os.dup(prog.fd)
            fds.append(ext_fd)
        finally:
            obj.close()
        ret = libbpf.prog_test_run(disp_fd, b"\x02" * 12 + b"\x08\x00" + b"\x45" + b"\0" * 49).retval
        if ret != XDP_TX:
            return False, f"dispatcher returned {ret} instead of XDP_TX: extension not in effect"
        # multi-attach (what a rebuild relies on): link the same program again
        disp2, c2, e2 = dispatcher.load_dispatcher(disp_path, [[1, 1, 0, 1, 1, 1]],
                                                 counters=False, events=False)
        fds += [disp2, c2, e2]
        try:
            fds.append(libbpf.freplace_link_create(ext_fd, disp2, dispatcher.slot_name(0)))
        except Exception as e:  # noqa: BLE001
            return True, f"freplace works; multi-attach does not ({e}): rebuilds reload programs"
        return True, f"freplace works on {platform.release()}"
    finally:
        for fd in reversed(fds):
            try:
                os.close(fd)
            except OSError:
                pass


#: the cache's keys and their types: anything else (torn, planted, older) is not a cache
CACHE_FIELDS = {"boot_id": str, "works": bool, "reason": str, "kernel": str}


def read_cache(cache: Path) -> dict[str, Any] | None:
    """The cached answer if the file is one: root's regular file in the root-only run
    directory, read without blocking (a FIFO planted there would hold the lock
    forever), bounded, every key present with its type. Otherwise None: the probe
    runs again and rewrites it, which is the repair."""
    try:
        data = json.loads(read_checked(cache, "probe cache", owners=(0, os.geteuid())))
    except (OSError, ValueError, RecursionError, XdphooksError):
        return None
    if not isinstance(data, dict) or set(data) != set(CACHE_FIELDS) or not all(
            type(data[k]) is t for k, t in CACHE_FIELDS.items()):
        return None
    return data


def probe_freplace(cache_dir: Path, data_dir: Path | None = None,
                   use_cache: bool = True) -> tuple[bool, str]:
    """(works, reason). ``cache_dir`` is the run dir, e.g. ``<root>/run/xdphooks``."""
    boot = _boot_id()
    cache = Path(cache_dir) / CACHE_NAME
    if use_cache and boot:
        cached = read_cache(cache)
        if cached is not None and cached["boot_id"] == boot:
            return cached["works"], cached["reason"]
    try:
        works, reason = _try(Path(data_dir) if data_dir else DATA_DIR)
    except Exception as e:  # noqa: BLE001 - a probe reports, it never raises
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        log = getattr(e, "log", "") or ""
        last = [ln for ln in log.strip().splitlines() if ln.strip()][-1:] if log else []
        works, reason = False, f"freplace unavailable on {platform.release()}: {msg}" + (
            f" ({last[0].strip()})" if last else "")
    if boot:
        try:
            ensure_private_dir(cache.parent, 0o700)  # the lock's directory: root-only
            if os.path.lexists(cache) and not os.path.isfile(cache) or os.path.islink(cache):
                os.unlink(cache)  # a FIFO, socket or symlink where the cache goes: replaced
            write_atomic(cache, json.dumps({"boot_id": boot, "works": works, "reason": reason,
                                            "kernel": platform.release()}))
        except (OSError, XdphooksError):  # a cache we cannot write is no error
            pass
    return works, reason
