"""``xdphooks metrics``: a live chain on a namespaced veth (static on the host,
static and freplace inside the VM), scraped by a
real Prometheus server (Debian's ``prometheus`` package) over the loopback HTTP
endpoint; the per-program counters in Prometheus' query API must equal the
packets sent. The text also goes through prometheus_client's parsers (both
formats), the textfile output is checked for atomic replacement, and the
listener refuses non-loopback addresses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import pytest

from conftest import mode_config
from freplace_support import IN_VM
from xdphooks import metrics
from xdphooks.errors import UsageError

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object={obj!r}, priority={prio}, interfaces=({iface!r},))]
""")
SEND_UDP = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(sys.argv[2])):
        s.sendto(b"xdphooks", (sys.argv[1], 9))
        time.sleep(0.005)
""")
N_UDP = 37
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=10).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(params=["static", "freplace"])
def chain(request, xh, veth, bpf_obj):
    mode = request.param
    if mode == "freplace" and not IN_VM:
        pytest.skip("VM-ONLY TEST SKIPPED ON THE HOST: the host kernel refuses freplace; "
                    "tests/test_vm_harness.py runs it")
    for ns in (veth.ns_a, veth.ns_b):  # no IPv6 ND/MLD noise in the counts
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1"], check=False, capture_output=True)
    # permanent neighbours on both sides: no ARP, so the chain sees only what we send
    mac = {}
    for ns, dev in ((veth.ns_a, veth.dev_a), (veth.ns_b, veth.dev_b)):
        link = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", dev], check=True,
                                         capture_output=True, text=True).stdout)
        mac[ns] = link[0]["address"]
    subprocess.run(["ip", "-n", veth.ns_a, "neigh", "replace", veth.ip_b, "lladdr",
                    mac[veth.ns_b], "dev", veth.dev_a, "nud", "permanent"], check=True)
    subprocess.run(["ip", "-n", veth.ns_b, "neigh", "replace", veth.ip_a, "lladdr",
                    mac[veth.ns_a], "dev", veth.dev_b, "nud", "permanent"], check=True)
    xh.write_config(mode_config(mode) + 'counters = true\n\n'
                    '[programs.udp9]\npolicy = { tx = "log" }\n')
    for name, src, prio in (("counter", "sv_count", 10), ("udp9", "sv_udp9_tx", 20)):
        xh.add_object(bpf_obj(src), f"{src}.o")
        xh.add_plugin(name, PLUGIN.format(name=name, obj=f"{src}.o", prio=prio,
                                          iface=veth.iface))
    xh.run("reconcile")
    return xh, veth, mode


def send(veth, n: int) -> None:
    subprocess.run(["ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SEND_UDP,
                    veth.ip_a, str(n)], check=True, timeout=60)


def status_programs(xh) -> dict:
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    return {p["name"]: p for p in iface["programs"]}


def samples(text: str, openmetrics: bool) -> dict:
    """{(sample name, frozenset(labels)): value} through prometheus_client's parser."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


pytestmark = [pytest.mark.kernel, pytest.mark.vm]


def test_prometheus_scrapes_live_chain_counters(chain, tmp_path):
    xh, veth, mode = chain
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail("prometheus is not installed (scripts/install-deps.sh installs it)")
    send(veth, N_UDP)
    progs = status_programs(xh)
    # the chain saw exactly what was sent (no IPv6, no ARP: nothing else arrives)
    assert progs["udp9"]["verdicts"]["tx"] == N_UDP, progs
    expected = {"counter": N_UDP, "udp9": N_UDP}
    assert {name: p["packets"] for name, p in progs.items()} == expected, progs

    port, prom_port = free_port(), free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "xdphooks", "metrics", "--listen",
                                 f"127.0.0.1:{port}", "--seconds", "120"], env=xh.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cfg = tmp_path / "prometheus.yml"
    # a scrape under emulation (the VM) takes a few seconds; the server shares
    # one collection between overlapping scrapes, so this is only about "up"
    every = "5s" if IN_VM else "1s"
    cfg.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: {every}
          scrape_timeout: {every}
        scrape_configs:
          - job_name: xdphooks
            static_configs:
              - targets: ["127.0.0.1:{port}"]
        """))
    data = tmp_path / "tsdb"
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w"),
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", 30)
        api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", 60)
        query = urllib.parse.quote("xdphooks_program_packets_total")
        deadline, got = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            res = json.loads(urllib.request.urlopen(api + query, timeout=5).read())
            assert res["status"] == "success", res
            got = {r["metric"]["program"]: int(float(r["value"][1]))
                   for r in res["data"]["result"]
                   if r["metric"].get("interface") == veth.dev_a}
            if len(got) == 2:
                break
            time.sleep(0.5)
        assert got == expected, (got, expected, (tmp_path / "prom.log").read_text()[-2000:])
        print(f"Prometheus {mode}: xdphooks_program_packets_total =", json.dumps(res["data"]))
        q2 = urllib.parse.quote('xdphooks_program_verdicts_total{program="udp9",verdict="tx"}')
        res = json.loads(urllib.request.urlopen(api + q2, timeout=5).read())
        assert [int(float(r["value"][1])) for r in res["data"]["result"]] == [N_UDP], res
        q3 = urllib.parse.quote('xdphooks_program_info{program="udp9"}')
        res = json.loads(urllib.request.urlopen(api + q3, timeout=5).read())
        (info,) = res["data"]["result"]
        links = ("called", "spliced") if mode == "static" else ("freplace",)
        assert (info["metric"]["mode"], info["metric"]["link"] in links) == (mode, True), info
        q4 = urllib.parse.quote("up")
        res = json.loads(urllib.request.urlopen(api + q4, timeout=5).read())
        assert [r["value"][1] for r in res["data"]["result"]] == ["1"], res
    finally:
        for p in (prom, exporter):
            p.kill()
            p.wait(timeout=30)
    assert exporter.returncode is not None


def test_text_parses_and_matches_status(chain, tmp_path):
    xh, veth, _ = chain
    send(veth, 5)
    progs = status_programs(xh)
    for om in (False, True):
        text = xh.run("metrics", *(["--openmetrics"] if om else [])).stdout
        s = samples(text, om)
        il = {("interface", veth.dev_a), ("netns", veth.ns_a)}
        for name, p in progs.items():
            assert s[("xdphooks_program_packets_total",
                      frozenset(il | {("program", name)}))] == p["packets"]
            for verdict, n in p["verdicts"].items():
                assert s[("xdphooks_program_verdicts_total",
                          frozenset(il | {("program", name), ("verdict", verdict)}))] == n
        gens = [v for (n, labels), v in s.items() if n == "xdphooks_chain_generation"]
        assert gens and gens[0] >= 1
        assert s[("xdphooks_last_reconcile_success", frozenset())] == 1
        assert s[("xdphooks_counters_readable", frozenset())] == 1
        lines = text.splitlines()
        for fam in ("xdphooks_program_packets_total", "xdphooks_chain_generation"):
            assert f"# TYPE {fam} {'gauge' if 'generation' in fam else 'counter'}" in lines \
                or om
    # textfile: atomic replace, nothing else left in the directory
    out = tmp_path / "textfile"
    out.mkdir()
    (out / "xdphooks.prom").write_text("stale\n")
    xh.run("metrics", "--textfile", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["xdphooks.prom"]
    text = (out / "xdphooks.prom").read_text()
    assert "stale" not in text and "xdphooks_program_packets_total{" in text
    samples(text, False)
    bad = xh.run("metrics", "--textfile", str(tmp_path / "missing"), check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_failures_by_kind_come_from_the_change_log():
    data = {"root": True, "interfaces": [], "pending": None,
            "last_run": {"time": 1700000000.5, "trigger": "rpm", "applied": ["attach x"],
                         "failed": {"eth1": "boom"}, "problems": ["p1", "p2"]}}
    history = [{"action": "attach", "error": False}, {"action": "replace", "error": True},
               {"action": "replace", "error": True}, {"kind": "verifier", "action": "attach",
                                                      "error": True}]
    s = samples(metrics.render(metrics.families(data, history)), False)
    assert s[("xdphooks_failures_total", frozenset({("kind", "replace")}))] == 2
    assert s[("xdphooks_failures_total", frozenset({("kind", "verifier")}))] == 1
    assert s[("xdphooks_changes_total", frozenset({("action", "attach")}))] == 1
    assert s[("xdphooks_last_reconcile_success", frozenset())] == 0
    assert s[("xdphooks_last_reconcile_info",
              frozenset({("trigger", "rpm"), ("result", "partial")}))] == 1
    assert s[("xdphooks_last_reconcile_timestamp_seconds", frozenset())] == 1700000000.5
    assert s[("xdphooks_last_reconcile_problems", frozenset())] == 2
    om = samples(metrics.render(metrics.families(data, history), openmetrics=True), True)
    assert om[("xdphooks_failures_total", frozenset({("kind", "replace")}))] == 2


def test_label_values_are_escaped():
    f = metrics.Family("xdphooks_x", "gauge", "h")
    f.add(1, interface='a"b\\c\nd')
    s = samples(metrics.render([f]), False)
    assert s[("xdphooks_x", frozenset({("interface", 'a"b\\c\nd')}))] == 1


@pytest.mark.parametrize("spec", ["0.0.0.0:9465", "198.18.0.1:9465", "[::]:9465",
                                  "example.org:80"])
def test_listen_refuses_non_loopback(spec):
    with pytest.raises(UsageError) as e:
        metrics.parse_listen(spec, allow_remote=False)
    assert "\n" not in e.value.line() and "fix:" in e.value.line()


def test_listen_accepts_loopback():
    assert metrics.parse_listen("127.0.0.1:9465", False) == ("127.0.0.1", 9465)
    assert metrics.parse_listen(":9465", False) == ("127.0.0.1", 9465)
    assert metrics.parse_listen("[::1]:9465", False) == ("::1", 9465)
    assert metrics.parse_listen("0.0.0.0:9465", True) == ("0.0.0.0", 9465)
    with pytest.raises(UsageError):
        metrics.parse_listen("127.0.0.1:99999", False)


def test_overlapping_scrapes_share_one_collection(monkeypatch):
    """A collection slower than the scrape interval (seconds under emulation)
    must not queue one collection per scrape. The slow collection is a stand-in
    (a sleep) so the overlap is certain; the real server runs in the tests above."""
    import threading

    calls = []
    gate = threading.Event()

    def slow_collect(paths):
        calls.append(time.monotonic())
        gate.wait(5)
        return [metrics.Family("xdphooks_x", "gauge", str(len(calls)))]

    monkeypatch.setattr(metrics, "collect", slow_collect)
    shared = metrics.SharedCollection(paths=None)
    got = []
    first = threading.Thread(target=lambda: got.append(shared.families()))
    first.start()
    while not calls:
        time.sleep(0.01)
    waiting = [threading.Thread(target=lambda: got.append(shared.families())) for _ in range(5)]
    for t in waiting:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in (first, *waiting):
        t.join(10)
    # the first scrape's collection, then one more that every waiting scrape shares
    assert len(calls) == 2 and len(got) == 6
    assert {f[0].help for f in got[1:]} == {"2"}
    shared.families()
    assert len(calls) == 3  # a scrape after it finished collects afresh


def test_a_failed_collection_is_not_shared(monkeypatch):
    results = [RuntimeError("bpffs gone"), [metrics.Family("xdphooks_x", "gauge", "ok")]]

    def collect(paths):
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    monkeypatch.setattr(metrics, "collect", collect)
    shared = metrics.SharedCollection(paths=None)
    with pytest.raises(RuntimeError):
        shared.families()
    assert shared.families()[0].help == "ok"  # the next scrape collected, not a stale list
