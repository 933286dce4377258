"""The static chain's root program, generated: one loop over the slots.

libbpf's linker gives us ``chain.o``: the rootlet (maps, ``xdph_log``, a stub
``xdphooks_root``) and every component's rewritten copy, whose entry is the
global function ``xdph_slot_<N>`` in ``.text``. This pass replaces the stub's
code with the chain itself, slot by slot:

* **spliced** (the default): the entry function's body is placed inline. Each
  ``exit`` becomes a jump to the slot's epilogue with the verdict in r0. The
  component's frame is shifted down by 8 or 16 bytes (every ``r10`` access and every
  copy of ``r10``), so ``[r10 - 8]`` holds ctx where the component cannot
  reach it (and ``[r10 - 16]`` the counters pointer, when counting); the next
  slot reloads ctx from there. The component's own
  subprograms stay ordinary calls; relocations, line_info and CO-RE records
  follow their instructions. No call, no return thunk: what is left per slot
  is one load and one compare.
* **called**: ``call xdph_slot_<N>`` as before, where splicing cannot keep the
  semantics (a tail call from the entry would leave the whole chain; a frame
  that would not fit; an instruction this pass does not handle). Decided per
  slot, with the reason reported.

The epilogue is generated from the slot's policy, known at build time: the
default (pass continues, everything else ends the chain) is a single
``if w0 != XDP_PASS goto exit``. Counters and events follow
:mod:`xdphooks.abi`: the prologue looks the one counters value up once per packet
(once per segment: a tail call starts a new program) and keeps the pointer at
``[r10 - 16]``; a slot that continues adds 1 at a constant offset (its row, the
continuing verdict), and the verdict that ends the chain is counted once, out of
line, on the way out. The verifier remains the judge of the result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

from .. import abi
from . import elf as E
from . import insn as I
from .btf import Btf, BtfExt

R_BPF_64_64, R_BPF_64_32 = 1, 10
FUNC_INFO, LINE_INFO, CORE_RELO = 0, 1, 2
CTX_SLOT = -8  # where the root keeps ctx
COUNTERS_SLOT = -16  # where the root keeps the counters pointer (the lookup's key before)
# bytes the components' frames move down to make room for the root's own slots
FRAME_SHIFT = {False: -CTX_SLOT, True: -COUNTERS_SLOT}  # by "counters on"
MAX_STACK = 512
#: the generator's per-slot instruction counts of the last splice() per output file name
#: (root0.o, root1.o, ...): bench/bench_static.py prints where the nanoseconds go
last_costs: dict[str, list] = {}


@dataclass(frozen=True)
class Slot:
    """One slot as the generator sees it."""

    function: str  # xdph_slot_<N> in .text
    codes: tuple[int, ...]  # decision codes in abi.POLICY_KEYS order
    splice: bool = True  # asked for; may still end up called
    key: int = 0  # counters index


@dataclass(frozen=True)
class Instrument:
    """What an instrumented build adds around its slots (xdphooks/watch.py: built and
    swapped in only while someone watches; ``None``, the default, generates exactly the
    uninstrumented chain). Maps are the caller's, named by fd in the code (no
    relocation: libbpf passes such a load through to the kernel as it is).

    * ``capture``: slot keys whose packet is copied (up to ``snaplen`` bytes, with
      :data:`CAPTURE_HDR`) into the RINGBUF ``ring_fd`` as the slot left it (its
      verdict), and with ``entry`` also as it got it;
    * ``prof_fd``: a PERCPU_ARRAY whose one value (key 0) accumulates per slot key
      (calls, ns) between the slot's entry and exit (:data:`PROF_ROW`), and at row
      ``abi.MAX_CHAIN`` the cost of the timing itself (an empty interval), once per
      packet and segment."""

    ring_fd: int = -1
    capture: frozenset = frozenset()
    entry: bool = False
    snaplen: int = 256
    prof_fd: int = -1

    @property
    def record_size(self) -> int:
        return CAPTURE_HDR.size + (self.snaplen + 7) // 8 * 8


#: a captured packet's header: ts_ns (CLOCK_MONOTONIC), slot, verdict (CAPTURE_ENTRY at
#: the entry), frame length, bytes captured, where (0 entry, 1 exit), ingress ifindex
CAPTURE_HDR = struct.Struct("<QIIIIII")
CAPTURE_ENTRY = 0xFFFFFFFF
WHERE_ENTRY, WHERE_EXIT = 0, 1
#: one slot's timing in the profile value: calls, ns
PROF_ROW = struct.Struct("<QQ")
PROF_SIZE = (abi.MAX_CHAIN + 1) * PROF_ROW.size
HELPER_KTIME, HELPER_RINGBUF_RESERVE, HELPER_RINGBUF_SUBMIT = \
    I.HELPER_KTIME, I.HELPER_RINGBUF_RESERVE, I.HELPER_RINGBUF_SUBMIT
HELPER_XDP_GET_BUFF_LEN, HELPER_XDP_LOAD_BYTES = I.HELPER_XDP_GET_BUFF_LEN, I.HELPER_XDP_LOAD_BYTES
PSEUDO_MAP_FD = 1


@dataclass(frozen=True)
class Linked:
    """What became of a slot: ``link`` is "spliced" or "called"; ``reason`` says why
    a slot asked to be spliced was called."""

    link: str
    reason: str = ""


class _Unspliceable(Exception):
    pass


# --- reading the linked object --------------------------------------------------------------


@dataclass
class _Obj:
    elf: E.Elf
    btf: Btf
    ext: BtfExt
    sym_index: dict[str, int]
    text: E.Section
    text_rels: dict[int, E.Rel]  # byte offset -> relocation
    text_secsym: int

    @classmethod
    def read(cls, path: str) -> "_Obj":
        elf = E.read_elf(path)
        btf = Btf.parse(elf.section(".BTF").data, path)
        ext = BtfExt.parse(elf.section(".BTF.ext").data, btf, path)
        text = elf.section(".text")
        if text is None:
            raise _Unspliceable("the linked object has no .text")
        sym_index = {s.name: i for i, s in enumerate(elf.symbols) if s.name}
        rels = {}
        for s in elf.sections:
            if s.type == E.SHT_REL and s.info == text.index:
                rels.update({r.offset: r for r in E.parse_rels(s.data)})
        secsym = next((i for i, s in enumerate(elf.symbols)
                       if s.type == E.STT_SECTION and s.shndx == text.index), -1)
        return cls(elf, btf, ext, sym_index, text, rels, secsym)

    def function_at(self, off: int) -> tuple[int, int] | None:
        """(start, size) of the .text function starting at byte ``off``."""
        for sym in self.elf.symbols:
            if sym.type == E.STT_FUNC and sym.shndx == self.text.index and sym.value == off:
                return sym.value, sym.size
        return None

    def records(self, section: str, start: int, end: int) -> list[tuple[int, bytes]]:
        """(kind, record) of BTF.ext records for ``section`` in [start, end)."""
        out = []
        for kind, secs in enumerate(self.ext.infos):
            for name, recs in secs:
                if name != section:
                    continue
                for r in recs:
                    off = struct.unpack_from("<I", r, 0)[0]
                    if start <= off < end:
                        out.append((kind, bytes(r)))
        return out


# --- one component's entry, made inline -----------------------------------------------------


def _body(obj: _Obj, function: str, done: I.Label, shift: int) -> list[I.Insn | I.Place]:
    """The entry function's code, transformed to run inline with its frame ``shift``
    bytes down; raises _Unspliceable."""
    idx = obj.sym_index.get(function)
    if idx is None:
        raise _Unspliceable(f"no function {function}")
    sym = obj.elf.symbols[idx]
    start, size = sym.value, sym.size
    if sym.shndx != obj.text.index or not size or start % 8 or start + size > len(obj.text.data):
        raise _Unspliceable("the entry function has no usable size in .text")
    code = obj.text.data[start: start + size]
    insns = I.decode(code)
    targets = {pos + ins.off + 1 for pos, ins in insns if ins.is_jump()}
    labels = {pos: I.Label(f"{function}+{pos}") for pos in targets}
    ext: dict[int, list[tuple[int, bytes]]] = {}
    for kind, rec in obj.records(".text", start, start + size):
        if kind == FUNC_INFO:
            continue  # the entry is no function of its own any more
        ext.setdefault(struct.unpack_from("<I", rec, 0)[0] - start, []).append((kind, rec))
    n_slots = len(code) // 8
    out: list[I.Insn | I.Place] = []
    skip_add = False
    for k, (pos, ins) in enumerate(insns):
        if pos in labels:
            out.append(I.Place(labels[pos]))
        ins = replace(ins, ext=list(ext.get(pos * 8, [])))
        rel = obj.text_rels.get(start + pos * 8)
        cls, op = ins.cls, ins.code & 0xF0
        if skip_add:  # folded into the r10 copy before it
            skip_add = False
            continue
        if ins.code == I.LD_IMM64 and ins.src == I.PSEUDO_FUNC and rel is None:
            raise _Unspliceable("a callback address without relocation")
        if rel is not None:
            ins.reloc = (rel.sym, rel.type)
        if ins.is_jump():
            tgt = pos + ins.off + 1
            if not 0 <= tgt <= n_slots:
                raise _Unspliceable(f"a jump leaves the function (instruction {pos})")
            ins.target = labels[tgt] if tgt < n_slots else done
        elif cls in (I.JMP, I.JMP32) and op == I.EXIT:
            ins = replace(I.ja(done), ext=ins.ext)
        elif cls == I.JMP and op == I.CALL:
            if ins.src == 0 and ins.imm == I.HELPER_TAIL_CALL:
                raise _Unspliceable("the entry tail-calls (spliced, the tail call would "
                                    "leave the whole chain)")
            if ins.src == I.PSEUDO_CALL and rel is None:
                # pc-relative call inside .text: re-express against .text's section symbol
                tgt = start // 8 + pos + ins.imm + 1
                if obj.text_secsym < 0:
                    raise _Unspliceable("a local call without a .text section symbol")
                ins.imm, ins.reloc = tgt - 1, (obj.text_secsym, R_BPF_64_32)
        elif cls in (I.JMP, I.JMP32):
            raise _Unspliceable(f"unsupported jump opcode {ins.code:#04x}")
        if cls in (I.LD,) and ins.code != I.LD_IMM64:
            raise _Unspliceable("legacy packet access (LD_ABS/LD_IND)")
        # the frame shift: every use of r10
        fp_base = (cls == I.LDX and ins.src == I.FP) or (cls in (I.ST, I.STX) and ins.dst == I.FP)
        if fp_base:
            if cls in (I.LDX, I.ST, I.STX) and (ins.code & 0xE0) not in (I.MEM, I.ATOMIC):
                raise _Unspliceable(f"unsupported stack access {ins.code:#04x}")
            ins.off -= shift
            if ins.off < -MAX_STACK:
                raise _Unspliceable(f"its frame ({-ins.off - shift} bytes) leaves no room "
                                    f"for the chain's {shift} bytes")
            out.append(ins)
            continue
        if ins.code == I.ALU64 | I.MOV | I.X and ins.src == I.FP:
            out.append(ins)
            nxt = insns[k + 1][1] if k + 1 < len(insns) else None
            nxt_pos = insns[k + 1][0] if k + 1 < len(insns) else -1
            if nxt is not None and nxt.code == I.ALU64 | I.ADD | I.K and nxt.dst == ins.dst \
                    and nxt.imm - shift < -MAX_STACK:
                raise _Unspliceable(f"its frame ({-nxt.imm} bytes) leaves no room for the "
                                    f"chain's {shift} bytes")
            if (nxt is not None and nxt.code == I.ALU64 | I.ADD | I.K and nxt.dst == ins.dst
                    and nxt_pos not in labels and obj.text_rels.get(start + nxt_pos * 8) is None):
                out.append(replace(I.add_imm(ins.dst, nxt.imm - shift),
                                   ext=list(ext.get(nxt_pos * 8, []))))
                skip_add = True
            else:
                out.append(I.add_imm(ins.dst, -shift))
            continue
        if ins.src == I.FP and cls in (I.ALU, I.ALU64) and ins.code & I.X or ins.dst == I.FP \
                and cls in (I.ALU, I.ALU64, I.LDX) or ins.src == I.FP and cls == I.STX:
            raise _Unspliceable(f"an unusual use of the frame pointer (instruction {pos})")
        out.append(ins)
    return out


def _round(n: int) -> int:
    """The verifier's accounting of one frame (round_up(max(n, 1), 32))."""
    return (max(n, 1) + 31) // 32 * 32


def _frame(code: bytes) -> tuple[int, list[int]]:
    """(deepest stack byte used, start offsets in .text of the functions it calls) of one
    function: fp-relative accesses and ``rX = r10; rX += -n`` pointers."""
    deepest, calls = 0, []
    insns = I.decode(code)
    for k, (pos, ins) in enumerate(insns):
        if (ins.cls == I.LDX and ins.src == I.FP or ins.cls in (I.ST, I.STX) and ins.dst == I.FP) \
                and ins.off < 0:
            deepest = max(deepest, -ins.off)
        elif ins.code == I.ALU64 | I.MOV | I.X and ins.src == I.FP and k + 1 < len(insns):
            nxt = insns[k + 1][1]
            if nxt.code == I.ALU64 | I.ADD | I.K and nxt.dst == ins.dst and nxt.imm < 0:
                deepest = max(deepest, -nxt.imm)
        elif ins.code == I.JMP | I.CALL and ins.src == I.PSEUDO_CALL:
            calls.append(pos)
    return deepest, calls


def _call_depth(obj: _Obj, start: int, size: int, seen: frozenset = frozenset()) -> int:
    """Stack the callees of the function at ``start`` in .text need, deepest path."""
    _, calls = _frame(obj.text.data[start: start + size])
    worst = 0
    for pos in calls:
        rel = obj.text_rels.get(start + pos * 8)
        ins = I.decode(obj.text.data[start + pos * 8: start + pos * 8 + 8])[0][1]
        if rel is not None:
            sym = obj.elf.symbols[rel.sym]
            tgt = (sym.value // 8 + ins.imm + 1) * 8
        else:
            tgt = start + (pos + ins.imm + 1) * 8
        fn = obj.function_at(tgt)
        if fn is None or fn[0] in seen:
            continue
        d, _ = _frame(obj.text.data[fn[0]: fn[0] + fn[1]])
        worst = max(worst, _round(d) + _call_depth(obj, fn[0], fn[1], seen | {fn[0]}))
    return worst


def _fit(obj: _Obj, slots: list[Slot], spliceable: dict[int, int], shift: int) -> dict[int, str]:
    """Slots to call after all because of the 512-byte stack: spliced, every frame
    shares the root's, so the biggest one goes first until the chain fits."""
    facts = {}
    for n, slot in enumerate(slots):
        sym = obj.elf.symbols[obj.sym_index[slot.function]]
        d, _ = _frame(obj.text.data[sym.value: sym.value + sym.size])
        facts[n] = (d, _call_depth(obj, sym.value, sym.size))
    out: dict[int, str] = {}
    spliced = set(spliceable)
    while True:
        root = _round(max([facts[n][0] + shift for n in spliced] + [shift]))
        worst = max([root + facts[n][1] for n in spliced]
                    + [root + _round(facts[n][0]) + facts[n][1] for n in facts
                       if n not in spliced], default=0)
        if worst <= MAX_STACK or not spliced:
            return out
        n = max(spliced, key=lambda k: facts[k][0])
        spliced.discard(n)
        out[n] = (f"its frame ({facts[n][0]} bytes) in the root's, with the calls below it, "
                  f"would pass the kernel's {MAX_STACK}-byte stack")


def assess(path: str, function: str) -> Linked:
    """What splicing would do with ``function`` of the linkable object ``path`` on its own
    (for ``plan``; the chain's stack budget and the verifier decide at build time)."""
    try:
        obj = _Obj.read(path)
        _body(obj, function, I.Label(), FRAME_SHIFT[True])
        return Linked("spliced")
    except _Unspliceable as e:
        return Linked("called", str(e))


# --- the generated root ---------------------------------------------------------------------


def _count_at(reg: int, off: int) -> list[I.Insn]:
    """counters[off] += 1, the counters pointer in ``reg`` (per CPU: no atomics)."""
    return [I.ldx(I.DW, 5, reg, off), I.add_imm(5, 1), I.stx(I.DW, reg, 5, off)]


def _count_verdict(row: int | None) -> list[I.Insn | I.Place]:
    """counters[row + min((u32)r0, UNKNOWN) * 8] += 1, keeping r0; ``row`` None: the
    row's offset is in r2 already."""
    clamped = I.Label("clamped")
    out: list[I.Insn | I.Place] = [I.ldx(I.DW, 1, I.FP, COUNTERS_SLOT)]
    if row is None:
        out.append(I.Insn(I.ALU64 | I.ADD | I.X, 1, 2))
    out += [I.Insn(I.ALU | I.MOV | I.X, 3, 0),  # zero-extended (u32)verdict
            I.jmp_imm(I.JLE, 3, abi.POL_UNKNOWN, clamped), I.mov_imm(3, abi.POL_UNKNOWN),
            I.Place(clamped), I.alu_imm(I.LSH, 3, 3), I.Insn(I.ALU64 | I.ADD | I.X, 1, 3)]
    return out + _count_at(1, row or 0)


def _ld_map_fd(reg: int, fd: int) -> I.Insn:
    return I.Insn(I.LD_IMM64, reg, PSEUDO_MAP_FD, 0, fd)


def _capture(ins: Instrument, key: int, where: int) -> list[I.Insn | I.Place]:
    """Copy the packet into a ring record (see :class:`Instrument`); keeps r0 (the
    verdict) at the exit. r6-r8 are free between slots: the root keeps nothing in
    them, and a component's code writes them before it reads them."""
    skip, submit, short = I.Label("cskip"), I.Label("csubmit"), I.Label("cshort")
    snap = ins.snaplen
    out: list[I.Insn | I.Place] = []
    if where == WHERE_EXIT:
        out.append(I.mov_reg(8, 0))
    out += [_ld_map_fd(1, ins.ring_fd), I.mov_imm(2, ins.record_size), I.mov_imm(3, 0),
            I.call_helper(HELPER_RINGBUF_RESERVE), I.jmp_imm(I.JEQ, 0, 0, skip),
            I.mov_reg(6, 0), I.call_helper(HELPER_KTIME), I.stx(I.DW, 6, 0, 0),
            I.st_imm(I.W, 6, 8, key)]
    out.append(I.stx(I.W, 6, 8, 12) if where == WHERE_EXIT
               else I.st_imm(I.W, 6, 12, -1))  # CAPTURE_ENTRY
    out += [I.ldx(I.DW, 1, I.FP, CTX_SLOT), I.call_helper(HELPER_XDP_GET_BUFF_LEN),
            I.mov_reg(7, 0), I.stx(I.W, 6, 7, 16),
            I.jmp_imm(I.JLE, 7, snap, short), I.mov_imm(7, snap), I.Place(short),
            I.stx(I.W, 6, 7, 20), I.st_imm(I.W, 6, 24, where),
            I.ldx(I.DW, 1, I.FP, CTX_SLOT), I.ldx(I.W, 1, 1, abi.XDP_MD_INGRESS_IFINDEX),
            I.stx(I.W, 6, 1, 28),
            I.jmp_imm(I.JLE, 7, 0, submit),  # (and the verifier learns len >= 1)
            I.ldx(I.DW, 1, I.FP, CTX_SLOT), I.mov_imm(2, 0), I.mov_reg(3, 6),
            I.add_imm(3, CAPTURE_HDR.size), I.mov_reg(4, 7),
            I.call_helper(HELPER_XDP_LOAD_BYTES), I.jmp_imm(I.JEQ, 0, 0, submit),
            I.st_imm(I.W, 6, 20, 0),  # nothing copied after all
            I.Place(submit), I.mov_reg(1, 6), I.mov_imm(2, 0),
            I.call_helper(HELPER_RINGBUF_SUBMIT), I.Place(skip)]
    if where == WHERE_EXIT:
        out.append(I.mov_reg(0, 8))
    return out


def _prof_add(base: int, row: int, ns_reg: int) -> list[I.Insn]:
    """profile[row] += (1, ns_reg), the value's pointer on the stack (r1, r5 clobbered)."""
    return [I.ldx(I.DW, 1, I.FP, _prof_slots(base)[0]), *_count_at(1, row * PROF_ROW.size),
            I.ldx(I.DW, 5, 1, row * PROF_ROW.size + 8), I.Insn(I.ALU64 | I.ADD | I.X, 5, ns_reg),
            I.stx(I.DW, 1, 5, row * PROF_ROW.size + 8)]


def _prof_slots(base: int) -> tuple[int, int]:
    """(profile value pointer, entry timestamp): the two stack slots below the root's
    own ``base`` bytes."""
    return -(base + 8), -(base + 16)


def _prof_prologue(base: int, ins: Instrument, lost: I.Label) -> list[I.Insn | I.Place]:
    ptr, ts = _prof_slots(base)
    return [I.st_imm(I.W, I.FP, ts, 0), I.mov_reg(2, I.FP), I.add_imm(2, ts),
            _ld_map_fd(1, ins.prof_fd), I.call_helper(I.HELPER_MAP_LOOKUP),
            I.jmp_imm(I.JEQ, 0, 0, lost), I.stx(I.DW, I.FP, 0, ptr),
            # the timing's own cost: an empty interval, once per packet
            I.call_helper(HELPER_KTIME), I.mov_reg(6, 0), I.call_helper(HELPER_KTIME),
            I.Insn(I.ALU64 | 0x10 | I.X, 0, 6),  # r0 -= r6
            *_prof_add(base, abi.MAX_CHAIN, 0), I.ldx(I.DW, 1, I.FP, CTX_SLOT)]


def _prof_enter(base: int) -> list[I.Insn]:
    return [I.call_helper(HELPER_KTIME), I.stx(I.DW, I.FP, 0, _prof_slots(base)[1]),
            I.ldx(I.DW, 1, I.FP, CTX_SLOT)]


def _prof_exit(base: int, key: int) -> list[I.Insn]:
    return [I.mov_reg(8, 0), I.call_helper(HELPER_KTIME),
            I.ldx(I.DW, 1, I.FP, _prof_slots(base)[1]),
            I.Insn(I.ALU64 | 0x10 | I.X, 0, 1), I.mov_reg(6, 0),  # r6 = now - entry
            *_prof_add(base, key, 6), I.mov_reg(0, 8)]


def _epilogue(slot: Slot, obj: _Obj, counters: bool, events: bool, leave: I.Label,
              exit_: I.Label, tail: list[I.Insn | I.Place]) -> list[I.Insn | I.Place]:
    """After slot ``slot``: r0 holds its verdict. Count, apply the policy, fall through to
    the next slot on "continue". ``exit_`` returns r0; ``leave`` counts r0 for the slot
    whose row offset is in r2, then returns it. Code run only when the chain ends goes
    to ``tail`` (placed after the chain, out of the straight line)."""
    codes = list(slot.codes)
    if not events:
        codes = [abi.DECISION_CONTINUE if c == abi.DECISION_LOG else c for c in codes]
    known, unknown = codes[:abi.POL_UNKNOWN], codes[abi.POL_UNKNOWN]
    cont = [v for v, c in enumerate(known) if c == abi.DECISION_CONTINUE]
    if unknown == abi.DECISION_RETURN and len(cont) == 1 and all(
            c == abi.DECISION_RETURN for v, c in enumerate(known) if v != cont[0]):
        # the common shape (libxdp's default): one verdict continues, all others end it
        if not counters:
            return [I.jmp32_imm(I.JNE, 0, cont[0], exit_)]
        # continuing, the verdict is known: one add at a constant offset; ending, the
        # verdict is counted once, out of line, by the code the leaving slots share
        out_n = I.Label(f"leave{slot.key}")
        tail += [I.Place(out_n), I.mov_imm(2, abi.counter_offset(slot.key)), I.ja(leave)]
        return [I.jmp32_imm(I.JNE, 0, cont[0], out_n), I.ldx(I.DW, 1, I.FP, COUNTERS_SLOT),
                *_count_at(1, abi.counter_offset(slot.key, cont[0]))]
    out: list[I.Insn | I.Place] = []
    if counters:
        out += _count_verdict(abi.counter_offset(slot.key))
    done = exit_  # counted above already
    log = I.Label("log")
    for value, c in enumerate(known):
        if c == abi.DECISION_RETURN:
            out.append(I.jmp32_imm(I.JEQ, 0, value, done))
        elif c == abi.DECISION_LOG:
            out.append(I.jmp32_imm(I.JEQ, 0, value, log))
    if unknown != abi.DECISION_CONTINUE:
        out.append(I.jmp32_imm(I.JGT, 0, abi.POL_UNKNOWN - 1,
                               done if unknown == abi.DECISION_RETURN else log))
    if abi.DECISION_LOG in codes:
        nxt = I.Label("next")
        out += [I.ja(nxt), I.Place(log),
                # xdph_log(ctx, slot, ret): the rootlet's one out-of-line function
                # records the event with the packet's first bytes (bpf/xdphooks_log.h)
                I.mov_reg(3, 0), I.mov_imm(2, slot.key), I.ldx(I.DW, 1, I.FP, CTX_SLOT),
                I.call_symbol(obj.sym_index[abi.LOG_FUNCTION], R_BPF_64_32),
                I.Place(nxt)]
    return out


@dataclass(frozen=True)
class SlotCost:
    """Instructions the chain adds around one slot's own code (the splicer's count):
    ``reload`` of ctx before it, the ``epilogue`` run when it continues, ``leaving`` run
    once when the chain ends at it, ``call`` 1 for a called slot."""

    reload: int
    epilogue: int
    leaving: int
    call: int


def generate(obj: _Obj, slots: list[Slot], counters: bool, events: bool,
             next_segment: int | None = None, costs: list | None = None,
             instrument: Instrument | None = None,
             ) -> tuple[list[I.Insn | I.Place], list[Linked]]:
    """The root program's instructions, and what became of each slot. With
    ``next_segment``, a chain that runs to the end tail-calls that segment. ``costs``,
    if given, receives one :class:`SlotCost` per slot, then the prologue's and the
    segment end's instruction counts as ("prologue", n), ("segment_end", n)."""
    leave, refs, exit_, lost = I.Label("leave"), I.Label("refs"), I.Label("exit"), \
        I.Label("nocounters")
    shift = FRAME_SHIFT[counters]
    ins = instrument
    profiling = ins is not None and ins.prof_fd >= 0
    base = shift
    if profiling:  # two more slots of the root's own: the components' frames move down
        shift += 16
    # ctx is never NULL: the verifier drops this branch and the block it leads to, but
    # the block's map references keep the chain's own maps among the program's maps
    # whatever the configuration (recover.py identifies our chain by them)
    prog: list[I.Insn | I.Place] = [I.stx(I.DW, I.FP, 1, CTX_SLOT),
                                    I.jmp_imm(I.JEQ, 1, 0, refs)]
    if counters:
        # the one lookup of this program (a segment after a tail call does its own)
        prog += [I.st_imm(I.W, I.FP, COUNTERS_SLOT, abi.COUNTERS_KEY),
                 I.mov_reg(2, I.FP), I.add_imm(2, COUNTERS_SLOT),
                 I.ld_map(1, obj.sym_index[abi.COUNTERS_MAP], R_BPF_64_64),
                 I.call_helper(I.HELPER_MAP_LOOKUP),
                 # an array's key 0 is always there; were it not, fail closed rather
                 # than run a chain that cannot count
                 I.jmp_imm(I.JEQ, 0, 0, lost),
                 I.stx(I.DW, I.FP, 0, COUNTERS_SLOT), I.ldx(I.DW, 1, I.FP, CTX_SLOT)]
    if profiling:
        prog += _prof_prologue(base, ins, lost)
    prologue = _slots(prog)
    done = [I.Label(f"done{n}") for n in range(len(slots))]
    bodies: dict[int, list] = {}
    linked = [Linked("called") for _ in slots]
    for n, slot in enumerate(slots):
        if slot.splice:
            try:
                bodies[n] = _body(obj, slot.function, done[n], shift)
                linked[n] = Linked("spliced")
            except _Unspliceable as e:
                linked[n] = Linked("called", str(e))
    for n, why in _fit(obj, slots, bodies, shift).items():
        del bodies[n]
        linked[n] = Linked("called", why)
    tail: list[I.Insn | I.Place] = []
    for n, slot in enumerate(slots):
        if n:
            prog.append(I.ldx(I.DW, 1, I.FP, CTX_SLOT))
        body = bodies.get(n)
        if body is None:
            body = [I.call_symbol(obj.sym_index[slot.function], R_BPF_64_32)]
        captured = ins is not None and ins.ring_fd >= 0 and slot.key in ins.capture
        if captured and ins.entry:
            prog += _capture(ins, slot.key, WHERE_ENTRY) + [I.ldx(I.DW, 1, I.FP, CTX_SLOT)]
        if profiling:
            prog += _prof_enter(base)
        prog += body
        prog.append(I.Place(done[n]))
        if profiling:
            prog += _prof_exit(base, slot.key)
        if captured:
            prog += _capture(ins, slot.key, WHERE_EXIT)
        before = len(tail)
        epi = _epilogue(slot, obj, counters, events, leave, exit_, tail)
        prog += epi
        if costs is not None:
            leaving = _slots(tail[before:]) + (_slots(_count_verdict(None)) + 1
                                               if len(tail) > before else 1)
            costs.append(SlotCost(reload=1 if n else 0, epilogue=_slots(epi), leaving=leaving,
                                  call=0 if n in bodies else 1))
    end = len(prog)
    if next_segment is not None:
        prog += [I.ldx(I.DW, 1, I.FP, CTX_SLOT),
                 I.ld_map(2, obj.sym_index[abi.SEGMENTS_MAP], R_BPF_64_64),
                 I.mov_imm(3, next_segment), I.call_helper(I.HELPER_TAIL_CALL),
                 # the rest of the chain is missing: fail closed, never skip a firewall
                 I.mov_imm(0, abi.XDP_ABORTED), I.exit_()]
    else:
        prog += [I.mov_imm(0, abi.XDP_PASS), I.exit_()]
    if costs is not None:
        costs += [("prologue", prologue), ("segment_end", _slots(prog[end:]))]
    if tail:  # the verdict of the slot that ends the chain (every insn must be reachable)
        prog += tail + [I.Place(leave)] + _count_verdict(None)
    prog += [I.Place(exit_), I.exit_(), I.Place(refs)]
    prog += [I.ld_map(1, obj.sym_index[name], R_BPF_64_64) for name in abi.ROOT_MAPS]
    prog += [I.Place(lost), I.mov_imm(0, abi.XDP_ABORTED), I.exit_()]
    return prog, linked


def _slots(prog: list) -> int:
    """Instruction slots of a piece of program (a 64-bit load takes two)."""
    return sum(x.slots for x in prog if isinstance(x, I.Insn))


# --- writing the object ---------------------------------------------------------------------


def splice(linked_path: str, out_path: str, root: str, slots: list[Slot], counters: bool,
           events: bool, next_segment: int | None = None,
           instrument: Instrument | None = None) -> list[Linked]:
    """Replace function ``root`` of ``linked_path`` by the generated chain; write ``out_path``.

    The root's section is held as symbolic code (:mod:`.insn`): its symbols are labels,
    its relocations and BTF.ext records ride on their instructions. The generated code
    takes the root's place and :func:`insn.write` lays the section out once: symbol
    values, relocations and records follow the code they belong to."""
    try:
        obj = _Obj.read(linked_path)
    except _Unspliceable as e:
        raise ValueError(str(e)) from None
    elf = obj.elf
    rsym = elf.symbols[obj.sym_index[root]]
    sec = elf.sections[rsym.shndx]
    r_start, r_end = rsym.value, rsym.value + rsym.size
    costs: list = []
    prog, linked = generate(obj, slots, counters, events, next_segment, costs, instrument)
    last_costs[Path(out_path).name] = costs
    rel_sec = next((s for s in elf.sections if s.type == E.SHT_REL and s.info == sec.index), None)
    if rel_sec is None:
        rel_sec = E.Section(f".rel{sec.name}", E.SHT_REL, 0x40, b"", 0, sec.index, 8, 16)
        elf.sections.append(rel_sec)
    rels = E.parse_rels(rel_sec.data)
    records: list[list[bytearray]] = []  # per BTF.ext kind, the section's records
    for secs in obj.ext.infos:
        recs = next((r for name, r in secs if name == sec.name), None)
        if recs is None:
            recs = []
            secs.append((sec.name, recs))
        records.append(recs)
    # the code before and after the root, symbolic; the stub's own code goes, and with it
    # its relocations and records, but for the func_info and first line_info at its start
    labels: list[tuple[E.Symbol, I.Label]] = []
    parts: list[I.Code] = []
    for lo, hi in ((0, r_start), (r_end, len(sec.data))):
        marks: dict[int, list[I.Label]] = {}
        for sym in elf.symbols:  # (a label inside the stub keeps its value: no code left)
            if sym.shndx == sec.index and sym is not rsym and sym.type != E.STT_SECTION \
                    and (lo <= sym.value < hi or sym.value == hi == len(sec.data)):
                labels.append((sym, I.Label(sym.name)))
                marks.setdefault(sym.value - lo, []).append(labels[-1][1])
        code, at = I.symbolic(sec.data[lo:hi], marks)
        for r in rels:
            if lo <= r.offset < hi:
                ins = at.get(r.offset - lo)
                if ins is None or ins.reloc is not None:
                    raise ValueError(f"{sec.name}: a relocation at byte {r.offset} is not "
                                     "one of an instruction")
                ins.reloc = (r.sym, r.type)
        for kind, recs in enumerate(records):
            for rec in recs:
                if lo <= I.record_offset(rec) < hi:
                    ins = at.get(I.record_offset(rec) - lo)
                    if ins is None:
                        raise ValueError(f"{sec.name}: a BTF.ext record points inside an "
                                         "instruction")
                    ins.ext.append((kind, bytes(rec)))
        parts.append(code)
    stub = [(kind, bytes(next(r for r in recs if I.record_offset(r) == r_start)))
            for kind, recs in enumerate(records) if kind in (FUNC_INFO, LINE_INFO)
            and r_end > r_start and any(I.record_offset(r) == r_start for r in recs)]
    head = next(x for x in prog if isinstance(x, I.Insn))
    head.ext[:0] = stub
    start, end = I.Label(root), I.Label(f"{root} end")
    w = I.write(parts[0] + [I.Place(start)] + prog + [I.Place(end)] + parts[1])
    sec.data = w.code
    for sym, label in labels:
        sym.value = w.at[label]
    rsym.size = w.at[end] - w.at[start]
    rel_sec.data = E.pack_rels(w.rels)
    for kind, recs in enumerate(records):
        recs[:] = w.ext[kind]
    ext_blob = obj.ext.encode(obj.btf)
    for s in elf.sections:
        if s.name == ".BTF.ext":
            s.data = ext_blob
        elif s.name == ".BTF":
            s.data = obj.btf.encode()
    kept = [s for s in elf.sections if s.type not in (E.SHT_SYMTAB, E.SHT_STRTAB)]
    pos = {id(s): i for i, s in enumerate(kept)}
    remap = {i: pos[id(s)] for i, s in enumerate(elf.sections) if id(s) in pos}
    for s in kept:
        if s.type == E.SHT_REL:
            s.info = remap[s.info]
    for sym in elf.symbols:
        if 0 < sym.shndx < E.SHN_LORESERVE:
            sym.shndx = remap[sym.shndx]
    E.write_elf(out_path, kept, elf.symbols, elf.flags)
    return linked


__all__ = ["Slot", "Linked", "SlotCost", "Instrument", "CAPTURE_HDR", "PROF_ROW", "splice", "generate", "assess", "last_costs"]
