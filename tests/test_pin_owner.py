"""Issue 20 item 7: maps a removed plugin left pinned are not inherited by another.

Pinned maps are kept by program name across relinks. When plugin 'alpha' (program
'fw') is removed and plugin 'beta' later declares a program 'fw', beta's program must
not get alpha's maps: the pin directory's owner is recorded (map-owners.json in the
state directory) and another owner's directory is reset — its maps start empty — with
one warning naming both plugins. The owner's own relinks and upgrades keep the maps.
Real packets through a namespaced veth; static on the host, freplace in the VM.
"""

from __future__ import annotations

import json
import struct

from conftest import mode_config, one_program
from freplace_support import both_modes
from xdphooks.kernel import libbpf


def _count(xh) -> int:
    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/fw/pkt_count"))) as fd:
        return struct.unpack("<Q", libbpf.map_lookup(fd, bytes(4), 8))[0]


def _ping(veth, n: int) -> None:
    assert veth.exec_b("ping", "-c", str(n), "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode == 0


def _owners(xh) -> dict:
    return json.loads((xh.root / "var/lib/xdphooks/map-owners.json").read_text())


@both_modes
def test_removed_plugins_maps_are_not_inherited(xh, veth, bpf_obj, mode):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("count_pass"), "alpha.o")
    alpha = xh.add_plugin("alpha", one_program("fw", "alpha.o", 10, veth.iface))
    xh.run("reconcile")
    _ping(veth, 5)
    assert _count(xh) >= 5
    assert _owners(xh)["fw"]["plugin"] == "alpha"

    # the owner relinks (another priority): its maps stay, no warning
    xh.add_plugin("alpha", one_program("fw", "alpha.o", 20, veth.iface))
    proc = xh.run("reconcile")
    assert "not handed" not in proc.stdout + proc.stderr
    kept = _count(xh)
    assert kept >= 5

    # alpha removed, beta declares a program of the same name: reset, one warning
    alpha.unlink()
    xh.add_object(bpf_obj("count_pass"), "beta.o")
    xh.add_plugin("beta", one_program("fw", "beta.o", 10, veth.iface))
    proc = xh.run("reconcile")
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "not handed" in ln]
    assert len(said) == 1, proc.stdout + proc.stderr
    assert "plugin 'alpha'" in said[0] and "plugin 'beta'" in said[0] \
        and "alpha.o" in said[0] and "beta.o" in said[0] and "pkt_count" in said[0], said[0]
    # beta starts from empty maps; an ARP or ND packet of the veth's own may arrive
    # between the swap and this read (seen once in CI), so "empty" is "far below kept"
    fresh = _count(xh)
    assert fresh <= 2 < kept, (fresh, kept)
    _ping(veth, 3)
    assert 3 <= _count(xh) < kept + 3
    owners = _owners(xh)
    assert owners["fw"]["plugin"] == "beta" and owners["fw"]["object"].endswith("beta.o")
    print(said[0])

    # beta's own upgrade (another object file) keeps beta's maps
    before = _count(xh)
    xh.add_object(bpf_obj("count_pass"), "beta2.o")
    xh.add_plugin("beta", one_program("fw", "beta2.o", 10, veth.iface))
    proc = xh.run("reconcile")
    assert "not handed" not in proc.stdout + proc.stderr
    assert _count(xh) >= before
