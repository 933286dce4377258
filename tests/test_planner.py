"""Planner rules on plain data (no kernel), including property tests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xdphooks import VerdictPolicy, XdpProgram
from xdphooks.config import Config, ProgramOverride, parse
from xdphooks.model import Chain, ChainEntry, InterfaceRef
from xdphooks.planner import (
    ObjectFacts,
    Running,
    desired_chains,
    diff,
    match_interfaces,
    refusals,
    resolve,
)

import pytest

IFACES = [InterfaceRef("", "eth0"), InterfaceRef("", "eth1"), InterfaceRef("blue", "veth0"),
          InterfaceRef("blue", "veth1"), InterfaceRef("red", "veth0")]


def facts_for(*names, programs=("xdp_main",), run_config=None):
    return {f"/o/{n}": ObjectFacts(f"/o/{n}", f"d-{n}", programs, run_config) for n in names}


def objpath(p):
    return f"/o/{p.object}"


def test_defaults_overrides_and_run_config():
    declared = [("a", XdpProgram("fw", "fw.o")), ("b", XdpProgram("lb", "lb.o", priority=70))]
    facts = facts_for("fw.o")
    facts.update({"/o/lb.o": ObjectFacts("/o/lb.o", "d", ("lb",), {"lb": (5, ("pass", "drop"))})})
    cfg = Config(default_interfaces=("eth0",),
                 programs={"fw": ProgramOverride(priority=3, policy=VerdictPolicy.parse("tx=log"))})
    placed, problems = resolve(declared, cfg, facts, objpath)
    assert not problems
    fw, lb = {p.entry.name: p.entry for p in placed}["fw"], {p.entry.name: p.entry for p in placed}["lb"]
    assert fw.priority == 3 and fw.policy.tx.value == "log" and fw.program == "xdp_main"
    # The plugin's priority wins over .xdp_run_config; the run config's actions fill the policy.
    assert lb.priority == 70
    assert lb.policy.drop.value == "continue" and lb.policy.tx.value == "return"


def test_run_config_priority_used_when_plugin_silent():
    facts = {"/o/x.o": ObjectFacts("/o/x.o", "d", ("x",), {"x": (12, None)})}
    placed, _ = resolve([("p", XdpProgram("x", "x.o"))], Config(), facts, objpath)
    assert placed[0].entry.priority == 12
    assert placed[0].entry.policy == VerdictPolicy()


def test_duplicate_names_are_errors_naming_both_plugins():
    declared = [("a", XdpProgram("fw", "fw.o")), ("b", XdpProgram("fw", "fw.o"))]
    placed, problems = resolve(declared, Config(), facts_for("fw.o"), objpath)
    assert placed == []
    assert any("also declared by plugin 'a'" in p.message and p.plugin == "b" for p in problems)


def test_missing_object_required_is_error_optional_is_warning():
    declared = [("a", XdpProgram("fw", "nope.o")), ("b", XdpProgram("opt", "nope.o", required=False))]
    facts = {"/o/nope.o": ObjectFacts("/o/nope.o", error="object /o/nope.o does not exist")}
    placed, problems = resolve(declared, Config(), facts, objpath)
    assert placed == []
    sev = {p.plugin: p.severity for p in problems}
    assert sev == {"a": "error", "b": "warning"}


def test_ambiguous_program_needs_a_name():
    facts = facts_for("two.o", programs=("one", "two"))
    _, problems = resolve([("a", XdpProgram("t", "two.o"))], Config(), facts, objpath)
    assert "2 XDP programs" in problems[0].message and "program=" in problems[0].fix


def test_disabled_by_config():
    cfg = Config(programs={"fw": ProgramOverride(enabled=False)})
    placed, problems = resolve([("a", XdpProgram("fw", "fw.o"))], cfg, facts_for("fw.o"), objpath)
    assert placed == [] and problems == []


def test_bad_declarations_rejected_at_construction():
    with pytest.raises(ValueError, match="priority"):
        XdpProgram("x", "x.o", priority=1001)
    with pytest.raises(ValueError, match="name"):
        XdpProgram("Bad Name", "x.o")
    with pytest.raises(ValueError, match="bad policy value"):
        VerdictPolicy.parse("tx=explode")
    with pytest.raises(ValueError, match="unknown action"):
        VerdictPolicy.parse("teleport=log")


def test_interface_matching_globs_netns_and_unknowns():
    hits, notes = match_interfaces(["eth*", "blue/veth1", "red/*", "nosuch/eth0", "eth9", "a b"],
                                   IFACES, ["blue", "red"])
    assert hits == [InterfaceRef("", "eth0"), InterfaceRef("", "eth1"),
                    InterfaceRef("blue", "veth1"), InterfaceRef("red", "veth0")]
    assert ("nosuch/eth0", "error") in notes
    assert ("eth9", "warning") in notes  # not present yet: attached on hotplug
    assert ("a b", "error") in notes


def test_config_parse_errors_are_one_line():
    with pytest.raises(Exception, match="mode 'fast' must be one of"):
        parse({"mode": "fast"})
    with pytest.raises(Exception, match=r"\[programs.fw\] priority 5000 out of range"):
        parse({"programs": {"fw": {"priority": 5000}}})
    cfg = parse({"programs": {"fw": {"policy": {"tx": "log"}, "interfaces": ["eth0"]}}})
    assert cfg.programs["fw"].policy.tx.value == "log"


# --- properties --------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
progs = st.lists(st.tuples(names, st.integers(0, 1000)), min_size=1, max_size=20,
                 unique_by=lambda t: t[0])


def _placed(items, patterns=("eth0",)):
    declared = [(f"plug-{n}", XdpProgram(n, "x.o", priority=pr, interfaces=patterns))
                for n, pr in items]
    placed, problems = resolve(declared, Config(), facts_for("x.o"), objpath)
    assert not problems
    return placed


@settings(max_examples=200, deadline=None)
@given(progs, st.randoms())
def test_order_is_total_and_independent_of_declaration_order(items, rnd):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a, _ = desired_chains(_placed(items), IFACES, [], "static")
    b, _ = desired_chains(_placed(shuffled), IFACES, [], "static")
    chain = a[InterfaceRef("", "eth0")]
    assert chain == b[InterfaceRef("", "eth0")]
    keys = [e.sort_key() for e in chain.entries]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@settings(max_examples=200, deadline=None)
@given(progs)
def test_plan_is_idempotent(items):
    """Once what runs equals what is desired, the plan changes nothing."""
    desired, _ = desired_chains(_placed(items, ("eth*", "blue/*")), IFACES, ["blue"], "static")
    running = {i: Running(c.names, tuple(e.plugin for e in c.entries), c.fingerprint())
               for i, c in desired.items()}
    assert all(c.action == "keep" for c in diff(desired, running))
    again, _ = desired_chains(_placed(items, ("eth*", "blue/*")), IFACES, ["blue"], "static")
    assert all(c.action == "keep" for c in diff(again, running))


@settings(max_examples=100, deadline=None)
@given(progs, progs)
def test_any_difference_is_a_change(a, b):
    da, _ = desired_chains(_placed(a), IFACES, [], "static")
    db, _ = desired_chains(_placed(b), IFACES, [], "static")
    ca, cb = da[InterfaceRef("", "eth0")], db[InterfaceRef("", "eth0")]
    running = {ca.interface: Running(ca.names, (), ca.fingerprint())}
    (change,) = diff(db, running)
    assert (change.action == "keep") == (ca == cb)


def test_errors_refuse_only_affected_interfaces_and_broken_plugins_keep_their_chain():
    e = lambda n, plug: ChainEntry(n, plug, "/o/x.o", "x", 50, VerdictPolicy())
    eth0, eth1 = InterfaceRef("", "eth0"), InterfaceRef("", "eth1")
    desired = {eth0: Chain(eth0, (e("a", "pa"),)), eth1: Chain(eth1, (e("b", "pb"),))}
    running = {eth1: Running(("b", "c"), ("pb", "pc"), "old")}
    from xdphooks.model import Problem
    refused = refusals([Problem("error", "pa", "bad")], desired, running, broken_plugins=["pc"])
    assert set(refused) == {eth0, eth1}
    assert "pc" in refused[eth1]
    changes = {c.interface: c for c in diff(desired, running, refused)}
    assert changes[eth1].action == "keep" and changes[eth1].reason.startswith("refused")


# --- assess: foreign programs, mode choice, vetoes, failed plugins, XDP mode ---------

from dataclasses import dataclass, field  # noqa: E402

from xdphooks.backends import Choice  # noqa: E402
from xdphooks.model import Problem, Refusal  # noqa: E402
from xdphooks.planner import Situation, assess  # noqa: E402

ETH0, ETH1 = InterfaceRef("", "eth0"), InterfaceRef("", "eth1")
AUTO_FREPLACE = Choice("freplace", "auto: freplace works", frozenset({"freplace", "static"}))
AUTO_STATIC = Choice("static", "auto: freplace unavailable", frozenset({"static"}))


@dataclass
class Fail:
    plugin: str
    reason: str
    fix: str = ""


@dataclass
class Hooks:
    """Plain stand-ins for the plugin hooks (Plugins in a real run)."""

    modes: dict = field(default_factory=dict)  # iface -> answer
    vetoes: dict = field(default_factory=dict)  # iface -> [Problem]
    failures: list = field(default_factory=list)
    validated: list = field(default_factory=list)
    asked: list = field(default_factory=list)

    def select_mode(self, interface, chain, probed):
        self.asked.append((interface, probed))
        return self.modes.get(interface)

    def validate(self, interface, chain):
        self.validated.append((interface, chain.mode))
        return self.vetoes.get(interface, [])


def _chain(iface, *names, plugin="p", mode="freplace"):
    return Chain(iface, tuple(ChainEntry(n, plugin, f"/o/{n}.o", "x", 50, VerdictPolicy())
                              for n in names), mode)


def _situation(desired, running=None, choice=AUTO_FREPLACE, **kw):
    base = dict(problems=(), broken=frozenset(), choice=choice, auto=True, xdp_mode="native")
    base.update(kw)
    return Situation(desired, running or {}, **base)


def _by_iface(assessed):
    return {c.interface: c for c in assessed.plan.changes}


def test_assess_foreign_program_refused_without_takeover_replaced_with_it():
    desired = {ETH0: _chain(ETH0, "a"), ETH1: _chain(ETH1, "b")}
    got = _by_iface(assess(_situation(desired, kernel_ids={ETH0: 77, ETH1: 0}), Hooks()))
    assert got[ETH0].action == "keep" and got[ETH0].refused
    assert isinstance(got[ETH0].refusal, Refusal) and "program id 77" in str(got[ETH0].refusal)
    assert "--takeover" in got[ETH0].reason
    assert got[ETH1].action == "attach" and not got[ETH1].refused
    got = _by_iface(assess(_situation(desired, kernel_ids={ETH0: 77}, takeover=True), Hooks()))
    assert got[ETH0].action == "attach"


def test_assess_mode_choice_only_in_auto_and_only_usable_modes():
    desired = {ETH0: _chain(ETH0, "a"), ETH1: _chain(ETH1, "b")}
    hooks = Hooks(modes={ETH0: "static"})
    a = assess(_situation(desired), hooks)
    assert a.desired[ETH0].mode == "static" and a.desired[ETH1].mode == "freplace"
    assert (ETH0, "static") in hooks.validated  # plugins vet the chain in its final mode
    assert not a.plan.errors
    # Not auto: plugins are not asked.
    hooks = Hooks(modes={ETH0: "static"})
    a = assess(_situation(desired, choice=Choice("freplace", "configured",
                                                 frozenset({"freplace"})), auto=False), hooks)
    assert hooks.asked == [] and a.desired[ETH0].mode == "freplace"
    # freplace where the probe found it unusable, or an unknown mode: an error, refused.
    desired = {ETH0: _chain(ETH0, "a", mode="static")}
    for answer in ("freplace", "turbo"):
        a = assess(_situation(desired, choice=AUTO_STATIC), Hooks(modes={ETH0: answer}))
        (err,) = a.plan.errors
        assert f"mode {answer!r}, which is not usable here (auto: freplace unavailable)" \
            in err.message
        assert _by_iface(a)[ETH0].refused and a.desired[ETH0].mode == "static"


def test_assess_vetoes_only_changing_chains_and_only_their_interface():
    chain0, chain1 = _chain(ETH0, "a"), _chain(ETH1, "b")
    running = {ETH0: Running(("a",), ("p",), chain0.fingerprint())}
    veto = [Problem("error", "p", "two load balancers", "disable one")]
    hooks = Hooks(vetoes={ETH0: veto, ETH1: veto})
    got = _by_iface(assess(_situation({ETH0: chain0, ETH1: chain1}, running), hooks))
    assert [i for i, _ in hooks.validated] == [ETH1]  # eth0 is up to date: not asked
    assert got[ETH0].action == "keep" and not got[ETH0].refused
    assert got[ETH1].refused and "plugin 'p': eth1: two load balancers" in got[ETH1].reason


def test_assess_failed_plugins_error_if_broken_warning_otherwise():
    desired = {ETH0: _chain(ETH0, "a", plugin="fw")}
    hooks = Hooks(failures=[Fail("fw", "cannot be loaded"), Fail("mon", "hook raised")])
    a = assess(_situation(desired, broken=frozenset({"fw"})), hooks)
    assert [(p.severity, p.plugin) for p in a.plan.problems] == [("error", "fw"),
                                                                 ("warning", "mon")]
    assert _by_iface(a)[ETH0].refused
    # A failed later hook of a plugin whose programs run here is not repeated as a warning.
    running = {ETH0: Running(("a",), ("mon",), "old")}
    a = assess(_situation(desired, running), Hooks(failures=[Fail("mon", "hook raised")]))
    assert a.plan.problems == () and _by_iface(a)[ETH0].action == "replace"


def test_assess_xdp_mode_change_is_a_warning_and_only_limits_the_plan():
    desired = {ETH0: _chain(ETH0, "a"), ETH1: _chain(ETH1, "b")}
    a = assess(_situation(desired, running_xdp_modes={ETH0: "skb"}, only=frozenset({ETH0})),
               Hooks())
    (warning,) = a.plan.problems
    assert warning.severity == "warning" and "eth0 runs in skb mode" in warning.message
    assert [c.interface for c in a.plan.changes] == [ETH0] and set(a.desired) == {ETH0}
    assert not a.plan.changes[0].refused


def test_assess_problems_are_deduplicated_in_order():
    desired = {ETH0: _chain(ETH0, "a")}
    p = Problem("warning", "x", "same")
    a = assess(_situation(desired, problems=(p, p, Problem("warning", "y", "other"))), Hooks())
    assert [q.plugin for q in a.plan.problems] == ["x", "y"]


def test_every_mode_is_one_backend_module_implementing_the_protocol(tmp_path):
    """The mode names come from the backends: config, auto and plugin answers use them."""
    from typing import get_args

    from xdphooks import backends, config

    assert backends.NAMES == get_args(backends.Mode) and set(backends.NAMES) == {"static",
                                                                                "freplace"}
    assert config.MODES == ("auto", *backends.NAMES)
    for name in backends.NAMES:
        module = backends.get(name)
        assert isinstance(module, backends.Backend) and module.MODE == name
    with pytest.raises(ValueError, match="unknown backend 'turbo'"):
        backends.get("turbo")
    assert backends.choose(None, "static") == backends.Choice("static", "configured",
                                                             frozenset({"static"}))
    static_ok = backends.get("static").usable(None)
    assert static_ok[0] is True
