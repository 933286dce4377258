"""BPF instructions as values, symbolic: decode, build, and write out in one place.

An instruction carries its references as metadata, not as numbers (as cilium/ebpf's
``asm`` package does): a jump its target :class:`Label`, a relocated instruction
(map load, BPF-to-BPF call, ...) the symbol and relocation type it refers to, and its
BTF.ext records (func_info, line_info, CO-RE) without their instruction offset.
Labels stand in the list (:class:`Place`) where a symbol or jump target is. Code is
moved, cut and joined as such lists; :func:`write` is the one place where jump
offsets, relocation offsets, record offsets and label (symbol) positions become
numbers. Just enough of the instruction set for the rewriter and the root generator
(rewrite.py, splice.py): the classes and opcodes they emit or have to recognise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .elf import Rel, shown

_INSN = struct.Struct("<BBhi")
_HALF = struct.Struct("<Ii")  # a slot as (first four bytes, imm)

# classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# modes (LD/LDX/ST/STX)
IMM, ABS, IND, MEM, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0xC0
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
# jump ops
JA, JEQ, JGT, JGE, JSET, JNE, CALL, EXIT, JLE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x80, 0x90, 0xB0
# alu ops
ADD, LSH, RSH, MOV = 0x00, 0x60, 0x70, 0xB0
K, X = 0x00, 0x08  # source: immediate / register

LD_IMM64 = LD | IMM | DW  # 0x18, two slots
PSEUDO_CALL, PSEUDO_KFUNC_CALL, PSEUDO_FUNC = 1, 2, 4
FP = 10
HELPER_MAP_LOOKUP, HELPER_TAIL_CALL = 1, 12
#: helper ids (include/uapi/linux/bpf.h) the generated code calls or the probes ask for
HELPER_KTIME, HELPER_XDP_ADJUST_META = 5, 54
HELPER_RINGBUF_RESERVE, HELPER_RINGBUF_SUBMIT = 131, 132
HELPER_XDP_GET_BUFF_LEN, HELPER_XDP_LOAD_BYTES = 188, 189


class Label:
    """A jump target; placed in a program with :func:`place`."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Label({self.name})"


@dataclass
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm_hi: int = 0  # LD_IMM64: the second slot's imm
    #: LD_IMM64: the second slot's first four bytes (opcode, registers, offset), zero in
    #: any valid code, kept so that decode and write give back the bytes they were given
    hi_head: int = 0
    target: Label | None = None  # jumps: resolved into ``off`` by write()
    reloc: tuple[int, int] | None = None  # (symbol index, ELF relocation type)
    #: (BTF.ext kind, record): the record's instruction offset is set by write()
    ext: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cls(self) -> int:
        return self.code & 7

    @property
    def slots(self) -> int:
        return 2 if self.code == LD_IMM64 else 1

    def is_jump(self) -> bool:
        """A conditional or unconditional jump with a 16-bit offset (not call/exit)."""
        op = self.code & 0xF0
        return self.cls in (JMP, JMP32) and op not in (CALL, EXIT) and not (
            self.cls == JMP32 and op == JA)


@dataclass
class Place:
    """Marks where a label stands in an instruction list."""

    label: Label


def decode(code: bytes) -> list[tuple[int, Insn]]:
    """(slot index, instruction) for every instruction of ``code``."""
    out, i, n = [], 0, len(code) // 8
    while i < n:
        op, regs, off, imm = _INSN.unpack_from(code, i * 8)
        ins = Insn(op, regs & 0xF, regs >> 4, off, imm)
        if op == LD_IMM64:
            if i + 1 >= n:
                raise ValueError(f"truncated 64-bit load at instruction {i}")
            ins.hi_head, ins.imm_hi = _HALF.unpack_from(code, i * 8 + 8)
        out.append((i, ins))
        i += ins.slots
    return out


# --- builders -------------------------------------------------------------------------------


def mov_reg(dst: int, src: int) -> Insn:
    return Insn(ALU64 | MOV | X, dst, src)


def mov_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | MOV | K, dst, 0, 0, imm)


def add_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | ADD | K, dst, 0, 0, imm)


def alu_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU64 | op | K, dst, 0, 0, imm)


def ldx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(LDX | MEM | size, dst, src, off)


def stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(STX | MEM | size, dst, src, off)


def st_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(ST | MEM | size, dst, 0, off, imm)


def jmp32_imm(op: int, dst: int, imm: int, target: Label) -> Insn:
    return Insn(JMP32 | op | K, dst, 0, 0, imm, target=target)


def jmp_imm(op: int, dst: int, imm: int, target: Label) -> Insn:
    return Insn(JMP | op | K, dst, 0, 0, imm, target=target)


def ja(target: Label) -> Insn:
    return Insn(JMP | JA, target=target)


def call_helper(helper: int) -> Insn:
    return Insn(JMP | CALL, 0, 0, 0, helper)


def call_symbol(symbol: int, rel_type: int) -> Insn:
    """A BPF-to-BPF call resolved by relocation (libbpf: target = symbol + imm + 1)."""
    return Insn(JMP | CALL, 0, PSEUDO_CALL, 0, -1, reloc=(symbol, rel_type))


def ld_map(dst: int, symbol: int, rel_type: int) -> Insn:
    return Insn(LD_IMM64, dst, 0, 0, 0, reloc=(symbol, rel_type))


def exit_() -> Insn:
    return Insn(JMP | EXIT)


# --- symbolic code --------------------------------------------------------------------------

Code = list[Insn | Place]


def symbolic(code: bytes, marks: dict[int, list[Label]] | None = None
             ) -> tuple[Code, dict[int, Insn]]:
    """``code`` as a symbolic list: each jump whose target is an instruction of ``code``
    (or its end) refers to a label there (others keep their offset: moved with the
    code as a whole, they stay what they were); ``marks`` places labels (symbols) at
    byte offsets. Returns the list and the instruction at each byte offset, for the
    caller to attach relocations and BTF.ext records to. Raises ValueError on code
    that is not a whole number of instructions or a mark not at an instruction."""
    if len(code) % 8:
        raise ValueError("is not a whole number of instructions")
    insns = decode(code)
    n = len(code) // 8
    at = {pos * 8: ins for pos, ins in insns}
    targets: dict[int, Label] = {}
    for pos, ins in insns:
        tgt = pos + ins.off + 1
        if ins.is_jump() and (tgt * 8 in at or tgt == n):
            ins.target = targets.setdefault(tgt * 8, Label(f"+{tgt}"))
    places: dict[int, list[Label]] = {}
    for off, labels in (marks or {}).items():
        if off not in at and off != len(code):
            named = ", ".join(shown(label.name) for label in labels) or "a label"
            raise ValueError(f"{named} at byte {off} is not the start of an instruction")
        places[off] = list(labels)
    for off, label in targets.items():
        places.setdefault(off, []).append(label)
    out: Code = []
    for pos, ins in insns:
        out += [Place(label) for label in places.get(pos * 8, ())]
        out.append(ins)
    out += [Place(label) for label in places.get(len(code), ())]
    return out, at


def record_offset(rec: bytes | bytearray) -> int:
    """A BTF.ext record's instruction offset in its section (the first field of all three
    kinds: func_info, line_info, CO-RE); :func:`write` sets it."""
    off: int = struct.unpack_from("<I", rec, 0)[0]
    return off


@dataclass
class Written:
    """Code written out at byte offset ``base`` of its section: the bytes, the
    relocations and BTF.ext records (per kind: func_info, line_info, CO-RE) with their
    offsets in the section, the section offset of every label, and (offset,
    instruction) of each instruction."""

    code: bytes
    rels: list[Rel]
    ext: tuple[list[bytearray], list[bytearray], list[bytearray]]
    at: dict[Label, int]
    placed: list[tuple[int, Insn]]


def write(prog: Sequence[Insn | Place], base: int = 0) -> Written:
    """The one place where symbolic code becomes numbers: labels are placed, jump
    offsets resolved, and every relocation and BTF.ext record gets the offset of its
    instruction (``base`` + its position)."""
    where: dict[Label, int] = {}
    pos = 0
    for item in prog:
        if isinstance(item, Place):
            where[item.label] = pos
        else:
            pos += item.slots
    out = bytearray()
    placed: list[tuple[int, Insn]] = []
    rels: list[Rel] = []
    ext: tuple[list[bytearray], list[bytearray], list[bytearray]] = ([], [], [])
    pos = 0
    for item in prog:
        if isinstance(item, Place):
            continue
        off = item.off
        if item.target is not None:
            if item.target not in where:
                raise ValueError(f"label {item.target.name!r} was never placed")
            off = where[item.target] - (pos + 1)
            if not -32768 <= off <= 32767:
                raise ValueError("jump too far for a 16-bit offset")
        at = base + pos * 8
        placed.append((at, item))
        if item.reloc is not None:
            rels.append(Rel(at, item.reloc[0], item.reloc[1]))
        for kind, rec in item.ext:
            r = bytearray(rec)
            struct.pack_into("<I", r, 0, at)  # insn_off: first in all three kinds
            ext[kind].append(r)
        out += _INSN.pack(item.code, (item.src << 4) | item.dst, off, item.imm)
        if item.code == LD_IMM64:
            out += _HALF.pack(item.hi_head, item.imm_hi)
        pos += item.slots
    return Written(bytes(out), rels, ext, {k: base + v * 8 for k, v in where.items()}, placed)


def assemble(prog: Iterable[Insn | Place]) -> tuple[bytes, list[tuple[int, Insn]]]:
    """Encode ``prog`` at offset 0 (:func:`write`); the code and (byte offset,
    instruction) of each instruction."""
    w = write(list(prog))
    return w.code, w.placed
