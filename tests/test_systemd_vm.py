"""Boot, hotplug and offline installs under a real systemd (PID 1), in a qemu
VM booted from a debootstrapped Debian 12 root (tests/systemd_vm.py).

Per kernel (XDPHOOKS_SYSTEMD_VM_KERNELS, default "6.1 6.12"), two VMs:

- online: boot 1 installs the framework and sample plugin .debs with apt,
  blocks an address in the firewall's pinned map, hotplugs a veth (its chain
  must come from udev + xdphooks-hotplug@.service alone) and removes it (no
  pins may remain), then reboots; boot 2 checks that xdphooks.service
  restored the chain before network-pre/network-online.target, and what
  became of the pinned map (bpffs is a fresh mount each boot).
- offline (twice): the packages are installed into a copy of the root that is
  not running, once with ``dpkg --root`` (.debs), once with ``dnf --installroot``
  (.rpms); the first boot of each must have the chain.

The guest (tests/vm/systemd/guest.sh) only acts and collects; the asserts
are here. A missing capability fails under XDPHOOKS_REQUIRE_VM.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import pytest

import systemd_vm as vm
from pkg_support import build

KERNELS = os.environ.get("XDPHOOKS_SYSTEMD_VM_KERNELS", "6.1 6.12").split()
BOOT_TIMEOUT = float(os.environ.get("XDPHOOKS_SYSTEMD_VM_TIMEOUT", "600"))
HOST_LOCK = "/tmp/xdphooks-host.lock"
PACKAGES = ("xdphooks", "xdphooks-firewall", "xdphooks-counter")
OFFLINE = ("deb", "rpm")  # offline installs: dpkg --root, dnf --installroot
CONFIG = 'default_interfaces = ["xhboot0", "xhdyn*"]\n'
GUEST = vm.RECIPE_DIR / "guest.sh"
FIXTURE = vm.RECIPE_DIR / "xh-bootnet.service"
BLOCKED = "192.0.2.7"


def _require_vm() -> None:
    why = vm.missing_tool()
    if why:
        if os.environ.get("XDPHOOKS_REQUIRE_VM"):
            pytest.fail(f"SYSTEMD VM TESTS CANNOT RUN: {why}")
        pytest.skip(f"SYSTEMD VM TESTS SKIPPED: {why}")


def _packages() -> dict[str, dict[str, Path]]:
    """{"deb"|"rpm": {package: path}}, built on the host under the lock the package
    tests share."""
    with open(HOST_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = build()
    return {fmt: {n: built[fmt][n] for n in PACKAGES} for fmt in ("deb", "rpm")}


def _job_disk(work: Path, scenario: str, debs: dict[str, Path], tag: str = "") -> Path:
    job = work / f"job-{tag or scenario}"
    (job / "out").mkdir(parents=True)
    (job / "debs").mkdir()
    (job / "scenario").write_text(scenario + "\n")
    shutil.copy(GUEST, job / "agent.sh")
    shutil.copy(FIXTURE, job / "xh-bootnet.service")
    (job / "xdphooks.toml").write_text(CONFIG)
    if scenario == "online":
        for p in debs.values():
            shutil.copy(p, job / "debs")
    image = work / f"{job.name}.img"
    vm.make_disk(job, image, "256M", "xhjob")
    return image


def _offline_root(work: Path, rootfs: Path, fmt: str, pkgs: dict[str, Path]) -> Path:
    """A copy of the root with the packages installed while it does not run."""
    root = work / f"offline-{fmt}-root"
    vm.run("cp", "-a", "--reflink=auto", str(rootfs), str(root))
    (root / "etc/xdphooks").mkdir(parents=True)
    (root / "etc/xdphooks/xdphooks.toml").write_text(CONFIG)
    shutil.copy(FIXTURE, root / "etc/systemd/system")
    (root / "etc/systemd/system/sysinit.target.wants").mkdir(exist_ok=True)
    os.symlink("/etc/systemd/system/xh-bootnet.service",
               root / "etc/systemd/system/sysinit.target.wants/xh-bootnet.service")
    # Both run the packages' scripts chrooted into the root (no /proc there: the
    # framework records "pending" instead of touching the kernel).
    if fmt == "deb":
        argv = ["dpkg", f"--root={root}", "-i"]
    else:  # the host's dnf; the root's rpmdb starts empty (its python3 is a .deb)
        argv = ["dnf", "-y", f"--installroot={root}", "--setopt=reposdir=/nonexistent",
                "--setopt=install_weak_deps=False", "--releasever=12", "--noplugins",
                "install"]
    proc = vm.run(*argv, *map(str, pkgs.values()), env=vm.CLEAN_ENV)
    (work / f"offline-{fmt}.log").write_text(proc.stdout + proc.stderr)
    return root


def _boot(kernel: str, work: Path, root_image: Path, job_image: Path, tag: str) -> dict:
    run = vm.boot(kernel, root_image, job_image, work / f"{tag}-console.log", BOOT_TIMEOUT)
    out = vm.read_out(job_image, work / f"{tag}-result")
    return {"run": run, "out": out}


@pytest.fixture(scope="module", params=KERNELS)
def vms(request, tmp_path_factory):
    """The VMs of one kernel (online, offline .deb, offline .rpm), run once; the tests
    below read their results."""
    _require_vm()
    kernel = request.param
    vm.kernel(kernel)
    work = Path(f"/tmp/xh-systemd-vm-{kernel}-{uuid.uuid4().hex[:6]}")
    work.mkdir(mode=0o700)
    try:
        cache = vm.cached_root()
        pkgs = _packages()
        timings = {"rootfs_build_s": cache.build_seconds}
        t = vm.time.monotonic()
        vm.make_disk(cache.rootfs, work / "online.img", "1536M", "xhroot")
        timings["mkfs_root_s"] = vm.time.monotonic() - t
        online = _boot(kernel, work, work / "online.img",
                       _job_disk(work, "online", pkgs["deb"]), "online")
        timings["online_qemu_s"] = online["run"].seconds
        offline = {}
        for fmt in OFFLINE:
            t = vm.time.monotonic()
            root = _offline_root(work, cache.rootfs, fmt, pkgs[fmt])
            pending = root / "var/lib/xdphooks/pending"
            pending_before = json.loads(pending.read_text()) if pending.exists() else None
            enabled = (root / "etc/systemd/system/multi-user.target.wants/xdphooks.service"
                       ).is_symlink()
            vm.make_disk(root, work / f"offline-{fmt}.img", "1536M", "xhroot")
            timings[f"offline_{fmt}_install_and_mkfs_s"] = vm.time.monotonic() - t
            shutil.rmtree(root)
            offline[fmt] = _boot(kernel, work, work / f"offline-{fmt}.img",
                                 _job_disk(work, "offline", {}, f"offline-{fmt}"),
                                 f"offline-{fmt}")
            offline[fmt] |= {"pending_before_boot": pending_before, "enabled": enabled}
            timings[f"offline_{fmt}_qemu_s"] = offline[fmt]["run"].seconds
        sys.stderr.write(f"\n--- systemd VM, kernel {kernel}: {json.dumps(timings)} ---\n")
        (work / "timings.json").write_text(json.dumps(timings))
        yield {"kernel": kernel, "work": work, "online": online, "offline": offline,
               "timings": timings}
    finally:
        for img in work.glob("*.img"):
            img.unlink()  # the results and console logs stay for a post-mortem


# --- reading the guest's results ---------------------------------------------


def _file(res: dict, name: str) -> str:
    path = res["out"] / name
    if not path.exists():
        log = res["out"] / "agent.log"
        raise AssertionError(
            f"guest did not write {name} (qemu exit {res['run'].returncode}, "
            f"{res['run'].seconds:.0f} s)\nagent.log:\n"
            f"{log.read_text()[-3000:] if log.exists() else '(none)'}\n"
            f"console tail:\n{res['run'].console[-4000:]}")
    return path.read_text()


def _json(res: dict, name: str):
    return json.loads(_file(res, name))


def _journal(res: dict, name: str) -> list[dict]:
    return [json.loads(ln) for ln in _file(res, name).splitlines() if ln.strip()]


def _xdp_prog(res: dict, prefix: str, ifname: str) -> int | None:
    for link in _json(res, f"{prefix}-links.json"):
        if link["ifname"] == ifname:
            xdp = link.get("xdp") or {}
            return xdp.get("prog", {}).get("id") or \
                (xdp.get("attached") or [{}])[0].get("prog", {}).get("id")
    raise AssertionError(f"{ifname} not in the guest's links ({prefix})")


def _chain(res: dict, prefix: str, iface: str) -> list[str]:
    status = _json(res, f"{prefix}-status.json")
    for entry in status["interfaces"]:
        if entry["name"] == iface and not entry["netns"]:
            assert entry["attached"], entry
            return [p["name"] for p in entry["programs"]]
    return []


def _units(res: dict, prefix: str) -> dict[str, dict[str, str]]:
    units = {}
    for block in _file(res, f"{prefix}-units.txt").split("\n\n"):
        props = dict(ln.split("=", 1) for ln in block.splitlines() if "=" in ln)
        if props:
            units[props["Id"]] = props
    return units


def _startup(res: dict, prefix: str) -> str:
    return _file(res, f"{prefix}-analyze.txt").strip().splitlines()[0]


# --- the tests ------------------------------------------------------------------


@pytest.mark.slow
def test_online_install_then_reboot_restores_chain(vms):
    on = vms["online"]
    assert _file(on, "b1-pid1.txt").strip() == "systemd"
    assert _file(on, "b1-apt.rc").strip() == "0", _file(on, "b1-apt.log")[-3000:]
    assert _file(on, "b1-enabled.txt").strip() == "enabled"
    assert _file(on, "b1-uname.txt").startswith(vms["kernel"] + ".")
    # apt's postinst/trigger attached the chain while xh-bootnet's veth was up.
    assert _xdp_prog(on, "b1", "xhboot0")
    assert _chain(on, "b1", "xhboot0") == ["firewall", "counter"]
    assert json.loads(_file(on, "b1-blocklist.json")) == [BLOCKED]

    # Boot 2: nothing ran but systemd; the chain is back.
    assert _file(on, "b2-pid1.txt").strip() == "systemd"
    assert _xdp_prog(on, "b2", "xhboot0")
    assert _chain(on, "b2", "xhboot0") == ["firewall", "counter"]
    units = _units(on, "b2")
    xh = units["xdphooks.service"]
    assert (xh["ActiveState"], xh["Result"], xh["ExecMainStatus"]) == ("active", "success", "0")
    done = int(xh["ActiveEnterTimestampMonotonic"])
    for target in ("network-pre.target", "network.target", "network-online.target"):
        t = int(units[target]["ActiveEnterTimestampMonotonic"])
        assert t and done <= t, f"xdphooks.service active at {done} µs, {target} at {t} µs"
    order = _file(on, "b2-order.txt")
    assert "network-pre.target" in re.search(r"^Before=(.*)$", order, re.M).group(1)
    # The boot unit made the change, recorded with trigger=boot.
    hist = [json.loads(ln) for ln in _file(on, "b2-history.json").splitlines() if ln.strip()]
    assert {"action": "attach", "interface": "xhboot0", "trigger": "boot"}.items() <= \
        hist[-1].items(), hist[-3:]


@pytest.mark.slow
def test_pinned_map_contents_do_not_survive_reboot(vms):
    """A clear record: bpffs is a fresh mount at every boot, so the firewall's
    pinned blocklist comes back empty (a new map), not with boot 1's entry."""
    on = vms["online"]
    assert json.loads(_file(on, "b1-blocklist.json")) == [BLOCKED]
    assert json.loads(_file(on, "b2-blocklist.json")) == []
    assert "/sys/fs/bpf/xdphooks/maps/firewall/blocklist" in _file(on, "b2-pins.txt")


@pytest.mark.slow
def test_udev_hotplug_attaches_and_removal_leaves_no_pins(vms):
    on = vms["online"]
    assert _file(on, "hp-add-wait.txt").strip() != "timeout", "hotplugged veth got no chain"
    assert _xdp_prog(on, "hp-add", "xhdyn-0")
    assert _chain(on, "hp-add", "xhdyn-0") == ["firewall", "counter"]
    assert "/sys/fs/bpf/xdphooks/if/-@xhdyn-0" in _file(on, "hp-add-pins.txt")
    assert "Result=success" in _file(on, "hp-add-unit.txt")
    assert _file(on, "hp-del-wait.txt").strip() != "timeout", \
        "pins left after the interface went:\n" + _file(on, "hp-del-pins.txt")
    assert "@xhdyn-0" not in _file(on, "hp-del-pins.txt")
    # The peer matches no pattern: left alone.
    assert "@xhdyp0" not in _file(on, "hp-add-pins.txt")
    # udev renamed veth0 to xhdyn-ren (a .link file): the chain follows the new name.
    names = [ln["ifname"] for ln in _json(on, "hp-ren-links.json")]
    assert "xhdyn-ren" in names, f"udev did not rename veth0: {names}"
    assert _file(on, "hp-ren-wait.txt").strip() != "timeout", "renamed device got no chain"
    assert _chain(on, "hp-ren", "xhdyn-ren") == ["firewall", "counter"]
    recs = [r for r in _journal(on, "hp-journal.json") if r.get("XDPHOOKS_ACTION")]
    assert any(r["XDPHOOKS_ACTION"] == "attach" and r["XDPHOOKS_INTERFACE"] == "xhdyn-0"
               and r["XDPHOOKS_TRIGGER"] == "udev"
               and r["_SYSTEMD_UNIT"] == "xdphooks-hotplug@xhdyn-0.service" for r in recs), recs


@pytest.mark.slow
@pytest.mark.parametrize("fmt", OFFLINE)
def test_offline_install_chain_on_first_boot(vms, fmt):
    off = vms["offline"][fmt]
    pending = off["pending_before_boot"]
    assert pending and pending["why"] == "chroot install", pending
    assert pending["trigger"].startswith("dpkg" if fmt == "deb" else "rpm"), pending
    assert off["enabled"], f"the {fmt} install did not enable xdphooks.service"
    assert _file(off, "f1-pid1.txt").strip() == "systemd"
    assert _xdp_prog(off, "f1", "xhboot0")
    assert _chain(off, "f1", "xhboot0") == ["firewall", "counter"]
    assert "pending" not in _file(off, "f1-statedir.txt")
    xh = _units(off, "f1")["xdphooks.service"]
    assert (xh["ActiveState"], xh["Result"]) == ("active", "success")


@pytest.mark.slow
def test_journal_has_structured_change_records(vms):
    for res, prefix in ((vms["online"], "b2"), *((o, "f1") for o in vms["offline"].values())):
        recs = _journal(res, f"{prefix}-journal-unit.json")
        changes = [r for r in recs if r.get("XDPHOOKS_ACTION")]
        assert changes, "journalctl -u xdphooks has no change record:\n" + \
            _file(res, f"{prefix}-journal-unit.txt")
        rec = changes[-1]
        assert rec["SYSLOG_IDENTIFIER"] == "xdphooks"
        assert rec["_SYSTEMD_UNIT"] == "xdphooks.service"
        assert (rec["XDPHOOKS_ACTION"], rec["XDPHOOKS_INTERFACE"], rec["XDPHOOKS_TRIGGER"]) \
            == ("attach", "xhboot0", "boot")
        assert rec["PRIORITY"] == "5"
    # After the reboot: the chain came back from the state, its maps did not (bpffs is
    # empty at boot), and the record says so. Its programs came with no package.
    b2 = [r for r in _journal(vms["online"], "b2-journal-unit.json") if r.get("XDPHOOKS_ACTION")]
    assert "these maps start empty: " in b2[-1]["MESSAGE"] \
        and "firewall/blocklist" in b2[-1]["MESSAGE"], b2[-1]["MESSAGE"]
    assert "XDPHOOKS_PACKAGES" not in b2[-1]
    # The offline install's first boot brought the packages' programs in: they are named
    # (by dpkg; the Debian image has no rpm command to ask about the .rpm install's).
    f1 = [r for r in _journal(vms["offline"]["deb"], "f1-journal-unit.json")
          if r.get("XDPHOOKS_ACTION")]
    assert "xdphooks-firewall" in f1[-1].get("XDPHOOKS_PACKAGES", ""), f1[-1]
    # apt's run in boot 1 was recorded too, with dpkg's package in the fields.
    b1 = [r for r in _journal(vms["online"], "b1-journal-all.json") if r.get("XDPHOOKS_ACTION")]
    assert any(r["XDPHOOKS_TRIGGER"].startswith("dpkg") for r in b1), b1


@pytest.mark.slow
def test_boot_times_reported(vms):
    """Not a speed test: records the figures (shown with -rA / in CI logs)."""
    t = vms["timings"]
    lines = [f"kernel {vms['kernel']}: {json.dumps(t)}",
             "online boot 2: " + _startup(vms["online"], "b2"),
             *(f"offline {fmt} boot 1: " + _startup(o, "f1")
               for fmt, o in vms["offline"].items()),
             "journalctl -u xdphooks (online boot 2):",
             _file(vms["online"], "b2-journal-unit.txt").strip()]
    sys.stderr.write("\n".join(lines) + "\n")
    for res in (vms["online"], *vms["offline"].values()):
        assert res["run"].returncode == 0, res["run"].console[-3000:]
