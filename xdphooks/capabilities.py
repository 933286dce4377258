"""What the running kernel offers xdphooks and the plugins it chains, probed, not guessed
from the version: ``xdphooks doctor`` prints it, the VM matrix records it per kernel
(docs/kernels.md), and a feature the kernel lacks is refused by name (``has()``).
Each probe loads a few instructions or a shipped object and never raises. Needs root.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

from .kernel.features import EXIT as _EXIT, frags, has_frags, raw_xdp_prog as _raw_xdp_prog
from .link.insn import HELPER_XDP_ADJUST_META, HELPER_XDP_GET_BUFF_LEN, HELPER_XDP_LOAD_BYTES
from .paths import DATA_DIR

__all__ = ["capabilities", "frags", "has_frags", "has_load_bytes"]

#: kfuncs the corpus calls (tests/corpus), looked up in the kernel's BTF by name
CORPUS_KFUNCS = ("bpf_xdp_ct_lookup",)


def _adjust_meta() -> tuple[bool, str]:
    from .kernel import libbpf

    # r2 = -4; call bpf_xdp_adjust_meta(ctx, -4); return its result
    try:
        fd = _raw_xdp_prog([(0xb7, 2, 0, 0, -4), (0x85, 0, 0, 0, HELPER_XDP_ADJUST_META), _EXIT])
    except OSError as e:
        return False, f"a program calling bpf_xdp_adjust_meta does not load ({e.strerror})"
    try:
        ret = libbpf.prog_test_run(fd, b"\0" * 64).retval
    except Exception as e:  # noqa: BLE001 - a probe reports
        return False, f"test run failed: {e}"
    finally:
        os.close(fd)
    if ret != 0:
        return False, f"bpf_xdp_adjust_meta(ctx, -4) returned {ret - (1 << 32) if ret >= 1 << 31 else ret} in a test run"
    return True, "bpf_xdp_adjust_meta grows the metadata in a test run"


def _helper(helper_id: int, name: str) -> tuple[bool, str]:
    import ctypes

    from .kernel import libbpf

    fn = libbpf._lib.libbpf_probe_bpf_helper
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    ok = fn(libbpf.BPF_PROG_TYPE_XDP, helper_id, None) == 1
    return ok, f"{name} {'available' if ok else 'not available'} to XDP programs"


def _btf_names() -> bytes:
    out = b""
    btf_dir = Path("/sys/kernel/btf")
    for p in [btf_dir / "vmlinux", btf_dir / "nf_conntrack"]:
        try:
            out += p.read_bytes()
        except OSError:
            pass
    return out


def _kfuncs() -> tuple[bool, str]:
    btf = _btf_names()
    if not btf:
        return False, "no kernel BTF: kfuncs cannot be resolved"
    missing = [k for k in CORPUS_KFUNCS if b"\0" + k.encode() + b"\0" not in btf]
    if missing:
        loaded = Path("/sys/kernel/btf/nf_conntrack").exists() or b"\0nf_conntrack_in\0" in btf
        return False, "not in the kernel's BTF: " + ", ".join(missing) + (
            "" if loaded else " (the nf_conntrack module is not loaded: modprobe nf_conntrack)")
    return True, ", ".join(CORPUS_KFUNCS) + " in the kernel's BTF"


def _fentry_on_bpf(data_dir: Path) -> tuple[bool, str]:
    """fentry/fexit on a BPF program's function: what status --profile and trace --live use."""
    from .backends import dispatcher
    from .kernel import libbpf

    disp_path = dispatcher.pick_dispatcher(data_dir, 1)
    fds = list(dispatcher.load_dispatcher(disp_path, [[1, 1, 0, 1, 1, 1]], counters=False,
                                          events=False))
    obj = None
    links = []
    try:
        obj = libbpf.BpfObject(str(data_dir / "slot_profile.o"))
        for name in ("xdph_prof_enter", "xdph_prof_exit"):
            obj.program(name).set_attach_target(fds[0], dispatcher.slot_name(0))
        obj.load()
        for name in ("xdph_prof_enter", "xdph_prof_exit"):
            links.append(obj.program(name).attach_trace())
        return True, "fentry/fexit attach to a dispatcher slot"
    except Exception as e:  # noqa: BLE001 - a probe reports
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        return False, f"fentry/fexit on BPF programs refused: {msg}"
    finally:
        for link in links:
            link.destroy()
        if obj is not None:
            obj.close()
        for fd in fds:
            os.close(fd)


def _backend_probes(cache_dir: Path, data: Path) -> dict[str, Callable[[], tuple[bool, str]]]:
    """The backends' own probes, each under its backend's name (freplace's: can this
    kernel replace a dispatcher slot), in the registry's order."""
    from . import backends

    out: dict[str, Callable[[], tuple[bool, str]]] = {}
    for name in backends.NAMES:
        try:
            backend = backends.get(name)
        except ImportError:  # a packaging that leaves a backend out: nothing to probe
            continue
        if backend.kernel_probed:
            out[name] = functools.partial(backend.kernel_probe, cache_dir, data)
    return out


def capabilities(cache_dir: Path, data_dir: Path | None = None) -> dict[str, tuple[bool, str]]:
    """Every capability xdphooks or the corpus depends on, probed on the running kernel:
    name -> (works, one sentence). Needs root. Never raises."""
    data = Path(data_dir) if data_dir else DATA_DIR
    probes: dict[str, Callable[[], tuple[bool, str]]] = {
        "btf": lambda: ((True, "/sys/kernel/btf/vmlinux present")
                        if Path("/sys/kernel/btf/vmlinux").exists()
                        else (False, "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)")),
        **_backend_probes(cache_dir, data),
        "fentry_on_bpf": lambda: _fentry_on_bpf(data),
        "frags": frags,
        "adjust_meta": _adjust_meta,
        "xdp_get_buff_len": lambda: _helper(HELPER_XDP_GET_BUFF_LEN, "bpf_xdp_get_buff_len"),
        "xdp_load_bytes": lambda: _helper(HELPER_XDP_LOAD_BYTES, "bpf_xdp_load_bytes"),
        "corpus_kfuncs": _kfuncs,
    }
    out = {}
    for name, fn in probes.items():
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001 - a probe reports, it never raises
            out[name] = (False, f"probe failed: {e}")
    return out


@functools.lru_cache(maxsize=None)
def has_load_bytes() -> bool:
    """bpf_xdp_load_bytes (Linux 5.18), which trace --live's packet copy uses."""
    return _helper(HELPER_XDP_LOAD_BYTES, "bpf_xdp_load_bytes")[0]
