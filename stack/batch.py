"""Work deferred to the end of a driver's receive batch (NAPI's flush at the end of a poll).

A driver that drains its device in batches (stack/l2/fdio.py) brackets each batch with
``begin()``/``end()``. While a batch is open, a protocol may ``defer`` work keyed by the
object it concerns; each key's work runs once, when the outermost batch ends. TCP uses it
to answer a burst of segments with one ``output()`` per connection (one ACK for the four
super-segments of a batch, one send for a burst of ACKs) instead of one per segment.

Outside a batch (a driver without batches, loopback, a test feeding frames by hand)
``active`` is False and protocols act at once, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stack.counters import Counters, names

BATCH_COUNTERS: frozenset[str] = names("batches deferred coalesced flushed work_failed "
                                       "early_ends")

log = logging.getLogger("io-pkt.batch")


class RxBatch:
    """The stack's one receive-batch bracket (``Stack.rx_batch``)."""

    __slots__ = ("depth", "pending", "counters", "_logged", "end_early")

    def __init__(self) -> None:
        self.depth = 0
        #: set by a protocol that woke a reader for a small message (a request, an
        #: echo): the driver ends its batch after this frame, so the reader's task
        #: runs now instead of after up to RX_BUDGET_BYTES of a bulk flow's frames
        self.end_early = False
        self.pending: dict[int, Callable[[], None]] = {}
        self.counters = Counters("rx_batch", BATCH_COUNTERS)
        self._logged = False

    @property
    def active(self) -> bool:
        return self.depth > 0

    def begin(self) -> None:
        if not self.depth:
            self.end_early = False  # a request left by a bracket that did not look
        self.depth += 1

    def end(self) -> None:
        """Close a batch; the outermost runs the deferred work (work deferred while it
        runs, e.g. by a segment looped back, runs in the same flush)."""
        self.depth -= 1
        if self.depth or not self.pending:
            return
        c = self.counters
        c["batches"] += 1
        pending = self.pending
        self.depth = 1  # work deferred by the flush itself joins this flush
        try:
            while pending:
                key = next(iter(pending))
                fn = pending.pop(key)
                c["flushed"] += 1
                try:
                    fn()
                except Exception:
                    # a protocol's bug must not take down the driver's receive task or
                    # the FUSE session whose bracket this is: counted, logged once
                    c["work_failed"] += 1
                    if not self._logged:
                        self._logged = True
                        log.exception("deferred work %r failed (counted in "
                                      "rx_batch.work_failed; logged once)", fn)
        finally:
            self.depth = 0

    def ended_early(self) -> None:
        """The driver ended its batch for ``reader_woken``."""
        self.end_early = False
        self.counters["early_ends"] += 1

    def reader_woken(self) -> None:
        """A small message was queued for a reader: end the open batch early."""
        if self.depth:
            self.end_early = True

    def defer(self, key: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at the end of the open batch (once per ``key``: a later ``fn`` for
        the same key replaces nothing, the first stays)."""
        pending = self.pending
        if key in pending:
            self.counters["coalesced"] += 1
            return
        self.counters["deferred"] += 1
        pending[key] = fn
