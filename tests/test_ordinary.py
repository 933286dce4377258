"""Issue 12: ordinary objects as their authors wrote them keep working across relinks.

A DEVMAP (xdp-tools' xdp-forward, xdp-tutorial's redirect example): the kernel sets
BPF_F_RDONLY_PROG on it, so its pin shows flags 0x80 that the object never declared;
the second build must reuse the pin (and its contents), not refuse it. Static on
the host; freplace in the VM.
"""

from __future__ import annotations

import json
import struct
import textwrap

import pytest

from conftest import mode_config, one_program, sh
from freplace_support import both_modes


@both_modes
def test_devmap_survives_relinks(xh, veth, bpf_obj, mode):
    from xdphooks.kernel import libbpf

    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("devmap_fwd"), "devmap_fwd.o")
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("fwd", one_program("fwd", "devmap_fwd.o", 10, veth.iface))
    xh.run("reconcile")
    pin = xh.bpffs / "xdphooks/maps/fwd/tx_port"
    ifindex = json.loads(sh("ip", "-j", "-n", veth.ns_a, "link", "show", veth.dev_a)
                         .stdout)[0]["ifindex"]
    from xdphooks.kernel.netns import netns

    with libbpf.fd_closing(libbpf.obj_get(str(pin))) as fd:
        info = libbpf.map_info(fd)
        assert info.map_flags & libbpf.BPF_F_RDONLY_PROG, hex(info.map_flags)  # the premise
        map_id = info.id
        with netns(veth.ns_a):  # a DEVMAP takes an ifindex of the updater's namespace
            libbpf.map_update(fd, struct.pack("<I", 0), struct.pack("<I", ifindex))
    for n in range(2):  # relinks: the DEVMAP pin is reused, its entry kept
        xh.add_plugin(f"c{n}", one_program(f"c{n}", "count_pass.o", 20 + n, veth.iface))
        xh.run("reconcile")
        with libbpf.fd_closing(libbpf.obj_get(str(pin))) as fd:
            assert libbpf.map_info(fd).id == map_id
            assert libbpf.map_lookup(fd, struct.pack("<I", 0), 4) == struct.pack("<I", ifindex)
    assert veth.attached_id()
    veth.exec_b("ping", "-c", "2", "-i", "0.05", "-W", "1", veth.ip_a)


# --- tail calls inside a component ---------------------------------------------------------



def hits(fd: int) -> list[int]:
    from xdphooks.kernel import libbpf
    return [struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", k), 8))[0]
            for k in range(3)]


@pytest.mark.parametrize("pin_maps", ["None", "()"])
@both_modes
def test_tail_calls_inside_a_component(xh, veth, bpf_obj, mode, pin_maps):
    """tests/bpf/tail_dispatch.bpf.c tail-calls on_udp (drops UDP/9) and on_icmp (TX)
    through a PROG_ARRAY libbpf fills declaratively. The targets' verdicts come back to
    the chain's policy: TX from on_icmp is logged and the chain goes on (pings pass),
    DROP from on_udp ends it. With pin_maps=() the array lives in the generation's pins."""
    from xdphooks.kernel import libbpf

    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("tail_dispatch"), "tail_dispatch.o")
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    td = one_program("td", "tail_dispatch.o", 10, veth.iface,
                     f"policy=VerdictPolicy.parse('tx=log'), pin_maps={pin_maps}")
    if mode == "freplace":
        # Linux 6.1 and 6.12 refuse XDP programs in a PROG_ARRAY that an extension
        # tail-calls through (either order): one sentence naming the plugin and the fix
        xh.add_plugin("first", one_program("first", "count_pass.o", 5, veth.iface))
        xh.run("reconcile")
        pid = veth.attached_id()
        xh.add_plugin("td", td)
        proc = xh.run("reconcile", check=False)
        errs = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
        assert proc.returncode == 1 and len(errs) == 1, proc.stderr
        assert "'td'" in errs[0] and "tail-calls" in errs[0] and 'mode = "static"' in errs[0]
        assert "Traceback" not in proc.stderr and veth.attached_id() == pid
        return
    xh.add_plugin("td", td)
    for round_ in range(2):  # the second round is a relink with another program
        xh.run("reconcile")
        status = json.loads(xh.run("status", "--json").stdout)
        (iface,) = status["interfaces"]
        td = [p for p in iface["programs"] if p["name"] == "td"][0]
        before_drop = td["verdicts"]["drop"] if td.get("verdicts") else 0
        events0 = xh.run("events").stdout.count("tx")
        veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "1", veth.ip_a)  # TX, logged
        code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range(4): s.sendto(b'x', ('{veth.ip_a}', 9))")
        veth.exec_b("python3", "-c", code)
        status = json.loads(xh.run("status", "--json").stdout)
        (iface,) = status["interfaces"]
        td = [p for p in iface["programs"] if p["name"] == "td"][0]
        assert td["verdicts"]["tx"] >= 3 and td["verdicts"]["drop"] - before_drop >= 4, td
        assert xh.run("events").stdout.count("tx") - events0 >= 3
        if pin_maps == "None":
            with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/td/hits"))) as fd:
                h = hits(fd)
            assert h[1] >= 4 and h[2] >= 3, h  # the targets ran
        else:
            (gen,) = list((xh.bpffs / "xdphooks/if").glob("*/g*"))
            assert list(gen.glob("tail-td-*")), sorted(p.name for p in gen.iterdir())
        if round_ == 0:
            xh.add_plugin("after", one_program("after", "count_pass.o", 20, veth.iface))


# --- several programs of one object ---------------------------------------------------------

TWO_PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, VerdictPolicy, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="icmp", object="tail_dispatch.o", program="on_icmp",
                           priority=10, policy=VerdictPolicy.parse("tx=log"),
                           interfaces=({iface!r},)),
                XdpProgram(name="udp", object="tail_dispatch.o", program="on_udp",
                           priority=20, interfaces=({iface!r},))]
""")


@both_modes
def test_two_programs_of_one_object(xh, veth, bpf_obj, mode):
    """Two programs of tests/bpf/tail_dispatch.bpf.c, each in its own slot, count into
    the object's one `hits` map, as they would under their own loader."""
    from xdphooks.kernel import libbpf

    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("tail_dispatch"), "tail_dispatch.o")
    xh.add_plugin("two", TWO_PLUGIN.format(iface=veth.iface))
    xh.run("reconcile")
    veth.exec_b("ping", "-c", "3", "-i", "0.05", "-W", "1", veth.ip_a)
    assert not (xh.bpffs / "xdphooks/maps/udp").exists()
    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/icmp/hits"))) as fd:
        h = hits(fd)
    assert h[2] >= 3 and h[1] >= 3, h  # both slots counted in the one map
    status = json.loads(xh.run("status", "--json").stdout)
    (iface,) = status["interfaces"]
    assert [p["name"] for p in iface["programs"]] == ["icmp", "udp"]


HOOK_PLUGIN = textwrap.dedent("""
    import struct
    from xdphooks import XdpProgram, VerdictPolicy, hookimpl
    from xdphooks.kernel import libbpf

    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="td", object="tail_dispatch.o", priority=10,
                           policy=VerdictPolicy.parse("tx=log"), interfaces=({iface!r},))]

    @hookimpl
    def xdphooks_prog_arrays(interface, program, programs, arrays):
        if program == "td":  # send UDP to on_icmp (TX) instead of on_udp
            libbpf.map_update(arrays["jump"], struct.pack("<I", 0),
                              struct.pack("<I", programs["on_icmp"]))
""")


def test_static_plugin_fills_prog_arrays(xh, veth, bpf_obj):
    """xdphooks_prog_arrays gets the object's other programs and its arrays: here the
    plugin points slot 0 (UDP) at on_icmp, so UDP/9 comes back TX (logged) instead of
    being dropped by on_udp."""
    xh.write_config(mode_config("static"))
    xh.add_object(bpf_obj("tail_dispatch"), "tail_dispatch.o")
    xh.add_plugin("td", HOOK_PLUGIN.format(iface=veth.iface))
    xh.run("reconcile")
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(4): s.sendto(b'x', ('{veth.ip_a}', 9))")
    veth.exec_b("python3", "-c", code)
    (iface,) = json.loads(xh.run("status", "--json").stdout)["interfaces"]
    (td,) = iface["programs"]
    assert td["verdicts"]["tx"] >= 4 and td["verdicts"]["drop"] == 0, td
