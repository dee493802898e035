"""Timer churn keeps memory bounded (issue 14, item 3): cancelled inet timers and stale
TCP timer entries are compacted away instead of staying in the heap until their
deadlines; an evicted reassembly queue is released at once; tiny fragments are charged
the memory they really hold."""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref

import trio
from scapy.layers.inet import ICMP, IP, fragment
from scapy.layers.l2 import Ether

from stack.inet.reass import FragQueue
from stack.inet.timers import Timers
from stack.transport.tcp.timers import TimerService

#: cancelled entries a heap may hold beyond twice its live ones (stack.inet.timers and
#: stack.transport.tcp.timers COMPACT_MIN)
COMPACT_MIN = 64

M0 = "02:00:00:00:0a:01"
P0 = "02:00:00:00:aa:02"


def heap_len(timers: Timers | TimerService) -> int:
    return len(timers._heap)


def eth(pkt: object) -> bytes:
    return bytes(Ether(src=P0, dst=M0, type=0x0800) / pkt)  # type: ignore[operator]


async def test_cancelled_timers_do_not_accumulate(autojump_clock) -> None:
    ts = Timers()
    keep = [ts.call_later(1000 + i, lambda: None) for i in range(10)]
    for i in range(100_000):
        ts.call_later(30, lambda: None).cancel()
        assert heap_len(ts) <= 2 * (len(keep) + 1) + COMPACT_MIN + 1, i
    assert len(ts) == 10
    assert ts.compactions > 0
    # cancelling twice, or after firing, counts nothing more
    t = ts.call_later(1, lambda: None)
    t.cancel()
    t.cancel()
    assert len(ts) == 10
    fired: list[int] = []
    t = ts.call_later(0, lambda: fired.append(1))
    ts.run_due(trio.current_time())
    t.cancel()
    assert fired == [1] and len(ts) == 10
    for k in keep:
        k.cancel()
    assert len(ts) == 0 and heap_len(ts) <= COMPACT_MIN + 1


async def test_compaction_keeps_order_and_survives_callbacks(autojump_clock) -> None:
    """Timers fire in deadline order across compactions, including a compaction started
    by a callback while due timers are being run."""
    ts = Timers()
    order: list[int] = []
    doomed = [ts.call_later(5 + i / 1000, lambda: order.append(-1)) for i in range(500)]

    def cancel_all() -> None:
        order.append(0)
        for d in doomed:
            d.cancel()

    ts.call_later(1, cancel_all)
    for i in range(1, 6):
        ts.call_later(1 + i, lambda i=i: order.append(i))
    async with trio.open_nursery() as n:
        n.start_soon(ts.run)
        await trio.sleep(10)
        n.cancel_scope.cancel()
    assert order == [0, 1, 2, 3, 4, 5]
    assert ts.compactions >= 1 and heap_len(ts) == 0 and len(ts) == 0


class Owner:
    def __init__(self) -> None:
        self.timer_at = math.inf
        self.fired = 0

    def on_timer(self, now: float) -> None:
        self.fired += 1


async def test_tcp_timer_reschedules_do_not_accumulate(autojump_clock) -> None:
    """A connection moving its deadline at every segment (the retransmission or
    keepalive timer) leaves one stale heap entry per move; they are compacted, and a
    disarmed owner is not kept alive by the heap."""
    svc = TimerService()
    owners = [Owner() for _ in range(8)]
    now = trio.current_time()
    for i in range(50_000):
        o = owners[i % 8]
        svc.schedule(o, now + 7200 + i)  # keepalive-like: hours away
        assert heap_len(svc) <= 2 * 8 + COMPACT_MIN + 1, i
    assert len(svc) == 8
    # same deadline again: nothing pushed
    size = heap_len(svc)
    svc.schedule(owners[0], owners[0].timer_at)
    assert heap_len(svc) == size
    # closed connections go away although their deadlines are hours away
    gone = [Owner() for _ in range(1000)]
    for o in gone:
        svc.schedule(o, now + 7200)
    for o in gone:
        svc.schedule(o, math.inf)
    refs = [weakref.ref(o) for o in gone]
    del gone, o
    gc.collect()
    assert sum(1 for r in refs if r() is not None) <= COMPACT_MIN  # not 1000
    assert len(svc) == 8
    # and the live ones still fire, once each, at their deadline
    for o in owners:
        svc.schedule(o, now + 1)
    async with trio.open_nursery() as n:
        n.start_soon(svc.run)
        await trio.sleep(2)
        n.cancel_scope.cancel()
    assert [o.fired for o in owners] == [1] * 8
    assert len(svc) == 0 and heap_len(svc) == 0


async def test_evicted_queues_are_released(two_if_stack, autojump_clock) -> None:
    """First fragments with ever-new ids: every evicted queue is freed at once (no timer
    or closure keeps it), the timer heap stays near maxfragpackets, and the charged bytes
    never pass maxfragmem."""
    st, f0, _ = two_if_stack
    st.sysctl.set("net.inet.ip.maxfragpackets", "64")
    st.sysctl.set("net.inet.ip.maxfragmem", str(1 << 20))
    reass = st.inet.reass
    first = fragment(IP(src="10.0.0.2", dst="10.0.0.1", id=1) / ICMP() / (b"x" * 3000),
                     fragsize=1000)[0]
    frames = []
    for i in range(5000):
        first.id = i
        frames.append(eth(first))
    for fr in frames:
        f0.inject(fr)
    rc = reass.counters
    assert rc["frag_in"] == 5000 and rc["frag_evicted"] == 5000 - 64
    assert len(reass.queues) == 64
    assert heap_len(st.inet.timers) <= 2 * 64 + COMPACT_MIN + 16
    gc.collect()
    assert sum(1 for o in gc.get_objects() if type(o) is FragQueue) == 64
    assert 0 < rc["mem"] == reass.mem <= rc["mem_peak"] <= 1 << 20


async def test_tiny_fragments_charged_what_they_hold(two_if_stack, autojump_clock) -> None:
    """8-byte fragments, each in its own receive buffer: the memory really held stays
    within maxfragmem (they are copied out of their buffers, not pinning them)."""
    st, f0, _ = two_if_stack
    limit = 256 << 10
    st.sysctl.set("net.inet.ip.maxfragmem", str(limit))
    reass = st.inet.reass
    pkts = []
    for ident in range(40):
        for off in range(0, 400 * 8, 16):  # every other 8-byte block: never completes
            pkts.append(eth(IP(src="10.0.0.2", dst="10.0.0.1", id=ident, proto=17, flags=1,
                               frag=off // 8) / (b"z" * 8)))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for p in pkts:
            f0.inject(p)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    rc = reass.counters
    assert rc["frag_evicted"] > 0 and reass.mem <= limit
    assert held < 2 * limit, (held, reass.mem)
