"""Send buffer as a queue of immutable chunks: a segment's payload is a list of
memoryview slices of them (no copy per segment, and a driver may keep the views queued
safely because the chunks never change)."""

from __future__ import annotations

from collections import deque

COALESCE = 2048  # small writes are merged into the tail chunk up to this size
#: the chunks of every empty buffer, never appended to: a deque costs 760 bytes (its first
#: block), which an idle connection (10,000 of them: 7.6 MB) need not hold
_EMPTY: deque[bytes] = deque()


class SendBuffer:
    __slots__ = ("chunks", "head", "length")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = _EMPTY  # its own deque from the first append
        self.head = 0      # offset of the first unacknowledged byte in chunks[0]
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def append(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        chunks = self.chunks
        if chunks is _EMPTY:
            chunks = self.chunks = deque()
        if n < COALESCE and chunks and len(chunks[-1]) < COALESCE:
            chunks[-1] = chunks[-1] + bytes(data)
        else:
            chunks.append(bytes(data))
        self.length += n

    def slice(self, offset: int, n: int) -> list[memoryview]:
        """Views of bytes [offset, offset+n) (offset from the first unacked byte)."""
        out: list[memoryview] = []
        off = offset + self.head
        for c in self.chunks:
            lc = len(c)
            if off >= lc:
                off -= lc
                continue
            take = min(lc - off, n)
            out.append(memoryview(c)[off:off + take])
            n -= take
            off = 0
            if n <= 0:
                break
        return out

    def consume(self, n: int) -> None:
        """Drop ``n`` acknowledged bytes from the front."""
        self.length -= n
        chunks = self.chunks
        n += self.head
        while chunks and n >= len(chunks[0]):
            n -= len(chunks.popleft())
        if chunks:
            self.head = n
        else:  # all acknowledged: an idle connection holds no deque
            self.head = 0
            self.chunks = _EMPTY
