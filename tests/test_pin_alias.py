"""Issue 27 item 4: a program's own tools find its maps where they expect them.

The firewall plugin's object declares its blocklist pinned at a path of its own
(``pin_aliases``, below the test's private bpffs, standing for /sys/fs/bpf/<tool>/):
a tool that only knows that path (bpftool ``map update pinned PATH``) fills the map the
running chain uses, and pings through the namespaced veth stop. The alias survives a
relink, is pinned again when removed by hand, refuses a path another plugin or tool
owns (the old chain keeps running), and goes away with the plugin.
"""

from __future__ import annotations

import json

import pytest

from conftest import REPO, one_program, sh
from xdphooks.errors import XdphooksError
from xdphooks.model import XdpProgram


def ping(veth, count=3):
    return veth.exec_b("ping", "-c", str(count), "-i", "0.2", "-W", "1", veth.ip_a, check=False)


def map_id(path) -> int:
    return json.loads(sh("bpftool", "-j", "map", "show", "pinned", str(path)).stdout)["id"]


@pytest.fixture(scope="module")
def firewall_obj(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw") / "firewall.bpf.o"
    sh("clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
       str(REPO / "plugins" / "firewall" / "firewall.bpf.c"), "-o", str(out))
    return out


def test_declaration_is_checked():
    for bad in ("relative/blocklist", "/sys/fs/bpf/../etc/x", "/sys/fs/bpf/x/", "/"):
        with pytest.raises(ValueError, match="absolute, normalised path|absolute path"):
            XdpProgram("fw", "fw.o", pin_aliases={"blocklist": bad})
    with pytest.raises(ValueError, match="pin_root"):
        XdpProgram("fw", "fw.o", pin_root="sys/fs/bpf")
    p = XdpProgram("fw", "fw.o", pin_aliases={"blocklist": "/sys/fs/bpf/fw/blocklist"})
    assert p.pin_aliases == (("blocklist", "/sys/fs/bpf/fw/blocklist"),)


def test_own_tool_updates_the_running_map(xh, veth, firewall_obj):
    xh.add_object(firewall_obj)
    alias = xh.bpffs / "suricata" / "blocklist"  # the tool's own path (libbpf-style)
    own = xh.map_pin_dir("firewall") / "blocklist"
    xh.add_plugin("fw", one_program("firewall", "firewall.bpf.o", 50, veth.iface,
                                    extra=f"pin_aliases={{'blocklist': {str(alias)!r}}}"))
    xh.run("reconcile")
    assert map_id(alias) == map_id(own)
    assert ping(veth).returncode == 0
    # the program's own tool, knowing only its path, blocks the peer
    sh("bpftool", "map", "update", "pinned", str(alias), "key", *veth.ip_b.split("."),
       "value", *["0"] * 8)
    assert ping(veth).returncode != 0, "the chain did not use the map the tool updated"
    counted = json.loads(sh("bpftool", "-j", "map", "dump", "pinned", str(own)).stdout)
    assert counted and int.from_bytes(bytes(int(b, 16) for b in counted[0]["value"]),
                                      "little") > 0

    # a relink (another program joins the chain) keeps the alias on the live map
    first = veth.attached_id()
    xh.add_plugin("other", one_program("other", "firewall.bpf.o", 60, veth.iface))
    xh.run("reconcile")
    assert veth.attached_id() != first
    assert map_id(alias) == map_id(own)
    assert ping(veth).returncode != 0

    # removed by hand: the next reconcile pins it again
    alias.unlink()
    out = xh.run("reconcile")
    assert map_id(alias) == map_id(own), out.stdout + out.stderr
    assert f"pinned {alias} again" in out.stdout + out.stderr

    # another plugin declaring the same path for its own map is refused, naming it;
    # the chain that ran keeps running
    running = veth.attached_id()
    xh.add_plugin("other", one_program("other", "firewall.bpf.o", 60, veth.iface,
                                       extra=f"pin_aliases={{'blocklist': {str(alias)!r}}}"))
    out = xh.run("reconcile", check=False)
    said = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"plugin 'other': {veth.iface}: program other: cannot pin map blocklist at {alias}" \
        in said and "program firewall of plugin fw declares the same path" in said, said
    assert "Traceback" not in said
    assert veth.attached_id() == running
    assert map_id(alias) == map_id(own)

    # a pin some other tool made: refused too
    xh.add_plugin("other", one_program(
        "other", "firewall.bpf.o", 60, veth.iface,
        extra=f"pin_aliases={{'blocklist': {str(xh.bpffs / 'theirs')!r}}}"))
    sh("bpftool", "map", "create", str(xh.bpffs / "theirs"), "type", "array", "key", "4",
       "value", "4", "entries", "1", "name", "theirs")
    out = xh.run("reconcile", check=False)
    said = out.stdout + out.stderr
    assert out.returncode != 0 and "is pinned there, not by xdphooks" in said, said
    assert veth.attached_id() == running

    # removed with the plugin: the alias goes, the other tool's pin stays
    (xh.plugin_dir / "other.py").unlink()
    (xh.plugin_dir / "fw.py").unlink()
    xh.run("reconcile")
    assert not alias.exists()
    assert (xh.bpffs / "theirs").exists()
    assert ping(veth).returncode == 0


def test_pin_root_and_teardown(xh, veth, firewall_obj):
    """pin_root: libbpf's LIBBPF_PIN_BY_NAME layout; teardown removes the aliases."""
    xh.add_object(firewall_obj)
    root = xh.bpffs / "byname"
    root.mkdir()
    xh.add_plugin("fw", one_program("firewall", "firewall.bpf.o", 50, veth.iface,
                                    extra=f"pin_root={str(root)!r}"))
    xh.run("reconcile")
    assert map_id(root / "blocklist") == map_id(xh.map_pin_dir("firewall") / "blocklist")
    state = json.loads(xh.state_file.read_text())
    assert state["pin_aliases"][str(root / "blocklist")]["program"] == "firewall"
    xh.run("teardown", "--all")
    assert not (root / "blocklist").exists()


def test_alias_off_bpffs_is_refused(xh, veth, firewall_obj, tmp_path):
    xh.add_object(firewall_obj)
    xh.add_plugin("fw", one_program("firewall", "firewall.bpf.o", 50, veth.iface,
                                    extra=f"pin_aliases={{'blocklist': "
                                          f"{str(tmp_path / 'blocklist')!r}}}"))
    out = xh.run("reconcile", check=False)
    said = out.stdout + out.stderr
    assert out.returncode != 0 and "not on a bpffs" in said and "plugin 'fw'" in said, said
    assert veth.attached_id() == 0
    assert not (tmp_path / "blocklist").exists()
