"""Facts about object files, gathered at the edge for the pure planner."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import XdphooksError
from .model import XdpProgram
from .objfacts import FactsCache
from .paths import Paths
from .planner import ObjectFacts
from .security import read_trusted

ELF_MAGIC = b"\x7fELF"
EM_BPF = 247


def object_path(paths: Paths, prog: XdpProgram) -> str:
    p = Path(prog.object)
    return str(p if p.is_absolute() else paths.bpf_dir / p)


def inspect(path: str, plugin: str | None = None,
            cache: FactsCache | None = None) -> ObjectFacts:
    """Read one object: trusted? ELF for BPF? which XDP programs, which run config?
    ``cache``: what parsing found before, by sha256 of the bytes (objfacts.py)."""
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
    known = cache.get(digest) if cache is not None else None
    if known is not None:  # these very bytes were parsed before
        return ObjectFacts(path, digest, tuple(known["programs"]), {
            name: (prio, None if acts is None else tuple(acts))
            for name, (prio, acts) in known["run_config"].items()},
            tail_targets=tuple(known["tail_targets"]), untyped=tuple(known["untyped"]))
    try:
        # every fact below from the bytes just checked and hashed, parsed once: not from
        # the path again (a file swapped meanwhile), not once per fact (issue 24)
        programs, run_config, elf = _programs(path, plugin, data)
        targets, untyped = _elf_facts(path, programs, elf)
    except XdphooksError as e:
        return ObjectFacts(path, digest, error=e.message, fix=e.fix)
    except Exception as e:  # noqa: BLE001 - a corrupt object must never crash planning
        return ObjectFacts(path, digest, error=f"{path} cannot be parsed: {type(e).__name__}: {e}",
                           fix="rebuild the object and reinstall")
    if cache is not None and elf is not None:  # not libbpf's answer (no untyped, targets)
        cache.put(digest, {"programs": list(programs), "tail_targets": list(targets),
                           "untyped": list(untyped), "run_config": {
                               n: [prio, None if acts is None else list(acts)]
                               for n, (prio, acts) in run_config.items()}})
    return ObjectFacts(path, digest, tuple(programs), run_config, tail_targets=targets,
                       untyped=untyped)


def _elf_facts(path: str, programs, elf=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(programs its PROG_ARRAYs initialise, programs in sections of no type)."""
    from .link.elf import read_elf
    from .link.rewrite import tail_targets, xdp_programs

    elf = elf or read_elf(path)
    return tail_targets(elf), tuple(p.name for p in xdp_programs(elf, untyped=True)
                                    if p.name not in programs)


def _programs(path: str, plugin: str | None = None, data: bytes | None = None):
    """(XDP programs, their run configs, the parsed object) of ``data``, ``path``'s bytes."""
    try:
        from .link.btf import Btf
        from .link.elf import read_elf
        from .runconfig import list_xdp_programs, read_run_config
    except ImportError:  # the pure-Python reader not available: ask libbpf
        return _programs_libbpf(path), {}, None
    elf = read_elf(path, data, plugin)
    progs = list_xdp_programs(path, plugin, elf)
    rc = {}
    btf_sec = elf.section(".BTF")
    btf = Btf.parse(btf_sec.data, path, plugin) if btf_sec is not None and progs else None
    for name in progs if btf is not None else ():
        cfg = read_run_config(path, name, plugin, elf, btf)
        if cfg is not None:
            rc[name] = (cfg.priority, cfg.chain_call_actions)
    return progs, rc, elf


def _programs_libbpf(path: str) -> list[str]:
    from .kernel import libbpf

    try:
        with libbpf.BpfObject(path) as obj:
            return [p.name for p in obj.programs() if p.type == libbpf.BPF_PROG_TYPE_XDP]
    except libbpf.KernelError as e:
        raise XdphooksError(f"libbpf cannot open {os.path.basename(path)}: {e.message}",
                            fix="rebuild the object with clang -g -target bpf") from None
