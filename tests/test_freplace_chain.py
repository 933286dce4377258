"""freplace backend inside the VM: chains, policies, counters, events."""

from __future__ import annotations

import json

import pytest

from freplace_support import DATA_DIR, XDP, entry, fr, vm_only  # noqa: F401 - fixture
from xdphooks.backends import freplace
from xdphooks.kernel import libbpf

pytestmark = vm_only


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64])
def test_chain_runs_in_order(fr, bpf_obj, n):
    obj = bpf_obj("fr_tag")
    names = [f"p{i}" for i in range(n)]
    gen = fr.build([entry(nm, obj) for nm in names])
    assert len(set(gen.built.slot_prog_ids)) == n
    for i, nm in enumerate(names):
        fr.set_cfg(nm, tag=i + 1)
    ret, tags = gen.order()
    assert ret == XDP["pass"]
    assert tags == list(range(1, n + 1))
    # every component is an EXT program linked to its own slot of this dispatcher
    root_id = libbpf.prog_info(gen.root_fd)[0].id
    for i, nm in enumerate(names):
        info, _ = libbpf.prog_info(gen.built.pins[f"prog-{nm}"])
        assert info.type == libbpf.BPF_PROG_TYPE_EXT
        li = libbpf.link_info(gen.built.pins[f"link-{nm}"])
        assert li.target_obj_id == root_id
        assert li.target_btf_id == libbpf.prog_btf_func_id(gen.root_fd, f"slot{i}")
    c = gen.counters()
    assert [x["packets"] for x in c] == [1] * n


def test_smallest_dispatcher_is_picked():
    assert freplace.pick_dispatcher(DATA_DIR, 1).name == "dispatcher-4.o"
    assert freplace.pick_dispatcher(DATA_DIR, 5).name == "dispatcher-8.o"
    assert freplace.pick_dispatcher(DATA_DIR, 64).name == "dispatcher-64.o"


VERDICTS = {**XDP, "unknown": 7}


@pytest.mark.parametrize("decision", ["continue", "return", "log"])
def test_every_policy_outcome(fr, bpf_obj, decision):
    """Slot 0 returns each action (and an unknown value) in turn under a policy
    that gives every key ``decision``; slot 1 tags the packet and passes."""
    obj = bpf_obj("fr_tag")
    policy = ",".join(f"{k}={decision}" for k in VERDICTS)
    gen = fr.build([entry("first", obj, policy), entry("second", obj)])
    fr.set_cfg("second", tag=2)
    expected_counts = {k: 0 for k in VERDICTS}
    for key, value in VERDICTS.items():
        fr.set_cfg("first", verdict=value, tag=1)
        ret, tags = gen.order()
        if decision == "return":
            assert (ret, tags) == (value, [1]), key
        else:
            assert (ret, tags) == (XDP["pass"], [1, 2]), key
        expected_counts[key] += 1
    c = gen.counters()
    assert c[0]["packets"] == len(VERDICTS)
    assert c[0]["verdicts"] == expected_counts
    assert c[1]["packets"] == (0 if decision == "return" else len(VERDICTS))
    events = gen.events()
    if decision == "log":
        assert [(e["slot"], e["retval"]) for e in events] == [(0, v) for v in VERDICTS.values()]
    else:
        assert events == []


def test_default_policy_is_libxdp_like(fr, bpf_obj):
    obj = bpf_obj("fr_tag")
    gen = fr.build([entry("a", obj), entry("b", obj)])
    fr.set_cfg("a", tag=1)
    fr.set_cfg("b", tag=2)
    for key, value in XDP.items():
        fr.set_cfg("a", verdict=value, tag=1)
        ret, tags = gen.order()
        assert (ret, tags) == ((XDP["pass"], [1, 2]) if key == "pass" else (value, [1])), key


def test_counters_off(fr, bpf_obj):
    obj = bpf_obj("fr_tag")
    gen = fr.build([entry("a", obj)], counters=False)
    gen.run()
    assert gen.counters()[0]["packets"] == 0


def test_preflight_does_not_leave_counts(fr, bpf_obj):
    obj = bpf_obj("fr_tag")
    gen = fr.build([entry("a", obj, "pass=log")])
    assert gen.counters()[0]["packets"] == 0
    assert gen.events() == []


def test_component_that_changes_packet_data(fr, bpf_obj):
    """bpf_xdp_adjust_head in an extension: the slot stubs declare packet
    changes, so this verifies on kernels with the 6.13 changes_pkt_data check."""
    gen = fr.build([entry("adj", bpf_obj("fr_adjust"), program="fr_adjust")])
    res = gen.run(bytes(64))
    assert res.retval == XDP["pass"]
    assert len(res.data_out) == 60 and res.data_out[0] == 0xAD


def test_probe_says_yes_and_caches(tmp_path):
    from xdphooks.backends.freplace_probe import probe_freplace

    works, why = probe_freplace(tmp_path)
    assert works, why
    cached = json.loads((tmp_path / "probe.json").read_text())
    assert cached["works"] is True and cached["boot_id"]
    assert probe_freplace(tmp_path) == (works, why)
