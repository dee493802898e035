"""Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip,
remoteport, secretkey), M a 4-microsecond clock, F a keyed hash (BLAKE2b here)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable


class ISNGenerator:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 secret: bytes | None = None) -> None:
        self.clock = clock
        self.secret = secret or os.urandom(32)
        #: test hook: when set, the next ISNs come from this callable (e.g. near 2**32)
        self.override: Callable[[], int] | None = None

    def __call__(self, laddr: int, lport: int, raddr: int, rport: int) -> int:
        if self.override is not None:
            return self.override() & 0xFFFFFFFF
        m = int(self.clock() * 250_000)  # 4 us ticks
        h = hashlib.blake2b(
            laddr.to_bytes(16, "big") + lport.to_bytes(2, "big")
            + raddr.to_bytes(16, "big") + rport.to_bytes(2, "big"),
            key=self.secret, digest_size=4).digest()
        return (m + int.from_bytes(h, "big")) & 0xFFFFFFFF


class SynCookies:
    """Stateless SYN-ACKs (the classic layout): ISN = hash(tuple, t) [24 bits] with the
    5-bit time counter t and a 3-bit MSS index in the low byte. Options that need state
    (window scale, SACK) are encoded in the low 6 bits of our TSval when timestamps are
    on, as Linux does; without timestamps a cookie connection has neither."""

    MSS_TABLE = (536, 1220, 1360, 1400, 1440, 1448, 1460, 8960)

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 secret: bytes | None = None) -> None:
        self.clock = clock
        self.secret = secret or os.urandom(32)

    def _counter(self) -> int:
        return int(self.clock() / 64) & 0x1F  # advances every 64 s

    def _hash(self, laddr: int, lport: int, raddr: int, rport: int, irs: int, t: int) -> int:
        h = hashlib.blake2b(
            laddr.to_bytes(16, "big") + lport.to_bytes(2, "big") + raddr.to_bytes(16, "big")
            + rport.to_bytes(2, "big") + irs.to_bytes(4, "big") + bytes((t,)),
            key=self.secret, digest_size=3).digest()
        return int.from_bytes(h, "big")

    def make(self, laddr: int, lport: int, raddr: int, rport: int, irs: int, mss: int) -> int:
        idx = 0
        for i, m in enumerate(self.MSS_TABLE):
            if m <= mss:
                idx = i
        t = self._counter()
        return ((self._hash(laddr, lport, raddr, rport, irs, t) << 8) | (t << 3) | idx) & 0xFFFFFFFF

    def check(self, laddr: int, lport: int, raddr: int, rport: int, irs: int,
              cookie: int) -> int | None:
        """The MSS encoded in a valid cookie (at most two counter periods old), else None."""
        t = (cookie >> 3) & 0x1F
        now = self._counter()
        if (now - t) & 0x1F > 1:
            return None
        if self._hash(laddr, lport, raddr, rport, irs, t) != cookie >> 8:
            return None
        return self.MSS_TABLE[cookie & 7]
