"""Plugin discovery: drop-ins, admin overrides, masking, disabling, entry points,
and broken plugins reported by name (never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xdphooks.paths import Paths
from xdphooks.plugins import discover

PLUGIN = textwrap.dedent("""
    from xdphooks import XdpProgram, hookimpl
    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name={name!r}, object="x.o", priority={prio})]
""")


@pytest.fixture
def root(tmp_path):
    os.chmod(tmp_path, 0o755)
    return Paths(root=tmp_path, bpffs=tmp_path / "bpffs")


def put(d: Path, name: str, text: str, mode: int = 0o644) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.py"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def programs(paths, **kw):
    plugins = discover(paths, entry_points=False, **kw)
    found, broken = plugins.programs()
    return {n: (plug, p.priority) for plug, p in found for n in [p.name]}, plugins


def test_drop_in_override_and_mask(root):
    put(root.plugin_dir, "fw", PLUGIN.format(name="fw", prio=10))
    put(root.plugin_dir, "lb", PLUGIN.format(name="lb", prio=20))
    found, _ = programs(root)
    assert found == {"fw": ("fw", 10), "lb": ("lb", 20)}
    # Same name in /etc overrides the package's file.
    put(root.admin_plugin_dir, "fw", PLUGIN.format(name="fw", prio=99))
    found, _ = programs(root)
    assert found["fw"] == ("fw", 99)
    # A symlink to /dev/null masks it.
    (root.admin_plugin_dir / "fw.py").unlink()
    os.symlink("/dev/null", root.admin_plugin_dir / "lb.py")
    found, plugins = programs(root)
    assert found == {"fw": ("fw", 10)} and plugins.masked == ["lb"]


def test_disable_by_name(root, monkeypatch):
    put(root.plugin_dir, "fw", PLUGIN.format(name="fw", prio=10))
    put(root.plugin_dir, "lb", PLUGIN.format(name="lb", prio=20))
    found, _ = programs(root, disable={"fw"})
    assert set(found) == {"lb"}
    monkeypatch.setenv("XDPHOOKS_DISABLE", "lb")
    found, _ = programs(root)
    assert set(found) == {"fw"}


@pytest.mark.parametrize("body, reason", [
    ("import nonexistent_module_xyz\n", "cannot be loaded"),
    ("raise RuntimeError('boom at import')\n", "boom at import"),
    ("from xdphooks import hookimpl\n@hookimpl\ndef xdphooks_programs():\n    raise ValueError('bad day')\n", "raised ValueError: bad day"),
    ("from xdphooks import hookimpl\n@hookimpl\ndef xdphooks_programs():\n    return 'fw'\n", "expected a list"),
    ("from xdphooks import hookimpl\n@hookimpl\ndef xdphooks_programs():\n    return [42]\n", "not an XdpProgram"),
    ("from xdphooks import hookimpl\n@hookimpl\ndef xdphooks_programz():\n    return []\n", "invalid hook implementation"),
    ("import time\nfrom xdphooks import hookimpl\n@hookimpl\ndef xdphooks_programs():\n    time.sleep(30)\n", "did not return within"),
])
def test_broken_plugin_reported_by_name_others_unaffected(root, body, reason):
    put(root.plugin_dir, "good", PLUGIN.format(name="good", prio=1))
    put(root.plugin_dir, "broken", body)
    found, plugins = programs(root, timeout=1.0)
    assert set(found) == {"good"}
    msgs = [str(f) for f in plugins.failures]
    assert len(msgs) == 1 and msgs[0].startswith("plugin 'broken': ") and reason in msgs[0], msgs


def test_untrusted_plugin_files_refused(root):
    put(root.plugin_dir, "ww", PLUGIN.format(name="ww", prio=1), mode=0o666)
    target = put(root.root / "elsewhere", "real", PLUGIN.format(name="sym", prio=1))
    root.plugin_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(target, root.plugin_dir / "sym.py")
    found, plugins = programs(root)
    assert found == {}
    msgs = {f.plugin: str(f) for f in plugins.failures}
    assert "writable by group or others" in msgs["ww"] and "chmod go-w" in msgs["ww"]
    assert "symlink" in msgs["sym"]


def test_entry_point_plugins(tmp_path):
    """A pip-installed plugin (a real dist-info with an entry point) is found by name."""
    site = tmp_path / "site"
    (site / "xh_ep_demo-1.0.dist-info").mkdir(parents=True)
    (site / "xh_ep_demo-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: xh-ep-demo\nVersion: 1.0\n")
    (site / "xh_ep_demo-1.0.dist-info" / "entry_points.txt").write_text("[xdphooks]\nepdemo = xh_ep_demo\n")
    (site / "xh_ep_demo.py").write_text(PLUGIN.format(name="from-ep", prio=7))
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from xdphooks.paths import Paths
        from xdphooks.plugins import discover
        p = discover(Paths(root=Path({str(tmp_path)!r})))
        found, _ = p.programs()
        print(json.dumps([[plug, x.name] for plug, x in found]))
    """)
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert ["epdemo", "from-ep"] in json.loads(out)


def test_every_hook_is_documented():
    """Like datasette's docs test: each hookspec says when, what it returns, how results combine."""
    from xdphooks import hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith("xdphooks_")]
    assert {"xdphooks_programs", "xdphooks_validate_chain", "xdphooks_chain_attached"} <= set(hooks)
    for n in hooks:
        doc = getattr(hookspecs, n).__doc__ or ""
        assert "Called" in doc and ":returns:" in doc, n


def test_hook_wrappers_are_refused_at_registration_naming_plugin_and_hook(root):
    """hookspecs.py says wrappers are not supported: the plugin is refused by name,
    none of its hooks run, the other plugins are unaffected."""
    put(root.plugin_dir, "fw", PLUGIN.format(name="fw", prio=10))
    for name, marker in (("wrap", "wrapper=True"), ("oldwrap", "hookwrapper=True")):
        put(root.plugin_dir, name, textwrap.dedent(f"""
            from xdphooks import XdpProgram, hookimpl
            @hookimpl
            def xdphooks_programs():
                return [XdpProgram(name={name!r}, object="x.o")]
            @hookimpl({marker})
            def xdphooks_validate_chain(interface, chain):
                yield
        """))
    found, plugins = programs(root)
    assert set(found) == {"fw"}
    by_name = {f.plugin: f for f in plugins.failures}
    assert set(by_name) == {"wrap", "oldwrap"}
    for f in by_name.values():
        assert "xdphooks_validate_chain: hook wrappers" in f.reason and "not supported" in f.reason
        assert "wrapper=True" in f.fix
    assert set(plugins.sources) == {"fw"}


def test_select_mode_goes_through_pluggy_firstresult_with_guarded_implementations(root):
    """firstresult comes from pluggy (tryfirst orders answers); an implementation that
    raises or hangs counts as None and is reported by name, the next one answers."""
    hook = "@hookimpl{opts}\ndef xdphooks_select_mode(interface, chain, probed):\n    {body}\n"
    put(root.plugin_dir, "a_none", "from xdphooks import hookimpl\n"
        + hook.format(opts="", body="return None"))
    put(root.plugin_dir, "b_raises", "from xdphooks import hookimpl\n"
        + hook.format(opts="(tryfirst=True)", body="raise RuntimeError('no idea')"))
    put(root.plugin_dir, "c_static", "from xdphooks import hookimpl\n"
        + hook.format(opts="", body="return 'static'"))
    put(root.plugin_dir, "d_freplace", "from xdphooks import hookimpl\n"
        + hook.format(opts="(trylast=True)", body="return 'freplace'"))
    plugins = discover(root, entry_points=False)
    assert plugins.select_mode("eth0", None, "freplace") == "static"
    assert [(f.plugin, f.reason) for f in plugins.failures] == [
        ("b_raises", "xdphooks_select_mode() raised RuntimeError: no idea")]
    # Notifications go through pluggy too, guarded alike.
    put(root.plugin_dir, "e_notify", "from xdphooks import hookimpl\n@hookimpl\n"
        "def xdphooks_reconcile_failed(interface, error):\n    raise KeyError(error)\n")
    plugins = discover(root, entry_points=False)
    plugins.notify("xdphooks_reconcile_failed", interface="eth0", error="boom")
    assert ("e_notify", "xdphooks_reconcile_failed() raised KeyError: 'boom'") in [
        (f.plugin, f.reason) for f in plugins.failures]
