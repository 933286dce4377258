"""``xdphooks status --profile [SECONDS]``: nanoseconds per packet per program on
live traffic.

Static chains (every slot, spliced or called): first the running chain's own cost is
taken from the kernel's run-time statistics over SECONDS (BPF_ENABLE_STATS, held only
for the window: "untraced"). Then an instrumented build of the same chain is swapped
in for SECONDS (xdphooks/watchlease.py; counters, events and globals shared, swapped
back after) whose generated code reads bpf_ktime_get_ns at each slot's entry and
exit and sums the difference per slot and CPU. Once per packet it also times an
empty interval: the cost of the timing itself, which is subtracted from each slot's
figure and stated ("timing"); the instrumented chain's kernel statistics give its
total, so the instrumentation's whole cost per packet is measured, not guessed.

Freplace chains: an fentry/fexit pair (bpf/slot_profile.bpf.c)
on each component's function — ``xdph_slot_<N>`` of a static root whose slot
is a call, the EXT program of a freplace chain — sums entry-to-exit time per CPU
for SECONDS, then is detached. The whole chain's cost comes from the kernel's
own run-time statistics of the attached root program (BPF_ENABLE_STATS, held
only for the window). The kernel's statistics of an EXT program are read too and
reported when it has any (kernels account run time only for programs entered
through bpf_prog_run(), which an EXT program replacing a dispatcher slot is
not). Spliced static slots have no function and are reported as such. Nothing
stays attached afterwards: the chain pays nothing when not profiling.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

from . import backends, fexit
from . import state as state_mod
from .errors import XdphooksError
from .paths import Paths
from .security import is_root


def _kernel_stats(prog_id: int) -> tuple[int, int]:
    """(run_cnt, run_time_ns) the kernel accounted to a program (0, 0 if it is gone)."""
    from .kernel import libbpf

    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except XdphooksError:
        return 0, 0
    try:
        info, _ = libbpf.prog_info(fd)
        return info.run_cnt, info.run_time_ns
    finally:
        os.close(fd)


def _per_packet(ns: int, n: int) -> float | None:
    return round(ns / n, 1) if n else None


def profile(paths: Paths, seconds: float, interface: str | None = None) -> dict:
    from .kernel import libbpf

    if not is_root():
        raise XdphooksError("status --profile attaches tracers in the kernel and needs root",
                            fix="run it as root")
    st, _ = state_mod.load(paths.state_file)
    recs = [r for k, r in sorted(st.interfaces.items())
            if interface in (None, fexit.iface_name(r), r.name)]
    out: dict = {"seconds": seconds, "interfaces": []}
    probes = []  # (program dict, loaded profiler object)
    traced = []  # (interface dict, its backend): watched by fentry/fexit
    with ExitStack() as stack:
        stats_fd = libbpf.enable_stats()
        stack.callback(os.close, stats_fd)
        pairs = [(r, backends.of(r)) for r in recs]
        instrumented = [r for r, b in pairs if b.instrumented_watch]
        if instrumented:
            out["interfaces"] += _profile_instrumented(paths, instrumented, seconds)
        for rec, backend in pairs:
            if backend.instrumented_watch:
                continue
            entry = {"name": fexit.iface_name(rec), "mode": rec.mode, "prog_id": rec.prog_id,
                     "programs": []}
            out["interfaces"].append(entry)
            traced.append((entry, backend))
            for p in rec.programs:
                pd = {"name": p.name, "slot": p.slot, "prog_id": p.prog_id,
                      "link": backend.link_kind(p), "calls": None, "ns_per_call": None,
                      "kernel_calls": None, "kernel_ns_per_call": None, "note": ""}
                entry["programs"].append(pd)
                try:
                    t = backend.trace_target(rec, p)
                    probes.append((pd, stack.enter_context(
                        fexit.attached(fexit.PROFILE_OBJ, fexit.PROFILE_PROGS, t))))
                except XdphooksError as e:
                    pd["note"] = e.line()
        before = {pid: _kernel_stats(pid) for pid in _ids(traced)}
        time.sleep(seconds)
        after = {pid: _kernel_stats(pid) for pid in _ids(traced)}
        for pd, obj in probes:
            runs, ns = fexit.percpu_sum(obj.map("xdph_prof").fd, 2)
            pd["calls"], pd["ns_per_call"] = runs, _per_packet(ns, runs)
    for entry, backend in traced:  # the instrumented ones are measured by their build
        n, ns = _delta(before, after, entry["prog_id"])
        entry["packets"], entry["ns_per_packet"] = n, _per_packet(ns, n)
        for pd in entry["programs"]:
            if backend.slot_programs:  # the kernel's own statistics of the slot's program
                n, ns = _delta(before, after, pd["prog_id"])
                pd["kernel_calls"], pd["kernel_ns_per_call"] = n, _per_packet(ns, n)
    return out


def _profile_instrumented(paths: Paths, recs: list, seconds: float) -> list[dict]:
    """Profile chains whose backend is watched through an instrumented build (static;
    see the module's doc); the caller holds BPF_ENABLE_STATS."""
    from . import abi, watchlease
    from .link.splice import Instrument
    from .model import InterfaceRef

    entries = []
    ids = [r.prog_id for r in recs]
    before = {pid: _kernel_stats(pid) for pid in ids}
    time.sleep(seconds)
    after = {pid: _kernel_stats(pid) for pid in ids}
    for rec in recs:
        n, ns = _delta(before, after, rec.prog_id)
        entry = {"name": fexit.iface_name(rec), "mode": rec.mode, "prog_id": rec.prog_id,
                 "packets": n, "ns_per_packet": _per_packet(ns, n), "programs": [],
                 "method": "instrumented build"}
        entries.append(entry)
        prof = watchlease.prof_map()
        try:
            ins = Instrument(prof_fd=prof)
            with watchlease.stop_on_signals() as stopped, watchlease.watching(
                    paths, InterfaceRef(rec.netns, rec.name), ins, "profile", seconds) as w:
                b = _kernel_stats(w.prog_id)
                watchlease.prof_zero(prof)
                time.sleep(seconds)
                rows = watchlease.prof_read(prof)
                a = _kernel_stats(w.prog_id)
            if stopped:
                raise XdphooksError(f"profile stopped by {stopped[0]}; the untraced chain "
                                    "runs again", fix="none needed")
        finally:
            os.close(prof)
        cal_n, cal_ns = rows[abi.MAX_CHAIN]
        timing = cal_ns / cal_n if cal_n else 0.0
        wn, wns = max(a[0] - b[0], 0), max(a[1] - b[1], 0)
        entry["timing_ns"] = round(timing, 1)
        entry["instrumented_packets"] = wn
        entry["instrumented_ns_per_packet"] = _per_packet(wns, wn)
        for p in rec.programs:
            calls, ns = rows[p.slot] if p.slot < abi.MAX_CHAIN else (0, 0)
            raw = ns / calls if calls else None
            entry["programs"].append({
                "name": p.name, "slot": p.slot, "prog_id": p.prog_id,
                "link": backends.of(rec).link_kind(p), "calls": calls,
                "ns_per_call": round(max(raw - timing, 0.0), 1) if raw is not None else None,
                "ns_per_call_raw": round(raw, 1) if raw is not None else None,
                "kernel_calls": None, "kernel_ns_per_call": None, "note": ""})
    return entries


def _ids(traced: list) -> set[int]:
    """The programs whose kernel statistics a fentry/fexit profile reads: each chain's
    root, and each slot that is a program of its own."""
    ids = set()
    for e, backend in traced:
        ids.add(e["prog_id"])
        if backend.slot_programs:
            ids.update(p["prog_id"] for p in e["programs"])
    return ids


def _delta(before: dict, after: dict, pid: int) -> tuple[int, int]:
    (c0, t0), (c1, t1) = before.get(pid, (0, 0)), after.get(pid, (0, 0))
    return max(c1 - c0, 0), max(t1 - t0, 0)


def render(data: dict) -> str:
    lines = [f"profile over {data['seconds']:g} s of live traffic (static: an instrumented "
             "build, swapped in for the window; freplace: fentry/fexit per program; chain "
             "total from the kernel's run-time statistics)",
             f"{'INTERFACE':<22} {'PROGRAM':<16} {'SLOT':>4} {'LINK':<9} {'CALLS':>9} "
             f"{'NS/PKT':>8}"]
    if not data["interfaces"]:
        lines.append("(no chains attached)")
    for i in data["interfaces"]:
        tot = f"{i['ns_per_packet']:8.1f}" if i["ns_per_packet"] is not None else f"{'-':>8}"
        lines.append(f"{i['name']:<22} {'<chain>':<16} {'':>4} {i['mode']:<9} "
                     f"{i['packets']:>9} {tot}")
        if "timing_ns" in i:
            inst = i["instrumented_ns_per_packet"]
            lines.append(f"{'':<22} {'(watched)':<16} {'':>4} {'':<9} "
                         f"{i['instrumented_packets']:>9} "
                         + (f"{inst:8.1f}" if inst is not None else f"{'-':>8}")
                         + f"  instrumented build; each slot's figure is net of the "
                         f"timing's own {i['timing_ns']:.1f} ns")
        for p in i["programs"]:
            ns = f"{p['ns_per_call']:8.1f}" if p["ns_per_call"] is not None else f"{'-':>8}"
            calls = p["calls"] if p["calls"] is not None else "-"
            extra = ""
            if p["kernel_calls"]:
                extra = f"  (kernel stats: {p['kernel_ns_per_call']:.1f} ns)"
            if p["note"]:
                extra = f"  {p['note']}"
            lines.append(f"{'':<22} {p['name']:<16} {p['slot']:>4} {p['link']:<9} "
                         f"{calls:>9} {ns}{extra}")
    return "\n".join(lines)
