"""Every file xdphooks reads can be damaged or planted (issue 20, item 3): one table of
hostile files, each tried on the real kernel.

Every case starts from a good chain (plugin ``good``, program ``counter`` = count_pass)
running on a fresh namespaced veth, like tests/test_bad_input.py (whose helpers it
uses), then damages or plants one file — the state, the events log, the change log,
the config, an object, the probe cache — and runs the command that reads it, under a
timeout (a FIFO must not block it). It must:

* end with the exit code README documents (0: nothing the admin must do, the damage
  is repaired by a rebuild from the kernel; 1: refused, nothing changed);
* say so in one line naming the file (or the plugin) with ``fix: ...``; no traceback,
  nothing said twice, nothing but ``xdphooks: ...`` lines on stderr;
* leave the previous chain attached (asked of iproute2) and counting packets;
* leave the state intact, or rebuilt true to the kernel (the record names the program
  id the interface runs), and loadable without a warning after a reconcile;
* touch nothing outside xdphooks' own trees: a ``victim`` directory next to the bpffs
  (where ``<pin root>/if/../../../victim`` leads) keeps its contents in every case.

``XDPHOOKS_SHOW_MESSAGES=1 pytest -s`` prints each case's output.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import destroy_veth_pair
from test_bad_input import (BADGUY, GOOD, NOBODY, Ctx, attached_id, nobody_python, ping,
                            read_counter, state_file, state_records)

pytestmark = pytest.mark.kernel

TIMEOUT = 60  # every run; a FIFO that blocks would hit it


@dataclass
class Hostile:
    who: str | None  # on the one line with "fix:"; None: a cache, repaired silently
    rc: int = 0
    run: Callable[[Ctx], subprocess.CompletedProcess] | None = None  # default: reconcile
    check: Callable[[Ctx, subprocess.CompletedProcess], None] | None = None
    state: str = "same"  # "same" records, or "rebuilt" true to the kernel
    also: tuple[str, ...] = ()  # more text the line must hold


CASES: dict[str, Callable[[Ctx], Hostile]] = {}


def case(name: str):
    def deco(fn):
        assert name not in CASES
        CASES[name] = fn
        return fn
    return deco


def key(c: Ctx) -> str:
    return f"{c.veth.ns_a}@{c.veth.dev_a}"


def victim(c: Ctx) -> Path:
    """Where '<pin root>/if/../../../victim' leads: next to the bpffs mount."""
    return c.xh.bpffs.parent / "victim"


def save_state(c: Ctx) -> dict:
    """The state as JSON; the undo puts the file back whatever it became."""
    path = state_file(c.xh)
    data = path.read_bytes()

    def restore():
        if path.is_dir() and not path.is_symlink():
            os.rename(path, path.with_name("state.json.gone"))
        path.unlink(missing_ok=True)
        path.write_bytes(data)
    c.undo.append(restore)
    return json.loads(data)


def write_state(c: Ctx, data: Any) -> None:
    state_file(c.xh).write_text(json.dumps(data))


def edit_record(c: Ctx, fn: Callable[[dict], None]) -> None:
    data = save_state(c)
    fn(data["interfaces"][key(c)])
    write_state(c, data)


def run(c: Ctx, *args: str, nobody: bool = False) -> subprocess.CompletedProcess:
    # (nobody's HOME: not root's, whose rpm macros name a database nobody cannot open)
    return c.run(*args, prefix=nobody_python() if nobody else None, timeout=TIMEOUT,
                 env={"HOME": "/nonexistent"} if nobody else None)


def nothing_to_do(c, proc):
    assert "nothing to do" in proc.stdout, proc.stdout


# --- state.json ----------------------------------------------------------------------


@case("state_traversal_key")
def _(c):
    """A record keyed ../../../victim: reconcile used to rmtree <pin root>/if/<key>, i.e.
    the victim directory, as root, and print 'nothing to do'."""
    data = save_state(c)
    data["interfaces"]["../../../victim"] = dict(data["interfaces"][key(c)])
    write_state(c, data)

    def check(c, proc):
        nothing_to_do(c, proc)
        assert "../../../victim" not in json.loads(state_file(c.xh).read_text())["interfaces"]
    return Hostile(str(state_file(c.xh)), also=("../../../victim",), check=check)


@case("state_key_slash_dotdot_nul")
def _(c):
    data = save_state(c)
    for k in ("a/b@x", "-@..", "ns\x00@eth0", "x@name-longer-than-ifnamsiz"):
        data["interfaces"][k] = dict(data["interfaces"][key(c)])
    write_state(c, data)
    return Hostile(str(state_file(c.xh)), also=("and 3 more problem(s)",), check=nothing_to_do)


@case("state_is_a_directory")
def _(c):
    save_state(c)
    path = state_file(c.xh)
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("kept")

    def check(c, proc):
        assert path.is_file()  # a new state written...
        aside = list(path.parent.glob("state.json.damaged-*"))  # ...the directory kept aside
        assert len(aside) == 1 and (aside[0] / "inside").read_text() == "kept", aside
        c.undo.append(lambda: [(a / "inside").unlink() or a.rmdir() for a in aside])
    return Hostile(str(path), also=("is a directory",), state="rebuilt", check=check)


@case("state_pins_a_list")
def _(c):
    edit_record(c, lambda r: r.__setitem__("pins", ["if/x/root"]))
    return Hostile(str(state_file(c.xh)), also=("pins",), state="rebuilt")


@case("state_last_run_time_a_string")
def _(c):
    data = save_state(c)
    data["last_run"]["time"] = "yesterday"
    write_state(c, data)

    def check(c, proc):
        st = run(c, "status")  # as root, after the reconcile rewrote it: no warning
        assert st.returncode == 0 and "warning" not in st.stderr, st.stderr
    return Hostile(str(state_file(c.xh)), also=("last_run.time",), check=check)


@case("state_pin_dir_outside")
def _(c):
    edit_record(c, lambda r: r.__setitem__("pin_dir", str(victim(c))))

    def check(c, proc):
        rec = json.loads(state_file(c.xh).read_text())["interfaces"][key(c)]
        assert rec["pin_dir"].startswith(str(c.xh.pin_root / "if" / key(c)) + "/"), rec
    return Hostile(str(state_file(c.xh)), also=("pin_dir",), state="rebuilt", check=check)


@case("state_pins_lead_outside")
def _(c):
    edit_record(c, lambda r: r["pins"].__setitem__("../../victim/f", 1))
    return Hostile(str(state_file(c.xh)), also=("pins",), state="rebuilt")


@case("state_nan_and_huge_numbers")
def _(c):
    data = save_state(c)
    rec = data["interfaces"][key(c)]
    rec["updated"] = float("nan")
    rec["ifindex"] = 1 << 70
    state_file(c.xh).write_text(json.dumps(data))  # Python writes NaN; strict JSON would not
    return Hostile(str(state_file(c.xh)), state="rebuilt")


@case("state_interfaces_a_list")
def _(c):
    data = save_state(c)
    data["interfaces"] = list(data["interfaces"].values())
    write_state(c, data)
    return Hostile(str(state_file(c.xh)), also=("not a table",), state="rebuilt")


@case("state_fifo")
def _(c):
    save_state(c)
    path = state_file(c.xh)
    path.unlink()
    os.mkfifo(path)

    def check(c, proc):
        assert path.is_file()
        for a in path.parent.glob("state.json.damaged-*"):
            a.unlink()
    return Hostile(str(path), also=("FIFO",), state="rebuilt", check=check)


@case("status_as_nobody_on_damaged_state")
def _(c):
    """Every user's status used to give a traceback on these."""
    data = save_state(c)
    data["interfaces"][key(c)]["pins"] = []
    data["last_run"]["time"] = "yesterday"
    write_state(c, data)

    def check(c, proc):
        assert "(no chains attached)" in proc.stdout  # the damaged record is not shown
        js = run(c, "status", "--json", nobody=True)
        assert js.returncode == 0 and "Traceback" not in js.stderr, js.stderr
        assert "is corrupt" in json.loads(js.stdout)["warnings"][0]
        br = run(c, "status", "--brief", nobody=True)
        assert br.returncode == 0 and "Traceback" not in br.stderr, br.stderr
    return Hostile(str(state_file(c.xh)), also=("pins",), check=check,
                   run=lambda c: run(c, "status", nobody=True))


# --- the logs ----------------------------------------------------------------------------


def events_log(c: Ctx) -> Path:
    return c.xh.state_dir / "events.log"


GOOD_EVENT = {"ts_ns": 5_000_000_000, "interface": "ns/eth0", "program": "counter",
              "verdict": "drop", "generation": 1}


@case("events_log_torn_last_line")
def _(c):
    events_log(c).write_text(json.dumps(GOOD_EVENT) + "\n" + '[1, 2]\n{"ts_ns": "x", '
                             '"interface": 1}\n' + json.dumps(GOOD_EVENT)[:25])
    c.undo.append(lambda: events_log(c).unlink())

    def check(c, proc):
        assert "counter returned drop" in proc.stdout, proc.stdout
    return Hostile(str(events_log(c)), also=("skipped 3 damaged line(s)",), check=check,
                   run=lambda c: run(c, "events"))


@case("events_log_fifo")
def _(c):
    os.mkfifo(events_log(c))
    c.undo.append(lambda: events_log(c).unlink())

    def check(c, proc):
        assert "no events" in proc.stdout
    return Hostile(str(events_log(c)), also=("FIFO",), check=check,
                   run=lambda c: run(c, "events"))


def changes_log(c: Ctx) -> Path:
    return c.xh.state_dir / "changes.log"


@case("changes_log_torn")
def _(c):
    before = changes_log(c).read_bytes()
    c.undo.append(lambda: changes_log(c).write_bytes(before))
    with open(changes_log(c), "a") as f:
        f.write('"a string"\n{"time": "noon", "message": "m"}\n{"time": 1e300, "message": '
                '"far"}\n{"time": 1.0, "message": "torn')

    def check(c, proc):
        assert "attach" in proc.stdout  # the good record is still shown
        js = run(c, "history", "--json")
        assert js.returncode == 0 and "Traceback" not in js.stderr, js.stderr
        recs = [json.loads(ln) for ln in js.stdout.splitlines()]  # every line JSON
        assert recs and all(r["message"] not in ("m", "far") for r in recs)
        assert "skipped 4 damaged line(s)" in js.stderr
    return Hostile(str(changes_log(c)), also=("skipped 4 damaged line(s)",), check=check,
                   run=lambda c: run(c, "history"))


@case("changes_log_fifo")
def _(c):
    before = changes_log(c).read_bytes()
    changes_log(c).unlink()
    os.mkfifo(changes_log(c), 0o644)
    c.undo.append(lambda: (changes_log(c).unlink(), changes_log(c).write_bytes(before)))

    def check(c, proc):
        assert "no changes recorded yet" in proc.stdout
    return Hostile(str(changes_log(c)), also=("FIFO",), check=check,
                   run=lambda c: run(c, "history"))


# --- objects --------------------------------------------------------------------------------


def fifo_object(c: Ctx) -> Path:
    p = c.xh.bpf_dir / "bg.o"
    os.mkfifo(p, 0o644)
    c.undo.append(lambda: p.unlink())
    return p


@case("object_fifo")
def _(c):
    """open() of a FIFO used to block forever, the lock held."""
    fifo_object(c)
    c.badguy()
    return Hostile(BADGUY, rc=1, also=("FIFO",))


@case("object_sparse_8gib")
def _(c):
    """Used to be read whole: MemoryError traceback, no plugin named."""
    p = c.xh.bpf_dir / "bg.o"
    with open(p, "wb") as f:
        f.truncate(8 << 30)
    c.undo.append(lambda: p.unlink())
    c.badguy()
    return Hostile(BADGUY, rc=1, also=("64 MiB limit",))


@case("object_owned_by_nobody")
def _(c):
    p = c.bad_object(c.bpf_obj("count_pass"))
    os.chown(p, NOBODY, NOBODY)
    c.badguy()
    return Hostile(BADGUY, rc=1, also=("owned by uid 65534",))


@case("object_group_writable")
def _(c):
    p = c.bad_object(c.bpf_obj("count_pass"))
    os.chmod(p, 0o664)
    c.badguy()
    return Hostile(BADGUY, rc=1, also=("writable by group or others",))


@case("object_symlink_to_dev_zero")
def _(c):
    p = c.xh.bpf_dir / "bg.o"
    os.symlink("/dev/zero", p)
    c.undo.append(lambda: p.unlink())
    c.badguy()
    return Hostile(BADGUY, rc=1, also=("symlink",))


# --- the config ------------------------------------------------------------------------------


def bad_timeout(value: str):
    def fn(c):
        c.set_config(c.config.replace("hook_timeout = 2", f"hook_timeout = {value}"))
        return Hostile(str(c.xh.config_file), rc=1,
                       also=("hook_timeout", "at most 3600"))
    return fn


for _v in ("inf", "nan", "-1", "true"):
    case(f"config_hook_timeout_{_v}")(bad_timeout(_v))


@case("config_fifo")
def _(c):
    path = c.xh.config_file
    path.unlink()
    os.mkfifo(path, 0o644)
    c.undo.append(lambda: (path.unlink(), c.xh.write_config(c.config)))
    return Hostile(str(path), rc=1, also=("FIFO",))


@case("config_too_big")
def _(c):
    c.set_config(c.config + "# padding\n" * 120_000)
    return Hostile(str(c.xh.config_file), rc=1, also=("1 MiB limit",))


@case("config_owned_by_nobody")
def _(c):
    c.set_config(c.config)
    os.chown(c.xh.config_file, NOBODY, NOBODY)
    c.undo.append(lambda: os.chown(c.xh.config_file, 0, 0))
    return Hostile(str(c.xh.config_file), rc=1, also=("owned by uid 65534",))


# --- caches ------------------------------------------------------------------------------------


def probe_cache(c: Ctx) -> Path:
    return c.xh.run_dir / "probe.json"


def probe_cache_case(plant: Callable[[Path], None]):
    def fn(c):
        path = probe_cache(c)
        path.unlink(missing_ok=True)
        plant(path)

        def check(c, proc):  # probed again and rewritten as a proper cache
            data = json.loads(path.read_text())
            assert set(data) == {"boot_id", "works", "reason", "kernel"}, data
            assert isinstance(data["works"], bool)
        return Hostile(None, rc=proc_rc_any, check=check, run=lambda c: run(c, "doctor"))
    return fn


proc_rc_any = -1  # doctor's own exit code says what this machine lacks; not checked here
BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
case("probe_cache_garbage")(probe_cache_case(lambda p: p.write_text('{"boot_id": ')))
case("probe_cache_wrong_types")(probe_cache_case(lambda p: p.write_text(json.dumps(
    {"boot_id": BOOT_ID, "works": "yes", "reason": ["x"], "kernel": 1}))))
case("probe_cache_fifo")(probe_cache_case(lambda p: os.mkfifo(p, 0o600)))


@case("pending_marker_fifo")
def _(c):
    path = c.xh.state_dir / "pending"
    os.mkfifo(path, 0o644)
    c.undo.append(lambda: path.unlink(missing_ok=True))

    def check(c, proc):
        assert "pending:" not in proc.stdout
    return Hostile(None, check=check, run=lambda c: run(c, "status"))


# --- the test --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file(name, xh, veth, bpf_obj):
    scratch = xh.root.parent / "scratch"
    scratch.mkdir(mode=0o755)
    c = Ctx(xh, veth, bpf_obj, scratch, good_ifaces=[veth.iface])
    sentinel = victim(c) / "precious"
    victim(c).mkdir()
    sentinel.write_text("untouched")
    try:
        # a) a good chain runs
        xh.write_config(c.config)
        xh.add_object(bpf_obj("count_pass"), "count_pass.o")
        xh.add_plugin("good", GOOD.format(ifaces=tuple(c.good_ifaces)))
        xh.run("reconcile")
        xh.run("doctor", check=False)  # a probe cache to damage
        pid = attached_id(veth.ns_a, veth.dev_a)
        assert pid > 0
        records = state_records(xh)

        # b) the hostile file, and the command that reads it
        exp = CASES[name](c)
        proc = exp.run(c) if exp.run else run(c, "reconcile")

        # c) one line naming the file or plugin and the fix, the documented exit code
        out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        if os.environ.get("XDPHOOKS_SHOW_MESSAGES"):
            print(f"\n[{name}] exit {proc.returncode}:\n{proc.stderr}")
        if exp.rc != proc_rc_any:
            assert proc.returncode == exp.rc, out
        assert "Traceback" not in proc.stdout + proc.stderr, out
        # librpm's own complaint when a user cannot open this test machine's rpmdb
        # (status looks up packages; not a message of xdphooks, and not about these files)
        lines = [ln for ln in proc.stderr.splitlines()
                 if not ln.startswith("error: cannot open Packages database")]
        assert len(lines) == len(set(lines)), f"something said twice\n{out}"
        if exp.who is not None:
            assert all(ln.startswith("xdphooks: ") for ln in lines), out
            hits = [ln for ln in lines if exp.who in ln and " fix: " in ln
                    and all(a in ln for a in exp.also)]
            assert len(hits) == 1, f"not one line naming {exp.who!r} {exp.also} with a fix\n{out}"
            assert len(hits[0].split(" fix: ", 1)[1].strip()) >= 10, out

        # d) the previous chain is attached and counts
        assert attached_id(veth.ns_a, veth.dev_a) == pid, out
        n0 = read_counter(xh, veth)
        assert ping(veth).returncode == 0
        assert read_counter(xh, veth) >= n0 + 3

        # e) the state: the same, or rebuilt true to the kernel
        now = state_records(xh)
        if exp.state == "same":
            assert now == records, out
        else:
            assert now[key(c)][:3] == records[key(c)][:3], out  # prog id, fingerprint, names
            from xdphooks import state as st
            _, warn = st.load(state_file(xh), xh.pin_root)
            assert warn == "", warn  # what was written is sound
        if exp.check:
            exp.check(c, proc)

        # f) nothing outside xdphooks' trees touched
        assert sentinel.read_text() == "untouched"
    finally:
        for fn in reversed(c.undo):
            fn()
        c.undo.clear()
        for pair in c.pairs:
            destroy_veth_pair(pair.ns_a, pair.ns_b)

    # ... and converges again once the hostile file is gone
    again = xh.run("reconcile")
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    assert "warning" not in again.stderr, again.stderr
    assert attached_id(veth.ns_a, veth.dev_a) == pid
    assert state_records(xh)[key(c)][:3] == records[key(c)][:3]
    assert len(CASES) >= 25


# --- the validation is generic over the records' fields (no kernel needed) -----------------


def _sound_state() -> dict:
    from dataclasses import asdict

    from xdphooks import state as st

    prog = st.ProgramRecord(name="counter", plugin="good", priority=50, policy={}, object="/o.o",
                            program=None, digest="d", prog_id=7, slot=0)
    key = "ns1@veth0"
    rec = st.InterfaceRecord(netns="ns1", name="veth0", ifindex=3, mode="static", prog_id=7,
                             fingerprint="0123456789abcdef", generation=1,
                             pin_dir=f"/sys/fs/bpf/xdphooks/if/{key}/g1-0123456789abcdef",
                             xdp_mode="native", programs=[prog],
                             pins={f"if/{key}/g1-0123456789abcdef/root": 7})
    return asdict(st.State(generation=1, interfaces={key: rec}))


def _wrong(tp) -> Any:
    """A JSON value that is not of annotation ``tp``."""
    import typing

    origin = typing.get_origin(tp)
    if origin is dict:
        return ["a", "list"]
    if origin is list:
        return {"a": "table"}
    return {str: 5, int: "5", float: "five", bool: "yes"}.get(tp, {"x": 1})


@pytest.mark.parametrize("cls_name", ["InterfaceRecord", "ProgramRecord"])
def test_every_record_field_is_type_checked(tmp_path, cls_name):
    """Each field of the records, today's and any added later, rejects a value of the
    wrong type: the record is dropped with one warning naming the file and the field."""
    import dataclasses
    import typing

    from xdphooks import state as st

    cls = getattr(st, cls_name)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_sound_state()))
    assert st.load(path)[1] == ""  # the sound one is sound
    hints = typing.get_type_hints(cls)
    checked = 0
    for f in dataclasses.fields(cls):
        if hints[f.name] is Any:
            continue
        data = _sound_state()
        rec = data["interfaces"]["ns1@veth0"]
        (rec if cls_name == "InterfaceRecord" else rec["programs"][0])[f.name] = \
            _wrong(hints[f.name])
        path.write_text(json.dumps(data))
        loaded, warn = st.load(path)
        assert loaded.interfaces == {}, f.name
        assert str(path) in warn and f.name in warn and " fix: " in warn, (f.name, warn)
        checked += 1
    assert checked == len(dataclasses.fields(cls))
