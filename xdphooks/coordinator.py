"""The coordinator: one locked read → plan → build → swap → record → clean-up.

Order of a change on one interface, chosen so that a crash at any point
leaves the old or the new chain attached, never none, and the next run
converges (the pins say which generation the kernel runs):

1. build and load the new chain (nothing attached yet; pre-flight test run);
2. pin it as generation ``g<N>-<fingerprint>``;
3. swap atomically: ``XDP_FLAGS_REPLACE`` with the old program as expected
   (first attach: ``XDP_FLAGS_UPDATE_IF_NOEXIST``) — never detach-then-attach;
4. write the state file (atomic rename);
5. unpin older generations, which releases the old chain.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import backends, config as config_mod
from . import fsfaults, planner, signals, state as state_mod
from . import drift, verify
from .errors import FIX, KernelError, PermissionRefused, XdphooksError
from .eventlog import log_event, set_log_file
from .faults import crashpoint
from .inspect import inspect, object_path
from .objfacts import FactsCache
from .kernel import bpffs, libbpf, xdp
from .kernel.netns import NetnsError, interfaces, list_netns
from .kernel.netns import identity as netns_identity
from .model import Change, Chain, InterfaceRef, Plan, constants_json, map_settings_json
from .paths import DATA_DIR, Paths, parse_gen_dir
from .plugins import Plugins, discover
from . import recover
from . import pinalias, pinowner
from .security import ensure_private_dir, is_root
from .state import InterfaceRecord, ProgramRecord, State


@dataclass
class Options:
    trigger: str = "manual"
    disable: frozenset[str] = frozenset()
    takeover: bool = False
    interfaces: tuple[str, ...] = ()  # limit a run to these interfaces (hotplug)


@dataclass
class Observed:
    """What the kernel and our pins say about one interface we know of."""

    iface: InterfaceRef
    ifindex: int
    attached_id: int
    gens: dict[int, tuple[Path, str]]  # prog id of each pinned root -> (gen dir, fingerprint)
    record: InterfaceRecord | None
    recovered: recover.Recognition | None = None  # pins lost: our chain, known by its ids

    @property
    def ours(self) -> bool:
        return self.attached_id in self.gens

    def running(self) -> planner.Running | None:
        if not self.ifindex or not self.ours:
            return None
        gen_dir, fp = self.gens[self.attached_id]
        rec = self.record if self.record and self.record.prog_id == self.attached_id else None
        if rec is None:
            # Ours, but not what the state file says (a run died between swap and
            # state write, or the state was lost): the pins say what runs. If that is
            # what is wanted, reconcile records it again (_adopt_running) without
            # touching it; otherwise it is replaced as usual.
            return planner.Running((), (), fp)
        # components freed with their pins (recover.py) run no more: rebuild
        damaged = ("components freed with their lost pins"
                   if self.recovered and self.recovered.rebuild else "")
        return planner.Running(tuple(p.name for p in rec.programs),
                               tuple(p.plugin for p in rec.programs), fp, damaged)


@dataclass
class Session:
    """Everything one run learned; built by :func:`gather`."""

    paths: Paths
    config: config_mod.Config
    state: State
    plugins: Plugins
    observed: dict[InterfaceRef, Observed]
    desired: dict[InterfaceRef, Chain]
    plan: Plan
    warnings: list[str] = field(default_factory=list)


@dataclass
class Result:
    plan: Plan
    applied: list[Change] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the run's own (state file faults)
    skipped: list[Change] = field(default_factory=list)  # not attempted: signal or fault
    interrupted: str = ""  # the one line saying which signal stopped the run, and when

    @property
    def exit_code(self) -> int:
        """0 converged, 3 the kernel changed but not everything asked for was done,
        1 nothing changed (and something was wrong)."""
        refused = any(c.refused for c in self.plan.changes)
        if not (self.failed or refused or self.plan.errors or self.errors or self.skipped):
            return 0
        return 3 if self.applied else 1


class Unrecorded(XdphooksError):
    """The kernel changed (swap or detach done), but the state file could not say so.
    Raised after the step finished (old generations unpinned): the next reconcile
    records the running chain from its pins (_adopt_running)."""

    def __init__(self, fault: XdphooksError, warnings: list[str] | None = None) -> None:
        super().__init__(fault.message, fix=fault.fix)
        self.warnings = warnings or []


def require_root(what: str, reads: bool = False) -> None:
    if not is_root():
        why = ("reads the pinned chains, which only root may see" if reads
               else "changes the kernel's packet path")
        raise PermissionRefused(f"{what} {why} and needs root",
                                fix=f"run it as root (sudo xdphooks {what}); "
                                    "'xdphooks status' works without root")


# --- observation ----------------------------------------------------------------


def _iface_from_key(key: str, state: State | None = None) -> InterfaceRef | None:
    """The interface behind a pin directory or state key: its record says (keys
    written before they were encoded included), else the key itself. None: no
    interface we could name (a malformed key, or a hashed one whose namespace is
    gone)."""
    rec = state.interfaces.get(key) if state is not None else None
    if rec is not None and isinstance(rec.name, str) and isinstance(rec.netns, str):
        return InterfaceRef(rec.netns, rec.name)
    return InterfaceRef.from_key(key, list_netns())


def _foreign(state: State, key: str) -> str:
    """Why the record under ``key`` belongs to a network namespace this run cannot
    see ("" if it is this run's to judge). The same --root and bpffs used from two
    namespaces (``ip netns exec B xdphooks reconcile``) hold both namespaces'
    records; an interface of the run's own namespace is recorded with that
    namespace's identity, and a run in another one leaves it alone: its
    interfaces are not ours to query, let alone to collect. Named namespaces are
    seen alike from every namespace (/run/netns); one deleted and re-created under
    the same name is not foreign: the chain's interfaces went with the old one."""
    rec = state.interfaces.get(key)
    if rec is None or rec.netns or not rec.netns_id:
        return ""
    here = netns_identity("")
    if here == rec.netns_id:
        return ""
    return (f"{rec.name}: recorded by a run in another network namespace (nsfs "
            f"{rec.netns_id}; this run is in {here or 'an unknown one'}); left alone, "
            "with its pins — fix: run xdphooks in that namespace to change it, or give "
            "each namespace its own --root and --bpffs")


def _foreign_notes(state: State) -> list[str]:
    return [why for key in sorted(state.interfaces) if (why := _foreign(state, key))]


def _refuse_foreign(sess: "Session", iface: InterfaceRef) -> None:
    """A chain wanted on an interface whose key holds another namespace's record."""
    why = _foreign(sess.state, iface.key)
    if why:
        raise XdphooksError(f"{iface}: its pin directory and record belong to a chain "
                            f"{why.partition(': ')[2].partition(FIX)[0]}; nothing "
                            "was attached",
                            fix="give each network namespace its own --root and --bpffs")


def _locate(iface: InterfaceRef, rec: InterfaceRecord | None,
            ours: "dict[int, object] | frozenset[int]" = frozenset()) -> tuple[int, int]:
    """(ifindex, attached id) of a recorded interface by what the kernel says: its
    name, or — the name gone — the ifindex recorded with the chain when our chain
    (recorded, or pinned) still runs there: a device renamed after the swap keeps
    being ours, so status shows it and reconcile/teardown detach it."""
    index, attached = xdp.locate(iface, rec.ifindex if rec and isinstance(
        rec.ifindex, int) and rec.ifindex > 0 else 0)
    if index and rec and index == rec.ifindex and xdp.ifindex(iface) != index \
            and attached != rec.prog_id and attached not in ours:
        return 0, 0  # the recorded ifindex now names someone else's device
    return index, attached


def _known_keys(paths: Paths, state: State) -> list[str]:
    """Interfaces we know of: from the state file and from the pins (state may be lost)."""
    keys = set(state.interfaces)
    if_root = paths.pin_root / "if"
    if if_root.is_dir():
        keys |= {d.name for d in if_root.iterdir() if d.is_dir()}
    return sorted(keys)


def _pinned_generations(paths: Paths) -> list[int]:
    if_root = paths.pin_root / "if"
    gens = if_root.glob("*/g*") if if_root.is_dir() else ()
    return [parsed[0] for g in gens if (parsed := parse_gen_dir(g.name))]


def observe(paths: Paths, state: State) -> dict[InterfaceRef, Observed]:
    """What the kernel runs on each interface we know of, except those of namespaces
    this run cannot see (:func:`_foreign`)."""
    out = {}
    for key in _known_keys(paths, state):
        iface = _iface_from_key(key, state)
        if iface is None or _foreign(state, key):
            continue
        gens = {}
        idir = paths.iface_pin_dir(key)
        if idir.is_dir():
            for g in idir.iterdir():
                parsed = parse_gen_dir(g.name)
                pid = xdp.pinned_prog_id(g / "root") if parsed else 0
                if parsed and pid:
                    gens[pid] = (g, parsed[1])
            # a watch's instrumented build (watchlease.py) stands for the recorded chain
            rec = state.interfaces.get(key)
            wid = xdp.pinned_prog_id(idir / "watch" / "root") if rec else 0
            if wid and rec.prog_id in gens:
                gens[wid] = gens[rec.prog_id]
        ifindex, attached = _locate(iface, state.interfaces.get(key), gens)
        out[iface] = Observed(iface, ifindex, attached, gens, state.interfaces.get(key))
        _recognise_lost(paths, out[iface])
    return out


def _recognise_lost(paths: Paths, obs: Observed) -> None:
    """No pin names the attached program: is it our recorded chain (recover.py)?
    If so it counts as ours, at its recorded generation; reconcile re-pins it."""
    if obs.attached_id and obs.attached_id not in obs.gens:
        obs.recovered = recover.observe_lost(paths.pin_root, obs.attached_id, obs.record)
        if obs.recovered and obs.recovered.ours:
            obs.gens[obs.attached_id] = (paths.pin_root / obs.recovered.gen_rel,
                                         obs.record.fingerprint)


def available_interfaces(namespaces: list[str]) -> list[InterfaceRef]:
    out = []
    for ns in [""] + namespaces:
        try:
            out += [InterfaceRef(ns, name) for _, name in interfaces(ns)]
        except NetnsError:
            continue
    return out


def _referenced_netns(patterns: list[str], known: list[str]) -> list[str]:
    import fnmatch

    wanted = set()
    for pat in patterns:
        ns, sep, _ = pat.rpartition("/")
        if sep:
            wanted |= {n for n in known if fnmatch.fnmatchcase(n, ns)}
    return sorted(wanted)


# --- planning ----------------------------------------------------------------------


def gather(paths: Paths, opts: Options, parsed: FactsCache | None = None) -> Session:
    """``parsed``: the object facts cache, which the caller saves (reconcile does; plan and
    the drift check change nothing, so they only read it)."""
    cfg = config_mod.load(paths.config_file)
    state, warn = state_mod.load(paths.state_file, paths.pin_root)
    warnings = [warn] if warn else []
    warnings += _foreign_notes(state)  # another namespace's records: left alone
    plugins = discover(paths, cfg.disable | opts.disable, cfg.hook_timeout)
    declared, broken = plugins.programs()
    facts = {}
    parsed = parsed or FactsCache(paths.cache_dir)  # objects' ELF facts, by sha256
    for plugin, prog in declared:
        key = object_path(paths, prog)
        if key not in facts:
            facts[key] = verify.checked(paths, cfg, prog, inspect(key, plugin, parsed))
    placed, problems = planner.resolve(declared, cfg, facts, lambda p: object_path(paths, p))
    known_ns = list_netns()
    patterns = [pat for p in placed for pat in p.patterns]
    avail = available_interfaces(_referenced_netns(patterns, known_ns))
    choice = backends.choose(paths, cfg.mode)
    desired, p2 = planner.desired_chains(placed, avail, known_ns, choice.mode)
    observed = observe(paths, state)
    running = {i: r for i, o in observed.items() if (r := o.running()) is not None}
    # a recorded chain that the kernel's ids no longer match: say which id disagrees
    warnings += [f"{i}: program id {o.attached_id} is not the chain recorded in "
                 f"{paths.state_file}: {o.recovered.why}"
                 for i, o in observed.items() if o.recovered and not o.recovered.ours]
    assessed = planner.assess(planner.Situation(
        desired, running, problems + p2, frozenset(broken), choice,
        auto=cfg.mode == backends.AUTO, xdp_mode=cfg.xdp_mode,
        kernel_ids={i: xdp.attached_id(i) for i in desired if i not in running},
        running_xdp_modes={i: o.record.xdp_mode for i, o in observed.items()
                           if o.ours and o.record},
        takeover=opts.takeover,
        only=frozenset(InterfaceRef.parse(i) for i in opts.interfaces)), plugins)
    return Session(paths, cfg, state, plugins, observed, assessed.desired, assessed.plan,
                   warnings)


# --- applying ------------------------------------------------------------------------


def reconcile(paths: Paths, opts: Options) -> Result:
    require_root("reconcile")
    bpffs.ensure(paths.bpffs)
    # A signal before the critical section (waiting for the lock, discovery, planning)
    # raises signals.Interrupted: nothing has changed yet.
    with signals.Deferral() as guard, state_mod.Lock(paths.lock_file):
        _collect_build_dirs(paths)
        # a watched (instrumented) chain goes first: plans see the recorded one (issue 21)
        from .watchlease import end_watches
        ended = end_watches(paths)
        parsed = FactsCache(paths.cache_dir)
        sess = gather(paths, opts, parsed)
        parsed.save()
        guard.hold()  # from here on a signal waits for the step to finish
        result = _reconcile_locked(sess, opts, guard)
        result.warnings[:0] = ended
        return result


def _reconcile_locked(sess: Session, opts: Options, guard: signals.Deferral) -> Result:
    paths = sess.paths
    # A run killed after pinning never recorded its generation: never reuse one.
    sess.state.generation = max([sess.state.generation, *_pinned_generations(paths)])
    result = Result(sess.plan, warnings=list(sess.warnings))
    result.warnings += _repin_recovered(sess)
    _adopt_running(sess, opts)
    _open_change_log(paths)
    pending = list(sess.plan.pending)
    unwritable = _preflight_state(sess) if pending else None
    if unwritable:
        result.errors.append(unwritable.line())
        result.skipped = pending
        pending = []
    for i, change in enumerate(pending):
        if guard.received is not None:
            result.skipped = pending[i:]
            break
        where = str(change.interface)
        outgoing = _outgoing_packages(sess, change)  # before _apply replaces the record
        packages = tuple(sorted({*_incoming_packages(sess, change), *outgoing}))
        restored = _restored(sess, change)  # before _apply replaces the record
        if outgoing:
            restored += f"; outgoing: programs of {', '.join(outgoing)}"
        try:
            result.warnings += _apply(sess, change, opts, guard)
            result.applied.append(change)
            log_event(f"{change.action} {where}: {change.reason}{restored}",
                      trigger=opts.trigger, interface=where, action=change.action,
                      packages=packages)
        except signals.Interrupted:  # during a build: nothing of this change is in the kernel
            result.skipped = pending[i:]
            break
        except Unrecorded as e:  # the kernel changed; the state file could not say so
            result.applied.append(change)
            result.warnings += e.warnings
            result.failed[where] = e.line()
            unwritable = e
            log_event(f"{change.action} {where}: {change.reason}{restored}; NOT RECORDED: "
                      f"{e.line()}", trigger=opts.trigger, error=True, interface=where,
                      action=change.action, packages=packages)
            result.skipped = pending[i + 1:]  # the next changes could not be recorded either
            break
        except XdphooksError as e:
            msg = e.line() + (f"\n{e.detail}" if e.detail else "")
            result.failed[where] = msg
            log_event(f"FAILED {change.action} {where}: {e.line()}", trigger=opts.trigger,
                      error=True, interface=where, action=change.action, packages=packages)
            sess.plugins.notify("xdphooks_reconcile_failed", interface=change.interface,
                                error=e.line())
    refused, foreign = _log_refusals(sess, opts)
    for change in sess.plan.changes:
        if change.refused:
            sess.plugins.notify("xdphooks_reconcile_failed", interface=change.interface,
                                error=change.reason)
    _collect_garbage(sess)
    result.warnings += pinalias.maintain(paths, sess.state)
    sess.state.last_run = {
        "time": time.time(), "trigger": opts.trigger,
        "applied": [f"{c.action} {c.interface}" for c in result.applied],
        "failed": result.failed,
        "problems": [str(p) for p in sess.plan.problems],
        **drift.run_times(sess.state.last_run or {}, bool(result.failed)),
        **({"refused": refused} if refused else {}),
        **({"foreign": foreign} if foreign else {}),
    }
    try:
        state_mod.save(paths.state_file, sess.state)
    except OSError as e:
        if unwritable is None:  # said once per run
            result.errors.append(fsfaults.fault(
                paths.state_file, e, then=("the changes above are recorded, " if result.applied
                                           else "nothing was changed; ")
                + "only this run's result is not recorded there",
                retry="run 'xdphooks reconcile' again").line())
    if guard.received is not None:
        result.interrupted = _interrupted_line(sess, result, guard.received)
    said = {(p.plugin, p.message) for p in sess.plan.problems}
    result.warnings += [str(f) for f in sess.plugins.failures
                        if (f.plugin, f.reason) not in said]
    return result


def _collect_build_dirs(paths: Paths) -> None:
    """Only the lock holder builds, so any build directory seen under the lock was left
    by a killed run (SIGKILL, power loss): remove it."""
    if paths.run_dir.is_dir():
        for d in paths.run_dir.glob("build-*"):
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)


def _preflight_state(sess: Session) -> XdphooksError | None:
    """Write the state file once before the first change: a read-only, full or
    immutable /var/lib/xdphooks is found while the old chains still run, so the
    kernel is not changed by a run that could not record it."""
    try:
        state_mod.save(sess.paths.state_file, sess.state)
    except OSError as e:
        return fsfaults.fault(sess.paths.state_file, e,
                              then="nothing was changed: every interface keeps the chain it runs",
                              retry="run 'xdphooks reconcile' again")
    except XdphooksError as e:
        return e
    return None


def _kernel_says(sess: Session, iface: InterfaceRef) -> str:
    """What the kernel runs on one interface, in words (the interruption line)."""
    attached = xdp.attached_id(iface)
    rec = sess.state.interfaces.get(iface.key)
    if not attached:
        return f"no XDP program on {iface}"
    if rec and rec.prog_id == attached:
        names = " → ".join(p.name for p in rec.programs)
        return f"{names} on {iface} (generation {rec.generation}, program id {attached})"
    return f"program id {attached} on {iface}"


def _interrupted_line(sess: Session, result: Result, signum: int) -> str:
    done = ", ".join(f"{c.action} {c.interface}" for c in result.applied) or "no change"
    seen = {c.interface: None for c in [*result.applied, *result.skipped]}
    line = (f"interrupted by {signals.name(signum)} after {done}; the kernel runs "
            + "; ".join(_kernel_says(sess, i) for i in seen))
    if not result.skipped:
        return line + "; nothing was left to do"
    todo = ", ".join(f"{c.action} {c.interface}" for c in result.skipped)
    return line + f"; not done: {todo} — fix: run 'xdphooks reconcile' again to finish"


def _repin_recovered(sess: Session) -> list[str]:
    """Pins lost, chain recognised from the kernel (recover.py): pin it again."""
    said = []
    for iface, obs in sess.observed.items():
        if obs.recovered is None or not obs.recovered.ours:
            continue
        try:
            recover.repin(sess.paths.pin_root, obs.recovered)
        except XdphooksError as e:
            said.append(f"{iface}: re-pinning its running chain failed: {e.line()}")
            continue
        lost = sorted({rel.rsplit("/", 1)[-1].split("-", 1)[-1] if rel.startswith("if/")
                       else rel.split("/")[1] for rel in obs.recovered.lost})
        what = (f"re-pinned what the kernel still held and rebuilt the chain: the kernel "
                f"had released {', '.join(lost)} with their pins (a freplace link lives "
                "only as long as its pin), so their maps start empty"
                if obs.recovered.rebuild else "re-pinned it and its maps from the kernel")
        said.append(f"{iface}: the pins of its running chain (program id {obs.attached_id}) "
                    f"were lost (bpffs mounted afresh?); recognised it by the ids in "
                    f"{sess.paths.state_file} and {what} "
                    "— fix: none needed; keep the bpffs mounted in the host's mount namespace "
                    "(admin guide, 'bpffs')")
    return said


def _adopt_running(sess: Session, opts: Options) -> None:
    """An up-to-date chain of ours without a state record (state lost or corrupt, or a
    run died between swap and state write) gets its record again, from the pins and
    the plan (same fingerprint: the planned chain is what runs)."""
    for change in sess.plan.changes:
        iface, chain = change.interface, change.desired
        obs = sess.observed.get(iface)
        if change.action != "keep" or chain is None or obs is None or not obs.ifindex \
                or not obs.ours or (obs.record and obs.record.prog_id == obs.attached_id):
            continue
        gen_dir, fp = obs.gens[obs.attached_id]
        parsed = parse_gen_dir(gen_dir.name)
        if fp != chain.fingerprint() or parsed is None:
            continue
        sess.state.interfaces[iface.key] = InterfaceRecord(
            netns=iface.netns, name=iface.name, ifindex=obs.ifindex, mode=chain.mode,
            netns_id=netns_identity(iface.netns),
            prog_id=obs.attached_id, fingerprint=fp, generation=parsed[0],
            pin_dir=str(gen_dir), xdp_mode=sess.config.xdp_mode,
            programs=[ProgramRecord(e.name, e.plugin, e.priority, e.policy.as_dict(), e.object,
                                    e.program, e.digest,
                                    backends.get(chain.mode).slot_prog_id(gen_dir, e.name)
                                    or obs.attached_id, i,
                                    constants=constants_json(e.constants),
                                    maps=map_settings_json(e.map_settings))
                      for i, e in enumerate(chain.entries)],
            updated=time.time(), trigger=opts.trigger,
            **recover.record_fields(sess.paths.pin_root, gen_dir, chain))


def _open_change_log(paths: Paths) -> None:
    ensure_private_dir(paths.state_dir, 0o755)
    set_log_file(paths.state_dir / "changes.log")


def _restored(sess: Session, change: Change) -> str:
    """For the change record: a recorded chain whose pins are all gone (a reboot, or a
    bpffs mounted afresh) is rebuilt from the state, but its maps' contents are lost."""
    rec = sess.state.interfaces.get(change.interface.key)
    if change.action != "attach" or rec is None or Path(rec.pin_dir).exists():
        return ""
    maps = sorted(rel.removeprefix("maps/") for rel in rec.pins if rel.startswith("maps/")
                  and not (sess.paths.pin_root / rel).exists())
    return (f"; restored generation {rec.generation} from {sess.paths.state_file}: its pins "
            "did not survive (bpffs is empty after a reboot), so "
            + (f"these maps start empty: {', '.join(maps)}" if maps
               else "its maps start empty"))


def _incoming_packages(sess: Session, change: Change) -> tuple[str, ...]:
    """The packages owning the programs a change brings in (new or upgraded), so the
    log can say which package transaction caused it."""
    if change.desired is None:
        return ()
    rec = sess.state.interfaces.get(change.interface.key)
    old = {p.name: p.digest for p in rec.programs} if rec else {}
    incoming = {e.plugin for e in change.desired.entries if old.get(e.name) != e.digest}
    if not incoming:
        return ()
    try:
        from .provenance import plugin_owners

        owners = plugin_owners(sess.paths)
    except Exception:  # noqa: BLE001 - provenance is for the log only
        return ()
    return tuple(sorted({owners[p]["package"] for p in incoming
                         if owners.get(p, {}).get("package")}))


def _outgoing_packages(sess: Session, change: Change) -> tuple[str, ...]:
    """The packages whose programs a change removes or replaces (a detach, a plugin
    removed or upgraded): recorded with each program when it was attached, since a
    removed package's files and database entry are gone by now."""
    rec = sess.state.interfaces.get(change.interface.key)
    if rec is None:
        return ()
    keep = {e.name: e.digest for e in change.desired.entries} if change.desired else {}
    going = [p for p in rec.programs if keep.get(p.name) != p.digest]
    pkgs = {p.package for p in going if p.package}
    if any(not p.package for p in going):  # a record from before ProgramRecord.package
        owners = _plugin_packages(sess)
        pkgs |= {owners[p.plugin] for p in going if not p.package and owners.get(p.plugin)}
    return tuple(sorted(pkgs))


def _plugin_packages(sess: Session) -> dict[str, str]:
    """{plugin: the package it came from} for the drop-in plugins a package owns."""
    try:
        from .provenance import plugin_owners

        return {k: v["package"] for k, v in plugin_owners(sess.paths).items()
                if isinstance(v.get("package"), str)}
    except Exception:  # noqa: BLE001 - provenance is for the log only
        return {}


def _log_refusals(sess: Session, opts: Options) -> tuple[dict[str, str], dict[str, int]]:
    """Each refused change in the change log (once, while its reason stays the same),
    and for the run's record: {interface: why}, and {interface: foreign program id}
    where another program took the interface over (status --brief says so)."""
    before = (sess.state.last_run or {}).get("refused") or {}
    refused: dict[str, str] = {}
    foreign: dict[str, int] = {}
    for change in sess.plan.changes:
        if not change.refused:
            continue
        where = str(change.interface)
        refused[where] = str(change.refusal)
        obs = sess.observed.get(change.interface)
        if obs is not None and obs.attached_id and not obs.ours:
            foreign[where] = obs.attached_id
        if before.get(where) != refused[where]:
            log_event(f"refused {where}: {change.refusal}", trigger=opts.trigger, error=True,
                      interface=where, action="refused")
    return refused, foreign


def _apply(sess: Session, change: Change, opts: Options,
           guard: signals.Deferral | None = None) -> list[str]:
    """Build, pin, swap and record one change; returns the backend's warnings. Runs in
    the caller's critical section (signals wait), except the build: nothing is pinned
    or attached then, so a signal may cut it short (signals.Interrupted)."""
    iface = change.interface
    obs = sess.observed.get(iface)
    guard = guard or signals.Deferral()
    if change.action == "detach":
        _detach(sess, iface, obs)
        return []
    chain = change.desired
    assert chain is not None
    _refuse_foreign(sess, iface)
    ifindex = xdp.ifindex(iface)
    if not ifindex:
        raise xdp.InterfaceGone(iface, "before its chain could be attached")
    from .backends.base import BuildContext, PreviousChain

    backend = backends.get(chain.mode)
    sess.state.generation += 1
    gen = sess.state.generation
    fp = chain.fingerprint()
    gen_dir = sess.paths.gen_pin_dir(iface.key, gen, fp)
    xdp_mode = obs.record.xdp_mode if obs and obs.ours and obs.record else sess.config.xdp_mode
    previous = None
    if obs and obs.ours:
        pdir, _ = obs.gens[obs.attached_id]
        progs = obs.record.programs if obs.record else []
        previous = PreviousChain(pdir, {p.name: p.digest for p in progs},
                                 {p.name: p.slot for p in progs},
                                 obs.record.mode if obs.record else "",
                                 {p.name: p.constants for p in progs},
                                 {p.name: p.maps for p in progs})
    try:
        os.makedirs(sess.paths.run_dir, mode=0o700, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="build-", dir=sess.paths.run_dir))
    except OSError as e:
        raise fsfaults.fault(Path(e.filename or sess.paths.run_dir), e,
                             then=f"{iface} keeps the chain it runs",
                             retry="run 'xdphooks reconcile' again") from None
    ctx = BuildContext(iface, chain, sess.paths, workdir, DATA_DIR, sess.config.counters, previous,
                       _prog_arrays_hook(sess, iface))
    ctx.pin_warnings, ctx.reset_maps = pinowner.claim(sess.paths, chain.entries)
    built = None
    sent = False  # the swap was asked of the kernel: from here on, check before unpinning
    late = ""  # an error after the kernel took the new chain
    try:
        with guard.interruptible():
            built = backend.build(ctx)
        crashpoint("after-load")
        gen_dir.mkdir(parents=True, mode=0o700)
        for name, fd in built.pins.items():
            libbpf.obj_pin(fd, str(gen_dir / name))
        pinalias.pin(sess.paths, sess.state, iface, chain.entries, built.maps)
        crashpoint("after-pin")
        sent = True
        try:
            backend.swap(iface, ifindex, built, xdp_mode)
        except KernelError as e:
            raise _single_buffer_error(iface, built, e) or e from None
        crashpoint("after-swap")
    except BaseException as e:
        # Never unpin the generation the kernel runs: that orphans it (every later run
        # would call it foreign). Only what did not reach the kernel is removed.
        if not (sent and backend.attached_id(iface) == xdp.pinned_prog_id(gen_dir / "root")):
            bpffs.rmtree(gen_dir)
            raise
        if not isinstance(e, Exception):
            raise  # its pins stay: the next run records the running chain (_adopt_running)
        # An error after the kernel took the new chain: it runs, so it is recorded below.
        late = (f"{iface}: {type(e).__name__} after the swap ({e}); the new chain runs "
                "and is recorded — fix: none needed; report it if it recurs")
    finally:
        if built is not None:
            built.close()
        shutil.rmtree(workdir, ignore_errors=True)
    root_id = xdp.pinned_prog_id(gen_dir / "root")
    _drain_old_events(sess, iface)
    owners = _plugin_packages(sess)
    sess.state.interfaces[iface.key] = InterfaceRecord(
        netns=iface.netns, name=iface.name, ifindex=ifindex, mode=built.mode, prog_id=root_id,
        netns_id=netns_identity(iface.netns),
        fingerprint=fp, generation=gen, pin_dir=str(gen_dir), xdp_mode=xdp_mode,
        programs=[ProgramRecord(e.name, e.plugin, e.priority, e.policy.as_dict(), e.object,
                                e.program, e.digest,
                                built.slot_prog_ids[i] if i < len(built.slot_prog_ids) else 0, i,
                                constants=constants_json(e.constants),
                                package=owners.get(e.plugin, ""),
                                    maps=map_settings_json(e.map_settings), **_link_fields(built, i))
                  for i, e in enumerate(chain.entries)],
        updated=time.time(), trigger=opts.trigger,
        **recover.record_fields(sess.paths.pin_root, gen_dir, chain))
    crashpoint("before-state-write")
    unrecorded = _save_after_change(
        sess, f"{iface} now runs the new chain (generation {gen}, program id {root_id}), "
        "which is not recorded there")
    crashpoint("after-state-write")
    # Also when the record failed: the new generation's pins say what runs, and an old
    # one left pinned would only be garbage for the next run.
    _drop_old_generations(sess.paths.iface_pin_dir(iface.key), keep=gen_dir)
    sess.plugins.notify("xdphooks_chain_attached", interface=iface, chain=chain, maps=built.maps)
    warnings = [f"{iface}: {w}" for w in built.warnings] + ([late] if late else [])
    if unrecorded:
        raise Unrecorded(unrecorded, warnings)
    return warnings


def _save_after_change(sess: Session, what: str) -> XdphooksError | None:
    """The state write that follows a change the kernel already made: a fault is one
    line saying so, never a traceback and never an undo."""
    try:
        state_mod.save(sess.paths.state_file, sess.state)
    except OSError as e:
        return fsfaults.fault(sess.paths.state_file, e, then=what,
                              retry="run 'xdphooks reconcile' again: it records the running "
                                    "chain from its pins")
    return None


def _prog_arrays_hook(sess: Session, iface: InterfaceRef):
    """xdphooks_prog_arrays for the backend, when some plugin implements it."""
    if not sess.plugins.implements("xdphooks_prog_arrays"):
        return None
    return lambda program, programs, arrays: sess.plugins.prog_arrays(
        iface, program, programs, arrays)


def _single_buffer_error(iface: InterfaceRef, built, err: KernelError) -> XdphooksError | None:
    """The MTU needs multi-buffer XDP and some program is not built for it: name it,
    with the kernel's own reason (its extack) on the same line."""
    from .capabilities import has_frags

    if err.errno == errno.ERANGE and not has_frags():
        return XdphooksError(f"{iface}: its MTU needs multi-buffer XDP, which Linux "
                             f"{os.uname().release} does not have (it came in 5.18); the "
                             "chain that ran before keeps running",
                             fix="lower the MTU (ip link set dev DEV mtu 1500; for a veth, "
                                 "both ends), attach in generic mode (xdp_mode = \"skb\"), "
                                 "or run Linux 5.18 or later")
    if err.errno != errno.ERANGE or not built.single_buffer:
        return None
    name, plugin = built.single_buffer[0]
    others = f" (and {len(built.single_buffer) - 1} more)" if len(built.single_buffer) > 1 else ""
    said = err.message.partition("the kernel says: ")[2]
    return XdphooksError(f"{iface}: its MTU needs multi-buffer XDP (ERANGE"
                         f"{'; the kernel says: ' + said if said else ''}), and program "
                         f"{name}{others} is not built for it (SEC(\"xdp\"), not "
                         "SEC(\"xdp.frags\")); the chain that ran before keeps running",
                         plugin=plugin,
                         fix=f"rebuild {name} with SEC(\"xdp.frags\") if it handles "
                             "multi-buffer packets (bpf_xdp_load_bytes), or lower the MTU "
                             "(ip link set dev DEV mtu 1500; for a veth, both ends)")


def _link_fields(built, i: int) -> dict[str, str]:
    sl = built.slot_links[i] if i < len(built.slot_links) else {}
    return {"link": sl.get("link", ""), "link_reason": sl.get("reason", "")}


def _drain_old_events(sess: Session, iface: InterfaceRef) -> None:
    """Keep the replaced generation's 'log' events before its ring is released."""
    old = sess.state.interfaces.get(iface.key)
    if old is None:
        return
    try:
        from .counters import drain_events

        drain_events(sess.paths, old)
    except Exception:  # noqa: BLE001 - losing events must never fail a swap
        pass


def _detach(sess: Session, iface: InterfaceRef, obs: Observed | None) -> None:
    names = [p.name for p in obs.record.programs] if obs and obs.record else []
    _drain_old_events(sess, iface)
    if obs and obs.ifindex and obs.ours:
        backends.of(obs.record).detach(iface, obs.ifindex, obs.attached_id,
                                       obs.record.xdp_mode if obs.record else
                                       sess.config.xdp_mode)
    crashpoint("after-detach")
    sess.state.interfaces.pop(iface.key, None)
    unrecorded = _save_after_change(sess, f"the chain on {iface} is detached, but the file "
                                          "still records it")
    bpffs.rmtree(sess.paths.iface_pin_dir(iface.key))
    sess.plugins.notify("xdphooks_chain_detached", interface=iface, names=names)
    if unrecorded:
        raise Unrecorded(unrecorded)


def _drop_old_generations(idir: Path, keep: Path) -> None:
    for g in idir.iterdir():
        if g != keep and g.is_dir():
            (g / "root").unlink(missing_ok=True)  # the old chain's root goes first
            crashpoint("during-cleanup")
            bpffs.rmtree(g)


def _collect_garbage(sess: Session) -> None:
    """One rule: a pinned generation whose root is not what the kernel runs now is
    garbage (crashed runs, replaced chains, vanished interfaces), and so is a state
    record that disagrees with the kernel."""
    for key in _known_keys(sess.paths, sess.state):
        if _foreign(sess.state, key):
            continue  # another namespace's: said once by gather
        iface = _iface_from_key(key, sess.state)
        rec = sess.state.interfaces.get(key)
        # 0 if the interface is gone (found by name, or by its recorded ifindex)
        current = _locate(iface, rec)[1] if iface is not None else 0
        idir = sess.paths.iface_pin_dir(key)
        if idir.is_dir():
            for g in list(idir.iterdir()):
                if not current or xdp.pinned_prog_id(g / "root") != current:
                    bpffs.rmtree(g)
            if not any(idir.iterdir()):
                idir.rmdir()
        if rec and rec.prog_id != current:
            sess.state.interfaces.pop(key, None)
        elif rec and not rec.netns_id and iface is not None:
            rec.netns_id = netns_identity(iface.netns)  # a record from before netns_id


def teardown(paths: Paths, only: str | None, trigger: str = "manual") -> list[str]:
    """Detach our chains (all, or one interface) and remove their pins; maps of
    programs too when everything goes."""
    require_root("teardown")
    if not bpffs.is_bpffs(paths.bpffs):
        return []
    done: list[str] = []
    faults: list[XdphooksError] = []
    with signals.Deferral() as guard, state_mod.Lock(paths.lock_file):
        _collect_build_dirs(paths)
        from .watchlease import end_watches
        end_watches(paths)  # a watched chain: the recorded one is what teardown detaches
        state, _ = state_mod.load(paths.state_file, paths.pin_root)
        observed = observe(paths, state)
        cfg = config_mod.load(paths.config_file) if paths.config_file.exists() else config_mod.Config()
        plugins = discover(paths, cfg.disable, cfg.hook_timeout)
        sess = Session(paths, cfg, state, plugins, observed, {}, Plan(()))
        todo = [(i, o) for i, o in observed.items()
                if not only or str(i) == only or i.name == only]
        guard.hold()  # a signal stops before the next interface, not mid-detach
        _open_change_log(paths)
        for iface, obs in todo:
            if guard.received is not None:
                break
            try:
                _detach(sess, iface, obs)
            except Unrecorded as e:  # detached all the same; said once below
                faults.append(e)
            log_event(f"teardown {iface}", trigger=trigger, interface=str(iface),
                      action="teardown")
            done.append(str(iface))
        left = [str(i) for i, _ in todo[len(done):]]
        pinalias.maintain(paths, state)  # before the maps' own pins go
        if not only and not left and not _foreign_notes(state):  # another namespace's pins stay
            bpffs.rmtree(paths.pin_root)
        try:
            state_mod.save(paths.state_file, state)
        except OSError as e:
            faults.append(fsfaults.fault(paths.state_file, e))
    again = f"run 'xdphooks teardown {only or '--all'}' again"
    if guard.received is not None and left:
        raise signals.Interrupted(
            guard.received, f"interrupted by {signals.name(guard.received)} after detaching "
            f"{', '.join(done) or 'nothing'}; still attached: {', '.join(left)}",
            changed=bool(done), fix=again)
    if faults:
        err = XdphooksError(f"{faults[0].message}; detached all the same: "
                            f"{', '.join(done) or 'nothing'}", fix=f"{faults[0].fix}, then {again}")
        err.exit_code = 3 if done else 1
        raise err
    return done
