"""The Internet checksum (RFC 1071), computed with big-integer folding.

``int.from_bytes(data, "big") % 0xFFFF`` equals the 16-bit ones'-complement sum of
``data`` (as 2**16 == 1 mod 0xFFFF), modulo the +0/-0 ambiguity, at C speed."""

from __future__ import annotations

from collections.abc import Sequence

from stack.addr import pseudo_header_sum
from stack.packet import Buffer

#: the pseudo header of either family, from stack/addr.py (addresses are ``Addr`` values;
#: re-exported here for the wire modules' users)
__all__ = ["ParseError", "pseudo_header_sum", "raw_sum", "checksum", "verify", "fold"]


class ParseError(ValueError):
    """A malformed header or option."""


def raw_sum(bufs: Sequence[Buffer], initial: int = 0) -> int:
    """Sum (mod 0xFFFF) of the concatenation of ``bufs`` as 16-bit big-endian words."""
    total = initial
    carry: Buffer | None = None
    for b in bufs:
        if carry is not None:
            b = bytes(carry) + bytes(b)
            carry = None
        n = len(b)
        if n & 1:
            # keep alignment: fold the even prefix, carry the odd byte into the next one
            if n > 1:
                total += int.from_bytes(b[: n - 1], "big")
            carry = b[n - 1:]
            continue
        total += int.from_bytes(b, "big")
    if carry is not None:
        total += carry[0] << 8
    return total % 0xFFFF


def checksum(bufs: Sequence[Buffer], initial: int = 0) -> int:
    """The checksum field value for ``bufs`` (with the checksum field zeroed)."""
    s = raw_sum(bufs, initial)
    return (~s) & 0xFFFF if s else 0  # s == 0: the ones'-complement sum was 0xFFFF


def verify(bufs: Sequence[Buffer], initial: int = 0) -> bool:
    """True when the sum over data including its checksum field is all ones."""
    return raw_sum(bufs, initial) == 0


def fold(s: int) -> int:
    """Fold an unfolded sum into 16 bits (for a partial/pseudo-header checksum)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s
