"""freplace backend inside the VM: rebuilds keep unchanged components loaded,
upgrades reuse maps, and a rejected component leaves the old chain alone."""

from __future__ import annotations

import pytest

from freplace_support import XDP, entry, fr, vm_only  # noqa: F401 - fixture
from xdphooks.errors import VerifierError
from xdphooks.kernel import libbpf

pytestmark = vm_only


def _ids(gen) -> dict[str, int]:
    return {e.name: pid for e, pid in zip(gen.entries, gen.built.slot_prog_ids)}


@pytest.mark.parametrize("where", ["end", "front"])
def test_adding_a_program_relinks_the_others(fr, bpf_obj, where):
    obj = bpf_obj("fr_tag")
    a, b, c = entry("a", obj), entry("b", obj), entry("c", obj)
    g1 = fr.build([a, b])
    fr.set_cfg("a", tag=1)
    fr.set_cfg("b", tag=2)
    for _ in range(5):
        assert g1.order() == (XDP["pass"], [1, 2])
    hits_before = {n: fr.hits(n) for n in "ab"}
    maps_before = {n: fr.map_id(n, "fr_hits") for n in "ab"}

    new = [a, b, c] if where == "end" else [c, a, b]
    g2 = fr.build(new, previous=g1.previous)
    fr.set_cfg("c", tag=3)
    ids1, ids2 = _ids(g1), _ids(g2)
    assert ids2["a"] == ids1["a"] and ids2["b"] == ids1["b"], "a and b were reloaded"
    assert ids2["c"] not in ids1.values()
    assert {n: fr.map_id(n, "fr_hits") for n in "ab"} == maps_before
    # the canned pre-flight packets ran through a and b once more, nothing else changed
    hits_after = {n: fr.hits(n) for n in "ab"}
    assert hits_after["a"] - hits_before["a"] == hits_after["b"] - hits_before["b"] <= 10
    expected = [1, 2, 3] if where == "end" else [3, 1, 2]
    assert g2.order() == (XDP["pass"], expected)
    # the old generation still works until it is dropped (the swap is atomic) ...
    assert g1.order() == (XDP["pass"], [1, 2])
    fr.drop(g1)
    # ... and dropping it does not disturb the new one
    assert g2.order() == (XDP["pass"], expected)
    root2 = libbpf.prog_info(g2.root_fd)[0].id
    for name in "ab":
        assert libbpf.link_info(g2.built.pins[f"link-{name}"]).target_obj_id == root2


def test_rebuild_after_old_generation_is_gone(fr, bpf_obj):
    """Three generations in a row, each dropping its predecessor (the coordinator's way)."""
    obj = bpf_obj("fr_tag")
    chain = [entry("a", obj)]
    g = fr.build(chain)
    fr.set_cfg("a", tag=1)
    first_id = g.built.slot_prog_ids[0]
    for k in range(2, 5):
        chain = chain + [entry(f"n{k}", obj)]
        g_new = fr.build(chain, previous=g.previous)
        fr.set_cfg(f"n{k}", tag=k)
        fr.drop(g)
        g = g_new
        assert g.built.slot_prog_ids[0] == first_id
        assert g.order() == (XDP["pass"], [1] + list(range(2, k + 1)))


def test_upgrade_loads_fresh_into_same_slot_reusing_maps(fr, bpf_obj):
    v1, v2 = bpf_obj("fr_tag"), bpf_obj("fr_tag_v2")
    g1 = fr.build([entry("a", v1), entry("b", v1)])
    fr.set_cfg("a", tag=1)
    fr.set_cfg("b", tag=2)
    g1.run()
    hits_map = fr.map_id("a", "fr_hits")
    cfg_map = fr.map_id("a", "fr_cfg")
    before = fr.hits("a")

    g2 = fr.build([entry("a", v2), entry("b", v1)], previous=g1.previous)
    ids1, ids2 = _ids(g1), _ids(g2)
    assert ids2["a"] != ids1["a"], "upgraded component was not reloaded"
    assert ids2["b"] == ids1["b"]
    assert fr.map_id("a", "fr_hits") == hits_map and fr.map_id("a", "fr_cfg") == cfg_map
    # same slot (0), config kept (tag 1 survived in the reused fr_cfg map)
    assert g2.order() == (XDP["pass"], [1, 2])
    after_preflight_and_one = fr.hits("a")
    assert after_preflight_and_one > before
    g2.run()
    assert fr.hits("a") - after_preflight_and_one == 1000  # v2 counts 1000 a packet
    li = libbpf.link_info(g2.built.pins["link-a"])
    assert li.target_btf_id == libbpf.prog_btf_func_id(g2.root_fd, "slot0")
    assert g2.built.maps["a"] == {m: str(fr.paths.map_pin_dir("a") / m)
                                  for m in ("fr_cfg", "fr_hits")}


def test_verifier_rejection_leaves_old_chain_untouched(fr, bpf_obj):
    obj = bpf_obj("fr_tag")
    g1 = fr.build([entry("a", obj), entry("b", obj)])
    fr.set_cfg("a", tag=1)
    fr.set_cfg("b", tag=2)
    ids = _ids(g1)
    links_before = set(libbpf.link_ids())
    with pytest.raises(VerifierError) as err:
        fr.build([entry("a", obj), entry("bad", bpf_obj("fr_bad"), program="fr_bad"),
                  entry("b", obj)], previous=g1.previous)
    assert "bad" in str(err.value) and err.value.log
    assert err.value.plugin == "test-bad"
    assert g1.order() == (XDP["pass"], [1, 2])
    assert _ids(g1) == ids
    for name in "ab":
        fd = libbpf.obj_get(str(g1.gen_dir / f"prog-{name}"))
        try:
            assert libbpf.prog_info(fd)[0].id == ids[name]
        finally:
            import os
            os.close(fd)
    # the half-built generation left no links behind (programs are freed via RCU,
    # so only links, which close synchronously, are compared exactly)
    assert set(libbpf.link_ids()) <= links_before
