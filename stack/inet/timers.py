"""Deadline-driven timers: one heap, one task that sleeps until the earliest deadline
(woken early when an earlier one is added). No fixed tick."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

log = logging.getLogger("io-pkt.inet")


class Timer:
    __slots__ = ("deadline", "fn", "seq")

    def __init__(self, deadline: float, seq: int, fn: Callable[[], None] | None) -> None:
        self.deadline = deadline
        self.seq = seq
        self.fn = fn

    def cancel(self) -> None:
        self.fn = None

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
        self.errors = 0

    def call_at(self, deadline: float, fn: Callable[[], None]) -> Timer:
        t = Timer(deadline, next(self._seq), fn)
        heap = self._heap
        if not heap or deadline < heap[0].deadline:
            self._wake.set()
        heapq.heappush(heap, t)
        return t

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.call_at(trio.current_time() + delay, fn)

    def __len__(self) -> int:
        return sum(1 for t in self._heap if t.fn is not None)

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0].deadline <= now:
            t = heapq.heappop(heap)
            fn = t.fn
            if fn is None:
                continue
            t.fn = None
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
            deadline = heap[0].deadline if heap else math.inf
            with trio.move_on_at(deadline):
                await self._wake.wait()
