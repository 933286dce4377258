"""Issue 12 item 2: ``const volatile`` configuration from the plugin.

``XdpProgram.constants`` sets an ordinary object's load-time configuration (its
``const volatile`` globals) in both backends. The end-to-end test uses one object,
tests/bpf/const_cfg.bpf.c, configured three ways on a real veth: default (passes
everything), ``drop_port`` (drops real UDP to that port), ``drop_all`` + ``label``
(drops every ping), each a relink; bad names and values give one line naming the
plugin, the chain that ran before untouched. Static on the host; freplace in the VM.
"""

from __future__ import annotations

import json
import os
import struct

import pytest

from conftest import mode_config, one_program
from freplace_support import both_modes
from xdphooks.link import constants
from xdphooks.link import elf as E
from xdphooks.link.btf import Btf


def rodata_of(path):
    elf = E.read_elf(str(path))
    ro = elf.section(".rodata")
    syms = {s.name: (s.value, s.size) for s in elf.symbols if s.shndx == ro.index}
    return Btf.parse(elf.section(".BTF").data), syms, bytes(ro.data)


def test_values_are_checked_against_btf(bpf_obj):
    btf, syms, ro = rodata_of(bpf_obj("const_cfg"))
    out = constants.apply(btf, syms, ro, {"drop_port": 9, "drop_all": True, "label": "all"},
                          who="cfg", plugin="p", obj="const_cfg.o")
    port, flag = syms["drop_port"], syms["drop_all"]
    assert out[port[0]:port[0] + 2] == (9).to_bytes(2, "little")
    assert out[flag[0]] == 1
    lab = syms["label"]
    assert out[lab[0]:lab[0] + 8] == b"all\0\0\0\0\0"
    for bad, why in [({"drop_prot": 1}, "no const volatile variable 'drop_prot'"),
                     ({"drop_port": 70000}, "out of range 0..65535"),
                     ({"drop_port": -1}, "out of range"),
                     ({"drop_all": 1}, "is a bool"),
                     ({"drop_port": "9"}, "not an integer"),
                     ({"label": "12345678"}, "holds 7 bytes")]:
        with pytest.raises(Exception) as ei:
            constants.apply(btf, syms, ro, bad, who="cfg", plugin="p", obj="const_cfg.o")
        assert why in str(ei.value) and ei.value.plugin == "p", str(ei.value)


def stats(xh) -> tuple[int, int]:
    from xdphooks.kernel import libbpf

    fd = libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/cfg/cfg_stats"))
    try:
        return tuple(struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", k), 8))[0]
                     for k in (0, 1))
    finally:
        os.close(fd)


def udp_to(veth, port: int, n: int = 3) -> None:
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({n}): s.sendto(b'x' * 32, ('{veth.ip_a}', {port}))")
    veth.exec_b("python3", "-c", code)


def ping_ok(veth) -> bool:
    return veth.exec_b("ping", "-c", "2", "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode == 0


@both_modes
def test_constants_configure_a_program(xh, veth, bpf_obj, mode):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("const_cfg"), "const_cfg.o")

    def plugin(consts: str) -> None:
        xh.add_plugin("cfg", one_program("cfg", "const_cfg.o", 10, veth.iface,
                                         f"constants={consts}"))

    plugin("None")
    xh.run("reconcile")
    assert ping_ok(veth)
    udp_to(veth, 9)
    assert stats(xh)[1] == 0  # default config: nothing dropped

    plugin("{'drop_port': 9}")
    xh.run("reconcile")
    seen, dropped = stats(xh)
    udp_to(veth, 9)
    udp_to(veth, 10)
    assert stats(xh)[1] - dropped == 3  # the three to port 9, not those to 10
    assert ping_ok(veth)
    status = json.loads(xh.run("status", "--json").stdout)
    progs = [p for i in status["interfaces"] for p in i["programs"]]
    assert progs[0]["constants"] == {"drop_port": 9}, progs

    plugin("{'drop_all': True, 'label': 'all'}")
    xh.run("reconcile")
    assert not ping_ok(veth)
    pid = veth.attached_id()

    # a bad name or value: one line naming the plugin, the running chain untouched
    for consts, why in [("{'drop_everything': True}", "no const volatile variable"),
                        ("{'drop_port': 100000}", "out of range")]:
        plugin(consts)
        proc = xh.run("reconcile", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        errs = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
        assert len(errs) == 1 and "'cfg'" in errs[0] and why in errs[0] and " fix: " in errs[0], \
            proc.stderr
        assert veth.attached_id() == pid and not ping_ok(veth)

