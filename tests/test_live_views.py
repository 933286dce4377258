"""Live views of a running chain on a namespaced veth, with real packets, in both
modes: ``trace --live`` and ``status --profile``. Static: an instrumented build of
the same chain swapped in for the watch (xdphooks/watchlease.py), so they run on any
kernel, this host's included (here with called slots; spliced ones:
tests/test_watch_spliced.py). Freplace: fexit on the EXT program, fentry/fexit
timing and kernel run-time statistics.

The peer namespace sends UDP datagrams to port 9; the chain is counter (passes
everything) -> udp9 (returns TX for UDP/9, policy tx=log).

Where they run: freplace only in the VM (tests/vm/run-in-vm.sh), like every
freplace test; static everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from xdphooks.capabilities import has_load_bytes
from freplace_support import IN_VM

pytestmark = [pytest.mark.kernel, pytest.mark.vm]

BPF_LINK_TYPE_TRACING = 2

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")

SEND_UDP = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.monotonic() + float(sys.argv[3])
    n = 0
    while n < int(sys.argv[2]) and time.monotonic() < end:
        s.sendto(b"xdphooks", (sys.argv[1], 9))
        n += 1
        time.sleep(float(sys.argv[4]))
""")


def install(xh, veth, bpf_obj, name, src, prio):
    xh.add_object(bpf_obj(src), f"{src}.o")
    xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio, iface=veth.iface))


def quiet(veth):
    for ns in (veth.ns_a, veth.ns_b):  # no IPv6 ND/MLD noise in the counts
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1"], check=False, capture_output=True)
    # ... and no ARP either way: a traced component must see only the test's datagrams
    mac = {}
    for ns, dev in ((veth.ns_a, veth.dev_a), (veth.ns_b, veth.dev_b)):
        mac[ns] = json.loads(subprocess.run(["ip", "-j", "-n", ns, "link", "show", dev],
                                            capture_output=True, text=True,
                                            check=True).stdout)[0]["address"]
    for ns, dev, ip, peer in ((veth.ns_b, veth.dev_b, veth.ip_a, veth.ns_a),
                              (veth.ns_a, veth.dev_a, veth.ip_b, veth.ns_b)):
        subprocess.run(["ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac[peer], "dev", dev,
                        "nud", "permanent"], check=True, capture_output=True)


def send_udp(veth, n, seconds=20.0, gap=0.01):
    """Start sending n UDP/9 datagrams from the peer namespace (bounded in time)."""
    return subprocess.Popen(["ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SEND_UDP,
                             veth.ip_a, str(n), str(seconds), str(gap)])


@pytest.fixture(params=["static", "freplace"])
def chain(request, xh, veth, bpf_obj):
    mode = request.param
    if mode == "freplace" and not IN_VM:
        pytest.skip("VM-ONLY TEST SKIPPED ON THE HOST: the host kernel refuses freplace; "
                    "tests/test_vm_harness.py runs it")
    quiet(veth)
    xh.write_config(f'mode = "{mode}"\ncounters = true\n'
                    + ('xdp_mode = "skb"\n' if mode == "freplace" else "")
                    # called slots here; spliced ones: tests/test_watch_spliced.py
                    + ('link = "call"\n' if mode == "static" else "")
                    + '\n[programs.udp9]\npolicy = { tx = "log" }\n')
    install(xh, veth, bpf_obj, "counter", "sv_count", 10)
    install(xh, veth, bpf_obj, "udp9", "sv_udp9_tx", 20)
    xh.run("reconcile")
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    assert iface["mode"] == mode, iface
    return xh, veth, mode


def refused_here(stderr: str) -> None:
    """A tracer the kernel will not load: a loud skip on the host, a failure in the VM."""
    if "cannot load a tracer" in stderr and ("Operation not permitted" in stderr
                                             or "(EPERM)" in stderr) and not IN_VM:
        pytest.skip("HOST KERNEL REFUSES fentry/fexit ON BPF PROGRAMS (EPERM): the VM suite "
                    "(tests/test_vm_harness.py) runs this test")


def xh_popen(xh, *args):
    return subprocess.Popen([sys.executable, "-m", "xdphooks", *args], env=xh.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_trace_live_shows_each_packets_verdict_of_one_component(chain):
    xh, veth, mode = chain
    tracer = xh_popen(xh, "trace", "--live", veth.iface, "udp9", "--count", "5",
                      "--seconds", "20")
    try:
        first = tracer.stdout.readline()  # printed once the tracer is attached
        if not first:
            err = tracer.communicate(timeout=10)[1]
            refused_here(err)
            if mode == "static" and not has_load_bytes():  # Linux before 5.18 (the 5.10 VM)
                assert f"bpf_xdp_load_bytes, which Linux {os.uname().release} does not " \
                    "have (it came in 5.18); nothing was changed" in err, err
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
                print(err)  # the refusal, for the kernel matrix
                return
            pytest.fail(err)
        link = "freplace" if mode == "freplace" else "called"
        assert first.startswith(f"live trace of udp9 (slot 1, {link})"), first
        sender = send_udp(veth, 5)
        out, err = tracer.communicate(timeout=30)
        sender.wait(timeout=30)
    finally:
        tracer.kill()
    assert tracer.returncode == 0, err
    lines = out.strip().splitlines()
    pkts = [ln for ln in lines if " B  " in ln]
    assert len(pkts) == 5, out
    for ln in pkts:  # udp9 returns TX for UDP/9, the policy logs it and continues
        assert " tx " in ln and "IPv4/UDP" in ln and "chain: log" in ln, ln
        assert f"{14 + 20 + 8 + 8:>5} B" in ln, ln  # eth + ip + udp + 8 bytes payload
    assert lines[-1].startswith("5 packet(s)"), lines[-1]
    print(first + out)  # the evidence for the notes (pytest -rA shows it)
    # the tracer is gone afterwards: no tracing link remains on the chain's programs
    from xdphooks.kernel import libbpf
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    chain_ids = {iface["prog_id"], *(p["prog_id"] for p in iface["programs"])}
    for lid in libbpf.link_ids():
        try:
            fd = libbpf.link_fd_by_id(lid)
        except Exception:  # noqa: BLE001 - gone meanwhile
            continue
        try:
            info = libbpf.link_info(fd)
            # the chain's own freplace links are tracing links too: only the tracer's count
            assert info.type != BPF_LINK_TYPE_TRACING or info.target_obj_id not in chain_ids \
                or info.prog_id in chain_ids, info
        finally:
            os.close(fd)


def test_trace_live_is_bounded_in_time_and_names_missing_program(chain):
    xh, veth, _ = chain
    t0 = time.monotonic()
    proc = xh.run("trace", "--live", veth.iface, "counter", "--count", "1000",
                  "--seconds", "1", timeout=60, check=False)
    refused_here(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 45
    assert proc.stdout.strip().splitlines()[-1].endswith("tracer detached")
    bad = xh.run("trace", "--live", veth.iface, "nosuch", check=False)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "counter, udp9" in lines[0], bad.stderr


def test_status_profile_times_each_program_on_live_traffic(chain):
    xh, veth, mode = chain
    sender = send_udp(veth, 100000, seconds=30.0, gap=0.002)
    try:
        time.sleep(0.5)
        proc = xh.run("status", "--profile", "2", "--json", timeout=120)
        text = xh.run("status", "--profile", "1", timeout=120).stdout  # still live traffic
    finally:
        sender.kill()
        sender.wait()
    data = json.loads(proc.stdout)
    notes = [p["note"] for i in data["interfaces"] for p in i["programs"]]
    refused_here("\n".join(notes))
    (iface,) = data["interfaces"]
    assert iface["packets"] > 50, iface  # kernel run-time stats of the root program
    assert iface["ns_per_packet"] > 0
    progs = {p["name"]: p for p in iface["programs"]}
    for name in ("counter", "udp9"):
        p = progs[name]
        assert p["link"] == ("freplace" if mode == "freplace" else "called"), p
        assert p["note"] == "", p
        # each program ran once per packet of the chain (give or take the edges of
        # the window: the probes are attached before the kernel stats are sampled);
        # static: of the instrumented build, timed in the same window
        pkts = iface["instrumented_packets"] if mode == "static" else iface["packets"]
        assert abs(p["calls"] - pkts) <= max(5, pkts // 10), (p, iface)
        # the figure is net of the timing's own overhead, which under an emulated CPU
        # can exceed a small program's cost: 0 then, while the raw timing is not
        assert 0 <= p["ns_per_call"] < 1_000_000, p
        raw = p.get("ns_per_call_raw")
        assert (raw if raw is not None else p["ns_per_call"]) > 0, p
    if mode == "freplace":  # recorded for the notes: does the kernel time EXT programs?
        print(f"EXT kernel run-time stats: {[(p['name'], p['kernel_calls']) for p in progs.values()]}")
    assert "counter" in text and "NS/PKT" in text
    print(text)


# --- no kernel needed ------------------------------------------------------------


def _record(mode: str, link: str | None):
    from xdphooks.state import InterfaceRecord, ProgramRecord

    p = ProgramRecord("fw", "plug-fw", 10, {}, "/x.o", "xdp_fw", "0" * 64, 7, 0)
    if link is not None:
        p.link = link  # the field the splicing root generator records per entry
    rec = InterfaceRecord("blue", "veth0", 3, mode, 9, "f" * 16, 1, "/nonexistent", "native",
                          [p])
    return rec, p


def test_spliced_slot_is_refused_with_the_fix():
    from xdphooks import fexit
    from xdphooks.errors import UsageError

    rec, p = _record("static", "spliced")
    with pytest.raises(UsageError) as e:
        fexit.target(rec, p)
    line = e.value.line()
    assert "\n" not in line and "'fw'" in line and "blue/veth0" in line
    assert 'link = "call"' in line and "[programs.fw]" in line


def test_link_kind_defaults():
    from xdphooks.status import link_kind

    assert link_kind(*_record("static", None)) == "called"
    assert link_kind(*_record("static", "spliced")) == "spliced"
    assert link_kind(*_record("freplace", None)) == "freplace"


def test_trace_line_format():
    import struct as st

    from xdphooks.livetrace import format_event
    from xdphooks.model import VerdictPolicy

    rec = st.pack("<QIIHBBI", 5_000_000_000, 1, 98, 0x0008, 1, 0, 1)  # drop, IPv4/ICMP
    line = format_event(rec, 0.0, VerdictPolicy())
    assert " drop " in line and "   98 B" in line and "IPv4/ICMP" in line and "cpu1" in line
    assert line.rstrip().endswith("chain: return")
