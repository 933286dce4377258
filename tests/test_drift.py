"""``xdphooks reconcile --check`` on a real chain (static backend, namespaced veth):
in sync after reconcile, drift (exit 4, printed, nothing written) after a manual
``ip link set DEV xdp off`` or a foreign program, in sync again after reconcile;
the metrics say the same per interface, with the last success time."""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import one_program, sh
from xdphooks import drift
from xdphooks.cli import EXIT_DRIFT

pytestmark = pytest.mark.kernel


def _snapshot(xh) -> dict:
    """Everything reconcile could write: state, change log, pins (names and inodes)."""
    out = {}
    for base in (xh.state_dir, xh.bpffs):
        for dirpath, dirs, files in os.walk(base):
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                out[p] = (st.st_ino, st.st_mtime_ns, st.st_size)
                if os.path.isfile(p) and str(p).startswith(str(xh.state_dir)):
                    out[p] += (hashlib.sha256(open(p, "rb").read()).hexdigest(),)
    return out


def _metric(text: str, name: str, iface: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'interface="{iface}"' in line:
            return line.rsplit(" ", 1)[1]
    return None


@pytest.fixture
def chain(xh, veth, bpf_obj):
    xh.add_object(bpf_obj("sv_count"), "sv_count.o")
    xh.add_plugin("counter", one_program("counter", "sv_count.o", 10, veth.iface))
    xh.write_config('mode = "static"\n')
    xh.run("reconcile")
    return xh, veth


def test_check_reports_manual_detach_and_is_quiet_after_reconcile(chain):
    xh, veth = chain
    ok = xh.run("reconcile", "--check")
    assert ok.returncode == 0 and "in sync: 1 interface" in ok.stdout, ok.stdout
    assert _metric(xh.run("metrics").stdout, "xdphooks_interface_in_sync", veth.dev_a) == "1"

    sh("ip", "-n", veth.ns_a, "link", "set", veth.dev_a, "xdp", "off")
    assert veth.attached_id() == 0
    before = _snapshot(xh)
    r = xh.run("reconcile", "--check", check=False)
    assert r.returncode == EXIT_DRIFT == 4, (r.stdout, r.stderr)
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("drift")]
    assert f"{veth.iface}: missing: no XDP program attached" in line, line
    assert "counter" in line and "fix: xdphooks reconcile" in r.stdout
    assert _snapshot(xh) == before, "reconcile --check wrote something"
    assert veth.attached_id() == 0, "reconcile --check attached a program"
    text = xh.run("metrics").stdout
    assert _metric(text, "xdphooks_interface_in_sync", veth.dev_a) == "0", text
    assert "xdphooks_sync_check_success 1" in text

    xh.run("reconcile")
    assert veth.attached_id() != 0
    again = xh.run("reconcile", "--check")
    assert again.returncode == 0 and "drift" not in again.stdout, again.stdout
    text = xh.run("metrics").stdout
    assert _metric(text, "xdphooks_interface_in_sync", veth.dev_a) == "1"
    success = [ln for ln in text.splitlines()
               if ln.startswith("xdphooks_last_reconcile_success_timestamp_seconds ")]
    assert success and float(success[0].split()[1]) > drift.boot_time()


def test_check_names_a_foreign_program_and_an_out_of_date_chain(chain, bpf_obj):
    xh, veth = chain
    # a plugin upgrade not yet reconciled: the chain that runs is out of date
    xh.add_object(bpf_obj("sv_icmp_drop"), "sv_icmp_drop.o")
    xh.add_plugin("icmp", one_program("icmp", "sv_icmp_drop.o", 20, veth.iface))
    r = xh.run("reconcile", "--check", check=False)
    assert r.returncode == 4 and f"{veth.iface}: out of date: running counter, wanted " \
        "counter → icmp" in r.stdout, r.stdout
    # someone else's program replaces ours
    sh("ip", "-n", veth.ns_a, "link", "set", veth.dev_a, "xdp", "off")
    sh("ip", "-n", veth.ns_a, "link", "set", veth.dev_a, "xdpgeneric", "obj",
       str(bpf_obj("sv_count")), "sec", "xdp")
    r = xh.run("reconcile", "--check", check=False)
    assert r.returncode == 4 and f"{veth.iface}: foreign:" in r.stdout, (r.stdout, r.stderr)
    sh("ip", "-n", veth.ns_a, "link", "set", veth.dev_a, "xdpgeneric", "off")


def test_check_error_exit_is_1_not_drift(xh):
    xh.write_config("mode = 7\n")
    r = xh.run("reconcile", "--check", check=False)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_run_times_carry_the_other_outcome():
    t = drift.run_times({}, failed=False, now=100.0)
    assert t == {"last_success": 100.0, "last_failure": None}
    t = drift.run_times(t, failed=True, now=200.0)
    assert t == {"last_success": 100.0, "last_failure": 200.0}
    assert drift.run_times(t, failed=False, now=300.0) == {"last_success": 300.0,
                                                           "last_failure": 200.0}
