"""Planning, as pure functions: declarations + config + facts → chains → changes.

Nothing here touches the filesystem or the kernel; the coordinator gathers
the facts (object files, interfaces, what runs) and hands them in, so every
rule below can be tested, and property-tested, on plain data.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from .model import Choice, Mode
from .config import Config
from .model import (
    PRIORITY_DEFAULT,
    Change,
    Chain,
    ChainEntry,
    InterfaceRef,
    Link,
    Plan,
    Problem,
    Refusal,
    VerdictPolicy,
    XdpProgram,
)

IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ObjectFacts:
    """What the coordinator found out about one object file."""

    path: str  # absolute
    digest: str = ""
    programs: tuple[str, ...] = ()  # XDP programs in the object
    run_config: Mapping[str, tuple[int | None, tuple[str, ...] | None]] | None = None
    error: str = ""  # why it cannot be used; empty if fine
    fix: str = ""
    tail_targets: tuple[str, ...] = ()  # programs its PROG_ARRAYs initialise: not entries
    untyped: tuple[str, ...] = ()  # programs in sections of no type: XDP when named


@dataclass(frozen=True)
class Placed:
    """A resolved program and the interface patterns it asks for."""

    entry: ChainEntry
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Running:
    """What runs on an interface now, as far as state and kernel agree."""

    names: tuple[str, ...]
    plugins: tuple[str, ...]
    fingerprint: str | None  # None: unknown (state lost or stale) → rebuild
    damaged: str = ""  # why it must be rebuilt even if nothing changed (components lost)


def resolve(
    declared: Sequence[tuple[str, XdpProgram]],
    config: Config,
    facts: Mapping[str, ObjectFacts],
    object_path: Callable[[XdpProgram], str],
) -> tuple[list[Placed], list[Problem]]:
    """Apply config overrides and object metadata; check each program.

    ``object_path(program)`` maps a declaration to the key of ``facts``.
    Returns the usable programs and the problems found; a required program
    with a problem yields an error, an optional one a warning.
    """
    problems: list[Problem] = []
    out: list[Placed] = []
    declarers: dict[str, list[str]] = {}
    for plugin, prog in declared:
        declarers.setdefault(prog.name, []).append(plugin)
    dupes = {name for name, plugins in declarers.items() if len(plugins) > 1}
    # Every plugin involved gets the error: neither program is used, so each plugin's
    # interfaces keep what runs (whichever was there first is not known here).
    for name in sorted(dupes):
        for plugin in sorted(set(declarers[name])):
            others = sorted(set(declarers[name]) - {plugin})
            problems.append(Problem(
                "error", plugin,
                f"program name {name!r} is also declared by "
                + (", ".join(f"plugin {o!r}" for o in others) if others else "this plugin"),
                "rename one of them; names must be unique across plugins"))
    for plugin, prog in declared:
        if prog.name in dupes:
            continue
        override = config.programs.get(prog.name)
        if override is not None and not override.enabled:
            continue
        sev = "error" if prog.required else "warning"
        fact = facts.get(object_path(prog))
        if fact is None or fact.error:
            msg = fact.error if fact else f"object {prog.object} was not inspected"
            if not prog.required:
                msg += "; optional program left out"
            problems.append(Problem(sev, plugin, f"{prog.name}: {msg}", fact.fix if fact else ""))
            continue
        program = prog.program
        if program is None:
            if not fact.programs:
                problems.append(Problem(
                    sev, plugin,
                    f"{prog.name}: {fact.path} has no XDP program (no SEC(\"xdp\") function; "
                    "built for another program type?)",
                    "point the declaration at an object with an XDP program"))
                continue
            entries = [p for p in fact.programs if p not in fact.tail_targets] or fact.programs
            if len(entries) != 1:
                problems.append(Problem(
                    sev, plugin,
                    f"{prog.name}: {fact.path} has {len(entries)} XDP programs "
                    f"({', '.join(entries)})",
                    "set XdpProgram(program=...) to the function to run"))
                continue
            program = entries[0]
        elif program not in fact.programs and program not in fact.untyped:
            problems.append(Problem(
                sev, plugin, f"{prog.name}: no XDP program {program!r} in {fact.path} "
                f"(found: {', '.join(fact.programs) or 'none'})",
                "fix the program name in the plugin"))
            continue
        meta_prio, meta_actions = (fact.run_config or {}).get(program, (None, None))
        priority = _first(override.priority if override else None, prog.priority, meta_prio,
                          PRIORITY_DEFAULT)
        policy = _first(override.policy if override else None, prog.policy,
                        VerdictPolicy.from_chain_call_actions(meta_actions)
                        if meta_actions is not None else None, VerdictPolicy())
        patterns = _first(override.interfaces if override else None, prog.interfaces,
                          config.default_interfaces)
        if not patterns:
            problems.append(Problem("warning", plugin, f"{prog.name}: no interfaces",
                                    "set interfaces in the plugin or default_interfaces "
                                    "in xdphooks.toml"))
        link = _first(override.link if override else None, prog.link, config.link, Link.SPLICE)
        entry = ChainEntry(prog.name, plugin, fact.path, program, priority, policy,
                           prog.required, prog.pin_maps, fact.digest, link,
                           tuple(prog.constants or ()), map_settings=tuple(prog.maps or ()),
                           pin_aliases=tuple(prog.pin_aliases or ()), pin_root=prog.pin_root or "")
        out.append(Placed(entry, tuple(patterns)))
    for name in sorted(set(config.programs) - set(declarers)):
        # a misspelt table would otherwise change nothing, silently
        known = ", ".join(sorted(declarers)) or "none"
        problems.append(Problem(
            "warning", None, f"[programs.{name}] in xdphooks.toml names no program any "
            f"plugin declares (known programs: {known}); the table is ignored",
            "correct the table's name to one of the known programs, or remove it"))
    return _share_object_maps(out), problems


def _share_object_maps(placed: list[Placed]) -> list[Placed]:
    """Different programs of one object share its maps, as they would under their own
    loader: every one but the first by name pins them in that one's directory. The
    same program declared twice is two instances, each with maps of its own."""
    group: dict[str, list[ChainEntry]] = {}
    for p in placed:
        group.setdefault(p.entry.object, []).append(p.entry)
    first = {obj: min(e.name for e in es) for obj, es in group.items()
             if len(es) > 1 and len({e.program for e in es}) == len(es)}
    return [Placed(replace(p.entry, maps_of=first[p.entry.object]), p.patterns)
            if first.get(p.entry.object, p.entry.name) != p.entry.name else p for p in placed]


def _first(*values):
    for v in values:
        if v is not None:
            return v
    return None


def match_interfaces(
    patterns: Iterable[str], available: Iterable[InterfaceRef], known_netns: Iterable[str]
) -> tuple[list[InterfaceRef], list[tuple[str, str]]]:
    """Interfaces matching the patterns; also (pattern, problem) for patterns that are
    malformed ("error") or match nothing right now ("warning": attached on hotplug)."""
    available = sorted(set(available))
    known_netns = set(known_netns) | {""}
    hits: set[InterfaceRef] = set()
    notes: list[tuple[str, str]] = []
    for pat in patterns:
        ns_pat, _, name_pat = pat.rpartition("/")
        if not name_pat or (not GLOB_CHARS & set(name_pat) and not IFNAME_RE.match(name_pat)):
            notes.append((pat, "error"))
            continue
        matched = [i for i in available
                   if fnmatch.fnmatchcase(i.netns, ns_pat) and fnmatch.fnmatchcase(i.name, name_pat)]
        if matched:
            hits.update(matched)
        elif not GLOB_CHARS & set(ns_pat) and ns_pat not in known_netns:
            notes.append((pat, "error"))
        elif not GLOB_CHARS & set(pat):
            notes.append((pat, "warning"))
    return sorted(hits), notes


def desired_chains(
    placed: Sequence[Placed],
    available: Iterable[InterfaceRef],
    known_netns: Iterable[str],
    mode: str,
) -> tuple[dict[InterfaceRef, Chain], list[Problem]]:
    """One chain per interface, entries in total order (priority, then name)."""
    available = list(available)
    known_netns = list(known_netns)
    per_iface: dict[InterfaceRef, list[ChainEntry]] = {}
    problems: list[Problem] = []
    for p in placed:
        ifaces, notes = match_interfaces(p.patterns, available, known_netns)
        for pat, kind in notes:
            if kind == "error":
                sev = "error" if p.entry.required else "warning"
                problems.append(Problem(sev, p.entry.plugin,
                                        f"{p.entry.name}: unknown interface {pat!r}",
                                        "use IFNAME, a glob, or NETNS/IFNAME with an existing "
                                        "namespace (ip netns list)"))
            else:
                problems.append(Problem("warning", p.entry.plugin,
                                        f"{p.entry.name}: interface {pat!r} is not present; "
                                        "its chain is attached when it appears"))
        for iface in ifaces:
            per_iface.setdefault(iface, []).append(p.entry)
    chains = {
        iface: Chain(iface, tuple(sorted(entries, key=ChainEntry.sort_key)), mode)
        for iface, entries in per_iface.items()
    }
    return dict(sorted(chains.items())), problems


def with_mode(chain: Chain, mode: Mode) -> Chain:
    return replace(chain, mode=mode)


def diff(
    desired: Mapping[InterfaceRef, Chain],
    running: Mapping[InterfaceRef, Running],
    refused: Mapping[InterfaceRef, str] | None = None,
) -> tuple[Change, ...]:
    """What to do per interface; ``refused`` interfaces keep what runs."""
    refused = refused or {}
    changes: list[Change] = []
    for iface in sorted(set(desired) | set(running)):
        want = desired.get(iface)
        have = running.get(iface)
        names = have.names if have else ()
        if iface in refused:
            why = refused[iface]
            changes.append(Change(iface, "keep", want, names, f"refused: {why}", Refusal(why)))
        elif want is None:
            changes.append(Change(iface, "detach", None, names, "no program wants it"))
        elif have is None:
            changes.append(Change(iface, "attach", want, (), "new chain"))
        elif have.fingerprint == want.fingerprint() and not have.damaged:
            changes.append(Change(iface, "keep", want, names, "up to date"))
        else:
            changes.append(Change(iface, "replace", want, names,
                                  _why(have, want)))
    return tuple(changes)


def _why(have: Running, want: Chain) -> str:
    if have.damaged:
        return f"running chain damaged ({have.damaged}); rebuilding"
    if have.fingerprint is None:
        return "running chain unknown to state; rebuilding"
    if have.names != want.names:
        return f"{' → '.join(have.names) or '∅'}  ⇒  {' → '.join(want.names)}"
    return "program, object or policy changed"


def refusals(
    problems: Sequence[Problem],
    desired: Mapping[InterfaceRef, Chain],
    running: Mapping[InterfaceRef, Running],
    broken_plugins: Iterable[str],
) -> dict[InterfaceRef, str]:
    """Interfaces whose change must be refused, with the first reason.

    An error about a plugin refuses every interface where that plugin's
    programs run or would run, or only the interface it names (a veto); a
    broken plugin refuses the interfaces where its programs run now (its
    declarations are unknown, so nothing may be removed on its behalf).
    Errors naming neither a plugin nor an interface refuse everything.
    """
    out: dict[InterfaceRef, str] = {}
    broken = set(broken_plugins)
    for prob in problems:
        if prob.severity != "error":
            continue
        for iface in sorted(set(desired) | set(running)):
            if prob.interface is not None and prob.interface != iface:
                continue
            chain = desired.get(iface)
            run = running.get(iface)
            plugins = set(e.plugin for e in chain.entries) if chain else set()
            plugins |= set(run.plugins) if run else set()
            if prob.plugin is None or prob.plugin in plugins:
                out.setdefault(iface, str(prob))
    for iface, run in running.items():
        hit = broken & set(run.plugins)
        if hit:
            out.setdefault(iface, f"plugin {sorted(hit)[0]!r} failed to load and has programs "
                                  f"running here; keeping the running chain")
    return out


# --- assessment: the rules between "what is wanted" and "what to do" ----------------


class PlanHooks(Protocol):
    """The plugin hooks :func:`assess` consults (:class:`xdphooks.plugins.Plugins`)."""

    @property
    def failures(self) -> Sequence["HookFailure"]: ...

    def select_mode(self, interface: InterfaceRef, chain: Chain, probed: str) -> str | None: ...

    def validate(self, interface: InterfaceRef, chain: Chain) -> list[Problem]: ...


class HookFailure(Protocol):
    @property
    def plugin(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def fix(self) -> str: ...


@dataclass(frozen=True)
class Situation:
    """The facts :func:`assess` decides on; the coordinator gathers them."""

    desired: Mapping[InterfaceRef, Chain]  # from desired_chains(), in choice.mode
    running: Mapping[InterfaceRef, Running]  # our chains the kernel runs
    problems: Sequence[Problem]  # from resolve() and desired_chains()
    broken: frozenset[str]  # plugins that failed to load or declare
    choice: Choice
    auto: bool  # mode = "auto": plugins may pick another usable mode
    xdp_mode: str  # configured native | skb
    #: desired interfaces without a chain of ours: the program id the kernel runs (0: none)
    kernel_ids: Mapping[InterfaceRef, int] = field(default_factory=dict)
    #: our running chains: the XDP mode they were attached in
    running_xdp_modes: Mapping[InterfaceRef, str] = field(default_factory=dict)
    takeover: bool = False
    only: frozenset[InterfaceRef] = frozenset()  # non-empty: plan these interfaces only


@dataclass(frozen=True)
class Assessment:
    plan: Plan
    desired: dict[InterfaceRef, Chain]  # in their final mode, limited to ``only``


def assess(facts: Situation, hooks: PlanHooks) -> Assessment:
    """Foreign programs, mode choice, plugin vetoes, failed plugins and XDP-mode
    changes → refusals → the plan. No I/O here; the plugin hooks are the only
    code called, and tests pass plain objects for them."""
    desired = dict(facts.desired)
    running = dict(facts.running)
    problems = list(facts.problems)
    choice = facts.choice
    # The kernel is the truth: a foreign program is never replaced without --takeover.
    foreign: dict[InterfaceRef, str] = {}
    for iface in desired:
        attached = facts.kernel_ids.get(iface, 0)
        if iface not in running and attached and not facts.takeover:
            foreign[iface] = (f"{iface} already runs XDP program id {attached} that xdphooks "
                              f"did not attach")
    if facts.auto:
        for iface, chain in list(desired.items()):
            chosen = hooks.select_mode(iface, chain, choice.mode)
            if not chosen or chosen == choice.mode:
                continue
            if chosen not in choice.usable:
                problems.append(Problem("error", None, f"{iface}: a plugin asked for mode "
                                        f"{chosen!r}, which is not usable here ({choice.why})"))
            else:
                desired[iface] = with_mode(chain, chosen)
    # Plugins vet only the chains that are about to change.
    for iface, chain in desired.items():
        have = running.get(iface)
        if have is None or have.fingerprint != chain.fingerprint() or have.damaged:
            problems += [Problem(p.severity, p.plugin, f"{iface}: {p.message}", p.fix, iface)
                         for p in hooks.validate(iface, chain)]
    # A plugin that failed to load or declare is an error (its programs cannot run);
    # one whose later hook failed is a warning (the change goes ahead).
    failures = list(hooks.failures)
    problems += [Problem("error", f.plugin, f.reason, f.fix) for f in failures
                 if f.plugin in facts.broken]
    problems += [Problem("warning", f.plugin, f.reason, f.fix) for f in failures
                 if f.plugin not in facts.broken
                 and not any(f.plugin in r.plugins for r in running.values())]
    # XDP cannot switch an interface between native and skb mode atomically: a chain
    # keeps the mode it was attached in until the admin detaches it.
    for iface, was in facts.running_xdp_modes.items():
        if iface in desired and was != facts.xdp_mode:
            problems.append(Problem(
                "warning", None, f"{iface} runs in {was} mode, the config says "
                f"{facts.xdp_mode}; it stays in {was} mode (switching modes "
                "needs a detach, which opens a packet window)",
                f"in a maintenance window: xdphooks teardown {iface}; xdphooks reconcile"))
    refused = refusals(problems, desired, running, facts.broken)
    for iface, why in foreign.items():
        refused.setdefault(iface, why + " (use --takeover to replace it)")
        problems.append(Problem("error", None, why, "remove it (ip link set dev IFACE xdp off) "
                                "or run reconcile --takeover"))
    if facts.only:
        desired = {i: c for i, c in desired.items() if i in facts.only}
        running = {i: r for i, r in running.items() if i in facts.only}
    changes = diff(desired, running, refused)
    return Assessment(Plan(changes, tuple(_dedupe(problems))), desired)


def _dedupe(problems: Sequence[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out
