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


def _trace(xh, veth, program: str, slot: int, count: int, *extra: str, seconds: int = 30,
           timeout: int = 60, while_watched=None) -> tuple[str, str]:
    """`trace --live` of one spliced program while ``count`` datagrams are sent: (its first
    line, the rest of its stdout). ``while_watched(first)`` runs once the tracer is attached."""
    tracer = xh_popen(xh, "trace", "--live", veth.iface, program, "--count", str(count),
                      "--seconds", str(seconds), *extra)
    try:
        first = tracer.stdout.readline()
        assert first.startswith(f"live trace of {program} (slot {slot}, spliced)"), \
            first + tracer.communicate(timeout=30)[1]
        if while_watched is not None:
            while_watched(first)
        sender = send_udp(veth, count)
        out, err = tracer.communicate(timeout=timeout)
        sender.wait(timeout=30)
    finally:
        tracer.kill()
    assert tracer.returncode == 0, err
    return first, out


def test_trace_live_of_a_spliced_slot_shows_each_packet_and_swaps_back(spliced):
    xh, veth, before = spliced
    root = _attached(veth)

    def while_watched(first: str) -> None:
        assert _attached(veth) != root, first  # the instrumented build runs meanwhile
        lease = xh.run("status").stdout
        assert "watched (trace udp9) by pid" in lease and " until " in lease, lease
        assert "NOT ATTACHED" not in lease, lease
        check = xh.run("reconcile", "--check", check=False)  # the watched build is ours
        assert check.returncode == 0 and "in sync" in check.stdout, check.stdout + check.stderr

    first, out = _trace(xh, veth, "udp9", 1, 5, while_watched=while_watched)
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


def _tcpdump(path: str) -> list[tuple[int, str]]:
    """(length, hex of the frame) per packet of a capture file, as tcpdump reads it."""
    out = subprocess.run(["tcpdump", "-r", path, "-nn", "-e", "-xx"], capture_output=True,
                         text=True, check=True).stdout
    pkts: list[list] = []
    for ln in out.splitlines():
        if not ln.startswith("\t"):
            pkts.append([ln, ""])
        else:
            pkts[-1][1] += "".join(ln.split(":", 1)[1].split())
    return [(len(h) // 2, h) for _, h in pkts]


def test_pcap_of_a_rewriting_slot_before_and_after_read_back_by_tcpdump(spliced, tmp_path):
    xh, veth, _ = spliced
    pcap = tmp_path / "adjust.pcapng"
    first, out = _trace(xh, veth, "adjust", 2, 4, "--capture", "entry,exit", "--pcap",
                        str(pcap), "--snaplen", "128")
    print(first + out)
    pkts = _tcpdump(str(pcap))
    assert len(pkts) == 8, pkts  # each datagram as adjust got it, then as it left it
    for (n_in, h_in), (n_out, h_out) in zip(pkts[::2], pkts[1::2]):
        # fr_adjust: bpf_xdp_adjust_head(ctx, 4), then 0xad at the new first byte
        assert (n_in, n_out) == (FRAME, FRAME - 4), pkts
        assert h_out == "ad" + h_in[10:], (h_in, h_out)
        assert h_in[24:28] == "0800" and h_in.endswith(b"xdphooks".hex()), h_in
    shown = subprocess.run(["tcpdump", "-r", str(pcap), "-nn"], capture_output=True,
                           text=True, check=True).stdout
    print(shown)
    assert shown.count(f"> {veth.ip_a}.9: UDP, length 8") == 4, shown
    # the comments say slot, program, where and verdict (pcapng opt_comment)
    raw = pcap.read_bytes()
    assert raw.count(b"xdphooks slot=2 program=adjust at=entry verdict=- chain=-") == 4
    assert raw.count(b"xdphooks slot=2 program=adjust at=exit verdict=pass chain=continue") == 4


def test_pcap_to_stdout_pipes_into_tcpdump(spliced):
    xh, veth, _ = spliced
    sender = send_udp(veth, 200, seconds=30, gap=0.05)
    try:
        proc = subprocess.run(
            f"{__import__('sys').executable} -m xdphooks trace --live {veth.iface} udp9 "
            "--count 3 --seconds 20 --pcap - | tcpdump -r - -nn", shell=True, env=xh.env,
            capture_output=True, text=True, timeout=90)
    finally:
        sender.kill()
        sender.wait()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"> {veth.ip_a}.9: UDP, length 8") == 3, proc.stdout + proc.stderr
    assert "live trace of udp9" in proc.stderr and " tx " in proc.stderr  # text on stderr


def test_sigkilled_tracer_leaves_no_instrumented_chain_after_reconcile(spliced):
    xh, veth, before = spliced
    root = _attached(veth)
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "counter", "--count", "100",
                      "--seconds", "60")
    try:
        first = tracer.stdout.readline()
        assert first.startswith("live trace of counter"), first
        watched = _attached(veth)
        assert watched != root
        tracer.send_signal(signal.SIGKILL)
        tracer.wait(timeout=30)
    finally:
        tracer.kill()
    assert _attached(veth) == watched  # nobody swapped back: the kernel still runs it
    text = xh.run("status").stdout
    assert f"by pid {tracer.pid}" in text and "its owner is gone" in text, text
    assert "NOT ATTACHED" not in text, text
    rec = xh.run("reconcile")
    assert f"ended the watch by pid {tracer.pid} (its owner is gone)" in rec.stderr + rec.stdout, \
        rec.stderr + rec.stdout
    after = _status(xh)
    assert _attached(veth) == root
    assert (after["prog_id"], after["fingerprint"]) == (before["prog_id"], before["fingerprint"])
    assert not list(Path(xh.bpffs).glob("**/watch")), "watch pins left behind"
    assert "watched" not in xh.run("status").stdout


def test_sigterm_swaps_back_at_once(spliced):
    xh, veth, _ = spliced
    root = _attached(veth)
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "100",
                      "--seconds", "60")
    try:
        assert tracer.stdout.readline().startswith("live trace of udp9")
        assert _attached(veth) != root
        t0 = time.monotonic()
        tracer.send_signal(signal.SIGTERM)
        out, err = tracer.communicate(timeout=30)
    finally:
        tracer.kill()
    assert time.monotonic() - t0 < 15
    assert "stopped by SIGTERM" in out and "tracer detached" in out, out + err
    assert _attached(veth) == root
    assert not list(Path(xh.bpffs).glob("**/watch"))


def test_profile_times_every_spliced_slot(spliced):
    xh, veth, before = spliced
    sender = send_udp(veth, 100000, seconds=30.0, gap=0.002)
    try:
        time.sleep(0.5)
        data = json.loads(xh.run("status", "--profile", "1", "--json", timeout=120).stdout)
        text = xh.run("status", "--profile", "1", timeout=120).stdout
    finally:
        sender.kill()
        sender.wait()
    (iface,) = data["interfaces"]
    assert iface["packets"] > 20 and iface["ns_per_packet"] > 0, iface  # untraced chain
    assert iface["instrumented_packets"] > 20 and iface["timing_ns"] > 0, iface
    for p in iface["programs"]:
        assert p["link"] == "spliced" and p["note"] == "", p
        # every slot ran once per packet of the instrumented chain (same window)
        assert abs(p["calls"] - iface["instrumented_packets"]) <= 5, (p, iface)
        assert 0 <= p["ns_per_call"] < 1_000_000 and p["ns_per_call_raw"] > 0, p
    assert "(watched)" in text and "adjust" in text, text
    print(text)
    after = _status(xh)
    assert (after["prog_id"], after["fingerprint"]) == (before["prog_id"], before["fingerprint"])
    assert not list(Path(xh.bpffs).glob("**/watch"))


LONG_PLUGIN = """
from xdphooks import XdpProgram, hookimpl
@hookimpl
def xdphooks_programs():
    return [XdpProgram(name=f"c{{i}}", object="sv_count.o", priority=10 + i,
                       interfaces=({iface!r},)) for i in range({n})] + [
        XdpProgram(name="udp9", object="sv_udp9_tx.o", priority=1000, interfaces=({iface!r},))]
"""


def test_segmented_chain_of_66_last_segment_traced_and_every_slot_profiled(xh, veth, bpf_obj):
    """65 counting programs (one map each: the kernel's 64 maps per program split the
    chain into tail-called segments) and udp9 last, in the last segment."""
    quiet(veth)
    xh.write_config('mode = "static"\ncounters = true\n\n[programs.udp9]\n'
                    'policy = { tx = "log" }\n')
    xh.add_object(bpf_obj("sv_count"), "sv_count.o")
    xh.add_object(bpf_obj("sv_udp9_tx"), "sv_udp9_tx.o")
    xh.add_plugin("long", LONG_PLUGIN.format(iface=veth.iface, n=65))
    xh.run("reconcile", timeout=600)
    before = _status(xh)
    assert len(before["programs"]) == 66
    assert list(Path(before.get("pin_dir") or xh.bpffs).glob("**/segments")), \
        "expected a segmented chain"
    assert {p["link"] for p in before["programs"]} == {"spliced"}, before
    first, out = _trace(xh, veth, "udp9", 65, 3, seconds=120, timeout=180)
    pkts = [ln for ln in out.splitlines() if " B  " in ln]
    assert len(pkts) == 3 and all(" tx " in ln and "chain: log" in ln for ln in pkts), out
    sender = send_udp(veth, 100000, seconds=60.0, gap=0.002)
    try:
        time.sleep(0.5)
        data = json.loads(xh.run("status", "--profile", "1", "--json", timeout=300).stdout)
    finally:
        sender.kill()
        sender.wait()
    (iface,) = data["interfaces"]
    assert len(iface["programs"]) == 66
    for p in iface["programs"]:
        assert abs(p["calls"] - iface["instrumented_packets"]) <= 5, (p, iface)
        assert p["ns_per_call_raw"] > 0, p
    after = _status(xh)
    assert (after["prog_id"], after["fingerprint"]) == (before["prog_id"], before["fingerprint"])
    c0 = next(p for p in after["programs"] if p["name"] == "c0")
    assert c0["packets"] >= next(p for p in before["programs"] if p["name"] == "c0")["packets"] \
        + 3 + iface["instrumented_packets"]  # counted across both watches
    assert not list(Path(xh.bpffs).glob("**/watch"))


def test_no_packet_missed_or_counted_twice_across_both_swaps(spliced):
    """Traffic runs through the swap in, the watch and the swap back: every datagram is
    counted once by the chain's counters (shared by both builds) and once by the
    component's own pinned map."""
    xh, veth, before = spliced
    from xdphooks.kernel import libbpf

    def own_count() -> int:
        pins = list(Path(xh.bpffs).glob("**/counter/sv_pkts"))
        assert len(pins) == 1, pins
        with libbpf.fd_closing(libbpf.obj_get(str(pins[0]))) as fd:
            return int.from_bytes(libbpf.map_lookup(fd, bytes(4), 8), "little")

    own0 = own_count()
    sender = send_udp(veth, 600, seconds=60, gap=0.005)
    time.sleep(0.3)  # traffic before the swap in ...
    proc = xh.run("trace", "--live", veth.iface, "udp9", "--count", "100000",
                  "--seconds", "1", timeout=120)  # ... during the watch, and after it
    sender.wait(timeout=90)
    time.sleep(0.3)
    assert sender.returncode == 0
    seen = [ln for ln in proc.stdout.splitlines() if " B  " in ln]
    assert 0 < len(seen) < 600, proc.stdout  # the watch saw some, not all
    after = _status(xh)
    for name in ("counter", "udp9", "adjust"):
        assert _packets(after, name) - _packets(before, name) == 600, (name, after)
    assert own_count() - own0 == 600
    assert after["prog_id"] == before["prog_id"]


def test_one_watch_per_interface_and_reconcile_ends_a_live_one(spliced):
    xh, veth, _ = spliced
    root = _attached(veth)
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "100",
                      "--seconds", "60")
    try:
        assert tracer.stdout.readline().startswith("live trace of udp9")
        second = xh.run("trace", "--live", veth.iface, "counter", "--seconds", "1",
                        check=False)
        assert second.returncode == 2, second.stderr
        line, = second.stderr.strip().splitlines()
        assert f"is already watched (trace udp9) by pid {tracer.pid}" in line \
            and "one watch per interface" in line, line
        rec = xh.run("reconcile")
        said = rec.stdout + rec.stderr
        assert f"ended the watch by pid {tracer.pid} (the chain is being changed)" in said, said
        assert _attached(veth) == root
        tracer.send_signal(signal.SIGTERM)
        out, err = tracer.communicate(timeout=30)
    finally:
        tracer.kill()
    assert "ended meanwhile" in err, err
    assert _attached(veth) == root
    assert not list(Path(xh.bpffs).glob("**/watch"))


def test_globals_are_shared_with_the_watched_build(xh, veth, bpf_obj):
    """A component keeping state in plain globals (.bss/.data) counts every datagram
    once across the watch: the instrumented build uses the running chain's globals
    maps, and the pre-flight of the watched build leaves them alone."""
    from xdphooks.backends.base import running_globals
    from xdphooks.kernel import libbpf

    quiet(veth)
    xh.write_config('mode = "static"\ncounters = true\n')
    install(xh, veth, bpf_obj, "seen", "global_seen", 10)
    install(xh, veth, bpf_obj, "udp9", "sv_udp9_tx", 20)
    xh.run("reconcile")

    def globals_now() -> dict[str, int]:
        with libbpf.fd_closing(libbpf.prog_fd_by_id(_attached(veth))) as fd:
            return {k.rpartition("_")[2] if not k.endswith("dns_seen") else "dns_seen":
                    int.from_bytes(v[1], "little") for k, v in running_globals(fd).items()}

    g0 = globals_now()
    assert g0["marker"] == 0x5EED, g0
    sender = send_udp(veth, 300, seconds=60, gap=0.005)
    time.sleep(0.3)
    xh.run("trace", "--live", veth.iface, "seen", "--count", "100000", "--seconds", "1",
           timeout=120)
    sender.wait(timeout=90)
    time.sleep(0.3)
    g1 = globals_now()
    assert g1["seen"] - g0["seen"] == 300, (g0, g1)
    assert g1["dns_seen"] == g0["dns_seen"], (g0, g1)  # pre-flight's UDP/53 not counted


def test_ctrl_c_during_the_build_still_swaps_back(spliced):
    xh, veth, _ = spliced
    root = _attached(veth)
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "100",
                      "--seconds", "60")
    try:
        time.sleep(1.0)  # discovery and the build are under way (signals wait)
        tracer.send_signal(signal.SIGINT)
        out, err = tracer.communicate(timeout=60)
    finally:
        tracer.kill()
    assert "Traceback" not in err, err
    assert _attached(veth) == root, out + err
    assert not list(Path(xh.bpffs).glob("**/watch")), "watch pins left behind"
    assert "watched" not in xh.run("status").stdout
