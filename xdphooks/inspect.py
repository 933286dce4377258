"""Facts about object files, gathered at the edge for the pure planner."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import XdphooksError
from .model import XdpProgram
from .paths import Paths
from .planner import ObjectFacts
from .security import read_trusted

ELF_MAGIC = b"\x7fELF"
EM_BPF = 247


def object_path(paths: Paths, prog: XdpProgram) -> str:
    p = Path(prog.object)
    return str(p if p.is_absolute() else paths.bpf_dir / p)


def inspect(path: str, plugin: str | None = None) -> ObjectFacts:
    """Read one object: trusted? ELF for BPF? which XDP programs, which run config?"""
    try:
        data = read_trusted(Path(path), "BPF object", plugin)
    except FileNotFoundError:
        return ObjectFacts(path, error=f"object {path} does not exist",
                           fix="install the plugin's package again, or fix its object path")
    except XdphooksError as e:
        return ObjectFacts(path, error=e.message, fix=e.fix)
    except OSError as e:
        return ObjectFacts(path, error=f"cannot read {path}: {e.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        return ObjectFacts(path, digest, error=f"{path} is not an ELF file (truncated or corrupt?)",
                           fix="rebuild the object with clang -target bpf and reinstall")
    machine = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
    if machine != EM_BPF:
        return ObjectFacts(path, digest, error=f"{path} is an ELF file for machine {machine}, "
                           "not BPF", fix="build it with clang -target bpf")
    try:
        programs, run_config = _programs(path, plugin)
        targets, untyped = _elf_facts(path, programs)
    except XdphooksError as e:
        return ObjectFacts(path, digest, error=e.message, fix=e.fix)
    except Exception as e:  # noqa: BLE001 - a corrupt object must never crash planning
        return ObjectFacts(path, digest, error=f"{path} cannot be parsed: {type(e).__name__}: {e}",
                           fix="rebuild the object and reinstall")
    return ObjectFacts(path, digest, tuple(programs), run_config, tail_targets=targets,
                       untyped=untyped)


def _elf_facts(path: str, programs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(programs its PROG_ARRAYs initialise, programs in sections of no type)."""
    from .link.elf import read_elf
    from .link.rewrite import tail_targets, xdp_programs

    elf = read_elf(path)
    return tail_targets(elf), tuple(p.name for p in xdp_programs(elf, untyped=True)
                                    if p.name not in programs)


def _programs(path: str, plugin: str | None = None):
    try:
        from .runconfig import list_xdp_programs, read_run_config
    except ImportError:  # the pure-Python reader not available: ask libbpf
        return _programs_libbpf(path), {}
    progs = list_xdp_programs(path, plugin)
    rc = {}
    for name in progs:
        cfg = read_run_config(path, name, plugin)
        if cfg is not None:
            rc[name] = (cfg.priority, cfg.chain_call_actions)
    return progs, rc


def _programs_libbpf(path: str) -> list[str]:
    from .kernel import libbpf

    try:
        with libbpf.BpfObject(path) as obj:
            return [p.name for p in obj.programs() if p.type == libbpf.BPF_PROG_TYPE_XDP]
    except libbpf.KernelError as e:
        raise XdphooksError(f"libbpf cannot open {os.path.basename(path)}: {e.message}",
                            fix="rebuild the object with clang -g -target bpf") from None
