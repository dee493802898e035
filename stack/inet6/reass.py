"""IPv6 reassembly (RFC 8200 §4.5) on the shared fragment queues of stack/inet/reass.py
(``FragmentReassembler``: RFC 5722's overlap rule, the bounds, the memory accounting).

Keyed by (source, destination, identification); the reassembled datagram is the first
fragment's unfragmentable part, with the next-header byte that named the fragment
header set to the fragment header's next header, followed by the fragments' data. A
datagram not complete within ``net.inet6.ip6.fragttl`` (60 s) is dropped, with a Time
Exceeded (fragment reassembly) if its first fragment arrived.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.counters import Counters
from stack.inet.reass import FragmentReassembler, FragQueue
from stack.inet6.counters import REASS6_COUNTERS
from stack.inet6.wire import icmp6 as w6

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer


class Reassembler6(FragmentReassembler):
    def __init__(self, ip6: IPv6Layer) -> None:
        super().__init__(ip6.timers, Counters("reass6", REASS6_COUNTERS))
        self.ip6 = ip6
        reg = ip6.stack.sysctl.register
        self.k_ttl = reg("net.inet6.ip6.fragttl", 60, "seconds to wait for all fragments",
                         lo=1)
        self.k_maxq = reg("net.inet6.ip6.maxfragpackets", 1024,
                          "datagrams being reassembled", lo=1)
        self.k_maxmem = reg("net.inet6.ip6.maxfragmem", 4 << 20, "bytes held by reassembly",
                            lo=65536)

    def input(self, unfrag: memoryview, payload: memoryview, nh: int, src: int, dst: int,
              ident: int, offset: int, more: bool, nh_at: int) -> bytearray | None:
        """Add a fragment: ``unfrag`` is its unfragmentable part (fixed header and the
        headers before the fragment header), ``payload`` what follows the fragment
        header, ``nh`` the fragment header's next header, ``nh_at`` the offset in
        ``unfrag`` of the byte that names the fragment header."""
        if offset == 0:
            hdr = bytearray(unfrag)
            hdr[nh_at] = nh
            head = memoryview(hdr)
        else:
            head = unfrag
        # the reassembled payload length field is 16 bits
        return self.add((src, dst, ident), head, payload, offset, more,
                        65535 - (len(unfrag) - 40))

    def _expired(self, q: FragQueue) -> None:
        self.ip6.icmp.send_error(w6.TIME_EXCEEDED, w6.TIMXCEED_REASS,
                                 memoryview(q.first_quote))

    def _assemble(self, header: bytes, frags: list[tuple[int, int, memoryview | bytes]],
                  total: int) -> bytearray | None:
        hl = len(header)
        if hl - 40 + total > 65535:
            return None
        out = bytearray(hl + total)
        out[:hl] = header
        for s, e, data in frags:
            out[hl + s:hl + e] = data
        out[4:6] = (hl - 40 + total).to_bytes(2, "big")
        return out
