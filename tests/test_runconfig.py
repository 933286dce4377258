"""libxdp .xdp_run_config metadata and XDP program listing."""

from __future__ import annotations

import os

import pytest

from conftest import build_test_object
from xdphooks.errors import ObjectError
from xdphooks.runconfig import RunConfig, list_xdp_programs, read_run_config

XDPFILT = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_udp.o"


def test_xdp_tools_object():
    if not os.path.exists(XDPFILT):
        pytest.skip("xdp-tools objects not installed")
    assert list_xdp_programs(XDPFILT) == ["xdpfilt_dny_udp"]
    assert read_run_config(XDPFILT, "xdpfilt_dny_udp") == RunConfig(10, ("pass",))


def test_own_object():
    obj = str(build_test_object("static_runcfg"))
    assert list_xdp_programs(obj) == ["xdp_cfg_a", "xdp_cfg_b"]
    assert read_run_config(obj, "xdp_cfg_a") == RunConfig(7, ("drop", "pass"))
    assert read_run_config(obj, "xdp_cfg_b") == RunConfig(None, ())
    assert read_run_config(obj, "other") is None


def test_no_metadata_and_listing():
    obj = str(build_test_object("static_two"))
    assert read_run_config(obj, "xdp_first") is None
    assert list_xdp_programs(obj) == ["xdp_first", "xdp_second"]


def test_corrupt(tmp_path):
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"not an elf at all")
    with pytest.raises(ObjectError):
        read_run_config(str(bad), "x")
    with pytest.raises(ObjectError):
        list_xdp_programs(str(bad))
    data = bytearray(build_test_object("static_runcfg").read_bytes())
    i = data.find(b"\x9f\xeb\x01")  # BTF header: corrupt the type length
    data[i + 12: i + 16] = b"\xff\xff\xff\x00"
    (tmp_path / "c.o").write_bytes(bytes(data))
    with pytest.raises(ObjectError):
        read_run_config(str(tmp_path / "c.o"), "xdp_cfg_a")
