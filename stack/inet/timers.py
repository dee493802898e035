"""Deadline-driven timers: one heap, one task that sleeps until the earliest deadline
(woken early when an earlier one is added). No fixed tick.

A cancelled timer stays in the heap until it reaches the top (removing it from the middle
of a heap costs O(n)), but it is counted: once cancelled entries are more than half of
the heap (and more than ``COMPACT_MIN``), the heap is rebuilt without them — asyncio's
rule. So the heap holds at most about twice the live timers whatever the churn (a flood
that creates and cancels a timer per packet), and a cancelled timer drops its callback at
once (nothing it refers to is kept)."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

log = logging.getLogger("io-pkt.inet")

#: cancelled entries tolerated before a compaction is considered (tiny heaps never are)
COMPACT_MIN = 64


class Timer:
    __slots__ = ("deadline", "fn", "seq", "_owner")

    def __init__(self, deadline: float, seq: int, fn: Callable[[], None] | None,
                 owner: Timers | None = None) -> None:
        self.deadline = deadline
        self.seq = seq
        self.fn = fn
        self._owner = owner  # the Timers whose heap holds this one, while it is pending

    def cancel(self) -> None:
        if self.fn is None:
            return  # fired or cancelled already
        self.fn = None
        owner = self._owner
        self._owner = None
        if owner is not None:
            owner._cancelled_one()

    @property
    def active(self) -> bool:
        return self.fn is not None

    def __lt__(self, other: Timer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class Timers:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        #: cancelled timers still in the heap
        self._cancelled = 0
        self.errors = 0
        self.compactions = 0

    def call_at(self, deadline: float, fn: Callable[[], None]) -> Timer:
        t = Timer(deadline, next(self._seq), fn, self)
        heap = self._heap
        if not heap or deadline < heap[0].deadline:
            self._wake.set()
        heapq.heappush(heap, t)
        return t

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.call_at(trio.current_time() + delay, fn)

    def __len__(self) -> int:
        """Pending (not cancelled, not fired) timers."""
        return len(self._heap) - self._cancelled

    @property
    def heap_size(self) -> int:
        """Entries in the heap, cancelled ones included (at most ~2 x len + COMPACT_MIN)."""
        return len(self._heap)

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > COMPACT_MIN and self._cancelled * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        # in place: run_due() may be iterating over this very list (a callback cancels)
        heap = self._heap
        heap[:] = [t for t in heap if t.fn is not None]
        heapq.heapify(heap)
        self._cancelled = 0
        self.compactions += 1

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0].deadline <= now:
            t = heapq.heappop(heap)
            fn = t.fn
            if fn is None:
                self._cancelled -= 1
                continue
            t.fn = None
            t._owner = None
            try:
                fn()
            except Exception:
                self.errors += 1
                log.exception("inet timer callback raised")

    async def run(self) -> None:
        while True:
            self._wake = trio.Event()
            self.run_due(trio.current_time())
            heap = self._heap
            while heap and heap[0].fn is None:
                heapq.heappop(heap)
                self._cancelled -= 1
            deadline = heap[0].deadline if heap else math.inf
            with trio.move_on_at(deadline):
                await self._wake.wait()
