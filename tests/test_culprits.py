"""Issue 22 item 2: when a chain cannot be built, the failure names the culprit.

A linked chain the kernel or libbpf refuses used to read "the verifier rejected the
rootlet" or "cannot open BPF object …/root0.o (EOPNOTSUPP)", naming no plugin. Each
kind of fault below is put in one plugin's object beside a good plugin that runs:
reconcile must fail with ONE line naming the plugin, the program and the object, the
offending map/kfunc/section/instruction and the fix, and the chain that ran before
must stay attached and counting. Static on the host; freplace in the VM.

Objects: tests/bpf/cul_*.bpf.c and ms_unsized.bpf.c; corrupt code and relocations are
count_pass.bpf.o with one field changed by ``corrupt`` below.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conftest import BUILD, build_test_object, mode_config, one_program
from freplace_support import both_modes
from xdphooks import precheck

# --- corrupting a good object, one field at a time ---------------------------------------------


def _sections(data: bytes) -> dict[str, tuple[int, int]]:
    """{section name: (file offset, size)} of an ELF64 little-endian object."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = {}
    for h in hdrs:
        end = data.index(b"\0", stroff + h[0])
        out[data[stroff + h[0]:end].decode()] = (h[4], h[5])
    return out


def corrupt(src: Path, kind: str) -> Path:
    """A copy of count_pass.bpf.o with one fault: ``opcode`` (instruction 2 becomes
    opcode 0xff), ``last_insn`` (the final exit becomes r0 = 0), ``relocation`` (the map
    relocation moved to instruction 0, a mov)."""
    data = bytearray(src.read_bytes())
    secs = _sections(bytes(data))
    code_off, code_len = secs["xdp"]
    if kind == "opcode":
        data[code_off + 2 * 8] = 0xFF
    elif kind == "last_insn":
        assert data[code_off + code_len - 8] == 0x95
        data[code_off + code_len - 8] = 0xB7
    elif kind == "relocation":
        rel_off, _ = secs[".relxdp"]
        struct.pack_into("<Q", data, rel_off, 0)
    else:
        raise ValueError(kind)
    out = BUILD / f"corrupt_{kind}.bpf.o"
    out.write_bytes(bytes(data))
    return out


# --- the cases --------------------------------------------------------------------------------

#: kind -> (object builder, program, what the one line must say); every line must also
#: name the plugin, the program and the object and carry a fix
CASES = {
    "unsized_map": (lambda: build_test_object("ms_unsized"), "ms_count",
                    ["map(s) ms_hits, ms_lens declare no max_entries",
                     "maps={\"ms_hits\": {\"max_entries\": N}"]),
    "missing_kfunc": (lambda: build_test_object("cul_kfunc"), "cul_kfunc",
                      ["calls kfunc bpf_xdp_flow_lookup, which this kernel"]),
    "legacy_maps": (lambda: build_test_object("cul_legacy"), "cul_legacy",
                    ["defines maps the legacy way (struct bpf_map_def in SEC(\"maps\"): "
                     "legacy_cnt), which libbpf 1.x refuses", "SEC(\".maps\")"]),
    "bad_opcode": (lambda: corrupt(build_test_object("count_pass"), "opcode"), "count_pass",
                   ["instruction 2 of section 'xdp' (byte 16) has opcode 0xff",
                    "unknown opcode ff"]),
    "last_insn": (lambda: corrupt(build_test_object("count_pass"), "last_insn"), "count_pass",
                  ["the last instruction of section 'xdp' (#11, opcode 0xb7) is neither an "
                   "exit nor a jump"]),
    "bad_relocation": (lambda: corrupt(build_test_object("count_pass"), "relocation"),
                       "count_pass",
                       ["relocation #0 of section 'xdp' (against 'pkt_count') applies to "
                        "instruction 0 (opcode 0xb7), which takes no relocation",
                        "LIBBPF_ERRNO 4005"]),
}


def _errors(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if "error:" in ln]


def _ping(veth, n: int = 3) -> bool:
    return veth.exec_b("ping", "-c", str(n), "-i", "0.05", "-W", "1", veth.ip_a,
                       check=False).returncode == 0


def _good_count(xh) -> int:
    from xdphooks.kernel import libbpf

    with libbpf.fd_closing(libbpf.obj_get(str(xh.bpffs / "xdphooks/maps/good/pkt_count"))) \
            as fd:
        return struct.unpack("<Q", libbpf.map_lookup(fd, bytes(4), 8))[0]


def _refused(xh, veth, plugin: str, program: str, obj: str, says: list[str]) -> str:
    """reconcile fails with one line naming all of it; the good chain runs on."""
    pid = veth.attached_id()
    before = _good_count(xh)
    proc = xh.run("reconcile", check=False)
    errs = _errors(proc)
    assert proc.returncode == 1 and len(errs) == 1, proc.stdout + proc.stderr
    line = errs[0]
    for want in [f"plugin {plugin!r}", repr(program), obj, " fix: ", *says]:
        assert want in line, f"{want!r} not in: {line}"
    assert "rootlet" not in line and "root0.o" not in line, line
    assert veth.attached_id() == pid
    assert _ping(veth) and _good_count(xh) >= before + 3  # the old chain counts on
    return line


@both_modes
@pytest.mark.parametrize("kind", sorted(CASES))
def test_failure_names_the_culprit(xh, veth, mode, kind):
    build, program, says = CASES[kind]
    obj = build()
    if kind == "missing_kfunc" and precheck.kernel_has("bpf_xdp_flow_lookup"):
        pytest.fail("this kernel has bpf_xdp_flow_lookup in its BTF (nf_flow_table loaded): "
                    "the case needs a kernel without it")
    xh.write_config(mode_config(mode))
    xh.add_object(build_test_object("count_pass"), "count_pass.o")
    xh.add_plugin("good", one_program("good", "count_pass.o", 10, veth.iface))
    xh.run("reconcile")
    assert _ping(veth)
    name = f"{kind}.bpf.o"
    xh.add_object(obj, name)
    xh.add_plugin("culprit", one_program("bad", name, 20, veth.iface,
                                         f"program={program!r}"))
    line = _refused(xh, veth, "culprit", program, name, says)
    print(f"{kind} ({mode}): {line}")


def test_no_license_section_is_named(xh, veth):
    """Static only (an extension needs no GPL licence of its own)."""
    xh.write_config(mode_config("static"))
    xh.add_object(build_test_object("count_pass"), "count_pass.o")
    xh.add_plugin("good", one_program("good", "count_pass.o", 10, veth.iface))
    xh.run("reconcile")
    xh.add_object(build_test_object("cul_nolicense"), "nolic.bpf.o")
    xh.add_plugin("culprit", one_program("bad", "nolic.bpf.o", 20, veth.iface))
    line = _refused(xh, veth, "culprit", "cul_nolicense", "nolic.bpf.o",
                    ["has no license section (SEC(\"license\")", 'mode = "freplace"'])
    assert "licence no licence" not in line
    print(line)


def test_precheck_passes_good_objects(bpf_obj):
    """No false alarm on objects that load: the test objects, xdp-tools' and the corpus's."""
    from conftest import entry

    objs = [bpf_obj(n) for n in ("count_pass", "const_cfg", "tail_dispatch", "global_seen",
                                 "devmap_fwd", "frags_count")]
    objs += sorted(Path("/usr/lib/x86_64-linux-gnu/bpf").glob("xdpfilt_*.o"))
    assert len(objs) > 8
    for o in objs:
        precheck.check(str(o), entry("x", o))
