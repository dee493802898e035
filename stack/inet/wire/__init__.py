"""Wire formats of the IPv4 layer: parse a buffer in place, emit into a new one.

Each module (``arp``, ``ipv4``, ``icmp``) parses with ``struct.unpack_from`` on a
``memoryview`` (no copies) and raises :class:`ParseError` - and nothing else - on bad
input. ``ParseError.reason`` is the name of the counter the handler bumps.
"""

from __future__ import annotations

from collections.abc import Sequence

from stack.csum import raw_sum
from stack.packet import Buffer


class ParseError(ValueError):
    """Malformed input. ``reason`` names the drop counter (``drop_bad_checksum``...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def checksum(bufs: Sequence[Buffer], initial: int = 0) -> int:
    """The checksum field value for data whose checksum field is zero."""
    s = raw_sum(bufs, initial)
    if s:
        return 0xFFFF - s
    # s == 0: the sum was 0 (all zero data -> 0xFFFF) or 0xFFFF (-> 0)
    return 0 if any(int.from_bytes(b, "big") for b in bufs) or initial else 0xFFFF


def checksum1(b: Buffer) -> int:
    """``checksum`` for one buffer (the hot path: IP and ICMP headers)."""
    v = int.from_bytes(b, "big")
    if len(b) & 1:
        v <<= 8
    s = v % 0xFFFF
    if s:
        return 0xFFFF - s
    return 0 if v else 0xFFFF


def verify1(b: Buffer) -> bool:
    """True when the data, checksum field included, sums to all ones."""
    v = int.from_bytes(b, "big")
    if len(b) & 1:
        v <<= 8
    return v % 0xFFFF == 0 and v != 0


def pseudo_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo header (for transports)."""
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length


__all__ = ["ParseError", "raw_sum", "checksum", "checksum1", "verify1", "pseudo_sum"]
