"""Static backend: rootlet + rewritten components, linked into ONE XDP program.

build() rewrites every entry's object into ctx.workdir (xdphooks.link.rewrite),
links them after the prebuilt rootlet with libbpf's static linker, generates
the root program for this chain (xdphooks.link.splice: each slot spliced inline
or called, its policy compiled into the code), pins each component's
persistent maps under ``ctx.map_pin_dir(entry)/<original map name>``, loads,
and pre-flights the program with BPF_PROG_TEST_RUN on canned packets. A
spliced chain the verifier refuses is retried with every slot called.
"""

from __future__ import annotations

import errno as _errno
import os
import re
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final

from ..errors import KernelError, LimitError, ObjectError, UsageError, VerifierError, \
    XdphooksError
from ..kernel import libbpf
from .. import abi, mapsettings, precheck
from ..link import splice
from ..model import Link
from ..link.globals import carry
from ..link.rewrite import PREFIX_FMT
from .base import (BuildContext, BuiltChain, apply_constants, data_maps, layout_warning,
                   load_tail_targets, object_globals, pin_map, running_globals, set_frags,
                   tail_call_targets, write_globals)
from . import Backend, Target, globalpins
from .preflight import preflight as run_preflight

if TYPE_CHECKING:
    from ..model import Chain
    from ..paths import Paths
    from ..state import InterfaceRecord, ProgramRecord

MAX_SLOTS = abi.MAX_SLOTS  # per linked program (segment)
MAX_USED_MAPS = 64  # kernel MAX_USED_MAPS
MAX_STACK = 512
ROOTLET = "rootlet.o"

#: control-plane timings of the last build() (seconds), for benchmarks/diagnostics
last_timings: dict[str, float] = {}


def rootlet_path(data_dir: Path) -> Path:
    p = Path(data_dir) / ROOTLET
    if not p.exists():
        raise ObjectError(f"rootlet object {p} is missing", fix="reinstall xdphooks")
    return p


# --- build ----------------------------------------------------------------------------------


def _watch_maps(ctx: BuildContext) -> int:
    """Maps a watched build's instrumentation adds to each segment (its ring, its
    profile array: referenced by fd, they count against MAX_USED_MAPS all the same)."""
    ins = ctx.instrument
    return 0 if ins is None else (ins.ring_fd >= 0) + (ins.prof_fd >= 0)


def _segments(ctx: BuildContext, results, rootlet: Path,
              reserve: int | None = None) -> list[list[int]]:
    """Split the chain into linked programs that each stay within the kernel's
    MAX_USED_MAPS and MAX_SLOTS slots, in chain order; one segment unless needed."""
    from ..link.rewrite import count_maps
    root_maps, root_data = count_maps(str(rootlet))
    root_maps += _watch_maps(ctx) if reserve is None else reserve
    segs: list[list[int]] = [[]]
    used, data = root_maps, set(root_data)
    entries = ctx.chain.entries
    for i, (entry, res) in enumerate(zip(entries, results)):
        need = used + len(res.maps) + len(data | res.data_sections)
        if segs[-1] and (need > MAX_USED_MAPS or len(segs[-1]) >= MAX_SLOTS):
            segs.append([])
            used, data = root_maps, set(root_data)
            need = used + len(res.maps) + len(data | res.data_sections)
        if need > MAX_USED_MAPS:
            raise LimitError(f"interface {ctx.interface}: program {entry.name!r} uses "
                             f"{len(res.maps) + len(res.data_sections)} maps; with the chain's "
                             f"own {root_maps} that is {need}, the kernel allows "
                             f"{MAX_USED_MAPS} per program", plugin=entry.plugin,
                             fix='use fewer maps in the program, or mode = "freplace"')
        segs[-1].append(i)
        used += len(res.maps)
        data |= res.data_sections
    if len(segs) > abi.MAX_SEGMENTS:
        raise LimitError(f"interface {ctx.interface}: the chain needs {len(segs)} linked "
                         f"programs, tail calls join at most {abi.MAX_SEGMENTS}",
                         plugin=entries[segs[abi.MAX_SEGMENTS][0]].plugin,
                         fix="remove programs or spread them over interfaces")
    return segs


_VERIFIER_STATS = ("processed ", "verification time", "stack depth", "Func#")


def verifier_log(log: str) -> str:
    """The verifier's log inside libbpf's output (between its BEGIN/END PROG LOAD LOG
    markers; the last one if several), or all lines not from libbpf itself."""
    blocks = re.findall(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", log, re.S)
    if blocks:
        return blocks[-1]
    return "\n".join(ln for ln in log.splitlines() if not ln.startswith("libbpf: "))


def _verifier_error(ctx: BuildContext, err: KernelError, results) -> Exception:
    log = err.log or ""
    body = verifier_log(log)  # the kernel's own words, without libbpf's chatter
    lines = [ln for ln in body.splitlines() if ln.strip()]
    tail = "\n".join(lines[-12:])
    said = [ln for ln in lines if not ln.startswith(_VERIFIER_STATS)]
    slot_re = re.compile(r"xdph_slot_(\d+)")
    culprit = None
    for m in re.finditer(r"Validating (\S+)\(\) func#\d+", body):
        culprit = m.group(1)
    if culprit is None:  # fall back to the last slot/prefixed name the log mentions
        for m in re.finditer(r"\b(xdph_slot_\d+|s\d+_\w+)", body):
            culprit = m.group(1)
    entry = None
    if culprit:
        m = slot_re.search(culprit) or re.match(r"s(\d+)_", culprit)
        if m and int(m.group(1)) < len(ctx.chain.entries):
            entry = ctx.chain.entries[int(m.group(1))]
    stack = re.search(r"combined stack size of (\d+) calls is (\d+)", log)
    if stack and results:
        # The verifier does not say whose frames were too deep (its log names whatever it
        # checked last): blame the component whose own frames are deepest.
        depths = [_stack_estimate(getattr(r, "path", "")) for r in results]
        if max(depths) > 0:
            entry = ctx.chain.entries[depths.index(max(depths))]
    who = "the rootlet"
    if entry is not None:
        res = results[list(ctx.chain.entries).index(entry)]
        who = (f"program {entry.name!r} (function {res.program!r} in "
               f"{os.path.basename(entry.object)})")
    plugin = entry.plugin if entry else None
    m = stack
    if m:
        return LimitError(f"interface {ctx.interface}: {who} needs too much stack: the chain "
                          f"uses {m.group(2)} bytes, the kernel allows {MAX_STACK}",
                          plugin=plugin, detail=tail,
                          fix="reduce the program's stack use (the rootlet itself uses 32 bytes)")
    m = re.search(r"tail_calls are not allowed when call stack of previous frames is (\d+)", log)
    if m:
        return LimitError(f"interface {ctx.interface}: {who} uses tail calls, which the kernel "
                          f"allows from a called function only if the frames below use at most "
                          f"256 bytes of stack (they use {m.group(1)})", plugin=plugin, detail=tail,
                          fix='use mode = "freplace" for this interface')
    if "couldn't reuse pinned map" in log or "reuse pinned map" in log:
        m = re.search(r"map '([^']+)': error reusing pinned map", log) or \
            re.search(r"couldn't reuse pinned map at '([^']+)'", log)
        where = m.group(1) if m else "a pinned map"
        return KernelError(f"interface {ctx.interface}: pinned map {where} does not match the "
                           "map the object now defines (type, key/value size or max_entries changed)",
                           errno=err.errno, log=log, plugin=plugin, detail=tail,
                           fix=f"remove the stale pin under {ctx.paths.pin_root / 'maps'} "
                               "(its contents are lost) and retry")
    return VerifierError(f"interface {ctx.interface}: the verifier rejected {who}: "
                         f"{said[-1] if said else err.message}",
                         errno=err.errno, log=log, plugin=plugin, detail=tail,
                         fix="fix the program, or leave it out of the chain")


def _stack_estimate(path: str) -> int:
    """Bytes of stack a rewritten component needs: its deepest frame plus the deepest
    other function's (a callee). From fp-relative accesses (``[r10 - n]``, and
    ``rX = r10; rX += -n`` pointers handed to helpers); 0 if it cannot tell."""
    from ..link import elf as E
    try:
        elf = E.read_elf(path)
    except Exception:  # noqa: BLE001 - only an estimate for a message
        return 0
    frames = []
    for sym in elf.symbols:
        if sym.type != E.STT_FUNC or not 0 < sym.shndx < len(elf.sections):
            continue
        code = elf.sections[sym.shndx].data
        end = sym.value + sym.size if sym.size else len(code)
        deepest, fp_copies = 0, set()
        for off in range(sym.value, min(end, len(code)) - 7, 8):
            op, regs, disp, imm = struct.unpack_from("<BBhi", code, off)
            dst, src, cls = regs & 0xF, regs >> 4, op & 7
            if cls in (1, 2, 3) and (src if cls == 1 else dst) == 10 and disp < 0:
                deepest = max(deepest, -disp)  # LDX / ST / STX at [r10 - n]
            elif op == 0xBF:  # rX = rY
                (fp_copies.add if src == 10 else fp_copies.discard)(dst)
            elif op == 0x07 and dst in fp_copies and imm < 0:  # rX += -n
                deepest = max(deepest, -imm)
        frames.append(deepest)
    frames.sort(reverse=True)
    return sum(frames[:2])


def build(ctx: BuildContext, preflight: bool = True) -> BuiltChain:
    """Build, load and pre-flight the static chain for ``ctx.chain`` (not attached)."""
    from ..link.rewrite import rewrite

    timings = {}
    t0 = time.perf_counter()
    entries = list(ctx.chain.entries)
    if len(entries) > abi.MAX_CHAIN:
        per_plugin: dict[str, int] = {}
        for e in entries:
            per_plugin[e.plugin] = per_plugin.get(e.plugin, 0) + 1
        plugin, n = max(per_plugin.items(), key=lambda kv: kv[1])
        raise LimitError(f"interface {ctx.interface}: {len(entries)} programs ({n} of them "
                         f"from this plugin), the static backend supports at most "
                         f"{abi.MAX_CHAIN}", plugin=plugin,
                         fix="remove programs or spread them over interfaces")
    rootlet = rootlet_path(ctx.data_dir)
    work = Path(ctx.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for i, entry in enumerate(entries):
        out = work / f"slot{i}-{entry.name}.o"
        path = ctx.trusted_object(entry)
        precheck.check(path, entry)  # faults the linked chain would not name: this plugin
        results.append(rewrite(path, str(out), i, entry.program, who=entry.plugin))
    # multi-buffer only when every program handles it (segments join by tail call,
    # and the kernel wants the same flag on both sides of one)
    single = [(e.name, e.plugin) for e, r in zip(entries, results) if not r.frags]
    segments = _segments(ctx, results, rootlet)
    if _watch_maps(ctx) and segments != _segments(ctx, results, rootlet, reserve=0) \
            and any(r.data_sections for r in results):
        # globals are shared segment by segment with the running chain
        raise LimitError(f"interface {ctx.interface}: the watch's own maps move the "
                         "boundaries between the chain's linked programs (a segment uses "
                         "nearly all the kernel's 64 maps) and the chain has global "
                         "variables, so the watched build could not share them; nothing "
                         "was watched", fix="watch a chain with fewer maps per segment")
    linked = []
    for k, seg in enumerate(segments):
        linked.append(work / f"chain{k}.o")
        _link(ctx, linked[-1], rootlet, [results[i] for i in seg], entries)
    timings["rewrite_link"] = time.perf_counter() - t0

    def load(fresh: bool):
        return _load_chain(ctx, linked, segments, entries, results, not single, fresh)

    # Pre-flight runs a trial copy of the chain whose maps and globals are all its own:
    # the canned packets leave no trace in any program's pinned maps or globals.
    t2 = time.perf_counter()
    if preflight:
        trial, _, _, _ = load(fresh=True)
        try:
            run_preflight(ctx, trial[0].program(abi.ROOT_PROG).fd)
        finally:
            for o in trial:
                o.close()
    timings["preflight"] = time.perf_counter() - t2

    t1 = time.perf_counter()
    objs, links, shared, tail_pins = load(fresh=False)
    try:
        prog_fd = objs[0].program(abi.ROOT_PROG).fd
        info, _ = libbpf.prog_info(prog_fd)
        counters_fd, events_fd = shared[abi.COUNTERS_MAP], shared[abi.EVENTS_MAP]
        # a watched build shares the running chain's globals maps: nothing to carry
        warnings = [] if ctx.share_globals is not None else _carry_globals(
            ctx, objs, [work / f"root{k}.o" for k in range(len(objs))], segments, entries,
            results)
        if ctx.share_globals is None:  # each slot's .data/.bss: carried only if not reused
            warnings += globalpins.settle(ctx, objs, segments, entries, results,
                                          lambda: _previous_globals(ctx.previous.gen_dir))
        timings["load"] = time.perf_counter() - t1
        pins = {"root": prog_fd, "counters": counters_fd, "events": events_fd, **tail_pins}
        if len(objs) > 1:
            # the segments live as long as this user reference to their prog array
            pins["segments"] = shared[abi.SEGMENTS_MAP]
        built = BuiltChain(mode=MODE, prog_fd=prog_fd,
                           slot_prog_ids=[info.id] * len(entries), maps=_pins(ctx, entries, results),
                           pins=pins, closers=[o.close for o in objs],
                           slot_links=[{"link": ln.link, "reason": ln.reason} for ln in links],
                           single_buffer=single, warnings=ctx.pin_warnings + warnings)
        objs = []
        last_timings.clear()
        last_timings.update(timings)
        return built
    finally:
        for o in objs:
            o.close()


def _load_chain(ctx: BuildContext, linked: list[Path], segments, entries, results, frags: bool,
                fresh: bool):
    """Load every segment, join them, load the tail-call targets: (objects, how each slot
    is linked, the chain's shared map fds, PROG_ARRAYs to pin). ``fresh``: with maps of
    its own instead of the pinned ones (pre-flight's trial copy)."""
    work = Path(ctx.workdir)
    objs: list = []
    links: list[splice.Linked] = []
    try:
        shared: dict[str, int] = {} if fresh else dict(ctx.share_maps)
        for k, seg in enumerate(segments):
            nxt = k + 1 if k + 1 < len(segments) else None
            reuse = ctx.share_globals[k] if ctx.share_globals and not fresh \
                and k < len(ctx.share_globals) else {}
            obj, seg_links = _load_segment(ctx, linked[k], work / f"root{k}.o", seg, nxt,
                                           entries, results, shared, frags, fresh, reuse)
            objs.append(obj)
            links += seg_links
            if k == 0:
                by_name = {m.name: m for m in obj.maps()}
                shared = {n: by_name[n].fd for n in abi.ROOT_MAPS + (abi.SEGMENTS_MAP,)}
        for k, obj in enumerate(objs[1:], 1):  # join the segments
            libbpf.map_update(shared[abi.SEGMENTS_MAP], k.to_bytes(4, "little"),
                              obj.program(abi.ROOT_PROG).fd.to_bytes(4, "little"))
        tail_pins = _load_tail_targets(ctx, objs, segments, entries, results, frags)
        return objs, links, shared, tail_pins
    except BaseException:
        for o in objs:
            o.close()
        raise


def _load_tail_targets(ctx: BuildContext, objs, segments, entries, results,
                       frags: bool) -> dict[str, int]:
    """The programs a component tail-calls through a declaratively initialised
    PROG_ARRAY, loaded from its original object as plain XDP programs beside the chain,
    with that object's maps pointed at the chain's copies: libbpf then fills the
    chain's PROG_ARRAY, and the targets share the component's maps. A tail call from
    a called slot returns to the root, whose policy judges the target's verdict.
    Returns the PROG_ARRAYs to pin with the generation when the plugin does not pin
    them itself (an array no one holds is emptied by the kernel)."""
    pins: dict[str, int] = {}
    for k, seg in enumerate(segments):
        chain_maps = {m.name: m for m in objs[k].maps()}
        for i in seg:
            res, entry = results[i], entries[i]
            path = ctx.trusted_object(entry)
            arrays = any(m.type == libbpf.BPF_MAP_TYPE_PROG_ARRAY
                         for r in res.maps if (m := chain_maps.get(r) or chain_maps.get(r[:15])))
            targets = tail_call_targets(ctx, path, entry, res.program, arrays)
            if not targets:
                continue
            wanted = _wanted_maps(entry, res)
            map_fds = {}
            for orig, renamed in res.original_maps.items():
                # a map reused from a pin carries the kernel's name, cut to 15 characters
                mine = chain_maps.get(renamed) or chain_maps.get(renamed[:15])
                if mine is None:
                    continue
                map_fds[orig] = mine.fd
                if mine.type == libbpf.BPF_MAP_TYPE_PROG_ARRAY and orig not in wanted:
                    pins[f"tail-{entry.name}-{orig}"] = mine.fd
            load_tail_targets(path, entry, targets, map_fds, frags, ctx.prog_arrays)
    return pins


def _carry_globals(ctx: BuildContext, objs, roots: list[Path], segments, entries,
                   results) -> list[str]:
    """Each program's globals (.data/.bss) from the running chain into the new one, by
    program and variable name (the slot prefix may differ), else the defaults: written
    after pre-flight, so the canned packets leave no trace in them."""
    prev = ctx.previous
    old = _previous_globals(prev.gen_dir) if prev is not None and prev.mode == MODE else {}
    prev_slots = {p: s for p, s in prev.slots.items() if p not in ctx.reset_maps} \
        if prev is not None and prev.mode == MODE else {}
    warnings = []
    for k, seg in enumerate(segments):
        variables, defaults = object_globals(str(roots[k]))
        if not defaults:
            continue
        owner = {}  # new variable name -> (program, name in its object)
        for i in seg:
            pre = results[i].prefix
            owner.update({n: (entries[i].name, n[len(pre):]) for n in variables
                          if n.startswith(pre)})

        def old_name(n: str) -> str | None:
            prog, base = owner.get(n, (None, ""))
            slot = prev_slots.get(prog) if prog else None
            return None if slot is None else PREFIX_FMT.format(slot) + base

        contents, changed = carry(old, variables, defaults, old_name)
        write_globals(data_maps(objs[k]), contents)
        by_prog: dict[str, list[str]] = {}
        for n in changed:
            by_prog.setdefault(owner[n][0], []).append(owner[n][1])
        warnings += [layout_warning(p, names) for p, names in sorted(by_prog.items())]
    return warnings


def _previous_globals(gen_dir: Path) -> dict:
    """The globals of a running static chain: its root's and its other segments'."""
    out: dict = {}
    try:
        root_fd = libbpf.obj_get(str(gen_dir / "root"))
    except KernelError:
        return out
    with libbpf.fd_closing(root_fd):
        out.update(running_globals(root_fd))
    if (gen_dir / "segments").exists():
        with libbpf.fd_closing(libbpf.obj_get(str(gen_dir / "segments"))) as seg_fd:
            for k in range(1, abi.MAX_SEGMENTS):
                raw = libbpf.map_lookup(seg_fd, k.to_bytes(4, "little"), 4)
                if raw and int.from_bytes(raw, "little"):
                    with libbpf.fd_closing(libbpf.prog_fd_by_id(
                            int.from_bytes(raw, "little"))) as fd:
                        out.update(running_globals(fd))
    return out


def _link(ctx: BuildContext, out: Path, rootlet: Path, results, entries) -> None:
    try:
        libbpf.link_objects(str(out), [str(rootlet)] + [r.path for r in results])
    except KernelError as e:
        last = [ln for ln in e.log.splitlines() if ln.strip() and "adding object" not in ln]
        # libbpf names the input it choked on: slot<N>-<name>.o is entries[N]
        slots = [int(m.group(1)) for m in re.finditer(r"slot(\d+)-", e.log)]
        culprit = entries[slots[-1]] if slots and slots[-1] < len(entries) else None
        raise ObjectError(f"interface {ctx.interface}: libbpf's linker refused the chain: "
                          f"{last[-1].strip() if last else e.message}",
                          plugin=culprit.plugin if culprit else None,
                          fix=f"check {os.path.basename(culprit.object) if culprit else 'the objects'}"
                              " with bpftool gen object", detail=e.log) from None


def _load_segment(ctx: BuildContext, linked: Path, root: Path, seg: list[int],
                  next_segment: int | None, entries, results, shared: dict[str, int],
                  frags: bool = False, fresh: bool = False, reuse: dict | None = None):
    """Generate and load one segment's root; a spliced root the verifier refuses is
    retried with every slot called (the verifier is the judge, and each slot says why)."""
    seg_entries = [entries[i] for i in seg]
    seg_results = [results[i] for i in seg]
    links = _generate_root(ctx, linked, root, seg, next_segment)
    try:
        return _load(ctx, root, seg_entries, seg_results, shared, frags, fresh, reuse), links
    except KernelError as e:
        if not any(ln.link == "spliced" for ln in links):
            raise _verifier_error(ctx, e, results) from None
        headline = _headline(e)
    links = _generate_root(ctx, linked, root, seg, next_segment, splice_ok=False)
    links = [splice.Linked("called", f"the verifier refused the spliced chain: {headline}")
             if entries[i].link is Link.SPLICE else ln for i, ln in zip(seg, links)]
    try:
        return _load(ctx, root, seg_entries, seg_results, shared, frags, fresh, reuse), links
    except KernelError as e:
        raise _verifier_error(ctx, e, results) from None


def _generate_root(ctx: BuildContext, linked: Path, out: Path, seg: list[int],
                   next_segment: int | None, splice_ok: bool = True) -> list[splice.Linked]:
    """Write ``out``: ``linked`` with this segment's chain generated into the root."""
    entries = ctx.chain.entries
    slots = [splice.Slot(abi.SLOT_FUNCTION.format(i), tuple(entries[i].policy.codes()),
                         splice_ok and entries[i].link is Link.SPLICE, i) for i in seg]
    events = any(abi.DECISION_LOG in e.policy.codes() for e in entries)
    return splice.splice(str(linked), str(out), abi.ROOT_PROG, slots, ctx.counters, events,
                         next_segment, instrument=ctx.instrument)


def _headline(err: KernelError) -> str:
    lines = [ln for ln in verifier_log(err.log or "").splitlines()
             if ln.strip() and not ln.startswith(_VERIFIER_STATS)]
    return lines[-1].strip() if lines else err.message


def _load(ctx: BuildContext, path: Path, entries, results, shared: dict[str, int],
          frags: bool = False, fresh: bool = False,
          reuse: dict | None = None) -> "libbpf.BpfObject":
    """Open ``path``, point each component's persistent maps at their pins and the
    chain's own maps at those of the first segment (``shared``), load (with
    BPF_F_XDP_HAS_FRAGS when ``frags``)."""
    obj = libbpf.BpfObject(str(path))
    try:
        for p in obj.programs():
            if p.name != abi.ROOT_PROG:
                p.set_autoload(False)
            elif frags:
                set_frags(p, True)  # not where the kernel has no multi-buffer XDP (< 5.18)
        by_name = {m.name: m for m in obj.maps()}
        for entry, res in zip(entries, results):
            apply_constants(obj, str(path), entry, prefix=res.prefix)
            wanted = _wanted_maps(entry, res)
            mapsettings.apply({orig: by_name[renamed] for renamed, orig in res.maps.items()
                               if renamed in by_name}, entry, os.path.basename(entry.object),
                              lambda n: None if fresh or n not in wanted
                              else str(ctx.map_pin_dir(entry) / n))
            for renamed, orig in res.maps.items():
                m = by_name.get(renamed)
                if m is not None:
                    # None also overrides LIBBPF_PIN_BY_NAME for maps not kept
                    pin_map(m, str(ctx.map_pin_dir(entry) / orig)
                            if orig in wanted and not fresh else None)
            if not fresh:  # the slot's .data/.bss: its pinned maps, when their layout holds
                globalpins.reuse_pins(ctx, by_name, entry, res.prefix, res.source)
        for name in abi.ROOT_MAPS + (abi.SEGMENTS_MAP,):
            by_name[name].set_pin_path(None)
            if name in shared:
                by_name[name].reuse_fd(shared[name])
        for m in obj.maps():  # a watched build: the running chain's globals, shared
            sec = next((s for s in (reuse or {}) if m.internal and m.name.endswith(s)), None)
            if sec is not None:
                m.reuse_fd(reuse[sec])
        obj.load()
        return obj
    except BaseException:
        obj.close()
        raise


def _wanted_maps(entry, res) -> set[str]:
    wanted = set(res.maps.values()) if entry.pin_maps is None else set(entry.pin_maps)
    unknown = wanted - set(res.maps.values())
    wanted -= mapsettings.unpinned(entry)  # maps={"m": {"pin": False}}
    if unknown:
        raise ObjectError(f"object {os.path.basename(entry.object)} has no map(s) "
                          f"{', '.join(sorted(unknown))} named in pin_maps",
                          plugin=entry.plugin,
                          fix=f"use some of: {', '.join(sorted(res.maps.values()))}")
    return wanted


def _pins(ctx: BuildContext, entries, results) -> dict[str, dict[str, str]]:
    """program -> original map name -> pinned path."""
    return {e.name: {orig: str(ctx.map_pin_dir(e) / orig)
                     for orig in sorted(_wanted_maps(e, r))}
            for e, r in zip(entries, results)}


def predict_links(chain, workdir: Path) -> list[dict[str, str]]:
    """Per entry of a static ``chain``: {"link", "reason"} as far as each object alone
    tells (``plan``): asked-for "call", or what the splicer says of its entry."""
    from ..link.rewrite import rewrite

    out = []
    for i, e in enumerate(chain.entries):
        if e.link is not Link.SPLICE:
            out.append({"link": "called", "reason": ""})
            continue
        try:
            res = rewrite(e.object, str(Path(workdir) / f"plan{i}.o"), i, e.program, who=e.plugin)
            how = splice.assess(res.path, res.function)
        except Exception as err:  # noqa: BLE001 - reported by reconcile in full
            how = splice.Linked("called", f"cannot be rewritten: {err}")
        out.append({"link": how.link, "reason": how.reason})
    return out


__all__ = ["build", "rootlet_path", "predict_links",
           "MAX_SLOTS", "last_timings"]


# --- the backend (backends/__init__.py) ---------------------------------------------

MODE: Final = "static"


def usable(paths: "Paths | None") -> tuple[bool, str]:
    """Any kernel that loads XDP runs a linked chain; no probe needed."""
    return True, "static linking works on any kernel that loads XDP"


def spliced_error(rec: "InterfaceRecord", p: "ProgramRecord") -> XdphooksError:
    """A spliced slot has no function of its own: nothing to attach a tracer to."""
    from ..model import InterfaceRef

    return UsageError(
        f"program {p.name!r} on {InterfaceRef(rec.netns, rec.name)} is spliced into the "
        f"static root (inlined), so there is no function of it to attach to",
        plugin=p.plugin, fix=f'set link = "call" under [programs.{p.name}] in '
        "xdphooks.toml and run xdphooks reconcile")


class Static(Backend):
    """One linked program: a slot is spliced inline or called as ``xdph_slot_<N>``
    of the root; the live views watch an instrumented build of the chain
    (xdphooks/watchlease.py), which sees every slot, spliced or called."""

    MODE = MODE
    instrumented_watch = True

    def usable(self, paths: "Paths") -> tuple[bool, str]:
        return usable(paths)

    def build(self, ctx: BuildContext) -> BuiltChain:
        return build(ctx)

    def link_kind(self, p: "ProgramRecord") -> str:
        """"spliced" or "called", as the root generator recorded it per entry."""
        return getattr(p, "link", None) or "called"

    def trace_target(self, rec: "InterfaceRecord", p: "ProgramRecord") -> Target:
        """``xdph_slot_<N>`` of the root for a called slot; a spliced one (or one the
        linker or verifier inlined) is refused in one line with the fix."""
        from ..model import InterfaceRef

        kind = self.link_kind(p)
        if kind == "spliced":
            raise spliced_error(rec, p)
        func = abi.SLOT_FUNCTION.format(p.slot)
        with libbpf.fd_closing(libbpf.prog_fd_by_id(rec.prog_id)) as fd:
            try:
                libbpf.prog_btf_func_id(fd, func)
            except KernelError as e:
                if e.errno == _errno.ENOENT:  # inlined by the linker/verifier: as spliced
                    raise spliced_error(rec, p) from None
                raise
        return Target(str(InterfaceRef(rec.netns, rec.name)), p.name, p.plugin, p.slot,
                      kind, rec.prog_id, func)

    def running_globals(self, rec: "InterfaceRecord", p: "ProgramRecord"
                        ) -> tuple[dict[str, Any], Callable[[str], str]]:
        """The root's (and its segments') globals; a slot's carry its prefix."""
        prefix = PREFIX_FMT.format(p.slot)
        return _previous_globals(Path(rec.pin_dir)), (lambda n: prefix + n)

    def predict_links(self, chain: "Chain", workdir: Path) -> list[dict[str, str]] | None:
        return predict_links(chain, workdir)


BACKEND = Static()
