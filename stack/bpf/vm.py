"""Classic BPF (the BSD packet filter machine, as ``tcpdump -ddd`` prints it).

A program is a list of ``Insn(code, jt, jf, k)``. ``parse_ddd(text)`` reads the
``tcpdump -ddd`` form (first line: the instruction count, then one ``code jt jf k`` line
per instruction, decimal); ``validate(prog)`` applies the kernel's checks
(``bpf_validate``: known opcodes, jumps forward and inside the program, scratch memory
indexes below 16, no constant division by zero, the last instruction a return);
``run(prog, pkt)`` interprets it over a frame and returns the number of bytes to keep
(0 = reject). Every opcode tcpdump emits is supported: ``ld/ldh/ldb`` with ``imm``,
``abs``, ``ind``, ``mem``, ``len``; ``ldx`` with ``imm``, ``mem``, ``len``, ``msh``;
``st/stx``; the ALU ops (add sub mul div mod and or xor lsh rsh neg) with ``k`` or ``x``;
``ja/jeq/jgt/jge/jset`` with ``k`` or ``x``; ``ret`` with ``k``, ``a``; ``tax``/``txa``.
A load outside the packet ends the program with 0, as in the kernel.

``Filter(prog)`` validates once and predecodes; ``Filter.__call__(pkt)`` runs it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

# instruction classes
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
# sizes
W, H, B = 0x00, 0x08, 0x10
# modes
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
# alu ops
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
# jumps
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
# sources
K, X = 0x00, 0x08
# ret sources
RET_K, RET_X, RET_A = 0x00, 0x08, 0x10
# misc
TAX, TXA = 0x00, 0x80

MEMWORDS = 16
MAXINSNS = 4096
M32 = 0xFFFFFFFF

_insn = struct.Struct("=HBBI")  # struct bpf_insn {u16 code; u8 jt; u8 jf; u32 k}
INSN_SIZE = _insn.size


class BpfError(ValueError):
    """An invalid program (the message says which instruction and why)."""


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int

    def __str__(self) -> str:
        return f"{self.code} {self.jt} {self.jf} {self.k}"


def parse_ddd(text: str) -> list[Insn]:
    """Parse ``tcpdump -ddd`` output (count line, then ``code jt jf k`` lines). A comma
    or newline may separate instructions (the form ``tcpdump -ddd | tr '\\n' ','``
    gives, as accepted by iptables' bpf match)."""
    items = [p.strip() for p in text.replace(",", "\n").splitlines()]
    items = [p for p in items if p and not p.startswith("#")]
    if not items:
        raise BpfError("empty program")
    try:
        count = int(items[0])
    except ValueError:
        raise BpfError(f"first line must be the instruction count, got {items[0]!r}") from None
    body = items[1:]
    if count != len(body):
        raise BpfError(f"count says {count} instructions, found {len(body)}")
    prog = []
    for n, line in enumerate(body):
        parts = line.split()
        if len(parts) != 4:
            raise BpfError(f"instruction {n}: expected 'code jt jf k', got {line!r}")
        try:
            code, jt, jf, k = (int(p, 0) for p in parts)
        except ValueError:
            raise BpfError(f"instruction {n}: not numbers: {line!r}") from None
        if not (0 <= code <= 0xFFFF and 0 <= jt <= 255 and 0 <= jf <= 255):
            raise BpfError(f"instruction {n}: field out of range: {line!r}")
        prog.append(Insn(code, jt, jf, k & M32))
    validate(prog)
    return prog


def format_ddd(prog: Sequence[Insn]) -> str:
    return f"{len(prog)}\n" + "".join(f"{i}\n" for i in prog)


def pack(prog: Sequence[Insn]) -> bytes:
    """The binary form (``struct bpf_insn`` array, native byte order)."""
    return b"".join(_insn.pack(i.code, i.jt, i.jf, i.k) for i in prog)


def unpack(data: bytes, count: int) -> list[Insn]:
    if count * INSN_SIZE > len(data):
        raise BpfError(f"{count} instructions do not fit in {len(data)} bytes")
    return [Insn(*_insn.unpack_from(data, n * INSN_SIZE)) for n in range(count)]


_LD_MODES = {IMM, ABS, IND, MEM, LEN}
_LDX_MODES = {IMM, MEM, LEN, MSH}
_ALU_OPS = {ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR}
_JMP_OPS = {JA, JEQ, JGT, JGE, JSET}


def validate(prog: Sequence[Insn]) -> None:
    n = len(prog)
    if n == 0:
        raise BpfError("empty program")
    if n > MAXINSNS:
        raise BpfError(f"program of {n} instructions is longer than {MAXINSNS}")
    for pc, ins in enumerate(prog):
        code, cls = ins.code, ins.code & 7
        where = f"instruction {pc} ({ins})"
        if cls == LD:
            mode, size = code & 0xE0, code & 0x18
            if mode not in _LD_MODES or size not in (W, H, B) or code > 0xFF:
                raise BpfError(f"{where}: bad load opcode")
            if mode == MEM and ins.k >= MEMWORDS:
                raise BpfError(f"{where}: scratch memory index out of range")
        elif cls == LDX:
            mode = code & 0xE0
            if mode not in _LDX_MODES or (mode == MSH and code & 0x18 != B):
                raise BpfError(f"{where}: bad ldx opcode")
            if mode == MEM and ins.k >= MEMWORDS:
                raise BpfError(f"{where}: scratch memory index out of range")
        elif cls in (ST, STX):
            if code != cls:
                raise BpfError(f"{where}: bad store opcode")
            if ins.k >= MEMWORDS:
                raise BpfError(f"{where}: scratch memory index out of range")
        elif cls == ALU:
            op = code & 0xF0
            if op not in _ALU_OPS or code > 0xFF:
                raise BpfError(f"{where}: bad ALU opcode")
            if op in (DIV, MOD) and not code & X and ins.k == 0:
                raise BpfError(f"{where}: division by constant zero")
        elif cls == JMP:
            op = code & 0xF0
            if op not in _JMP_OPS or code > 0xFF:
                raise BpfError(f"{where}: bad jump opcode")
            if op == JA:
                if pc + 1 + ins.k >= n:
                    raise BpfError(f"{where}: jump out of the program")
            elif pc + 1 + max(ins.jt, ins.jf) >= n:
                raise BpfError(f"{where}: jump out of the program")
        elif cls == RET:
            if code & 0x18 not in (RET_K, RET_X, RET_A) or code & ~0x18 != RET:
                raise BpfError(f"{where}: bad return opcode")
        elif cls == MISC:
            if code & 0xF8 not in (TAX, TXA):
                raise BpfError(f"{where}: bad misc opcode")
    if prog[-1].code & 7 != RET:
        raise BpfError("the last instruction must be a return")


_SIZES = {W: 4, H: 2, B: 1}


def run(prog: Sequence[Insn], pkt: bytes | bytearray | memoryview, wirelen: int | None = None) -> int:
    """Interpret ``prog`` over ``pkt``; returns the accept length (0: reject).
    ``prog`` must have been validated. ``wirelen`` is ``len`` (defaults to len(pkt))."""
    a = x = 0
    mem = [0] * MEMWORDS
    plen = len(pkt)
    wl = plen if wirelen is None else wirelen
    pc = 0
    n = len(prog)
    while pc < n:
        ins = prog[pc]
        code = ins.code
        cls = code & 7
        k = ins.k
        pc += 1
        if cls == LD or cls == LDX:
            mode = code & 0xE0
            if mode == IMM:
                v = k
            elif mode == LEN:
                v = wl
            elif mode == MEM:
                v = mem[k]
            elif mode == MSH:
                if k >= plen:
                    return 0
                v = (pkt[k] & 0xF) << 2
            else:
                off = k if mode == ABS else (x + k) & M32
                size = _SIZES[code & 0x18]
                if off + size > plen:
                    return 0
                v = int.from_bytes(pkt[off:off + size], "big")
            if cls == LD:
                a = v
            else:
                x = v
        elif cls == ST:
            mem[k] = a
        elif cls == STX:
            mem[k] = x
        elif cls == ALU:
            op = code & 0xF0
            src = x if code & X else k
            if op == ADD:
                a = (a + src) & M32
            elif op == SUB:
                a = (a - src) & M32
            elif op == MUL:
                a = (a * src) & M32
            elif op == DIV:
                if src == 0:
                    return 0
                a = a // src
            elif op == MOD:
                if src == 0:
                    return 0
                a = a % src
            elif op == OR:
                a |= src
            elif op == AND:
                a &= src
            elif op == XOR:
                a ^= src
            elif op == LSH:
                a = (a << src) & M32 if src < 32 else 0
            elif op == RSH:
                a = a >> src if src < 32 else 0
            elif op == NEG:
                a = (-a) & M32
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            src = x if code & X else k
            if op == JEQ:
                t = a == src
            elif op == JGT:
                t = a > src
            elif op == JGE:
                t = a >= src
            else:
                t = bool(a & src)
            pc += ins.jt if t else ins.jf
        elif cls == RET:
            r = code & 0x18
            return k if r == RET_K else (a if r == RET_A else x)
        else:  # MISC
            if code & 0xF8 == TAX:
                x = a
            else:
                a = x
    return 0


class Filter:
    """A validated program, ready to run. ``Filter.accept_all()`` keeps everything."""

    __slots__ = ("prog", "text")

    def __init__(self, prog: Sequence[Insn]) -> None:
        validate(prog)
        self.prog = tuple(prog)
        self.text = format_ddd(self.prog)

    @classmethod
    def from_ddd(cls, text: str) -> Filter:
        return cls(parse_ddd(text))

    def __call__(self, pkt: bytes | bytearray | memoryview, wirelen: int | None = None) -> int:
        return run(self.prog, pkt, wirelen)

    def __len__(self) -> int:
        return len(self.prog)
