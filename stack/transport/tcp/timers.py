"""Deadline-driven timers: one task per stack sleeps until the earliest deadline.

Each connection keeps its own deadlines and calls :meth:`TimerService.schedule` with the
earliest; the heap holds (deadline, order, owner) entries and stale entries are skipped
lazily (the owner's ``timer_at`` no longer matches). No fixed tick: the task sleeps on a
trio cancel-scope deadline, which works under ``trio.testing.MockClock``.

Stale entries are counted (each reschedule or disarm of an armed owner leaves one
behind); once they are more than half of the heap (and more than ``COMPACT_MIN``) the
heap is rebuilt with one entry per armed owner. So a connection that moves its deadline
at every segment (retransmission, keepalive) or a churn of short-lived connections keeps
the heap at about twice the armed connections, and a closed connection is not kept alive
by its old entries until their deadlines (a keepalive deadline is hours away)."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import trio

log = logging.getLogger("io-pkt.tcp")

#: stale entries tolerated before a compaction is considered
COMPACT_MIN = 64


class TimerOwner(Protocol):
    timer_at: float

    def on_timer(self, now: float) -> None: ...


class TimerService:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerOwner]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._next = math.inf
        #: heap entries whose owner has been rescheduled or disarmed since
        self._stale = 0
        self.fired = 0
        self.errors = 0
        self.compactions = 0

    def schedule(self, owner: TimerOwner, deadline: float) -> None:
        """Arm ``owner`` for ``deadline`` (math.inf = disarm)."""
        prev = owner.timer_at
        if prev == deadline:
            return  # already armed for it (or already disarmed)
        owner.timer_at = deadline
        if prev != math.inf:
            self._stale += 1  # the entry pushed for ``prev`` is dead now
        if deadline != math.inf:
            heapq.heappush(self._heap, (deadline, next(self._order), owner))
            if deadline < self._next:
                self._next = deadline
                self._wake.set()
        if self._stale > COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        """Keep one entry per armed owner (in place: run() holds this list)."""
        heap = self._heap
        seen: set[int] = set()
        live = []
        for ent in heap:
            owner = ent[2]
            if owner.timer_at == ent[0] and id(owner) not in seen:
                seen.add(id(owner))
                live.append(ent)
        heap[:] = live
        heapq.heapify(heap)
        self._stale = 0
        self.compactions += 1

    def __len__(self) -> int:
        """Armed owners' entries (stale ones not counted)."""
        return len(self._heap) - self._stale

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, owner = heapq.heappop(heap)
                if owner.timer_at != deadline:
                    self._stale = max(0, self._stale - 1)
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
                self._stale = max(0, self._stale - 1)
            self._next = heap[0][0] if heap else math.inf
            self._wake = trio.Event()
            with trio.move_on_at(self._next):
                await self._wake.wait()
