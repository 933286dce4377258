"""Static backend: rootlet + rewritten components, linked into ONE XDP program.

build() rewrites every entry's object into ctx.workdir (xdphooks.link.rewrite),
links them after the prebuilt rootlet (smallest capacity >= chain length) with
libbpf's static linker, writes the rootlet's const volatile config (nr_slots,
policies, counters/events switches), pins each component's persistent maps
under ``ctx.map_pin_dir(name)/<original map name>``, loads, and pre-flights
the program with BPF_PROG_TEST_RUN on canned packets.
"""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path

from ..errors import KernelError, LimitError, ObjectError, VerifierError
from ..kernel import libbpf
from ..model import Decision
from .base import BuildContext, BuiltChain
from .preflight import CANNED

MAX_SLOTS = 128  # XDPHOOKS_MAX_SLOTS
MAX_USED_MAPS = 64  # kernel MAX_USED_MAPS
MAX_STACK = 512
CAPACITIES = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIG_SYMBOL = "xdph_config"
MAGIC, VERSION = 0x58445048, 1
_CFG_HDR = struct.Struct("<IIIII")
ROOT_PROG = "xdphooks_root"
ROOT_MAPS = ("xdph_counters", "xdph_events")
XDP_NAMES = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}

#: control-plane timings of the last build() (seconds), for benchmarks/diagnostics
last_timings: dict[str, float] = {}


def rootlet_path(data_dir: Path, n: int) -> Path:
    cap = next((c for c in CAPACITIES if c >= max(n, 1)), None)
    if cap is None:
        raise LimitError(f"{n} programs on one interface; the static backend supports at most "
                         f"{MAX_SLOTS}", fix="remove programs or split them across interfaces")
    p = Path(data_dir) / f"rootlet_{cap}.o"
    if not p.exists():
        raise ObjectError(f"rootlet object {p} is missing", fix="reinstall xdphooks")
    return p


def encode_config(entries, counters: bool, events: bool | None = None) -> bytes:
    codes = [e.policy.codes() for e in entries]
    if events is None:
        events = any(2 in c for c in codes)
    blob = bytearray(_CFG_HDR.pack(MAGIC, VERSION, len(entries), int(counters), int(events)))
    blob += bytes(MAX_SLOTS * 6)
    for i, c in enumerate(codes):
        blob[_CFG_HDR.size + i * 6: _CFG_HDR.size + i * 6 + 6] = bytes(c)
    return bytes(blob)


def _symbol_offset(path: str, name: str) -> tuple[str, int]:
    from ..link import elf as E
    elf = E.read_elf(path)
    for s in elf.symbols:
        if s.name == name and 0 < s.shndx < len(elf.sections):
            return elf.sections[s.shndx].name, s.value
    raise ObjectError(f"linked object has no symbol {name}", fix="reinstall xdphooks")


# --- build ----------------------------------------------------------------------------------


def _check_limits(ctx: BuildContext, results, rootlet: Path) -> None:
    from ..link.rewrite import count_maps
    n_maps, data = count_maps(str(rootlet))
    per_prog = {}
    for entry, res in zip(ctx.chain.entries, results):
        per_prog[entry.name] = len(res.maps)
        n_maps += len(res.maps)
        data |= res.data_sections
    total = n_maps + len(data)
    if total > MAX_USED_MAPS:
        ranked = sorted(per_prog.items(), key=lambda kv: -kv[1])
        worst = ", ".join(f"{k} {v}" for k, v in ranked[:3])
        culprit = next(e for e in ctx.chain.entries if e.name == ranked[0][0])
        raise LimitError(f"interface {ctx.interface}: the linked program would use {total} maps, "
                         f"the kernel allows {MAX_USED_MAPS} per program (largest: {worst})",
                         plugin=culprit.plugin,
                         fix="move some programs to another interface or use mode = \"freplace\"")


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
    if len(entries) > MAX_SLOTS:
        per_plugin: dict[str, int] = {}
        for e in entries:
            per_plugin[e.plugin] = per_plugin.get(e.plugin, 0) + 1
        plugin, n = max(per_plugin.items(), key=lambda kv: kv[1])
        raise LimitError(f"interface {ctx.interface}: {len(entries)} programs ({n} of them "
                         f"from this plugin), the static backend supports at most {MAX_SLOTS}",
                         plugin=plugin, fix="remove programs or spread them over interfaces")
    rootlet = rootlet_path(ctx.data_dir, len(entries))
    work = Path(ctx.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for i, entry in enumerate(entries):
        out = work / f"slot{i}-{entry.name}.o"
        results.append(rewrite(ctx.trusted_object(entry), str(out), i, entry.program,
                               who=entry.plugin))
    _check_limits(ctx, results, rootlet)
    linked = work / "chain.o"
    try:
        libbpf.link_objects(str(linked), [str(rootlet)] + [r.path for r in results])
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
    timings["rewrite_link"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    obj = libbpf.BpfObject(str(linked))
    ok = False
    try:
        for p in obj.programs():
            if p.name != ROOT_PROG:
                p.set_autoload(False)
        # rootlet config in the merged .rodata
        sec, off = _symbol_offset(str(linked), CONFIG_SYMBOL)
        cfg = encode_config(entries, ctx.counters)
        rodata = next((m for m in obj.maps() if m.internal and m.name.endswith(sec)), None)
        if rodata is None:
            raise ObjectError(f"linked object has no {sec} map", fix="reinstall xdphooks")
        init = bytearray(rodata.initial_value())
        magic = struct.unpack_from("<II", init, off) if len(init) >= off + 8 else (0, 0)
        if magic != (MAGIC, VERSION):
            raise ObjectError("rootlet config not found (magic/version mismatch)",
                              fix="reinstall xdphooks")
        init[off: off + len(cfg)] = cfg
        rodata.set_initial_value(bytes(init))

        # persistent maps: one pin per original map name
        maps_out: dict[str, dict[str, str]] = {}
        by_name = {m.name: m for m in obj.maps()}
        for entry, res in zip(entries, results):
            wanted = set(res.maps.values()) if entry.pin_maps is None else set(entry.pin_maps)
            unknown = wanted - set(res.maps.values())
            if unknown:
                raise ObjectError(f"object {os.path.basename(entry.object)} has no map(s) "
                                  f"{', '.join(sorted(unknown))} named in pin_maps",
                                  plugin=entry.plugin,
                                  fix=f"use some of: {', '.join(sorted(res.maps.values()))}")
            pins = {}
            for renamed, orig in res.maps.items():
                m = by_name.get(renamed)
                if m is None:
                    continue
                if orig in wanted:
                    path = str(ctx.map_pin_dir(entry.name) / orig)
                    m.set_pin_path(path)
                    pins[orig] = path
                else:
                    m.set_pin_path(None)  # also overrides LIBBPF_PIN_BY_NAME
            maps_out[entry.name] = pins
        for name in ROOT_MAPS:
            by_name[name].set_pin_path(None)
        try:
            obj.load()
        except KernelError as e:
            raise _verifier_error(ctx, e, results) from None
        prog = obj.program(ROOT_PROG)
        prog_fd = prog.fd
        info, _ = libbpf.prog_info(prog_fd)
        timings["load"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        counters_fd, events_fd = by_name["xdph_counters"].fd, by_name["xdph_events"].fd
        if preflight:
            preflight_check(ctx, prog_fd, entries)
            reset_after_preflight(counters_fd, events_fd)
        timings["preflight"] = time.perf_counter() - t2
        built = BuiltChain(mode="static", prog_fd=prog_fd,
                           slot_prog_ids=[info.id] * len(entries), maps=maps_out,
                           pins={"root": prog_fd, "counters": counters_fd, "events": events_fd},
                           closers=[obj.close])
        ok = True
        last_timings.clear()
        last_timings.update(timings)
        return built
    finally:
        if not ok:
            obj.close()


def preflight_check(ctx: BuildContext, prog_fd: int, entries) -> dict[str, int]:
    """Test-run canned packets; refuse a program that fails or returns nonsense."""
    can_forward_unknown = any(e.policy.decision("unknown") is Decision.RETURN for e in entries)
    out = {}
    for name, pkt in CANNED.items():
        try:
            res = libbpf.prog_test_run(prog_fd, pkt)
        except KernelError as e:
            raise KernelError(f"interface {ctx.interface}: pre-flight test run ({name} packet) "
                              f"failed: {e.message}", errno=e.errno, log=e.log,
                              fix="check the chain's programs with BPF_PROG_TEST_RUN") from None
        if res.retval > 4 and not can_forward_unknown:
            raise KernelError(f"interface {ctx.interface}: pre-flight test run ({name} packet) "
                              f"returned {res.retval}, which no policy allows",
                              fix="report this as an xdphooks bug")
        out[name] = res.retval
    return out


def reset_after_preflight(counters_fd: int, events_fd: int) -> None:
    """Forget what the pre-flight packets left in counters and events."""
    ncpu = libbpf.num_possible_cpus()
    zero = bytes(56 * ncpu)
    for slot in range(MAX_SLOTS):
        libbpf.map_update(counters_fd, struct.pack("<I", slot), zero)
    try:
        from ..counters import read_events
        read_events(events_fd, limit=1 << 20)
    except Exception:  # noqa: BLE001 - events are best effort
        pass


__all__ = ["build", "encode_config", "rootlet_path", "preflight_check",
           "MAX_SLOTS", "last_timings"]


# --- the Backend protocol (backends/__init__.py) ------------------------------------

MODE = "static"


def usable(paths) -> tuple[bool, str]:
    """Any kernel that loads XDP runs a linked chain; no probe needed."""
    return True, "static linking works on any kernel that loads XDP"
