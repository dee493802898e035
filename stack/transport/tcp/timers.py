"""Deadline-driven timers: one task per stack sleeps until the earliest deadline.

Each connection keeps its own deadlines and calls :meth:`TimerService.schedule` with the
earliest; the heap holds (deadline, order, owner) entries and stale entries are skipped
lazily (the owner's ``timer_at`` no longer matches). No fixed tick: the task sleeps on a
trio cancel-scope deadline, which works under ``trio.testing.MockClock``."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import trio

log = logging.getLogger("io-pkt.tcp")


class TimerOwner(Protocol):
    timer_at: float

    def on_timer(self, now: float) -> None: ...


class TimerService:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerOwner]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._next = math.inf
        self.fired = 0
        self.errors = 0

    def schedule(self, owner: TimerOwner, deadline: float) -> None:
        """Arm ``owner`` for ``deadline`` (math.inf = disarm)."""
        owner.timer_at = deadline
        if deadline == math.inf:
            return
        heapq.heappush(self._heap, (deadline, next(self._order), owner))
        if deadline < self._next:
            self._next = deadline
            self._wake.set()

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, owner = heapq.heappop(heap)
                if owner.timer_at != deadline:
                    continue  # stale entry: rescheduled or disarmed since
                owner.timer_at = math.inf
                self.fired += 1
                try:
                    owner.on_timer(now)
                except Exception:  # one broken connection must not stop every timer
                    self.errors += 1
                    log.exception("timer handler of %r raised", owner)
            # drop stale heads so the sleep targets a live deadline
            while heap and heap[0][2].timer_at != heap[0][0]:
                heapq.heappop(heap)
            self._next = heap[0][0] if heap else math.inf
            self._wake = trio.Event()
            with trio.move_on_at(self._next):
                await self._wake.wait()
