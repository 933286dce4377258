"""The object facts cache (objfacts.py) and the early plugin host (pluginhost.prestart).

The cache is addressed by the sha256 of an object's bytes: a file changed in place with
its size and mtime put back is parsed again; a cache file root did not write (another
owner, writable by others, damaged) is not read; a run writes it only when its objects
changed. The prestarted host is the run's first host, and one that died before the run
took it is replaced without any plugin being blamed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import build_test_object
from xdphooks import inspect as inspect_mod
from xdphooks import objfacts, pluginhost
from xdphooks.objfacts import FactsCache

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the cache is root's")


@pytest.fixture
def objs(tmp_path):
    d = tmp_path / "bpf"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    shutil.copy(build_test_object("count_pass"), d / "a.o")
    shutil.copy(build_test_object("drop_icmp"), d / "b.o")
    cache = tmp_path / "cache"
    return d, cache


def _facts(path, cache_dir, save=True):
    cache = FactsCache(cache_dir)
    facts = inspect_mod.inspect(str(path), "p", cache)
    if save:
        cache.save()
    return facts, cache


def test_cached_facts_are_what_parsing_finds(objs):
    d, cache_dir = objs
    fresh = inspect_mod.inspect(str(d / "a.o"), "p")
    first, c1 = _facts(d / "a.o", cache_dir)
    assert not c1.loaded and first == fresh
    f = cache_dir / objfacts.FILE
    assert oct(os.stat(f).st_mode & 0o777) == "0o600"
    assert list(json.loads(f.read_text())["objects"]) == [fresh.digest]
    again, c2 = _facts(d / "a.o", cache_dir)
    assert again == fresh and list(c2.loaded) == [fresh.digest]  # from the cache
    mtime = os.stat(f).st_mtime_ns
    _facts(d / "a.o", cache_dir)
    assert os.stat(f).st_mtime_ns == mtime, "an unchanged run rewrote the cache"


def test_a_changed_object_is_parsed_again_whatever_its_stat_says(objs):
    d, cache_dir = objs
    _facts(d / "a.o", cache_dir)
    st = os.stat(d / "a.o")
    # same path, same size, same mtime: other bytes (another object, cut to the size)
    other = (d / "b.o").read_bytes()
    data = (d / "a.o").read_bytes()
    (d / "a.o").write_bytes(other[:len(data)] + bytes(max(0, len(data) - len(other))))
    os.utime(d / "a.o", ns=(st.st_atime_ns, st.st_mtime_ns))
    facts, cache = _facts(d / "a.o", cache_dir)
    assert facts.digest not in cache.loaded
    assert "count_pass" not in facts.programs  # not the cached answer for the old bytes


@pytest.mark.parametrize("how", ["foreign owner", "group writable", "damaged", "bad entry"])
def test_a_cache_root_did_not_write_is_not_read(objs, how):
    d, cache_dir = objs
    facts, _ = _facts(d / "a.o", cache_dir)
    f = cache_dir / objfacts.FILE
    lie = {"version": objfacts.VERSION, "objects": {facts.digest: {
        "programs": ["planted"], "run_config": {}, "tail_targets": [], "untyped": []}}}
    f.write_text(json.dumps(lie))
    if how == "foreign owner":
        os.chown(f, 65534, 65534)
    elif how == "group writable":
        os.chmod(f, 0o620)
    elif how == "damaged":
        f.write_text('{"version": 1, "objects": {')
    else:
        lie["objects"][facts.digest]["run_config"] = {"planted": ["high", None]}
        f.write_text(json.dumps(lie))
    again, cache = _facts(d / "a.o", cache_dir, save=False)
    assert again.programs == ("count_pass",) and not cache.loaded


def test_plan_reads_the_cache_and_never_writes_it(xh, veth):
    """reconcile writes it (root's cache dir), plan only reads it."""
    xh.add_object(build_test_object("count_pass"), "count.o")
    xh.add_plugin("count", "from xdphooks import XdpProgram, hookimpl\n@hookimpl\n"
                  "def xdphooks_programs():\n    return [XdpProgram(name='count', "
                  f"object='count.o', interfaces=({veth.iface!r},))]\n")
    f = xh.cache_dir / objfacts.FILE
    xh.run("plan")
    assert not f.exists(), "plan wrote the cache"
    xh.run("reconcile")
    assert f.exists()
    mtime = os.stat(f).st_mtime_ns
    xh.run("plan")
    xh.run("reconcile")  # nothing to do: the cache holds this run's objects already
    assert os.stat(f).st_mtime_ns == mtime


def test_a_prestarted_host_that_died_is_replaced(tmp_path):
    """The host prestart() forked is killed before the run takes it: the run starts one
    the usual way, and no plugin is blamed."""
    pluginhost.prestart()
    early = pluginhost._early
    assert early is not None and early.pid
    os.kill(early.pid, signal.SIGKILL)
    assert pluginhost.take_prestarted() is None
    assert pluginhost._early is None
    # and a working one is handed over, greeted
    pluginhost.prestart()
    host = pluginhost.take_prestarted()
    try:
        assert host is not None and host.greeted
        assert host.request({"op": "order", "hook": "xdphooks_programs"}, 10)["ok"] == []
    finally:
        host.kill()


def test_the_coordinator_does_not_import_pluggy():
    """pluggy is the plugin host's: the CLI's process imports it only if plugin code runs
    there (it never does)."""
    code = ("import sys, xdphooks.coordinator, xdphooks.cli; "
            "print('pluggy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    code = "from xdphooks import hookimpl; print(type(hookimpl).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "HookimplMarker"
