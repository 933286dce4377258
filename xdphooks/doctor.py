"""``xdphooks doctor``: what this kernel and machine offer, and what xdphooks will do."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from .errors import fix_suffix
from .paths import Paths
from .security import is_root


def _line(ok: bool | None, what: str, detail: str = "") -> str:
    mark = {True: "ok  ", False: "FAIL", None: "info"}[ok]
    return f"[{mark}] {what}" + (f": {detail}" if detail else "")


def checks(paths: Paths) -> list[tuple[bool | None, str, str]]:
    out: list[tuple[bool | None, str, str]] = []
    out.append((None, "kernel", platform.release()))
    root = is_root()
    out.append((root, "running as root", "" if root else "reconcile/teardown need root"))
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    out.append((btf, "kernel BTF (/sys/kernel/btf/vmlinux)", "" if btf else "CO-RE objects may fail"))
    try:
        from .kernel import libbpf

        ver = libbpf._lib.libbpf_version_string
        ver.restype = __import__("ctypes").c_char_p
        out.append((True, "libbpf.so.1", ver().decode()))
    except OSError as e:
        out.append((False, "libbpf.so.1", str(e)))
        return out
    from .kernel import bpffs

    out.append((bpffs.is_bpffs(paths.bpffs), f"bpffs at {paths.bpffs}",
                "" if bpffs.is_bpffs(paths.bpffs) else "reconcile mounts one there"))
    if root:
        xdp = libbpf._lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_XDP, None) == 1
        out.append((xdp, "XDP programs load", ""))
        ext = libbpf._lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_EXT, None) == 1
        out.append((None, "BPF_PROG_TYPE_EXT known to the kernel", str(ext)))
        try:
            from .backends.freplace_probe import probe_freplace

            works, why = probe_freplace(paths.run_dir)
            out.append((None, "freplace (dynamic linking) works", f"{works} — {why}"))
        except ImportError:
            out.append((None, "freplace backend", "not installed"))
        from .capabilities import capabilities

        for name, (works, why) in capabilities(paths.run_dir).items():
            out.append((None, f"capability {name}", f"{'yes' if works else 'no'} — {why}"))
    from . import backends, config as config_mod

    try:
        cfg = config_mod.load(paths.config_file)
        present = "" if paths.config_file.exists() else " (no file: all defaults)"
        out.append((True, f"config {paths.config_file}", f"mode = {cfg.mode}{present}"))
        if root:
            choice = backends.choose(paths, cfg.mode)
            out.append((None, "chains will use", f"{choice.mode} ({choice.why})"))
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        out.append((False, f"config {paths.config_file}", str(e)))
        cfg = config_mod.Config()
    from .plugins import discover

    plugins = discover(paths, cfg.disable, cfg.hook_timeout)
    found, _ = plugins.programs()
    out.append((None, "plugins", ", ".join(sorted(plugins.sources)) or "none"))
    out.append((None, "programs declared", ", ".join(p.name for _, p in found) or "none"))
    for f in plugins.failures:
        out.append((False, f"plugin {f.plugin!r}", f.reason + fix_suffix(f.fix)))
    for name in plugins.masked:
        out.append((None, f"plugin {name!r}", "masked by /dev/null symlink"))
    from . import state as state_mod

    try:
        st, warn = state_mod.load(paths.state_file)
        out.append((not warn, f"state {paths.state_file}",
                    warn or f"{len(st.interfaces)} interface(s), generation {st.generation}"))
        for rec in st.interfaces.values():
            name = f"{rec.netns}/{rec.name}" if rec.netns else rec.name
            out.append((None, f"interface {name}", f"mode {rec.mode}, xdp {rec.xdp_mode}, "
                        f"{len(rec.programs)} program(s)"))
    except Exception as e:  # noqa: BLE001
        out.append((False, "state", str(e)))
    return out


def capabilities_json(paths: Paths) -> str:
    """The kernel's capabilities as JSON (the VM matrix records it per kernel)."""
    import json

    from .capabilities import capabilities

    caps = capabilities(paths.run_dir)
    return json.dumps({"kernel": platform.release(),
                       "capabilities": {k: {"works": w, "why": why} for k, (w, why) in caps.items()}},
                      sort_keys=True)


def main(args: argparse.Namespace, paths: Paths) -> int:
    if getattr(args, "capabilities_json", False):
        print(capabilities_json(paths))
        return 0
    results = checks(paths)
    for ok, what, detail in results:
        print(_line(ok, what, detail))
    return 1 if any(ok is False for ok, _, _ in results) else 0
