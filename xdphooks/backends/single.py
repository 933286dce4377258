"""A chain of exactly one program, loaded as itself (no rootlet, no counters)."""

from __future__ import annotations

from ..errors import KernelError, VerifierError
from ..kernel import libbpf
from .base import BuildContext, BuiltChain
from .preflight import preflight


def build(ctx: BuildContext) -> BuiltChain:
    (entry,) = ctx.chain.entries
    obj = libbpf.BpfObject(entry.object)
    built = BuiltChain(mode="single", prog_fd=-1, slot_prog_ids=[], maps={})
    built.closers.append(obj.close)
    try:
        for prog in obj.programs():
            prog.set_autoload(prog.name == entry.program)
        maps = {}
        for m in obj.maps():
            if m.internal or (entry.pin_maps is not None and m.name not in entry.pin_maps):
                continue
            path = str(ctx.map_pin_dir(entry.name) / m.name)
            m.set_pin_path(path)
            maps[m.name] = path
        try:
            obj.load()
        except KernelError as e:
            raise VerifierError(f"{entry.name}: the kernel refused {entry.program} "
                                f"({e.message})", plugin=entry.plugin, errno=e.errno,
                                log=e.log, detail=_tail(e.log),
                                fix="fix the program (see the verifier's last lines) "
                                    "and rebuild the object") from None
        prog = obj.program(entry.program)
        built.prog_fd = prog.fd
        pid = libbpf.prog_info(prog.fd)[0].id
        built.slot_prog_ids = [pid]
        built.maps = {entry.name: maps}
        built.pins = {"root": prog.fd}
        preflight(ctx, built)
        return built
    except BaseException:
        built.close()
        raise


def _tail(log: str, n: int = 8) -> str:
    return "\n".join(log.strip().splitlines()[-n:])
