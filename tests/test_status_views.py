"""Every verdict a program can return appears in every view (issue 27 item 2): a
program that aborts shows it in `status` (the ABRT column) and in `status --json`."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import one_program, sh

pytestmark = pytest.mark.kernel

SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in sys.argv[2:]:
    s.sendto(b"x" * 18, (sys.argv[1], int(port)))
"""


def test_status_shows_aborted_share(xh, veth, bpf_obj):
    xh.write_config('mode = "static"\n')
    xh.add_object(bpf_obj("al_verdicts"), "al_verdicts.o")  # UDP/7 aborts, UDP/9 drops
    xh.add_plugin("guard", one_program("guard", "al_verdicts.o", 10, veth.iface))
    xh.run("reconcile")
    for ns in (veth.ns_a, veth.ns_b):  # no IPv6 chatter in the counts
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    sh("ip", "netns", "exec", veth.ns_b, sys.executable, "-c", SEND, veth.ip_a,
       *(["7"] * 6 + ["9"] * 3 + ["4000"] * 3))

    data = json.loads(xh.run("status", "--json").stdout)
    prog = data["interfaces"][0]["programs"][0]
    assert prog["verdicts"]["aborted"] == 6, prog
    assert prog["verdicts"]["drop"] == 3, prog

    text = xh.run("status").stdout
    print(text)
    head = next(ln for ln in text.splitlines() if ln.startswith("INTERFACE"))
    row = next(ln for ln in text.splitlines() if " guard " in ln)
    cols = head.split()
    assert "ABRT" in cols and "OTHER" in cols
    # the shares line up under their headings: ABRT is the largest share of this program
    shares = [c for c in row.split() if c.endswith("%")]
    named = dict(zip(["DROP", "PASS", "TX", "REDIR", "ABRT", "OTHER"], shares))
    assert named["ABRT"] == f"{100 * 6 // prog['packets']}%" or \
        named["ABRT"] == f"{round(100 * 6 / prog['packets'])}%", (named, prog)
    assert int(named["ABRT"].rstrip("%")) >= int(named["PASS"].rstrip("%")), named
