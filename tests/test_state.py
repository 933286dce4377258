"""State file and lock: atomic writes, corrupt/newer files, lock safety."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from xdphooks import state as st
from xdphooks.errors import PermissionRefused, StateError


def test_atomic_write_and_roundtrip(tmp_path):
    path = tmp_path / "var/lib/xdphooks/state.json"
    s = st.State(generation=7)
    st.save(path, s)
    loaded, warn = st.load(path)
    assert loaded.generation == 7 and warn == ""
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


def _writer(path, n):
    for i in range(n):
        st.save(path, st.State(generation=i, last_run={"pad": "x" * 20000}))


def test_readers_never_see_a_torn_file(tmp_path):
    path = tmp_path / "state.json"
    st.save(path, st.State())
    procs = [multiprocessing.Process(target=_writer, args=(path, 200)) for _ in range(2)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        s, warn = st.load(path)
        assert warn == "", warn
        seen += 1
    for p in procs:
        p.join()
    assert seen > 0


def test_corrupt_state_is_rebuilt_not_trusted(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "interfaces": {"x": ')
    s, warn = st.load(path)
    assert s.interfaces == {} and "corrupt" in warn


def test_state_from_newer_version_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 99}')
    with pytest.raises(StateError, match="newer xdphooks"):
        st.load(path)


def _hold(path, q):
    with st.Lock(path):
        q.put("held")
        time.sleep(60)


def test_lock_released_when_holder_dies(tmp_path):
    path = tmp_path / "run/xdphooks/lock"
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=_hold, args=(path, q))
    p.start()
    assert q.get(timeout=10) == "held"
    with pytest.raises(Exception, match="another xdphooks"):
        with st.Lock(path, timeout=0.3):
            pass
    p.kill()
    p.join()
    with st.Lock(path, timeout=5):
        pass
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"


def test_planted_lock_dir_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(tmp_path / "elsewhere", run / "xdphooks")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PermissionRefused, match="not a directory"):
        with st.Lock(run / "xdphooks" / "lock"):
            pass
    os.unlink(run / "xdphooks")
    (run / "xdphooks").mkdir()
    os.chown(run / "xdphooks", 65534, 65534)
    with pytest.raises(PermissionRefused, match="owned by uid 65534"):
        with st.Lock(run / "xdphooks" / "lock"):
            pass
