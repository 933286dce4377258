"""The dpkg ownership index behind status, metrics and the change log is cached
(in memory and in /var/cache/xdphooks) keyed by the mtime of dpkg's info
directory. Runs against a private info directory laid out as dpkg lays it out;
the real dpkg transactions that fill it are in test_pkg_deb.py."""

from __future__ import annotations

import json
import os
import time

import pytest

from xdphooks.pkg import dpkg

PLUGIN = "/usr/lib/xdphooks/plugins/foo.py"


@pytest.fixture
def info(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.fail("needs root: the cache is written by root only")
    d = tmp_path / "info"
    d.mkdir()
    (d / "foo.list").write_text(f"/.\n/usr/lib/xdphooks\n{PLUGIN}\n")
    (d / "bash.list").write_text("/bin/bash\n")
    monkeypatch.setattr(dpkg, "DPKG_INFO", d)
    monkeypatch.setattr(dpkg, "INDEX_CACHE", tmp_path / "cache" / "dpkg-index.json")
    monkeypatch.setattr(dpkg, "_index", (0, {}))
    return d


def age(d, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(d, (t, t))


def fresh() -> dict:
    dpkg._index = (0, {})  # a new process: only the disk cache is left
    return dpkg.index()


def test_index_is_cached_until_dpkg_changes_its_info_directory(info):
    age(info, 60)
    assert fresh() == {PLUGIN: "foo"}
    cache = dpkg.INDEX_CACHE
    assert json.loads(cache.read_text())["index"] == {PLUGIN: "foo"}
    assert oct(cache.stat().st_mode & 0o777) == "0o644"
    # rewrite a .list in place, the directory's mtime kept: the cache answers
    kept = info.stat().st_mtime_ns
    (info / "foo.list").write_text("/usr/lib/xdphooks/plugins/other.py\n")
    os.utime(info, ns=(kept, kept))
    assert fresh() == {PLUGIN: "foo"}
    # dpkg renames a new .list into place: the directory changes, the index follows
    (info / "bar.list.new").write_text("/usr/lib/xdphooks/bpf/bar.o\n")
    os.rename(info / "bar.list.new", info / "bar.list")
    age(info, 30)
    assert fresh() == {"/usr/lib/xdphooks/plugins/other.py": "foo",
                       "/usr/lib/xdphooks/bpf/bar.o": "bar"}


def test_a_change_in_the_same_clock_tick_is_not_cached(info):
    age(info, 0)  # just changed: another change could share this mtime
    assert fresh() == {PLUGIN: "foo"}
    assert not dpkg.INDEX_CACHE.exists() and dpkg._index == (0, {})


@pytest.mark.parametrize("tamper", ["world-writable", "other-owner", "garbage", "symlink"])
def test_an_untrusted_or_corrupt_cache_is_ignored(info, tmp_path, tamper):
    age(info, 60)
    fresh()
    cache = dpkg.INDEX_CACHE
    lie = {"info_mtime_ns": info.stat().st_mtime_ns, "index": {"/etc/shadow": "evil"}}
    cache.write_text(json.dumps(lie))
    if tamper == "world-writable":
        cache.chmod(0o666)
    elif tamper == "other-owner":
        os.chown(cache, 65534, 65534)
    elif tamper == "garbage":
        cache.write_text("{not json")
    else:
        planted = tmp_path / "planted.json"
        planted.write_text(json.dumps(lie))
        cache.unlink()
        cache.symlink_to(planted)
    assert fresh() == {PLUGIN: "foo"}
