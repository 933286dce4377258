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
