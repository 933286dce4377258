"""Dynamic backend: a dispatcher whose slots are replaced by the components.

The dispatcher (``bpf/dispatcher.bpf.c``, shipped as
``data/dispatcher-<N>.o``) calls ``slot0 .. slot<n-1>`` and applies each
slot's verdict policy from its read-only config. Every component is loaded
*unmodified* as ``BPF_PROG_TYPE_EXT`` against its slot and linked there
(freplace). On a rebuild, components whose object did not change are not
reloaded: their pinned program from the previous generation gets a second
link, to the new dispatcher (freplace multi-attach, kernel >= 5.10), so their
maps and state carry over untouched; an upgraded component is loaded fresh
into its slot, reusing its pinned maps. The coordinator pins what
``BuiltChain.pins`` lists and swaps the root program atomically.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final

from .. import abi, mapsettings, precheck
from ..errors import KernelError, ObjectError, VerifierError
from ..kernel import libbpf
from ..model import ChainEntry
from ..link import elf as E
from . import globalpins
from ..link.rewrite import tail_targets, without_prog_array_inits
from .base import (BuildContext, BuiltChain, apply_constants, close_fd, data_maps,
                   layout_warning, load_tail_targets, pin_map,
                   running_globals, set_frags)
from . import Backend, Target
from .dispatcher import (DISPATCHER_PROG, config_blob, dispatcher_sizes,  # noqa: F401
                         load_dispatcher, pick_dispatcher, slot_name)
from .freplace_probe import probe_freplace
from .preflight import preflight

if TYPE_CHECKING:
    from ..paths import Paths
    from ..state import InterfaceRecord, ProgramRecord

MODE: Final = "freplace"
#: what an unreplaced stub returns; a chain that returns it was not linked
STUB_RETVAL = 31


def usable(paths: "Paths") -> tuple[bool, str]:
    """Whether this kernel runs freplace: the per-boot probe (freplace_probe.py), cached."""
    return probe_freplace(paths.run_dir)


def _tail(log: str, n: int = 8) -> str:
    from .static import verifier_log

    return "\n".join(ln for ln in verifier_log(log).strip().splitlines()[-n:])


def _pick_program(obj: libbpf.BpfObject, entry: ChainEntry) -> libbpf.Program:
    if entry.program:
        return obj.program(entry.program)
    xdp = [p for p in obj.programs() if p.type == libbpf.BPF_PROG_TYPE_XDP]
    if len(xdp) != 1:
        raise ObjectError(f"{entry.object} has {len(xdp)} XDP programs",
                          plugin=entry.plugin, fix="name one with program = ...")
    return xdp[0]


def single_buffer(ctx: BuildContext, entries: list[ChainEntry]) -> list[tuple[str, str]]:
    """(name, plugin) of the entries whose program is not in SEC("xdp.frags")."""
    out = []
    for entry in entries:
        try:
            obj = libbpf.BpfObject(ctx.trusted_object(entry))
        except KernelError as e:
            raise ObjectError(f"{entry.name}: cannot open {entry.object}: {e.message}",
                              plugin=entry.plugin) from None
        try:
            if not abi.is_frags_section(_pick_program(obj, entry).section):
                out.append((entry.name, entry.plugin))
        finally:
            obj.close()
    return out


def _load_component(ctx: BuildContext, entry: ChainEntry, disp_fd: int, slot: int,
                    frags: bool = False, fresh: bool = False
                    ) -> tuple[int, int, dict[str, str], "Fresh"]:
    """Load ``entry`` fresh as an extension of ``slot``; returns (prog fd, link fd, maps,
    what its globals need). ``fresh``: with maps of its own, not the pinned ones (the
    pre-flight's trial copy)."""
    path = ctx.trusted_object(entry)
    elf = E.read_elf(path)
    # Programs it tail-calls through a declaratively initialised PROG_ARRAY load after
    # it, from the original object (load_tail_targets); the extension itself loads from
    # a copy without the initialisers, which would name programs it does not load. The
    # target's verdict returns to the dispatcher's slot (a tail call from an extension
    # of a called global function).
    targets = tail_targets(elf)
    ext_path = path
    if targets:
        ext_path = path + ".ext.o"
        Path(ext_path).write_bytes(without_prog_array_inits(Path(path).read_bytes(), elf))
    try:
        obj = libbpf.BpfObject(ext_path)
    except KernelError as e:
        raise ObjectError(f"{entry.name}: cannot open {entry.object}: {e.message}",
                          plugin=entry.plugin) from None
    try:
        prog = _pick_program(obj, entry)
        apply_constants(obj, path, entry)
        for p in obj.programs():
            p.set_autoload(p.ptr == prog.ptr)
        prog.set_type(libbpf.BPF_PROG_TYPE_EXT)
        prog.set_expected_attach_type(0)
        set_frags(prog, frags)
        prog.set_attach_target(disp_fd, slot_name(slot))
        maps: dict[str, str] = {}
        names = {m.name for m in obj.maps() if not m.internal}
        unknown = set(entry.pin_maps or ()) - names
        if unknown:
            raise ObjectError(f"object {os.path.basename(entry.object)} has no map(s) "
                              f"{', '.join(sorted(unknown))} named in pin_maps",
                              plugin=entry.plugin, fix=f"use some of: {', '.join(sorted(names))}")
        keep_out = mapsettings.unpinned(entry)
        mapsettings.apply({m.name: m for m in obj.maps() if not m.internal}, entry,
                          os.path.basename(entry.object),
                          lambda n: None if fresh or n in keep_out or (
                              entry.pin_maps is not None and n not in entry.pin_maps)
                          else str(ctx.map_pin_dir(entry) / n))
        for m in obj.maps():
            if m.internal:
                continue
            if m.name in keep_out or entry.pin_maps is not None and m.name not in entry.pin_maps:
                m.set_pin_path(None)  # also overrides LIBBPF_PIN_BY_NAME
                continue
            pin = str(ctx.map_pin_dir(entry) / m.name)
            pin_map(m, None if fresh else pin)
            maps[m.name] = pin
        if not fresh:  # its .data/.bss: the pinned maps, when their layout holds
            globalpins.reuse_sections(ctx, entry, {sec: m for m in obj.maps() for sec in (
                ".data", ".bss") if m.internal and m.name.endswith(sec)}, path)
        try:
            obj.load()
        except KernelError as e:
            log = e.log or ""
            if "couldn't reuse pinned map" in log or "incompatible" in log:
                raise ObjectError(f"{entry.name}: a pinned map no longer matches the new "
                                  f"object ({e.message})", plugin=entry.plugin,
                                  detail=_tail(log),
                                  fix=f"remove the stale pins under {ctx.map_pin_dir(entry)} "
                                      "(their contents are lost)") from None
            raise VerifierError(f"{entry.name}: the kernel refused {prog.name} as an extension "
                                f"of {slot_name(slot)} ({e.message})", plugin=entry.plugin,
                                errno=e.errno, log=log, detail=_tail(log),
                                fix="fix the program (see the verifier's last lines; it must be "
                                    "int f(struct xdp_md *) built with BTF, clang -g) and "
                                    "rebuild the object") from None
        if targets:
            try:
                load_tail_targets(path, entry, targets, {m.name: m.fd for m in obj.maps()
                                                         if not m.internal}, frags)
            except KernelError as e:
                if e.errno != _errno.EINVAL:
                    raise
                raise VerifierError(
                    f"{entry.name}: the kernel refuses to put XDP programs into a PROG_ARRAY "
                    f"that a freplace extension tail-calls through (EINVAL, seen on Linux 6.1 "
                    f"and 6.12), and {entry.program or prog.name} tail-calls "
                    f"{', '.join(targets)}", plugin=entry.plugin, errno=e.errno, log=e.log,
                    fix='use mode = "static" for this interface (a static chain runs its tail '
                        'calls)') from None
        link = prog.attach_freplace(disp_fd, slot_name(slot))
        try:
            link_fd = os.dup(link.fd)
        finally:
            link.destroy()
        # an array no one holds is emptied by the kernel: one the plugin does not pin
        # is pinned with the generation
        tails = {f"tail-{entry.name}-{m.name}": os.dup(m.fd) for m in obj.maps()
                 if targets and m.type == libbpf.BPF_MAP_TYPE_PROG_ARRAY and m.name not in maps}
        fresh = Fresh(entry, path, {sec: os.dup(fd) for sec, fd in data_maps(obj).items()},
                      tails)
        return os.dup(prog.fd), link_fd, maps, fresh
    finally:
        obj.close()


@dataclass
class Fresh:
    """A component loaded afresh: its object and its .data/.bss maps (fds owned)."""

    entry: ChainEntry
    path: str
    data_maps: dict[str, int]
    tail_pins: dict[str, int]  # unpinned PROG_ARRAYs it tail-calls through, by pin name


def _carry_globals(ctx: BuildContext, fresh: list[Fresh]) -> list[str]:
    """An upgraded program's globals from the one it replaces (same names, sizes and
    kinds), else the defaults: written after pre-flight, so the canned packets leave no
    trace in a fresh program's globals. (A reused program is the running one: its
    globals are its own, untouched.)"""
    warnings = []
    prev = ctx.previous if ctx.previous is not None and ctx.previous.mode == MODE else None
    for f in fresh:
        # kept pinned with its maps and reused (backends/globalpins.py); carried from
        # the pin, or the one it replaces, only when the layout changed
        pin = prev.gen_dir / f"prog-{f.entry.name}" if prev else None

        def running(pin=pin) -> dict:
            with libbpf.fd_closing(libbpf.obj_get(str(pin))) as fd:
                return running_globals(fd)

        changed = globalpins.settle_sections(ctx, f.entry, f.data_maps, f.path,
                                             running if pin and pin.exists() else None)
        if changed:
            warnings.append(layout_warning(f.entry.name, changed))
    return warnings


def _reuse_component(ctx: BuildContext, entry: ChainEntry, prev_pin: Path, disp_fd: int,
                     slot: int) -> tuple[int, int, dict[str, str]]:
    """Link the previous generation's program (same object) into the new dispatcher."""
    prog_fd = libbpf.obj_get(str(prev_pin))
    try:
        link_fd = libbpf.freplace_link_create(prog_fd, disp_fd, slot_name(slot))
    except BaseException:
        os.close(prog_fd)
        raise
    pin_dir = ctx.map_pin_dir(entry)
    globalpins.pin_running(ctx, entry, prog_fd)  # its .data/.bss, if not pinned yet
    maps = {}
    if entry.pin_maps is None or entry.pin_maps:
        try:
            for name in sorted(os.listdir(pin_dir)):
                if globalpins.is_globals_pin(name):
                    continue  # its .data/.bss, not one of its maps
                if (entry.pin_maps is None or name in entry.pin_maps) \
                        and name not in mapsettings.unpinned(entry):
                    maps[name] = str(pin_dir / name)
        except OSError:
            pass
    return prog_fd, link_fd, maps


def build(ctx: BuildContext) -> BuiltChain:
    entries = list(ctx.chain.entries)
    if not entries:
        raise ObjectError("an empty chain has nothing to build")
    disp_path = pick_dispatcher(Path(ctx.data_dir), len(entries))
    for entry in entries:  # before libbpf opens any: it would refuse some, naming no one
        precheck.check(ctx.trusted_object(entry), entry)
    single = single_buffer(ctx, entries)
    _preflight(ctx, entries, disp_path, single)
    built = BuiltChain(mode=MODE, prog_fd=-1, slot_prog_ids=[], maps={}, single_buffer=single,
                       warnings=list(ctx.pin_warnings))
    try:
        disp_fd, cnt_fd, ev_fd = load_dispatcher(disp_path, entries, counters=ctx.counters,
                                                 frags=not single)
        for fd in (disp_fd, cnt_fd, ev_fd):
            built.closers.append(close_fd(fd))
        built.prog_fd = disp_fd
        built.pins = {"root": disp_fd, "counters": cnt_fd, "events": ev_fd}
        prev = ctx.previous
        fresh: list[Fresh] = []
        for i, entry in enumerate(entries):
            prev_pin = prev.gen_dir / f"prog-{entry.name}" if prev else None
            reuse = prev is not None and prev.same_load(entry) and prev_pin.exists() \
                and entry.name not in ctx.reset_maps  # another plugin's program: not reused
            if reuse:
                try:
                    prog_fd, link_fd, maps = _reuse_component(ctx, entry, prev_pin, disp_fd, i)
                    # its unpinned PROG_ARRAYs move to the new generation with it
                    for pin in sorted(prev.gen_dir.glob(f"tail-{entry.name}-*")):
                        fd = libbpf.obj_get(str(pin))
                        built.closers.append(close_fd(fd))
                        built.pins[pin.name] = fd
                except KernelError:
                    # e.g. a kernel without freplace multi-attach: load it afresh
                    reuse = False
            if not reuse:
                prog_fd, link_fd, maps, f = _load_component(ctx, entry, disp_fd, i, not single)
                fresh.append(f)
                built.closers += [close_fd(fd) for fd in [*f.data_maps.values(),
                                                          *f.tail_pins.values()]]
                built.pins.update(f.tail_pins)
            built.closers.append(close_fd(prog_fd))
            built.closers.append(close_fd(link_fd))
            built.pins[f"prog-{entry.name}"] = prog_fd
            built.pins[f"link-{entry.name}"] = link_fd
            built.maps[entry.name] = maps
            built.slot_prog_ids.append(libbpf.prog_info(prog_fd)[0].id)
            built.slot_links.append({"link": MODE, "reason": ""})
        built.warnings += _carry_globals(ctx, fresh)
        return built
    except BaseException:
        built.close()
        raise


def _preflight(ctx: BuildContext, entries: list[ChainEntry], disp_path: Path,
               single: list) -> None:
    """Pre-flight on a trial copy: a dispatcher of its own with every component loaded
    afresh against maps of its own, test-run, then released. The canned packets never
    reach the running programs' maps or globals, nor the new chain's counters; the
    trial also proves every slot is replaced."""
    trial = BuiltChain(mode=MODE, prog_fd=-1, slot_prog_ids=[], maps={})
    try:
        disp_fd, cnt_fd, ev_fd = load_dispatcher(disp_path, entries, counters=ctx.counters,
                                                 frags=not single)
        trial.prog_fd = disp_fd
        trial.closers += [close_fd(fd) for fd in (disp_fd, cnt_fd, ev_fd)]
        for i, entry in enumerate(entries):
            prog_fd, link_fd, _, f = _load_component(ctx, entry, disp_fd, i, not single,
                                                     fresh=True)
            trial.closers += [close_fd(fd) for fd in (prog_fd, link_fd, *f.data_maps.values(),
                                                      *f.tail_pins.values())]
        preflight(ctx, disp_fd, stub=STUB_RETVAL)
    finally:
        trial.close()


# --- the backend (backends/__init__.py) ---------------------------------------------


def _prog_pin(gen_dir: Path, name: str) -> Path:
    """Where a generation pins component ``name``'s extension program."""
    return Path(gen_dir) / f"prog-{name}"


class Freplace(Backend):
    """A dispatcher whose slots are EXT programs: each slot a program of its own,
    traced at that program (fentry/fexit on EXT programs), its globals its own."""

    MODE = MODE
    slot_programs = True
    kernel_probed = True

    def usable(self, paths: "Paths") -> tuple[bool, str]:
        return usable(paths)

    def kernel_probe(self, cache_dir: Path, data_dir: Path) -> tuple[bool, str]:
        return probe_freplace(cache_dir, data_dir)

    def build(self, ctx: BuildContext) -> BuiltChain:
        return build(ctx)

    def slot_prog_id(self, gen_dir: Path, name: str) -> int:
        from ..kernel import xdp

        return xdp.pinned_prog_id(_prog_pin(gen_dir, name))

    def link_kind(self, p: "ProgramRecord") -> str:
        return MODE  # what build() records per slot: every slot is an extension

    def trace_target(self, rec: "InterfaceRecord", p: "ProgramRecord") -> Target:
        """The component's EXT program: its pin in the generation, else by its id."""
        from ..model import InterfaceRef

        pin = _prog_pin(Path(rec.pin_dir), p.name)
        fd = libbpf.obj_get(str(pin)) if pin.exists() else libbpf.prog_fd_by_id(p.prog_id)
        try:
            func = libbpf.prog_main_func(fd)
            prog_id = libbpf.prog_info(fd)[0].id
        finally:
            os.close(fd)
        return Target(str(InterfaceRef(rec.netns, rec.name)), p.name, p.plugin, p.slot,
                      self.link_kind(p), prog_id, func)

    def running_globals(self, rec: "InterfaceRecord", p: "ProgramRecord"
                        ) -> tuple[dict[str, Any], Callable[[str], str]]:
        pin = _prog_pin(Path(rec.pin_dir), p.name)
        if not pin.exists():
            return {}, (lambda n: n)
        with libbpf.fd_closing(libbpf.obj_get(str(pin))) as fd:
            return running_globals(fd), (lambda n: n)


BACKEND = Freplace()
