"""Watching spliced slots of the default static chain on THIS host (issue 21): an
instrumented build of the same chain is swapped in while ``trace --live`` or
``status --profile`` runs, and swapped back after (xdphooks/watchlease.py).

Chain on a namespaced veth, every slot spliced (the default): counter (passes
everything) -> udp9 (TX for UDP/9, policy tx=log) -> adjust (tests/bpf/fr_adjust:
strips 4 bytes with bpf_xdp_adjust_head, writes 0xad, passes). Real UDP datagrams
from the peer namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_live_views import install, quiet, send_udp, xh_popen

pytestmark = [pytest.mark.kernel]

FRAME = 14 + 20 + 8 + 8  # eth + ip + udp + b"xdphooks"


@pytest.fixture
def spliced(xh, veth, bpf_obj):
    quiet(veth)
    xh.write_config('mode = "static"\ncounters = true\n\n[programs.udp9]\n'
                    'policy = { tx = "log" }\n')
    install(xh, veth, bpf_obj, "counter", "sv_count", 10)
    install(xh, veth, bpf_obj, "udp9", "sv_udp9_tx", 20)
    install(xh, veth, bpf_obj, "adjust", "fr_adjust", 30)
    xh.run("reconcile")
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    assert iface["mode"] == "static", iface
    links = {p["name"]: p.get("link") for p in iface["programs"]}
    assert links == {"counter": "spliced", "udp9": "spliced", "adjust": "spliced"}, iface
    return xh, veth, iface


def _status(xh) -> dict:
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    return iface


def _attached(veth) -> int:
    from xdphooks.kernel import xdp
    from xdphooks.model import InterfaceRef

    return xdp.query(InterfaceRef(veth.ns_a, veth.dev_a))[1]


def _packets(iface: dict, name: str) -> int:
    return next(p for p in iface["programs"] if p["name"] == name)["packets"]


def test_trace_live_of_a_spliced_slot_shows_each_packet_and_swaps_back(spliced):
    xh, veth, before = spliced
    root = _attached(veth)
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "5",
                      "--seconds", "30")
    try:
        first = tracer.stdout.readline()
        assert first.startswith("live trace of udp9 (slot 1, spliced)"), \
            first + tracer.communicate(timeout=30)[1]
        assert _attached(veth) != root, first  # the instrumented build runs meanwhile
        lease = xh.run("status").stdout
        assert "watched (trace udp9) by pid" in lease and " until " in lease, lease
        sender = send_udp(veth, 5)
        out, err = tracer.communicate(timeout=60)
        sender.wait(timeout=30)
    finally:
        tracer.kill()
    assert tracer.returncode == 0, err
    print(first + out)
    lines = out.strip().splitlines()
    pkts = [ln for ln in lines if " B  " in ln]
    assert len(pkts) == 5, out
    for ln in pkts:
        assert " exit " in ln and " tx " in ln and "IPv4/UDP" in ln and "chain: log" in ln, ln
        assert f"{FRAME:>5} B" in ln, ln
    assert lines[-1].startswith("5 packet(s)") and "tracer detached" in lines[-1], lines[-1]
    # the same chain runs again: same program, same fingerprint, counters kept counting
    after = _status(xh)
    assert _attached(veth) == root
    # the instrumented build shared the chain's counters: the 5 datagrams are counted
    for name in ("counter", "udp9", "adjust"):
        assert _packets(after, name) - _packets(before, name) == 5, (name, before, after)
    udp9 = next(p for p in after["programs"] if p["name"] == "udp9")
    assert udp9["verdicts"]["tx"] == 5, udp9
    assert (after["prog_id"], after["fingerprint"], after["generation"]) == \
        (before["prog_id"], before["fingerprint"], before["generation"])
    assert "watched" not in xh.run("status").stdout
    assert not list(Path(xh.bpffs).glob("**/watch")), "watch pins left behind"
    assert not list(Path(xh.root).glob("**/watch/*.json")), "lease left behind"
