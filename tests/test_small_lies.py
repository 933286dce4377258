"""Issue 27 item 6: small lies and silences, each checked where it happened."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from conftest import REPO, one_program, sh
from xdphooks.paths import Paths


def test_foreign_takeover_is_shown_and_logged(xh, veth, bpf_obj):
    """Another program takes the interface over: reconcile refuses (no --takeover),
    status --brief names the foreign program instead of 'no chains attached', and
    history records the refusal, once."""
    xh.add_object(bpf_obj("count_pass"))
    xh.add_plugin("cp", one_program("cp", "count_pass.bpf.o", 50, veth.iface))
    xh.run("reconcile")
    assert veth.attached_id()
    # a foreign program replaces the chain (as xdp-loader or ip link would)
    sh("ip", "-n", veth.ns_a, "link", "set", "dev", veth.dev_a, "xdp", "off")
    sh("ip", "-n", veth.ns_a, "link", "set", "dev", veth.dev_a, "xdpgeneric", "obj",
       str(bpf_obj("static_pass")), "sec", "xdp")
    foreign = veth.attached_id()
    assert foreign
    out = xh.run("reconcile", check=False)
    assert out.returncode != 0
    brief = xh.run("status", "--brief").stdout
    assert f"xdphooks: {veth.iface}: foreign program {foreign} attached; xdphooks' chain is " \
           "not running" in brief, brief
    assert "no chains attached" not in brief
    xh.run("reconcile", check=False)  # the same refusal again: logged once
    hist = xh.run("history").stdout
    refusals = [ln for ln in hist.splitlines() if f"refused {veth.iface}" in ln]
    assert len(refusals) == 1, hist
    assert f"already runs XDP program id {foreign}" in refusals[0] and "ERROR" in refusals[0]
    assert veth.attached_id() == foreign  # refused: the foreign program stays


def test_misspelt_program_table_is_named(xh, veth, bpf_obj):
    xh.add_object(bpf_obj("count_pass"))
    xh.add_plugin("cp", one_program("cp", "count_pass.bpf.o", 50, veth.iface))
    xh.write_config("[programs.cq]\npriority = 10\n")
    out = xh.run("reconcile")
    said = out.stdout + out.stderr
    assert "[programs.cq] in xdphooks.toml names no program any plugin declares " \
           "(known programs: cp); the table is ignored — fix:" in said, said


def test_root_keeps_the_dpkg_cache_under_the_root(tmp_path, monkeypatch):
    """--root: the dpkg ownership cache is written below the root, not in /var/cache."""
    from xdphooks import provenance
    from xdphooks.pkg import dpkg

    assert dpkg.present(), "this test needs the host's dpkg database (Debian)"
    host = dpkg.INDEX_CACHE
    before = host.stat().st_mtime_ns if host.exists() else None
    monkeypatch.setattr(dpkg, "_index", (0, {}))  # no in-memory answer: the disk is used
    paths = Paths(root=tmp_path)
    (paths.plugin_dir).mkdir(parents=True)
    (paths.plugin_dir / "cp.py").write_text("")  # whose package? asks the index
    provenance.plugin_owners(paths)
    cache = tmp_path / "var" / "cache" / "xdphooks" / "dpkg-index.json"
    assert cache.is_file()
    assert json.loads(cache.read_text())["info_mtime_ns"] == dpkg.DPKG_INFO.stat().st_mtime_ns
    assert (host.stat().st_mtime_ns if host.exists() else None) == before
    assert dpkg._cache_file() == host  # only for the call


def test_bash_completion_offers_chained_interfaces(xh, veth, bpf_obj, tmp_path):
    xh.add_object(bpf_obj("count_pass"))
    xh.add_plugin("cp", one_program("cp", "count_pass.bpf.o", 50, veth.iface))
    xh.run("reconcile")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "xdphooks"  # the real command, in this test's private root
    tool.write_text(f"#!/bin/sh\nexec {sys.executable} -m xdphooks \"$@\"\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    env = {**xh.env, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    for cmd in ("trace", "teardown"):
        script = (f"source {REPO / 'completions' / 'xdphooks.bash'}; "
                  f"COMP_WORDS=(xdphooks {cmd} ''); COMP_CWORD=2; _xdphooks; "
                  "printf '%s\\n' \"${COMPREPLY[@]}\"")
        got = subprocess.run(["bash", "-c", script], env=env, text=True, capture_output=True,
                             timeout=60).stdout.split()
        assert got == [veth.iface], (cmd, got)


def test_history_names_the_outgoing_package(xh, veth, bpf_obj):
    """A removal's change record names the package the removed programs came from: it
    is recorded with each program when attached (its package's files and database
    entry are gone when the removal is reconciled). The package name is set in the
    state record here, as plugin_owners records it for a package-installed plugin."""
    xh.add_object(bpf_obj("count_pass"))
    xh.add_plugin("cp", one_program("cp", "count_pass.bpf.o", 50, veth.iface))
    xh.run("reconcile")
    st = json.loads(xh.state_file.read_text())
    (rec,) = st["interfaces"].values()
    assert rec["programs"][0]["package"] == ""  # a drop-in no package owns
    rec["programs"][0]["package"] = "xdphooks-cp_1.0-1 (deb)"
    xh.state_file.write_text(json.dumps(st))
    (xh.plugin_dir / "cp.py").unlink()
    xh.run("reconcile")
    last = xh.run("history").stdout.strip().splitlines()[-1]
    assert f"detach {veth.iface}" in last and "outgoing: programs of xdphooks-cp_1.0-1 (deb)" \
        in last and "[manual, xdphooks-cp_1.0-1 (deb)]" in last, last
