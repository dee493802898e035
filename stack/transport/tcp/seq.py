"""Modular 32-bit sequence-number arithmetic (RFC 9293 3.4, RFC 1982)."""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def add(a: int, n: int) -> int:
    return (a + n) & MASK


def sub(a: int, b: int) -> int:
    """a - b as a signed distance in (-2**31, 2**31]."""
    d = (a - b) & MASK
    return d - 0x100000000 if d >= HALF else d


def lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF


def le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) >= HALF


def gt(a: int, b: int) -> bool:
    return lt(b, a)


def ge(a: int, b: int) -> bool:
    return le(b, a)


def between(lo: int, x: int, hi: int) -> bool:
    """lo <= x < hi, modulo 2**32 (distance-based, so it works across the wrap)."""
    return ((x - lo) & MASK) < ((hi - lo) & MASK)


def max_(a: int, b: int) -> int:
    return b if lt(a, b) else a


def min_(a: int, b: int) -> int:
    return a if lt(a, b) else b
