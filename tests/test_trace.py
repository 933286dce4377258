"""`xdphooks trace` answers for the chain that runs (issue 27 item 1): a component with
a DEVMAP, one configured with `constants=` and globals that hold running values are
traced with what the chain loaded, and the chain verdict trace gives is the one the
running root program gives (`bpftool prog run` on its pin); an object changed on disk
since the chain was built is refused, not traced."""

from __future__ import annotations

import json
import re
import struct
import subprocess

import pytest

from conftest import mode_config, one_program, sh
from freplace_support import both_modes
from xdphooks.backends.preflight import udp

pytestmark = pytest.mark.kernel

XDP = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}


def root_verdict(xh, iface: str, pkt: bytes, tmp_path) -> str:
    """What the running chain's root program returns for ``pkt``, asked of bpftool."""
    state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
    rec = next(r for r in state["interfaces"].values() if r["name"] == iface.split("/")[-1])
    data = tmp_path / "pkt"
    data.write_bytes(pkt)
    out = sh("bpftool", "prog", "run", "pinned", f"{rec['pin_dir']}/root", "data_in",
             str(data), "data_out", "/dev/null", "repeat", "1").stdout
    return XDP[int(re.search(r"Return value: (\d+)", out).group(1))]


def trace(xh, iface: str, spec: str) -> tuple[str, str]:
    out = xh.run("trace", iface, "--udp", spec).stdout
    print(out)
    return out, re.search(r"chain verdict: (\w+)", out).group(1)


@both_modes
def test_trace_gives_the_running_chains_verdict(xh, veth, bpf_obj, mode, tmp_path):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("const_cfg"), "const_cfg.o")
    xh.add_object(bpf_obj("devmap_fwd"), "devmap_fwd.o")
    xh.add_plugin("cfg", one_program("cfg", "const_cfg.o", 10, veth.iface,
                                     extra='constants={"drop_port": 7}'))
    xh.add_plugin("fwd", one_program("fwd", "devmap_fwd.o", 20, veth.iface))
    xh.run("reconcile")

    for dport, want in ((7, "drop"), (4000, "pass"), (9, "pass")):
        spec = f"10.0.0.1:1234->10.0.0.2:{dport}"
        out, verdict = trace(xh, veth.iface, spec)
        # constants= applied: the object's default drop_port is 0, the plugin's 7
        assert verdict == want, out
        assert verdict == root_verdict(xh, veth.iface, udp(1234, dport, src="10.0.0.1",
                                                           dst="10.0.0.2"), tmp_path)
    assert "cfg" in out and "fwd" in out  # the DEVMAP object loaded with the chain's map


@pytest.mark.kernel
def test_trace_refuses_an_object_changed_since_the_build(xh, veth, bpf_obj):
    xh.write_config('mode = "static"\n')
    obj = xh.add_object(bpf_obj("const_cfg"), "const_cfg.o")
    xh.add_plugin("cfg", one_program("cfg", "const_cfg.o", 10, veth.iface))
    xh.run("reconcile")
    obj.write_bytes(bpf_obj("count_pass").read_bytes())  # an upgrade not reconciled yet
    r = xh.run("trace", veth.iface, "--udp", "10.0.0.1:1->10.0.0.2:2", check=False)
    print(r.stdout, r.stderr)
    assert r.returncode == 1
    assert "plugin 'cfg'" in r.stderr and "is no longer the object its running chain" \
        in r.stderr and "fix: run 'xdphooks reconcile'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
