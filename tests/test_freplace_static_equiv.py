"""The same chain gives identical verdicts, packets and counters in static mode,
spliced and called, and in freplace mode (runs in the VM, where both backends load)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from freplace_support import XDP, entry, fr_env, vm_only
from xdphooks.backends import freplace
from xdphooks.model import Link

pytestmark = vm_only

SCENARIOS = [  # verdicts returned by a, b, c (None: pass)
    (None, None, None),
    (XDP["tx"], None, None),
    (XDP["drop"], XDP["tx"], None),
    (7, XDP["redirect"], XDP["aborted"]),
    (XDP["aborted"], XDP["drop"], XDP["tx"]),
    (None, 9, XDP["drop"]),
]


def _run(backend, bpf_obj, link: Link = Link.SPLICE) -> tuple[list, list, list]:
    obj = bpf_obj("fr_tag")
    chain = [entry("a", obj, "tx=log,drop=continue,unknown=continue"),
             entry("b", obj, "pass=return,redirect=log,unknown=log"),
             entry("c", obj, "aborted=continue")]
    chain = [dataclasses.replace(e, link=link) for e in chain]
    with fr_env() as env:
        gen = env.build(chain, backend=backend)
        if backend is not freplace:
            want = "spliced" if link is Link.SPLICE else "called"
            assert [s["link"] for s in gen.built.slot_links] == [want] * 3
        results = []
        for verdicts in SCENARIOS:
            for i, (name, v) in enumerate(zip("abc", verdicts)):
                env.set_cfg(name, verdict=v, tag=i + 1)
            res = gen.run()
            results.append((res.retval, bytes(res.data_out)))
        events = [(e["slot"], e["retval"]) for e in gen.events()]
        return results, gen.counters(), events


@pytest.mark.skipif(importlib.util.find_spec("xdphooks.backends.static") is None,
                    reason="static backend not present")
def test_static_and_freplace_agree(bpf_obj):
    from xdphooks.backends import static

    f = _run(freplace, bpf_obj)
    for link in Link:
        s = _run(static, bpf_obj, link)
        assert f[0] == s[0], f"verdicts/packets differ ({link.value})"
        assert f[1] == s[1], f"counters differ ({link.value})"
        assert f[2] == s[2], f"events differ ({link.value})"
    # and both are right
    assert [(r, list(d[1:1 + d[0]])) for r, d in f[0]] == [
        (XDP["pass"], [1, 2]), (XDP["pass"], [1, 2]), (XDP["tx"], [1, 2]),
        (XDP["pass"], [1, 2, 3]), (XDP["aborted"], [1]), (XDP["drop"], [1, 2, 3])]
    assert f[2] == [(0, XDP["tx"]), (1, XDP["redirect"]), (1, 9)]
