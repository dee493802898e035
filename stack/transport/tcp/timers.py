"""Deadline-driven timers: one task per stack sleeps until the earliest deadline.

Each connection keeps its own deadlines and calls :meth:`TimerService.schedule` with the
earliest; the heap holds (deadline, order, owner) entries and stale entries are skipped
lazily (the owner's ``timer_at`` no longer matches). No fixed tick: the task sleeps on a
trio cancel-scope deadline, which works under ``trio.testing.MockClock``.

Stale entries are counted (each reschedule or disarm of an armed owner leaves one
behind); once they are more than half of the heap (and more than ``COMPACT_MIN``) the
heap is rebuilt with one entry per armed owner. So a connection that moves its deadline
at every segment (retransmission, keepalive) or a churn of short-lived connections keeps
the heap at about twice the armed connections. An entry is a list ``[deadline, order,
owner]`` that ``schedule`` returns: an owner that keeps it (the TCB's ``timer_entry``,
the TIME_WAIT record's) clears its owner slot when it moves or disarms its deadline, so a
stale entry holds nothing and a closed connection is freed at once, not at its old
deadlines (a keepalive's is hours away) nor at the next compaction; owners that do not
keep it are let go by the compaction.

``TCBTimers`` is the TCB's timer role (as NetBSD's tcp_timer.c): each connection keeps
absolute deadlines (``t_rexmt``, ``t_persist``, ``t_delack``, ``t_keep``, ``t_conn``;
INF = off), ``rearm`` schedules the earliest, ``on_timer`` runs the expired
ones: retransmission timeout (RFC 6298 with back-off, SYN retries), persist probes,
keepalive probes, the delayed ACK, the end of an orphaned connection. TIME_WAIT is not
the TCB's: a compact record takes its place (timewait.py) with its own 2MSL deadline."""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
from typing import Any, Protocol

import trio

from stack.transport.tcp import seq as sq
from stack.transport.tcp.state import INF, SEND_STATES, S, TCBState
from stack.transport.wire.tcp import ACK

log = logging.getLogger("io-pkt.tcp")

#: stale entries tolerated before a compaction is considered
COMPACT_MIN = 64

#: a heap entry: [deadline, order, owner]; the owner slot is None once its owner let it go
TimerEntry = list[Any]


class TimerOwner(Protocol):
    timer_at: float

    def on_timer(self, now: float) -> None: ...


class TimerService:
    def __init__(self) -> None:
        self._heap: list[TimerEntry] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._next = math.inf
        #: heap entries whose owner has been rescheduled or disarmed since
        self._stale = 0
        self.fired = 0
        self.errors = 0
        self.compactions = 0

    def schedule(self, owner: TimerOwner, deadline: float) -> TimerEntry | None:
        """Arm ``owner`` for ``deadline`` (math.inf = disarm). Returns the entry pushed
        (None when disarmed or unchanged): an owner may keep it and clear its owner slot
        (``entry[2] = None``) once it is stale, so the heap holds no reference to it."""
        prev = owner.timer_at
        if prev == deadline:
            return None  # already armed for it (or already disarmed)
        owner.timer_at = deadline
        if prev != math.inf:
            self._stale += 1  # the entry pushed for ``prev`` is dead now
        ent = None
        if deadline != math.inf:
            ent = [deadline, next(self._order), owner]
            heapq.heappush(self._heap, ent)
            if deadline < self._next:
                self._next = deadline
                self._wake.set()
        if self._stale > COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._compact()
        return ent

    def _compact(self) -> None:
        """Keep one entry per armed owner (in place: run() holds this list)."""
        heap = self._heap
        seen: set[int] = set()
        live = []
        for ent in heap:
            owner = ent[2]
            if owner is not None and owner.timer_at == ent[0] and id(owner) not in seen:
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
                if owner is None or owner.timer_at != deadline:
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
            while heap and (heap[0][2] is None or heap[0][2].timer_at != heap[0][0]):
                heapq.heappop(heap)
                self._stale = max(0, self._stale - 1)
            self._next = heap[0][0] if heap else math.inf
            self._wake = trio.Event()
            with trio.move_on_at(self._next):
                await self._wake.wait()


class TCBTimers(TCBState):
    """The timer role of the TCB (see state.py)."""

    __slots__ = ()  # the attributes are TCBState's slots

    def rearm(self) -> None:
        t = min(self.t_rexmt, self.t_persist, self.t_delack, self.t_keep, self.t_conn)
        if t != self.timer_at:
            old = self.timer_entry
            self.timer_entry = self.proto.timers.schedule(self, t)
            if old is not None:
                old[2] = None  # the stale entry no longer holds this TCB

    def on_timer(self, now: float) -> None:
        self.timer_entry = None  # popped by the service
        try:
            if self.t_conn <= now:
                self.t_conn = INF
                self.c["orphan_timeout"] += 1
                self.drop(errno.ETIMEDOUT, send_rst=self.state != S.FIN_WAIT_2)
                return
            if self.t_rexmt <= now:
                self.t_rexmt = INF
                self._rexmt_timeout(now)
                if self.state == S.CLOSED:
                    return
            if self.t_persist <= now:
                self.t_persist = INF
                self._persist_timeout(now)
            if self.t_keep <= now:
                self.t_keep = INF
                self._keep_timeout(now)
                if self.state == S.CLOSED:
                    return
            if self.t_delack <= now:
                self.t_delack = INF
                self.c["delayed_acks"] += 1
                self.ack_now = True
                self.output()
        finally:
            if self.state != S.CLOSED:
                self.rearm()

    def _rexmt_timeout(self, now: float) -> None:
        cfg = self.proto.cfg
        self.c["rexmt_timeouts"] += 1
        if self.state == S.SYN_SENT or self.state == S.SYN_RECEIVED:
            limit = cfg.syn_retries if self.state == S.SYN_SENT else cfg.synack_retries
            if self.syn_retries >= limit:
                self.c["conn_timeouts"] += 1
                if self.state == S.SYN_RECEIVED and self.passive:
                    self.destroy()
                else:
                    self.drop(errno.ETIMEDOUT, send_rst=False)
                return
            self.syn_retries += 1
            self.backoff += 1
            self.rto = min(self.rto * 2, cfg.rto_max)
            self.send_syn()
            return
        if self.flight() == 0:
            return
        if self.backoff >= cfg.max_retries:
            self.c["conn_timeouts"] += 1
            self.drop(errno.ETIMEDOUT, send_rst=True)
            return
        self.backoff += 1
        self.rto = min(self.rto * 2, cfg.rto_max)
        self.cc.on_rto(now, self.flight())
        self.in_recovery = False
        self.dupacks = 0
        self.recover = self.snd_max
        self.scoreboard.clear()
        self.rtt_seq = None  # Karn
        self.snd_nxt = self.snd_una  # go back N
        self.output(retransmit_timeout=True)

    def _persist_timeout(self, now: float) -> None:
        if self.state not in SEND_STATES:
            return
        self.c["persist_probes"] += 1
        # window probe: an ACK with an old sequence number elicits the peer's window
        self._send_control(sq.sub(self.snd_una, 1) & sq.MASK, ACK)
        self.persist_shift += 1
        self._arm_persist(now)

    def _arm_persist(self, now: float) -> None:
        cfg = self.proto.cfg
        interval = max(self.rto, cfg.rto_min) * (1 << min(self.persist_shift, 12))
        self.t_persist = now + min(max(interval, cfg.persist_min), cfg.persist_max)

    def keep_times(self) -> tuple[float, float, int]:
        """(idle, interval, count): this socket's keepalive times, else the sysctls'."""
        cfg = self.proto.cfg
        return (cfg.keepidle if self.keepidle is None else self.keepidle,
                cfg.keepintvl if self.keepintvl is None else self.keepintvl,
                cfg.keepcnt if self.keepcnt is None else self.keepcnt)

    def _keep_timeout(self, now: float) -> None:
        if not self.keepalive or self.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
            return
        keepidle, keepintvl, keepcnt = self.keep_times()
        # compare with the deadline itself, not ``now - last_rcv < keepidle``: in floating
        # point that can hold at the very deadline and re-arm the timer for ``now``, forever
        due = self.last_rcv + keepidle
        if self.keep_probes == 0 and now < due:
            self.t_keep = due
            return
        if self.keep_probes >= keepcnt:
            self.c["keepalive_drops"] += 1
            self.drop(errno.ETIMEDOUT, send_rst=True)
            return
        self.keep_probes += 1
        self.c["keepalive_probes"] += 1
        self._send_control(sq.sub(self.snd_una, 1) & sq.MASK, ACK)
        self.t_keep = now + keepintvl

    def arm_keepalive(self) -> None:
        if self.keepalive and self.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.t_keep = self.last_rcv + self.keep_times()[0]
        else:
            self.t_keep = INF
        self.rearm()

    def timer_at_all_off(self) -> None:
        self.t_rexmt = self.t_persist = self.t_delack = self.t_keep = self.t_conn = INF
        self.proto.timers.schedule(self, INF)
        old = self.timer_entry
        if old is not None:
            old[2] = None
            self.timer_entry = None
