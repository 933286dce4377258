"""Mutation fuzzing of the object rewriter, the .xdp_run_config reader and inspect().

Real objects (tests/bpf, the sample plugins, xdp-tools' objects) are mutated
with bit flips, byte overwrites at random and at structurally interesting
offsets (ELF header, section headers, symbols, relocations, BTF and BTF.ext
headers and records, string tables), truncation, extension, lying section
sizes and duplicated/zeroed string tables. Every entry point the static
backend and the planner use must then either succeed or raise an
XdphooksError whose one-line message names the plugin and carries a fix —
nothing else, within a deadline and a memory budget.

CI runs 1000-1500 examples per target (well under a minute in all). For a long
hunt::

    XDPHOOKS_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import REPO, build_test_object
from xdphooks import inspect as inspect_mod
from xdphooks.errors import KernelError, ObjectError, XdphooksError
from xdphooks.link import elf as E
from xdphooks.link.btf import Btf
from xdphooks.link.rewrite import count_maps, rewrite, xdp_programs
from xdphooks.runconfig import list_xdp_programs, read_run_config

PLUGIN = "fuzzplug"
EXAMPLES = int(os.environ.get("XDPHOOKS_FUZZ_EXAMPLES", "0"))
SECONDS = 10.0  # per example: every call on a mutated object is well below 0.1 s
MEMORY = 512 << 20  # extra address space one example may use
ROOTLET = REPO / "xdphooks" / "data" / "rootlet.o"

TEST_SEEDS = ("static_ret", "static_runcfg", "static_two", "count_pass", "sv_udp9_tx",
              "static_bigstack", "fr_tag")


def fuzz_settings(ci_examples: int):
    return settings(max_examples=EXAMPLES or ci_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


# --- seeds -------------------------------------------------------------------------------


def _compile_plugin(src: Path) -> Path | None:
    out = REPO / "build" / "fuzz-seeds" / (src.name[:-2] + ".o")
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        arch = f"/usr/include/{os.uname().machine}-linux-gnu"
        r = subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{arch}", "-c", str(src),
                            "-o", str(out)], capture_output=True)
        if r.returncode != 0:
            return None
    return out


@lru_cache(maxsize=None)
def seeds() -> tuple[tuple[str, bytes], ...]:
    paths = [build_test_object(n) for n in TEST_SEEDS]
    if shutil.which("clang"):
        paths += [p for p in map(_compile_plugin, sorted(REPO.glob("plugins/*/*.bpf.c"))) if p]
    paths += sorted(Path(p) for p in glob.glob("/usr/lib/bpf/*.o")
                    + glob.glob("/usr/lib/*-linux-gnu/bpf/*.o"))
    out = []
    for p in paths:
        data = p.read_bytes()
        if E.read_elf(str(p), data).section(".BTF") is not None:
            out.append((p.name, data))
    return tuple(out)


@lru_cache(maxsize=None)
def fields(i: int) -> tuple[tuple[int, int], ...]:
    """(offset, size) of every structurally interesting field of seed ``i``."""
    _, data = seeds()[i]
    f: list[tuple[int, int]] = [(4, 1), (5, 1), (16, 2), (18, 2), (0x28, 8), (0x30, 4),
                                (0x3A, 2), (0x3C, 2), (0x3E, 2)]
    shoff, shnum = struct.unpack_from("<Q", data, 0x28)[0], struct.unpack_from("<H", data, 0x3C)[0]
    for k in range(shnum):
        h = shoff + k * 64
        f += [(h, 4), (h + 4, 4), (h + 8, 8), (h + 24, 8), (h + 32, 8), (h + 40, 4), (h + 44, 4),
              (h + 48, 8), (h + 56, 8)]
    elf = E.read_elf("seed", data)
    hdr = {s.index: struct.unpack_from("<IIQQQQIIQQ", data, shoff + s.index * 64)
           for s in elf.sections}
    for s in elf.sections:
        off = hdr[s.index][4]
        if s.type == E.SHT_SYMTAB:
            for e in range(0, min(len(s.data), 24 * 64), 24):
                f += [(off + e, 4), (off + e + 4, 1), (off + e + 6, 2), (off + e + 8, 8),
                      (off + e + 16, 8)]
        elif s.type == E.SHT_REL:
            for e in range(0, min(len(s.data), 16 * 64), 16):
                f += [(off + e, 8), (off + e + 8, 4), (off + e + 12, 4)]
        elif s.name == ".BTF":
            f += [(off + o, n) for o, n in ((2, 1), (3, 1), (4, 4), (8, 4), (12, 4), (16, 4),
                                           (20, 4))]
            btf = Btf.parse(s.data)
            base = off + btf.hdr_len
            for t in btf.types[1:]:
                f += [(base + t.off, 4), (base + t.off + 4, 4), (base + t.off + 6, 2),
                      (base + t.off + 8, 4)]
                f += [(base + t.off + 12 + w, 4) for w in range(0, min(len(t.extra), 48), 4)]
        elif s.name == ".BTF.ext":
            f += [(off + o, 4) for o in range(4, min(32, len(s.data)), 4)]
            hdr_len = struct.unpack_from("<I", s.data, 4)[0]
            for sub in range(8, min(hdr_len, 32), 8):
                sub_off, sub_len = struct.unpack_from("<II", s.data, sub)
                p = hdr_len + sub_off
                f.append((off + p, 4))  # record size
                rec_size = struct.unpack_from("<I", s.data, p)[0] if sub_len else 0
                p += 4
                while p + 8 <= hdr_len + sub_off + sub_len:
                    num = struct.unpack_from("<I", s.data, p + 4)[0]
                    f += [(off + p, 4), (off + p + 4, 4), (off + p + 8, 4), (off + p + 12, 4)]
                    p += 8 + num * rec_size
        elif s.name == ".xdp_run_config":
            f += [(off + o, 4) for o in range(0, len(s.data), 4)]
    return tuple(f)


@lru_cache(maxsize=None)
def regions(i: int) -> tuple[tuple[int, int], ...]:
    """(offset, size) of every section's contents, then of BTF's string section."""
    _, data = seeds()[i]
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    elf = E.read_elf("seed", data)
    out = []
    for s in elf.sections[1:]:
        off = struct.unpack_from("<Q", data, shoff + s.index * 64 + 24)[0]
        out.append((off, len(s.data)))
        if s.name == ".BTF":
            hl, _, _, so, sl = struct.unpack_from("<IIIII", s.data, 4)
            out.append((off + hl + so, sl))
    return tuple(out)


# --- mutations ------------------------------------------------------------------------------

SPECIAL = ("zero", "one", "ones", "len", "len+1", "len-1", "old+1", "old-1", "old*2", "old^top",
           "i32max", "i32min", "page")


def _value(kind, old: int, size: int, flen: int) -> int:
    if isinstance(kind, int):
        return kind
    return {"zero": 0, "one": 1, "ones": -1, "len": flen, "len+1": flen + 1, "len-1": flen - 1,
            "old+1": old + 1, "old-1": old - 1, "old*2": old * 2,
            "old^top": old ^ (1 << (size * 8 - 1)), "i32max": 0x7FFFFFFF, "i32min": 0x80000000,
            "page": 4096}[kind]


def _put(buf: bytearray, off: int, size: int, value: int) -> None:
    if 0 <= off and off + size <= len(buf):
        buf[off: off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _get(buf: bytearray, off: int, size: int) -> int:
    return int.from_bytes(buf[off: off + size], "little") if off + size <= len(buf) else 0


def _shdr(buf: bytearray, k: int) -> int:
    return _get(buf, 0x28, 8) + (k % max(_get(buf, 0x3C, 2), 1)) * 64


def mutate(i: int, ops) -> bytes:
    buf = bytearray(seeds()[i][1])
    for op in ops:
        kind, a, b = op
        n = len(buf)
        if kind == "field":
            off, size = fields(i)[a % len(fields(i))]
            _put(buf, off, size, _value(b, _get(buf, off, size), size, n))
        elif kind == "flip" and n:
            buf[a % n] ^= 1 << (b % 8)
        elif kind == "bytes" and n:
            p = a % n
            buf[p: p + len(b)] = b[: n - p]
        elif kind == "trunc":
            del buf[a % (n + 1):]
        elif kind == "extend":
            buf += b
        elif kind == "sizelie":  # section k's sh_size (or sh_offset) lies
            h = _shdr(buf, a)
            field = 32 if b[0] else 24
            _put(buf, h + field, 8, _value(b[1], _get(buf, h + field, 8), 8, n))
        elif kind == "dupstr":  # section a's header points at section b's data, or links to it
            ha, hb = _shdr(buf, a), _shdr(buf, b[0])
            if b[1] == 0:
                _put(buf, ha + 24, 16, _get(buf, hb + 24, 16))
            elif b[1] == 1:
                _put(buf, ha + 40, 4, b[0])
            else:
                _put(buf, 0x3E, 2, b[0])
        elif kind == "fill":  # zero (or 0xff) a string table or any section's contents
            off, size = regions(i)[a % len(regions(i))]
            buf[off: off + size] = bytes([b]) * len(buf[off: off + size])
        elif kind == "swap":  # swap two section headers
            ha, hb = _shdr(buf, a), _shdr(buf, b)
            if ha + 64 <= n and hb + 64 <= n:
                buf[ha: ha + 64], buf[hb: hb + 64] = buf[hb: hb + 64], buf[ha: ha + 64]
    return bytes(buf)


_int = st.integers(0, 1 << 20)
_value_kind = st.one_of(st.sampled_from(SPECIAL), st.integers(0, (1 << 64) - 1))
OPS = st.one_of(
    st.tuples(st.just("field"), _int, _value_kind),
    st.tuples(st.just("flip"), _int, st.integers(0, 7)),
    st.tuples(st.just("bytes"), _int, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("trunc"), _int, st.none()),
    st.tuples(st.just("sizelie"), _int, st.tuples(st.booleans(), _value_kind)),
    st.tuples(st.just("dupstr"), _int, st.tuples(st.integers(0, 64), st.integers(0, 2))),
    st.tuples(st.just("fill"), _int, st.sampled_from((0, 0xFF, 0x41))),
    st.tuples(st.just("swap"), st.integers(0, 64), st.integers(0, 64)),
    st.tuples(st.just("extend"), st.none(),
              st.one_of(st.binary(max_size=64), st.sampled_from((b"\0" * 4096, b"\xff" * 100)))),
)


SEED = st.integers(0, 1 << 16)  # modulo the number of seeds
MUTATIONS = st.lists(OPS, min_size=1, max_size=4)


def mutated(seed: int, ops) -> tuple[int, bytes]:
    """Seed index and mutated bytes (examples show the ops, not kilobytes of object)."""
    i = seed % len(seeds())
    data = mutate(i, ops)
    assume(data != seeds()[i][1])
    return i, data


# --- checks -----------------------------------------------------------------------------------


class Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise Timeout(f"example took more than {SECONDS} s")


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@contextmanager
def bounded():
    """Fail an example that runs too long or asks for too much memory (MemoryError)."""
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    hard = old_limit[1]
    limit = _vm_size() + MEMORY
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)


def check_clean(err: BaseException, plugin: str | None = PLUGIN) -> None:
    """The only acceptable failure: one line, naming the plugin, with a fix."""
    if not isinstance(err, XdphooksError):
        raise AssertionError(f"unclean {type(err).__name__}: {err}") from err
    line = str(err)
    assert "\n" not in line and "\r" not in line, f"multi-line message: {line!r}"
    assert len(line) < 600, f"message too long ({len(line)} chars): {line[:200]!r}..."
    if plugin is not None:
        assert f"plugin {plugin!r}" in line, f"message does not name the plugin: {line!r}"
    assert err.fix, f"message has no fix: {line!r}"


def call(fn, *args, expect: str | None = PLUGIN, **kw):
    """Run ``fn``; return its result or None after a clean XdphooksError."""
    try:
        with bounded():
            return fn(*args, **kw)
    except BaseException as e:  # noqa: BLE001 - anything unclean fails the example
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        check_clean(e, expect)
        return None


def _link_child(out: str, inputs: list[str], wfd: int) -> None:
    from xdphooks.kernel import libbpf
    try:
        libbpf.link_objects(out, inputs)
        msg = b"ok"
    except KernelError as e:
        msg = b"kernel:" + str(e).encode(errors="replace")[:200]
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        msg = f"unclean {type(e).__name__}: {e}".encode(errors="replace")[:400]
    os.write(wfd, msg)


def link_isolated(out: str, inputs: list[str]) -> str:
    """libbpf's linker in a child, so a crash in C is a failing example, not a dead run."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            signal.alarm(int(SECONDS))
            _link_child(out, inputs, w)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"libbpf's linker died with signal {os.WTERMSIG(status)}")
    return msg


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="xh-fuzz-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@lru_cache(maxsize=None)
def seed_programs(i: int) -> tuple[str, ...]:
    return tuple(p.name for p in xdp_programs(E.read_elf("seed", seeds()[i][1])))


# --- targets ------------------------------------------------------------------------------------

stats: dict[str, int] = {}


def _count(name: str) -> None:
    stats[name] = stats.get(name, 0) + 1


@fuzz_settings(1000)
@given(seed=SEED, ops=MUTATIONS, pick=st.integers(0, 3))
def test_fuzz_rewriter(work, seed, ops, pick):
    i, data = mutated(seed, ops)
    src, out = work / "rw-in.o", work / "rw-out.o"
    src.write_bytes(data)
    progs = seed_programs(i)
    program = None if len(progs) <= 1 and pick else progs[pick % len(progs)] if progs else None
    _count("rewriter")
    res = call(rewrite, str(src), str(out), 0, program, who=PLUGIN)
    call(count_maps, str(src), expect=None)
    if res is None:
        return
    _count("rewriter-ok")
    # the copy must stay readable by our own reader ...
    call(E.read_elf, res.path, expect=None)
    # ... and libbpf's linker (in-process in xdphooks) may refuse it, but must not crash
    inputs = [str(ROOTLET), res.path] if pick == 0 else [res.path]
    msg = link_isolated(str(work / "chain.o"), inputs)
    assert msg == "ok" or msg.startswith("kernel:"), msg
    _count("linked")


@fuzz_settings(1500)
@given(seed=SEED, ops=MUTATIONS, name=st.sampled_from(("", "x", "xdp_cfg_a")))
def test_fuzz_runconfig(work, seed, ops, name):
    i, data = mutated(seed, ops)
    src = work / "rc-in.o"
    src.write_bytes(data)
    _count("runconfig")
    progs = call(list_xdp_programs, str(src), plugin=PLUGIN)
    for prog in (progs or []) + list(seed_programs(i)) + [name]:
        call(read_run_config, str(src), prog, plugin=PLUGIN)


@fuzz_settings(1500)
@given(seed=SEED, ops=MUTATIONS)
def test_fuzz_inspect(work, seed, ops):
    _, data = mutated(seed, ops)
    src = work / "in-in.o"
    src.write_bytes(data)
    os.chmod(src, 0o644)
    _count("inspect")
    facts = call(inspect_mod.inspect, str(src), PLUGIN)
    assert facts is not None
    if facts.error:
        assert "\n" not in facts.error and len(facts.error) < 600, facts.error
        assert facts.fix, facts.error
        assert "cannot be parsed" not in facts.error, f"unclean error: {facts.error}"


def test_fuzz_report(capsys):
    """Not a check: print how many examples ran (pytest -s shows it)."""
    with capsys.disabled():
        print(f"\nfuzz examples: {stats}")


# --- crafted regressions -------------------------------------------------------------------------
# Each was found by the fuzzer; the comment names what happened before the fix.


def _section(data: bytes, name: str) -> tuple[int, int]:
    """(section header offset, contents offset) of section ``name``."""
    elf = E.read_elf("seed", data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    h = shoff + 64 * next(s.index for s in elf.sections if s.name == name)
    return h, struct.unpack_from("<Q", data, h + 24)[0]


def _symbol(data: bytes, pred) -> int:
    """File offset of the first symbol entry for which ``pred(symbol)`` holds."""
    elf = E.read_elf("seed", data)
    _, off = _section(data, ".symtab")
    return off + 24 * next(k for k, s in enumerate(elf.symbols) if k and pred(s))


def _ret_object() -> bytearray:
    return bytearray(build_test_object("static_ret").read_bytes())


def _bad_rel_symbol(d):  # IndexError while naming the symbol
    _, off = _section(d, ".relxdp")
    d[off + 12: off + 16] = struct.pack("<I", 9999)


def _bad_rel_offset(d):  # struct.error packing the shifted offset
    _, off = _section(d, ".relxdp")
    d[off: off + 8] = struct.pack("<Q", (1 << 64) - 1)


def _bad_rel_target(d):  # KeyError: the relocated section does not exist
    h, _ = _section(d, ".relxdp")
    d[h + 44: h + 48] = struct.pack("<I", 0x7FFFFFFF)


def _bad_ext_count(d):  # MemoryError: 4 billion records built before the bounds check
    _, off = _section(d, ".BTF.ext")
    hdr_len, fi_off = struct.unpack_from("<II", d, off + 4)
    d[off + hdr_len + fi_off + 8: off + hdr_len + fi_off + 12] = b"\xff\xff\xff\xff"


def _bad_align(d):  # MemoryError: padding to a 2**62 alignment
    h, _ = _section(d, ".maps")
    d[h + 48: h + 56] = struct.pack("<Q", 1 << 62)


def _bad_symbol_value(d):  # struct.error: symbol value + .text size overflows
    off = _symbol(d, lambda s: s.name == "xdp_ret")
    d[off + 8: off + 16] = struct.pack("<Q", (1 << 64) - 8)


def _bad_section0(d):  # struct.error: section 0 named .text gave slot index -1
    h, _ = _section(d, "")
    text, _ = _section(d, ".text")
    d[h: h + 8] = d[text: text + 8]  # sh_name, sh_type


def _xindex_symbol(d):  # libbpf's linker: SIGSEGV
    off = _symbol(d, lambda s: s.type == E.STT_SECTION)
    d[off + 6: off + 8] = b"\xff\xff"


def _abs_section_symbol(d):  # libbpf's linker: SIGSEGV
    off = _symbol(d, lambda s: s.type == E.STT_FILE)
    d[off + 4] = E.STT_SECTION


def _dynamic_section(d):  # SHT_DYNAMIC of 4 bytes copied through: libbpf SIGSEGV
    h, _ = _section(d, "license")
    d[h + 4: h + 8] = struct.pack("<I", 6)


def _duplicate_name(d):  # .rodata renamed .strtab: two sections of that name
    h, _ = _section(d, ".rodata")
    strtab, _ = _section(d, ".strtab")
    d[h: h + 4] = d[strtab: strtab + 4]


FOUND = [
    (_bad_rel_symbol, "points outside its section or symbol table"),
    (_bad_rel_offset, "points outside its section or symbol table"),
    (_bad_rel_target, "applies to no section"),
    (_bad_ext_count, "corrupt BTF.ext"),
    (_bad_align, "bad alignment"),
    (_bad_symbol_value, "lies outside its section"),
    (_bad_section0, "no null section 0"),
    (_xindex_symbol, "unusable section index 0xffff"),
    (_abs_section_symbol, "unusable section index 0xfff1"),
    (_dynamic_section, "unsupported type 0x6"),
    (_duplicate_name, "two sections named '.strtab'"),
]


@pytest.mark.parametrize("corrupt, match",
                         [pytest.param(f, m, id=f.__name__[1:]) for f, m in FOUND])
def test_found_by_fuzzing(tmp_path, corrupt, match):
    data = _ret_object()
    corrupt(data)
    src = tmp_path / "bad.o"
    src.write_bytes(bytes(data))
    with bounded(), pytest.raises(ObjectError, match=match) as ei:
        rewrite(str(src), str(tmp_path / "out.o"), 0, who=PLUGIN)
    check_clean(ei.value)


def _rename(data: bytearray, old: bytes, new: bytes) -> None:
    assert len(old) == len(new) and old in data
    data[:] = data.replace(b"\0" + old + b"\0", b"\0" + new + b"\0")


def test_names_are_escaped(tmp_path):
    """Names come from the object: a newline in one must not break the one-line message."""
    data = bytearray(build_test_object("static_two").read_bytes())
    _rename(data, b"xdp_first", b"xdp\nfirst")
    src = tmp_path / "two.o"
    src.write_bytes(bytes(data))
    for program in (None, "nope"):
        with pytest.raises(ObjectError) as ei:
            rewrite(str(src), str(tmp_path / "out.o"), 0, program, who=PLUGIN)
        check_clean(ei.value)
        assert "xdp\\nfirst" in str(ei.value)
    data = bytearray(build_test_object("static_runcfg").read_bytes())
    _rename(data, b"XDP_DROP", b"XDP_\nROP")
    src.write_bytes(bytes(data))
    with pytest.raises(ObjectError, match="unknown action") as ei:
        read_run_config(str(src), "xdp_cfg_a", plugin=PLUGIN)
    check_clean(ei.value)


def test_readers_name_the_plugin(tmp_path):
    bad = tmp_path / "bad.o"
    bad.write_bytes(_ret_object()[:200])
    for fn, args in ((list_xdp_programs, ()), (read_run_config, ("xdp_ret",))):
        with pytest.raises(ObjectError) as ei:
            fn(str(bad), *args, plugin=PLUGIN)
        check_clean(ei.value)
