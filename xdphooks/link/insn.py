"""BPF instructions as values: decode, build with symbolic jump targets, assemble.

Just enough of the instruction set for the root generator (splice.py): the
classes and opcodes it emits or has to recognise in a component's code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_INSN = struct.Struct("<BBhi")

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
    target: Label | None = None  # jumps: resolved into ``off`` by assemble()
    reloc: tuple[int, int] | None = None  # (symbol index, ELF relocation type)
    ext: list[tuple[int, bytes]] = field(default_factory=list)  # (BTF.ext kind, record)

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
            ins.imm_hi = _INSN.unpack_from(code, i * 8 + 8)[3]
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


# --- assembling -----------------------------------------------------------------------------


def assemble(prog: list[Insn | Place]) -> tuple[bytes, list[tuple[int, Insn]]]:
    """Encode ``prog``; returns the code and (byte offset, instruction) of each instruction
    (for its relocation and BTF.ext records)."""
    where: dict[int, int] = {}
    pos = 0
    for item in prog:
        if isinstance(item, Place):
            where[id(item.label)] = pos
        else:
            pos += item.slots
    out = bytearray()
    placed = []
    pos = 0
    for item in prog:
        if isinstance(item, Place):
            continue
        off = item.off
        if item.target is not None:
            if id(item.target) not in where:
                raise ValueError(f"label {item.target.name!r} was never placed")
            off = where[id(item.target)] - (pos + 1)
            if not -32768 <= off <= 32767:
                raise ValueError("jump too far for a 16-bit offset")
        placed.append((pos * 8, item))
        out += _INSN.pack(item.code, (item.src << 4) | item.dst, off, item.imm)
        if item.code == LD_IMM64:
            out += _INSN.pack(0, 0, 0, item.imm_hi)
        pos += item.slots
    return bytes(out), placed
