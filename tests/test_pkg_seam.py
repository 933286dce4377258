"""The package-manager seam (xdphooks/pkg/): what callers ask it without a package
transaction. The real dpkg and rpm transactions are in test_pkg_deb.py,
test_pkg_rpm.py and test_verify.py; the dpkg index cache in test_provenance_cache.py."""

from __future__ import annotations

import hashlib
import os

import pytest

from xdphooks import eventlog, pkg
from xdphooks.pkg import dpkg, rpm


def test_each_manager_is_known_once_by_its_record_name():
    assert [m.NAME for m in pkg._known()] == ["deb", "rpm"]  # dpkg first: its index is in memory
    assert pkg.manager("deb") is dpkg and pkg.manager("rpm") is rpm
    assert pkg.manager("deb").reinstall_command("fw") == "apt-get install --reinstall fw"
    assert pkg.manager("rpm").reinstall_command("fw") == "dnf reinstall fw"


@pytest.mark.parametrize("trigger,ours", [
    ("rpm", True), ("rpm-posttrans", True), ("dpkg-configure", True), ("dpkg-triggered", True),
    ("boot", False), ("udev", False), ("manual", False)])
def test_package_triggers_are_the_managers_own(trigger, ours):
    assert pkg.is_package_trigger(trigger) is ours


def test_transaction_context_names_each_managers_variables(monkeypatch):
    for var in ("DPKG_MAINTSCRIPT_PACKAGE", "DPKG_RUNNING_VERSION", "RPM_PACKAGE_NAME",
                "SUDO_USER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RPM_PACKAGE_NAME", "fw")
    monkeypatch.setenv("DPKG_MAINTSCRIPT_PACKAGE", "lb")
    assert eventlog.transaction_context("rpm") == {
        "trigger": "rpm", "dpkg_package": "lb", "rpm_package": "fw"}


@pytest.mark.parametrize("root,why", [("", ""), ("/", ""), ("/target", "DPKG_ROOT=/target")])
def test_an_offline_root_is_dpkgs_DPKG_ROOT(monkeypatch, root, why):
    monkeypatch.setenv("DPKG_ROOT", root)
    assert pkg.offline_root() == why


def test_outside_a_maintainer_script_nothing_is_deferred(monkeypatch):
    monkeypatch.delenv("DPKG_MAINTSCRIPT_PACKAGE", raising=False)
    assert pkg.defer("manual") is None
    monkeypatch.setenv("DPKG_MAINTSCRIPT_PACKAGE", "xdphooks")  # our own scripts never defer
    assert pkg.defer("manual") is None


def test_a_file_no_package_owns_has_no_record(tmp_path):
    f = tmp_path / "xdphooks" / "free.o"
    f.parent.mkdir()
    f.write_bytes(b"\x7fELF")
    assert pkg.record(str(f)) is None
    assert pkg.file_hash(str(f), "md5") == hashlib.md5(b"\x7fELF").hexdigest()
    fifo = tmp_path / "xdphooks" / "fifo.o"
    os.mkfifo(fifo)  # where a package's object was: no digest, and no hang
    assert pkg.file_hash(str(fifo), "md5") is None
