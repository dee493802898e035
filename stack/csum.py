"""The Internet checksum's sum (RFC 1071) over a list of buffers, without joining them.

Shared by the IP wire modules and layer 2's software segmentation (stack/l2/gso.py),
which cannot import the IP package (that package imports layer 2)."""

from __future__ import annotations

from collections.abc import Sequence

from stack.packet import Buffer


def raw_sum(bufs: Sequence[Buffer], initial: int = 0) -> int:
    """Ones'-complement sum (mod 0xFFFF) of the concatenation of ``bufs`` taken as
    16-bit big-endian words, without joining them. As 2**16 == 1 (mod 0xFFFF), a buffer
    followed by an odd number of bytes just needs a shift by 8."""
    total = 0
    after = 0
    for b in reversed(bufs):
        v = int.from_bytes(b, "big")
        if after & 1:
            v <<= 8
        total += v
        after += len(b)
    if after & 1:  # the whole is odd: pad with a zero byte at the end
        total <<= 8
    # ``initial`` (a pseudo-header sum) is already word-aligned: add it after the shift
    return (total + initial) % 0xFFFF
