"""The kernel matrix's own checks, run in every VM kernel (tests/test_vm_harness.py):
``xdphooks doctor`` reports every capability, probed on the running kernel, and a feature
the kernel lacks is refused in one sentence naming the kernel and the alternative, the
chain that ran before still running. Where the kernel has the feature, the same test
checks that it works instead: each test asserts on every kernel.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import one_program, sh  # noqa: E402
from freplace_support import vm_only  # noqa: E402

from xdphooks.capabilities import capabilities  # noqa: E402

pytestmark = [pytest.mark.kernel, *vm_only]

#: every capability doctor must report (docs/kernels.md's probe rows)
EXPECTED = {"btf", "freplace", "fentry_on_bpf", "frags", "adjust_meta", "xdp_get_buff_len",
            "xdp_load_bytes", "corpus_kfuncs"}


def _release_tuple() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def caps(tmp_path_factory):
    return capabilities(tmp_path_factory.mktemp("probe"))


def test_doctor_reports_every_capability(xh, caps):
    proc = xh.run("doctor", check=False)
    for name in EXPECTED:
        lines = [ln for ln in proc.stdout.splitlines() if f"capability {name}:" in ln]
        assert len(lines) == 1, f"doctor has no single line for {name}:\n{proc.stdout}"
        assert (" yes — " in lines[0]) == caps[name][0], (lines[0], caps[name])
    data = json.loads(xh.run("doctor", "--capabilities-json").stdout)
    assert data["kernel"] == platform.release()
    assert set(data["capabilities"]) == EXPECTED
    print(json.dumps(data, indent=1))  # evidence for -rA


def test_probes_agree_with_the_kernel_version(caps):
    # Facts of upstream Linux, so a probe that answers wrongly fails here: multi-buffer
    # XDP came in 5.18, bpf_xdp_get_buff_len with it; freplace of XDP and fentry on BPF
    # programs (with BTF) are in every kernel of the matrix (5.10 and later).
    new = _release_tuple() >= (5, 18)
    assert caps["frags"][0] == new, caps["frags"]
    assert caps["xdp_get_buff_len"][0] == new, caps["xdp_get_buff_len"]
    assert caps["xdp_load_bytes"][0] == new, caps["xdp_load_bytes"]
    for name in ("btf", "freplace", "fentry_on_bpf"):
        assert caps[name][0], (name, caps[name])


@pytest.mark.parametrize("mode", ["static", "freplace"])
def test_multi_buffer_works_or_is_refused_naming_the_kernel(xh, veth, bpf_obj, caps, mode):
    """A chain of one SEC("xdp.frags") program on a jumbo-MTU veth (native XDP)."""
    xh.write_config(f'mode = "{mode}"\n')
    for dev, ns in ((veth.dev_a, veth.ns_a), (veth.dev_b, veth.ns_b)):
        sh("ip", "-n", ns, "link", "set", dev, "mtu", "9000")
    # no helper of its own (frags_count's bpf_xdp_get_buff_len is 5.18 too): what a kernel
    # without multi-buffer XDP refuses is the MTU, not the program
    xh.add_object(bpf_obj("frags_pass"), "frags_pass.o")
    xh.add_plugin("jumbo", one_program("jumbo", "frags_pass.o", 20, veth.iface))
    proc = xh.run("reconcile", check=False)
    out = proc.stdout + proc.stderr
    if caps["frags"][0]:
        assert proc.returncode == 0, out
        assert veth.attached_id(), out
        return
    # refused: one sentence naming this kernel, what it lacks and the alternative
    lines = [ln for ln in proc.stderr.splitlines() if platform.release() in ln]
    assert proc.returncode != 0, out
    assert lines, out
    assert "multi-buffer XDP" in lines[0] and "5.18" in lines[0] and " fix: " in lines[0], out
    assert "Traceback" not in out
    assert not veth.attached_id(), "nothing attached"
    print(lines[0])  # evidence for -rA
