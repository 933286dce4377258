"""Issue 12 item 1: a component's global data persists across relinks and upgrades,
and pre-flight leaves no trace in it.

tests/bpf/global_seen.bpf.c keeps its state in plain globals (.bss/.data, no map of
its own): ``seen`` counts every packet, ``dns_seen`` the UDP packets to port 53 (what
pre-flight sends; the test sends none), ``marker`` is initialised data. Real pings
through a veth; the values are read from the kernel (the running programs' internal
maps and their BTF). Static on the host; freplace in the VM.
"""

from __future__ import annotations

import json

from conftest import mode_config, one_program
from freplace_support import both_modes


def globals_of(xh, prog: str) -> dict[str, int]:
    """{variable: value} of ``prog``'s globals in the attached chain (static: the slot's
    pinned section maps; freplace: the EXT program's)."""
    from xdphooks.backends.base import running_globals
    from xdphooks.backends.globalpins import pinned_globals
    from xdphooks.kernel import libbpf

    (gen,) = [g for g in (xh.bpffs / "xdphooks/if").glob("*/g*")]
    pin = gen / f"prog-{prog}" if (gen / f"prog-{prog}").exists() else gen / "root"
    if pin.name == "root":  # static: the slot's own .data/.bss maps, pinned with its maps
        return {n: int.from_bytes(raw, "little") for n, (_, raw) in
                pinned_globals(xh.bpffs / "xdphooks/maps" / prog).items()}
    with libbpf.fd_closing(libbpf.obj_get(str(pin))) as fd:
        found = running_globals(fd)
    out = {}
    for name, (var, raw) in found.items():
        base = name.split("_", 1)[1] if pin.name == "root" and name[0] == "s" else name
        if pin.name == "prog-" + prog or name.startswith(_prefix(xh, prog)):
            out[base] = int.from_bytes(raw, "little")
    return out


def _prefix(xh, prog: str) -> str:
    state = json.loads((xh.root / "var/lib/xdphooks/state.json").read_text())
    (rec,) = state["interfaces"].values()
    (p,) = [p for p in rec["programs"] if p["name"] == prog]
    return f"s{p['slot']}_"


def ping(veth, n=3) -> None:
    veth.exec_b("ping", "-c", str(n), "-i", "0.05", "-W", "1", veth.ip_a)


@both_modes
def test_globals_persist(xh, veth, bpf_obj, mode):
    xh.write_config(mode_config(mode))
    xh.add_object(bpf_obj("global_seen"), "global_seen.o")
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin("seen", one_program("seen", "global_seen.o", 50, veth.iface))
    xh.run("reconcile")
    g = globals_of(xh, "seen")
    assert g["dns_seen"] == 0 and g["marker"] == 0x5eed, g  # pre-flight left no trace
    ping(veth, 10)
    before = globals_of(xh, "seen")["seen"]
    assert before >= 10  # more than one pre-flight's packets

    # a relink (another program joins ahead of it: its slot, and so its prefix, changes)
    xh.add_plugin("first", one_program("first", "count_pass.o", 10, veth.iface))
    xh.run("reconcile")
    g = globals_of(xh, "seen")
    assert g["seen"] >= before and g["dns_seen"] == 0 and g["marker"] == 0x5eed, (before, g)
    ping(veth)
    assert globals_of(xh, "seen")["seen"] >= before + 3

    # an upgrade with the same layout keeps the values too
    mid = globals_of(xh, "seen")["seen"]
    xh.add_object(bpf_obj("global_seen"), "global_seen.o")
    (xh.bpf_dir / "global_seen.o").write_bytes(
        (xh.bpf_dir / "global_seen.o").read_bytes() + b"\0" * 8)  # another digest, same code
    xh.run("reconcile")
    assert globals_of(xh, "seen")["seen"] >= mid

    # an upgrade that changes a global's layout: its new default, a warning naming it
    xh.add_object(bpf_obj("global_seen_v2"), "global_seen.o")
    proc = xh.run("reconcile")
    warn = [ln for ln in proc.stderr.splitlines() if "layout of its global data" in ln]
    assert len(warn) == 1 and "seen" in warn[0] and "dns_seen" not in warn[0].split("(")[1] \
        .split(")")[0].split(", "), proc.stderr
    g = globals_of(xh, "seen")
    assert g["seen"] < 3 and g["dns_seen"] == 0 and g["marker"] == 0x5eed, g

