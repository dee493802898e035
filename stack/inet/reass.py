"""Reassembly for both families: ``FragmentReassembler`` holds the part they share
(IPv6's is stack/inet6/reass.py), ``Reassembler`` is IPv4's (RFC 791 / RFC 815).

The RFC 5722 rule: a fragment that overlaps
another (other than an exact duplicate, which is dropped alone) kills the whole datagram,
and further fragments of it are dropped until its timer expires.

Bounds: a per-datagram timer (``net.inet.ip.fragttl``, 30 s), a limit on datagrams being
reassembled (``net.inet.ip.maxfragpackets``) and on bytes held (``net.inet.ip.maxfragmem``);
beyond them the oldest datagram is evicted, its fragments released at once (its timer is
cancelled, which drops the only reference the timer heap had to it). Bytes are charged
as memory really held (Linux's truesize): a fragment is kept as a view of the frame it
arrived in (no copy) and charged the whole receive buffer, unless it fills less than
half of it, in which case its payload is copied out and the buffer freed; plus
``FRAG_OVERHEAD`` for the bookkeeping objects. So a flood of tiny fragments cannot pin
2 kB receive buffers while being charged a few bytes. On completion the datagram is
copied once into one buffer. Counters ``mem`` and ``mem_peak`` show the bytes charged
now and at most.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio

from stack.counters import Counters
from stack.inet.counters import REASS_COUNTERS
from stack.inet.timers import Timer, Timers
from stack.inet.wire import checksum1
from stack.inet.wire import icmp as wicmp

if TYPE_CHECKING:  # cycle: IPv4Layer owns this part and the part calls back into it; types only
    from stack.inet.ipv4 import IPv4Layer
    from stack.sysctl import Knob

#: bytes charged per fragment beyond its data: the tuple, the view or bytes object and
#: the list slots holding it (measured ~300 bytes in CPython)
FRAG_OVERHEAD = 320

Key = tuple[int, ...]  # IPv4: (src, dst, proto, ident); IPv6: (src, dst, ident)


def _hold(payload: memoryview) -> tuple[memoryview | bytes, int]:
    """What to keep of a fragment's payload, and the bytes to charge for it."""
    n = len(payload)
    try:
        buf = len(payload.obj)  # type: ignore[arg-type]  # the frame's receive buffer
    except TypeError:
        buf = n
    if buf > 2 * n:
        return bytes(payload), n + FRAG_OVERHEAD  # small in a big buffer: copy, free it
    return payload, max(buf, n) + FRAG_OVERHEAD


class FragQueue:
    __slots__ = ("key", "starts", "frags", "total", "received", "header", "timer", "dead",
                 "size", "first_quote")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.starts: list[int] = []
        self.frags: list[tuple[int, int, memoryview | bytes]] = []
        self.total = -1  # payload length, known once the last fragment arrived
        self.received = 0
        self.header: bytes | None = None  # the first fragment's IP header
        self.first_quote: bytes = b""  # first fragment's header + 8 bytes (ICMP errors)
        self.timer: Timer | None = None
        self.dead = False
        self.size = 0


class FragmentReassembler:
    """The family-neutral part: fragment queues, the RFC 5722 overlap rule, the bounds
    and the memory accounting. A family subclasses it with ``_expired`` (the timeout's
    ICMP error) and ``_assemble`` (the whole datagram from the first fragment's header and
    the payload), and registers its own sysctls (``k_ttl``, ``k_maxq``, ``k_maxmem``)."""

    k_ttl: Knob
    k_maxq: Knob
    k_maxmem: Knob

    def __init__(self, timers: Timers, counters: Counters) -> None:
        self.timers = timers
        self.counters = counters
        self.queues: OrderedDict[Key, FragQueue] = OrderedDict()
        self.mem = 0

    def _expired(self, q: FragQueue) -> None:
        """The datagram timed out with its first fragment (``q.first_quote``) held."""

    def _assemble(self, header: bytes, frags: list[tuple[int, int, memoryview | bytes]],
                  total: int) -> bytearray | None:
        raise NotImplementedError

    def _drop_queue(self, q: FragQueue) -> None:
        self.mem -= q.size
        self.counters["mem"] = self.mem
        q.size = 0
        q.frags = []
        q.starts = []

    def _expire(self, q: FragQueue) -> None:
        if self.queues.get(q.key) is q:
            del self.queues[q.key]
        if not q.dead:
            self.counters["frag_timeout"] += 1
            if q.header is not None and q.first_quote:
                self._expired(q)
        self._drop_queue(q)

    def _kill(self, q: FragQueue) -> None:
        """RFC 5722: drop the datagram; keep the key poisoned until the timer runs."""
        q.dead = True
        self._drop_queue(q)

    def _evict(self, need: int) -> None:
        maxmem = int(self.k_maxmem.value)
        maxq = int(self.k_maxq.value)
        while self.queues and (self.mem + need > maxmem or len(self.queues) >= maxq):
            _, q = self.queues.popitem(last=False)
            if q.timer is not None:
                q.timer.cancel()
                q.timer = None
            self.counters["frag_evicted"] += 1
            self._drop_queue(q)

    def add(self, key: Key, hdr: memoryview, payload: memoryview, offset: int, more: bool,
            limit: int) -> bytearray | None:
        """Add a fragment of the datagram ``key``. ``hdr`` is the first fragment's
        per-datagram header (kept from offset 0), ``payload`` its data; no byte may lie
        at or beyond ``limit``. Returns the whole datagram (``_assemble``) once complete."""
        c = self.counters
        c["frag_in"] += 1
        n = len(payload)
        end = offset + n
        if n == 0 or (more and n & 7):
            c["drop_bad_fragment"] += 1
            return None
        q = self.queues.get(key)
        if end > limit:
            # ping of death: no datagram can hold this byte; drop it now, and the
            # fragments held for it (as Linux's ip_frag_queue), rather than keep them
            # until the datagram completes or times out
            c["drop_too_long"] += 1
            if q is not None and not q.dead:
                self._kill(q)
            return None
        data, charge = _hold(payload)
        if q is None:
            self._evict(charge)
            if self.mem + charge > int(self.k_maxmem.value):
                c["drop_no_memory"] += 1
                return None
            q = FragQueue(key)
            self.queues[key] = q
            q.timer = self.timers.call_at(trio.current_time() + int(self.k_ttl.value),
                                               lambda: self._expire(q))
        if q.dead:
            c["drop_dead_datagram"] += 1
            return None
        # the last fragment fixes the length; anything beyond it is inconsistent
        if not more:
            if (q.total >= 0 and q.total != end) or (q.frags and q.frags[-1][1] > end):
                c["frag_overlap"] += 1
                self._kill(q)
                return None
            q.total = end
        elif q.total >= 0 and end > q.total:
            c["frag_overlap"] += 1
            self._kill(q)
            return None
        starts = q.starts
        i = bisect.bisect_left(starts, offset)
        frags = q.frags
        # neighbours: the previous fragment must end at or before offset, the next one
        # start at or after end
        if i < len(frags) and frags[i][0] == offset and frags[i][1] == end:
            if bytes(frags[i][2]) == bytes(data):
                c["frag_duplicate"] += 1  # RFC 5722 allows dropping exact duplicates alone
                return None
            c["frag_overlap"] += 1
            self._kill(q)
            return None
        if (i > 0 and frags[i - 1][1] > offset) or (i < len(frags) and frags[i][0] < end):
            c["frag_overlap"] += 1
            self._kill(q)
            return None
        if self.mem + charge > int(self.k_maxmem.value):
            self._evict(charge)
            if self.queues.get(key) is not q:
                c["drop_no_memory"] += 1
                return None
        starts.insert(i, offset)
        frags.insert(i, (offset, end, data))
        q.received += n
        q.size += charge
        self.mem += charge
        c["mem"] = self.mem
        if self.mem > c["mem_peak"]:
            c["mem_peak"] = self.mem
        if offset == 0:
            q.header = bytes(hdr)
            q.first_quote = bytes(hdr) + bytes(payload[:8])
        if q.total < 0 or q.received != q.total:
            return None
        # complete: no overlaps were admitted, so the pieces tile [0, total)
        del self.queues[key]
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        assert q.header is not None
        out = self._assemble(q.header, frags, q.total)
        self._drop_queue(q)
        if out is None:
            c["drop_too_long"] += 1
            return None
        c["reassembled"] += 1
        return out


class Reassembler(FragmentReassembler):
    """IPv4's: keyed by (src, dst, proto, ident), the ``net.inet.ip.frag*`` sysctls."""

    def __init__(self, inet: IPv4Layer) -> None:
        super().__init__(inet.timers, Counters("reass", REASS_COUNTERS))
        self.inet = inet
        reg = inet.stack.sysctl.register
        self.k_ttl = reg("net.inet.ip.fragttl", 30, "seconds to wait for all fragments", lo=1)
        self.k_maxq = reg("net.inet.ip.maxfragpackets", 1024, "datagrams being reassembled", lo=1)
        self.k_maxmem = reg("net.inet.ip.maxfragmem", 4 << 20, "bytes held by reassembly",
                            lo=65536)

    def input(self, hdr: memoryview, payload: memoryview, src: int, dst: int, proto: int,
              ident: int, offset: int, more: bool) -> bytearray | None:
        """Add a fragment. ``hdr`` is its IP header, ``payload`` its data. Returns the
        whole datagram (header + payload, header fields fixed) once complete."""
        # ping of death: no datagram can hold a byte at 65535 - header or beyond
        return self.add((src, dst, proto, ident), hdr, payload, offset, more,
                        65535 - len(hdr))

    def _expired(self, q: FragQueue) -> None:
        # RFC 792: time exceeded in reassembly, if the first fragment arrived
        self.inet.icmp.send_error(wicmp.TIME_EXCEEDED, wicmp.TIMXCEED_REASS,
                                  memoryview(q.first_quote))

    def _assemble(self, header: bytes, frags: list[tuple[int, int, memoryview | bytes]],
                  total: int) -> bytearray | None:
        ihl = len(header)
        size = ihl + total
        if size > 65535:
            return None
        out = bytearray(size)
        out[:ihl] = header
        for s, e, data in frags:
            out[ihl + s:ihl + e] = data
        out[2:4] = size.to_bytes(2, "big")
        out[6:8] = b"\0\0"  # no MF, offset 0 (DF irrelevant now)
        out[10:12] = b"\0\0"
        out[10:12] = checksum1(out[:ihl]).to_bytes(2, "big")
        return out
