"""Every change is logged: the local change record (``xdphooks history``) and the
journal's native protocol. journald itself does not run on this machine (no
systemd); a datagram socket bound at XDPHOOKS_JOURNAL_SOCKET stands in for it,
so what is checked is the exact datagram journald would receive."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from test_e2e_core import install

pytestmark = pytest.mark.kernel


def test_changes_reach_history_and_journal(xh, veth, bpf_obj, tmp_path):
    sock_path = tmp_path / "journal.sock"
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(sock_path))
    journal.settimeout(5)
    env = dict(xh.env, XDPHOOKS_JOURNAL_SOCKET=str(sock_path), RPM_PACKAGE_NAME="xdphooks-demo")
    env.pop("XDPHOOKS_NO_SYSLOG", None)
    install(xh, veth, bpf_obj)
    subprocess.run([sys.executable, "-m", "xdphooks", "reconcile", "--trigger=rpm"], env=env,
                   check=True, capture_output=True)
    fields = dict(ln.split("=", 1) for ln in journal.recv(65536).decode().splitlines())
    assert fields["SYSLOG_IDENTIFIER"] == "xdphooks"
    assert fields["XDPHOOKS_ACTION"] == "attach"
    assert fields["XDPHOOKS_INTERFACE"] == veth.iface
    assert fields["XDPHOOKS_TRIGGER"] == "rpm"
    assert fields["XDPHOOKS_RPM_PACKAGE"] == "xdphooks-demo"
    assert veth.iface in fields["MESSAGE"] and "new chain" in fields["MESSAGE"]

    (xh.plugin_dir / "counter.py").unlink()
    xh.run("reconcile")
    hist = [json.loads(ln) for ln in xh.run("history", "--json").stdout.splitlines()]
    assert [(h["action"], h["interface"], h["trigger"]) for h in hist] == [
        ("attach", veth.iface, "rpm"), ("detach", veth.iface, "manual")]
    text = xh.run("history").stdout
    assert "detach" in text and "no program wants it" in text
