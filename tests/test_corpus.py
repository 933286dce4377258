"""Differential test over a public corpus of XDP programs written by others
(tests/corpus/, provenance in tests/corpus/PROVENANCE.md).

Every program runs the same packets (tests/corpus_packets.py) three ways on the same
kernel: standalone (loaded by libbpf as its own loader would), chained alone, and
chained between two PASS-everything programs. Return values and output bytes must be
identical. The static backend runs on the host; the freplace backend in the VM
(tests/vm/run-in-vm.sh, which tests/test_vm_harness.py boots).

Programs that cannot be chained yet carry an ``Expect`` in tests/corpus_support.py:
the test asserts the exact reason, and fails ("XPASS") once the program chains, so the
entry is removed when the fix lands.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from conftest import build_test_object, require_kernel
from corpus_packets import PACKETS
from corpus_support import CASES, CORPUS, PASS_OBJ, Case, describe, run_chained, run_standalone
from freplace_support import vm_only
from xdphooks.errors import XdphooksError

XDP = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}

#: What some programs do to some packets standalone, so a setup hook that silently
#: did nothing (or a program that never leaves its PASS path) cannot make the
#: comparison vacuous.
SPOT_CHECKS = {
    "xdp_tx": {"udp4": XDP["tx"]},
    "adjust_tail_shrink": {"udp4": XDP["drop"], "tcp4_ack": XDP["tx"]},  # 54 B: too much
    "adjust_tail_grow": {"udp4_64": XDP["tx"], "udp4": XDP["drop"], "tcp4_ack": XDP["aborted"]},
    "test_xdp": {"tcp4_syn": XDP["tx"], "udp4": XDP["pass"]},
    "test_xdp_loop": {"tcp4_syn": XDP["tx"]},
    "vlan_drop_4011": {"vlan4011_udp4": XDP["aborted"], "vlan100_udp4": XDP["pass"]},
    "xdping_server": {"icmp4_echo": XDP["tx"]},
    "xdping_client": {"icmp4_reply": XDP["tx"]},
    "devmap_redir": {"udp4": XDP["redirect"]},
    "redirect_map_0": {"udp4": XDP["redirect"]},
    "tut_vlan01": {"vlan100_udp4": XDP["drop"], "udp4": XDP["pass"]},
    "xdpfilt_alw_all": {"udp4": XDP["drop"], "tcp4_syn": XDP["pass"]},
    "tut_redirect_map": {"udp4": XDP["redirect"]},
    "tut_icmp_echo": {"icmp4_echo": XDP["tx"]},
    "katran": {"tcp4_syn": XDP["tx"], "udp4": XDP["pass"]},
    "xdpfilt_dny_udp": {"udp4": XDP["pass"], "tcp4_syn": XDP["drop"]},
}
#: Programs whose output bytes differ from their input for some packet standalone.
REWRITES = {"adjust_tail_shrink", "test_xdp", "vlan_remove_outer", "xdping_server",
            "tut_patch_ports", "tut_vlan_swap", "katran"}


def _ids(cases):
    return [c.id for c in cases]


@pytest.fixture(scope="module")
def pass_obj():
    return build_test_object(PASS_OBJ)


def _differential(case: Case, backend, pass_obj) -> None:
    try:
        ref = run_standalone(case, PACKETS)
    except XdphooksError as e:
        if case.standalone is None and (helper := _refused_helper(e)):
            _same_refusal(case, backend, pass_obj, helper)
            return
        if case.standalone is None:
            # this kernel cannot load the object at all (one it predates, or one libbpf 1.1
            # cannot talk to): there is nothing to compare; chained it must be refused too
            _same_load_failure(case, backend, pass_obj, e)
            return
        raise
    assert any(o[0] == "ret" for o in ref.values()), f"{case.id}: no packet ran standalone"
    for pkt, want in SPOT_CHECKS.get(case.id, {}).items():
        assert ref[pkt][0] == "ret" and ref[pkt][1] == want, \
            f"{case.id} standalone on {pkt}: {describe(ref[pkt])}, expected ret={want}"
    if case.id in REWRITES:
        assert any(o[0] == "ret" and o[2] != PACKETS[k] for k, o in ref.items()), \
            f"{case.id} rewrote no packet standalone"
    for between in (False, True):
        got = run_chained(case, PACKETS, backend, between, pass_obj)
        where = "between two PASS programs" if between else "alone"
        diff = [f"{k}: standalone {describe(ref[k])}, chained {describe(got[k])}"
                + (" (same verdict, other bytes)" if got[k][:2] == ref[k][:2] else "")
                for k in PACKETS if got[k] != ref[k]]
        assert not diff, f"{case.id} chained {where} differs:\n" + "\n".join(diff)


#: How a kernel refuses a helper the program calls (kernels differ: 6.18 builds here refuse
#: bpf_xdp_adjust_meta in XDP programs; the 6.1 and 6.12 VMs allow it).
HELPER_REFUSED = re.compile(r"(?:program of this type cannot use helper|unknown func) (\w+)")


def _refused_helper(err: XdphooksError) -> str | None:
    """The helper this kernel refuses to the program, if that is why it did not load."""
    m = HELPER_REFUSED.search(getattr(err, "log", "") or "")
    return m.group(1) if m else None


def _same_refusal(case: Case, backend, pass_obj, helper: str) -> None:
    """The kernel refuses a helper the program needs: chained, it must be refused just as
    standalone, with one line naming the plugin, the function and the helper."""
    for between in (False, True):
        with pytest.raises(XdphooksError) as info:
            run_chained(case, PACKETS, backend, between, pass_obj)
        line = str(info.value)
        assert helper in line and case.program in line and "plugin 'corpus" in line, \
            f"{case.id}: chained failure does not name {helper}/{case.program}: {line}"
    print(f"{case.id}: this kernel ({os.uname().release}) refuses {helper} to XDP programs "
          f"standalone; chained it is refused alike: {line}")


def _same_load_failure(case: Case, backend, pass_obj, err: XdphooksError) -> None:
    """The kernel refuses the object's load itself, standalone -- sid's 7.2 with Debian 12's
    libbpf 1.1 answers EFAULT for test_xdp_noinline.o, whose functions take 6 arguments;
    5.10 has no bpf_xdp_ct_lookup for synproxy -- so chained it must be refused too, in one
    line naming the plugin and the function (the static splice gets the 7.2 verifier's own
    word: "callee expects 6 args")."""
    for between in (False, True):
        with pytest.raises(XdphooksError) as info:
            run_chained(case, PACKETS, backend, between, pass_obj)
        line = str(info.value)
        assert case.program in line and "plugin 'corpus" in line and "\n" not in line, \
            f"{case.id}: chained failure does not name {case.program}: {line}"
    print(f"{case.id}: this kernel ({os.uname().release}) refuses the object standalone "
          f"({err}); chained it is refused alike: {line}")


def _check(case: Case, backend, expect, pass_obj) -> None:
    if case.shipped and not case.object_path().exists():
        why = f"{case.object_path()} missing: install Debian's xdp-tools (libxdp1)"
        if os.environ.get("XDPHOOKS_REQUIRE_KERNEL"):
            pytest.fail(why)
        pytest.skip(why)
    if case.standalone is not None:
        expect = case.standalone
    if expect is None:
        _differential(case, backend, pass_obj)
        return
    try:
        _differential(case, backend, pass_obj)
    except XdphooksError as e:
        msg = re.sub(r"\s+", " ", str(e))
        assert re.search(expect.match, msg), \
            f"{case.id}: expected to fail because {expect.why} ({expect.match!r}), got: {msg}"
        pytest.xfail(f"{case.id}: {expect.why}: {msg}")
    pytest.fail(f"XPASS(strict) {case.id}: now chains identically in "
                f"{backend.__name__.rsplit('.', 1)[-1]}; remove its Expect in corpus_support.py")


@pytest.mark.kernel
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_static_matches_standalone(case, pass_obj):
    require_kernel()
    if case.vm_skip and os.environ.get("XDPHOOKS_IN_VM") == "1":
        # the kernel matrix runs the static cases in the VMs too: same reason as freplace
        pytest.skip(f"{case.id}: {case.vm_skip}")
    from xdphooks.backends import static
    _check(case, static, case.static, pass_obj)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
@vm_only[0]
@vm_only[1]
def test_freplace_matches_standalone(case, pass_obj):
    if case.vm_skip:
        pytest.skip(f"{case.id}: {case.vm_skip}")
    from xdphooks.backends import freplace
    _check(case, freplace, case.freplace, pass_obj)


def test_corpus_shape():
    """At least 12 vendored programs from others, 15 packets, and every vendored file has
    a PROVENANCE.md row whose sha256 matches (no local change), and every row a file."""
    assert len({(c.source.path, c.program) for c in CASES if c.source}) >= 12
    assert len(PACKETS) >= 15
    prov = (CORPUS / "PROVENANCE.md").read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{16})` \|$", prov, re.M))
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*")
             if p.is_file() and p.suffix in (".c", ".h") and not p.is_relative_to(CORPUS / "shim")}
    assert {c.source.path for c in CASES if c.source is not None} <= files
    assert files == set(rows), (f"files without a PROVENANCE.md row: {sorted(files - set(rows))}; "
                                f"rows without a file: {sorted(set(rows) - files)}")
    changed = [f for f, h in rows.items()
               if hashlib.sha256((CORPUS / f).read_bytes()).hexdigest()[:16] != h]
    assert not changed, f"vendored files differ from upstream (PROVENANCE.md): {changed}"
    for lic in set(re.findall(r"LICENSES/([\w.-]+)", prov)):
        assert (CORPUS / "LICENSES" / lic).is_file(), lic
