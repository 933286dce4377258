"""The Prometheus alert rules the packages ship (packaging/prometheus/):

- ``promtool check rules`` accepts them;
- ``promtool test rules`` passes their unit tests (synthetic series, each alert
  firing and staying quiet, annotations included);
- every alert fires, and only then, on REAL scrapes: a live chain on a
  namespaced veth is scraped over HTTP from ``xdphooks metrics --listen`` once
  per simulated minute while it is broken step by step (not reconciled since
  boot, healthy, dropping and aborting more, reconcile failing with the chain
  detached by hand, drift check failing, exporter stopped); the scrapes become
  promtool's input series;
- both packages install the file as /usr/share/xdphooks/prometheus/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from conftest import one_program, sh

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "packaging" / "prometheus" / "xdphooks-alerts.yml"
RULE_TESTS = REPO / "packaging" / "prometheus" / "xdphooks-alerts.test.yml"
INSTALLED = "/usr/share/xdphooks/prometheus/xdphooks-alerts.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = ("XdphooksChainNotInSync", "XdphooksSyncCheckFailing", "XdphooksProgramAborted",
          "XdphooksDropShareJump", "XdphooksReconcileFailing",
          "XdphooksReconcileNotRunSinceBoot", "XdphooksExporterDown")


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is not installed (Debian's prometheus package; "
                    "scripts/install-deps.sh installs it)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300)


def test_rules_are_valid_and_complete():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0 and "SUCCESS: 7 rules found" in r.stdout, r.stdout + r.stderr
    rules = _rules()
    assert tuple(rules) == ALERTS
    for name, text in rules.items():  # each says what it is and what to do
        assert "summary: " in text and "description: " in text, name
        assert _severity(text) in ("warning", "critical"), name
    guide = (REPO / "docs" / "admin-guide.md").read_text()
    missing = [a for a in ALERTS if f"`{a}`" not in guide]
    assert not missing, f"alerts not explained in docs/admin-guide.md: {missing}"


def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _rules() -> dict[str, str]:
    """{alert name: its rule's text}, in file order (no YAML parser in the venv;
    promtool has parsed the file)."""
    blocks = re.split(r"^      - alert: ", RULES.read_text(), flags=re.M)[1:]
    return {b.split("\n", 1)[0].strip(): b for b in blocks}


def _severity(rule: str) -> str:
    return re.search(r"^\s+severity: (\w+)$", rule, re.M).group(1)


def test_a_broken_expectation_fails(tmp_path):
    """The unit tests can fail: the drift alert's series never drifting is caught."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text()
    assert text.count("values: '1 1 0 0 0 0 0 0 0 1 1'") == 1
    (tmp_path / "t.yml").write_text(text.replace("values: '1 1 0 0 0 0 0 0 0 1 1'",
                                                 "values: '1x10'"))
    r = promtool("test", "rules", str(tmp_path / "t.yml"))
    assert r.returncode != 0 and "XdphooksChainNotInSync" in r.stderr, r.stdout + r.stderr


# --- every alert on real scrapes ------------------------------------------------------

SENDER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for line in sys.stdin:
        for port in line.split():
            s.sendto(b"xdphooks", (sys.argv[1], int(port)))
            time.sleep(0.0005)  # a veth's ring drops bursts before XDP sees them
        print("ok", flush=True)
""")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Scrapes:
    """One real scrape per simulated minute, kept as promtool input series."""

    def __init__(self, url: str, instance: str):
        self.url, self.instance = url, instance
        self.steps: list[dict[str, float] | None] = []  # None: the scrape failed

    def scrape(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = urllib.request.urlopen(self.url, timeout=30).read().decode()
        except OSError:
            self.steps.append(None)
            return
        got = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = {**s.labels, "instance": self.instance, "job": "xdphooks"}
                lab = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                got[f"{s.name}{{{lab}}}"] = s.value
        self.steps.append(got)

    def series(self) -> list[dict[str, str]]:
        names = sorted({n for step in self.steps if step for n in step})
        out = [{"series": n, "values": " ".join(
            "_" if step is None or n not in step else repr(float(step[n]))
            for step in self.steps)} for n in names]
        up = " ".join("0" if step is None else "1" for step in self.steps)
        out.append({"series": f'up{{instance="{self.instance}",job="xdphooks"}}', "values": up})
        return out


def _rules_without_annotations(tmp: Path) -> Path:
    """The shipped expressions, durations and labels; annotations (which quote
    measured values) are covered by the unit tests."""
    kept, skipping = [], False
    for line in RULES.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        if line.strip() == "annotations:":
            skipping, depth = True, indent
            continue
        if skipping and line.strip() and indent <= depth:
            skipping = False
        if not skipping:
            kept.append(line)
    out = tmp / "rules.yml"
    out.write_text("\n".join(kept) + "\n")
    assert "annotations" not in out.read_text() and "XdphooksExporterDown" in out.read_text()
    return out


@pytest.mark.kernel
def test_every_alert_fires_on_real_scrapes_of_a_broken_chain(xh, veth, bpf_obj, tmp_path):
    for ns in (veth.ns_a, veth.ns_b):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    mac = json.loads(sh("ip", "-n", veth.ns_a, "-j", "link", "show", veth.dev_a).stdout)[0]
    sh("ip", "-n", veth.ns_b, "neigh", "replace", veth.ip_a, "lladdr", mac["address"], "dev",
       veth.dev_b, "nud", "permanent")
    xh.write_config('mode = "static"\n')
    xh.add_object(bpf_obj("al_verdicts"), "al_verdicts.o")
    xh.add_plugin("guard", one_program("guard", "al_verdicts.o", 10, veth.iface))

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "xdphooks", "metrics", "--listen",
                               f"127.0.0.1:{port}", "--seconds", "600"], env=xh.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = subprocess.Popen(["ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SENDER,
                               veth.ip_a], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)

    def send(**ports: int) -> None:
        spec = {"pass": "4000", "drop": "9", "abort": "7"}
        line = " ".join(spec[k] for k, n in ports.items() for _ in range(n))
        sender.stdin.write(line + "\n")
        sender.stdin.flush()
        assert sender.stdout.readline().strip() == "ok"

    try:
        assert "serving metrics" in server.stdout.readline()
        sc = Scrapes(f"http://127.0.0.1:{port}/metrics", f"127.0.0.1:{port}")
        # 0-16: installed but never reconciled (as after a boot without xdphooks.service)
        for _ in range(17):
            sc.scrape()
        xh.run("reconcile")
        # 17-86: healthy, 120 packets a minute, 10% dropped
        for _ in range(70):
            send(**{"pass": 108, "drop": 12})
            sc.scrape()
        # 87-96: 70% dropped, and some aborted
        for _ in range(10):
            send(**{"pass": 33, "drop": 84, "abort": 3})
            sc.scrape()
        # 97-108: a plugin the verifier refuses fails the reconcile, and the chain is
        # detached by hand
        xh.add_object(bpf_obj("bad_verifier"), "bad_verifier.o")
        xh.add_plugin("bad", one_program("bad", "bad_verifier.o", 20, veth.iface))
        assert xh.run("reconcile", check=False).returncode != 0
        sh("ip", "-n", veth.ns_a, "link", "set", veth.dev_a, "xdp", "off")
        for _ in range(12):
            sc.scrape()
        # 109-125: the drift check cannot run (the config file is broken)
        xh.write_config("mode = [\n")
        for _ in range(17):
            sc.scrape()
        # 126-132: the exporter is gone
        server.terminate()
        server.wait(timeout=30)
        for _ in range(7):
            sc.scrape()
    finally:
        sender.stdin.close()
        sender.wait(timeout=30)
        if server.poll() is None:
            server.kill()
            server.wait()

    assert len(sc.steps) == 133 and all(sc.steps[:126]) and not any(sc.steps[126:])
    iface = {"netns": veth.ns_a, "interface": veth.dev_a}
    host = {"instance": sc.instance, "job": "xdphooks"}
    prog = {**iface, "program": "guard"}
    expect = {  # minute -> {alert: [labels of each firing alert]}
        16: {"XdphooksReconcileNotRunSinceBoot": [host],
             "XdphooksChainNotInSync": [{**host, **iface}]},
        86: {},
        92: {"XdphooksProgramAborted": [{**host, **prog, "verdict": "aborted"}],
             "XdphooksDropShareJump": [{"instance": sc.instance, **prog}]},
        108: {"XdphooksChainNotInSync": [{**host, **iface}],
              "XdphooksReconcileFailing": [host]},
        125: {"XdphooksSyncCheckFailing": [host], "XdphooksReconcileFailing": [host]},
        132: {"XdphooksExporterDown": [host]},
    }
    severity = {name: _severity(text) for name, text in _rules().items()}
    checks = [{"eval_time": f"{t}m", "alertname": a,
               "exp_alerts": [{"exp_labels": {**lab, "severity": severity[a]}}
                              for lab in firing.get(a, [])]}
              for t, firing in expect.items() for a in ALERTS]
    test = {"rule_files": [str(_rules_without_annotations(tmp_path))],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": sc.series(),
                       "alert_rule_test": checks}]}
    (tmp_path / "real.yml").write_text(json.dumps(test))
    r = promtool("test", "rules", str(tmp_path / "real.yml"))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    # the scrapes decide: claiming the healthy minute 86 aborted is refused
    test["tests"][0]["alert_rule_test"] += [{
        "eval_time": "86m", "alertname": "XdphooksProgramAborted",
        "exp_alerts": expect[92]["XdphooksProgramAborted"] and [
            {"exp_labels": {**expect[92]["XdphooksProgramAborted"][0], "severity": "warning"}}]}]
    (tmp_path / "wrong.yml").write_text(json.dumps(test))
    r = promtool("test", "rules", str(tmp_path / "wrong.yml"))
    assert r.returncode != 0 and "XdphooksProgramAborted, time: 1h26m" in r.stderr, r.stderr


# --- both packages install the rules ---------------------------------------------------


@pytest.mark.pkg
def test_both_packages_install_the_rules(tmp_path):
    import pkg_support as pu

    pu.require_pkg_tools()
    pkgs = pu.build()
    deb = tmp_path / "deb"
    sh("dpkg-deb", "-x", str(pkgs["deb"]["xdphooks"]), str(deb))
    assert (deb / INSTALLED.lstrip("/")).read_bytes() == RULES.read_bytes()
    rpmroot = tmp_path / "rpm"
    rpmroot.mkdir()
    cpio = subprocess.run(["rpm2cpio", str(pkgs["rpm"]["xdphooks"])], capture_output=True,
                          check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=rpmroot, check=True)
    assert (rpmroot / INSTALLED.lstrip("/")).read_bytes() == RULES.read_bytes()
