"""ICMPv6 (RFC 4443): echo, errors in and out with a token-bucket rate limiter, the
dispatch of ND and MLD messages, and the echo client (ping6).

Errors received are handed to the transport that sent the quoted datagram in the
control-input vocabulary of stack/network.py (ICMPv4's type and code numbers):
unreachable → (3, code) with port unreachable as (3, 3), packet too big → (3, 4) with
the MTU (and the path MTU learned, RFC 8201), time exceeded → (11, 0), parameter
problem → (12, 0).
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr, format_addr
from stack.counters import Counters
from stack.icmp_common import ErrorRateLimit, PingWaiter
from stack.inet6.counters import ICMP6_COUNTERS
from stack.inet6.ifaddr import is_multicast6
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import (
    EXTENSION_HEADERS,
    HLEN,
    NH_ICMPV6,
    NH_NONE,
    ChainError,
    walk_chain,
)
from stack.network import IPInfo

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer

#: RFC 4443 §2.4(c): an error carries as much of the offending packet as fits in the
#: minimum MTU
MAX_QUOTE = 1280 - 40 - 8

#: ICMPv6 unreachable code → control-input (ICMPv4) code: no route → net, admin →
#: filtered (13), beyond scope / address → host, port → port, policy/reject → filtered
_UNREACH_CODE = {0: 0, 1: 13, 2: 1, 3: 1, 4: 3, 5: 13, 6: 13}


class Icmp6Error(OSError):
    """An ICMPv6 error answered an echo request (ping6 shows it)."""

    def __init__(self, icmp_type: int, code: int, source: int, extra: int = 0) -> None:
        text = {1: "Destination unreachable", 2: "Packet too big", 3: "Time exceeded",
                4: "Parameter problem"}.get(icmp_type, f"ICMPv6 type {icmp_type}")
        super().__init__(errno.EHOSTUNREACH, f"From {format_addr(source)}: {text} (code {code})")
        self.icmp_type = icmp_type
        self.code = code
        self.source = source
        self.extra = extra


@dataclass
class EchoReply6:
    rtt: float
    source: IPv6Address
    hop_limit: int
    size: int
    seq: int
    ident: int


class Icmp6:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.counters = Counters("icmp6", ICMP6_COUNTERS)
        reg = ip6.stack.sysctl.register
        self.k_rate = reg("net.inet6.icmp6.errppslimit", 100,
                          "ICMPv6 errors per second (token bucket; 0: unlimited)", lo=0)
        self.k_burst = reg("net.inet6.icmp6.errburst", 50, "ICMPv6 error burst", lo=1)
        self.k_mcastecho = reg("net.inet6.icmp6.mcastecho", 1,
                               "answer echo requests sent to multicast groups", lo=0, hi=1)
        #: the error rate limit (its ``clock`` is what tests freeze)
        self.limit = ErrorRateLimit(self.k_rate, self.k_burst)
        self.waiters: dict[tuple[int, int], PingWaiter] = {}
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)

    # -- input -----------------------------------------------------------------------
    def input(self, info: IPInfo) -> None:
        c = self.counters
        buf = info.payload
        if len(buf) < 4:
            c["drop_truncated"] += 1
            return
        if not info.csum_valid and not w6.verify6(info.src, info.dst, buf):
            c["drop_bad_checksum"] += 1
            return
        t = buf[0]
        if t == w6.ECHO_REQUEST:
            c["in_echo"] += 1
            self._echo_reply(info, buf)
        elif t == w6.ECHO_REPLY:
            c["in_echo_reply"] += 1
            if len(buf) < 8:
                c["drop_truncated"] += 1
                return
            key = (int.from_bytes(buf[4:6], "big"), int.from_bytes(buf[6:8], "big"))
            w = self.waiters.get(key)
            if w is None or w.event.is_set():
                c["echo_reply_unmatched"] += 1
                return
            w.reply = (info, time.perf_counter(), len(buf) - 8)
            w.event.set()
        elif t in w6.ERROR_TYPES:
            c[f"in_error_{t}"] += 1
            self._error_input(info, buf)
        elif t in w6.ND_TYPES:
            c["in_nd"] += 1
            self.ip6.nd.input(info, buf)
        elif t in (w6.MLD_QUERY, w6.MLD_REPORT_V1, w6.MLD_DONE, w6.MLD_REPORT_V2):
            c["in_mld"] += 1
            self.ip6.mld.input(info, buf)
        else:
            c["in_other_type"] += 1

    def _echo_reply(self, info: IPInfo, buf: memoryview) -> None:
        c = self.counters
        src: int = info.dst
        ifname = None
        if info.broadcast:  # to a group: answer from an address of the interface
            if not self.k_mcastecho.value:
                c["drop_multicast_echo"] += 1
                return
            pkt = info.pkt
            iface = pkt.iface if pkt is not None else None
            ifname = iface.name if iface is not None else None
            s = self.ip6.source_for(info.src, ifname)
            if s is None:
                return
            src = s
        elif info.pkt is not None and info.pkt.iface is not None and \
                not info.pkt.iface.flags & 0x8:  # IFF_LOOPBACK: answer on the same link
            ifname = info.pkt.iface.name
        body = buf[4:]
        hdr = w6.build(w6.ECHO_REPLY, 0, int.from_bytes(body[:4], "big"), (body[4:],), src,
                       info.src)
        err = self.ip6.output(src, info.src, NH_ICMPV6, [hdr, body[4:]], tos=info.tos,
                              ifname=ifname if _needs_scope(info.src) else None)
        c["out_echo_reply" if not err else "out_echo_reply_failed"] += 1

    def _error_input(self, info: IPInfo, buf: memoryview) -> None:
        c = self.counters
        inner = buf[8:]
        if len(buf) < 8 or len(inner) < HLEN or inner[0] >> 4 != 6:
            c["drop_error_bad_quote"] += 1
            return
        isrc = int.from_bytes(inner[8:24], "big")
        idst = int.from_bytes(inner[24:40], "big")
        nh = inner[6]
        l4off = HLEN
        if nh in EXTENSION_HEADERS:
            try:
                ch = walk_chain(inner, 0, len(inner), nh)
            except ChainError:
                c["drop_error_bad_quote"] += 1
                return
            # a later fragment quoted: no transport header to hand anyone (the path MTU
            # is still learned below)
            nh = ch.proto if not ch.frag_offset else NH_NONE
            l4off = ch.l4
        l4 = inner[l4off:]
        t, code = buf[0], buf[1]
        rest = int.from_bytes(buf[4:8], "big")
        if t == w6.PACKET_TOO_BIG:
            ctype, ccode, extra = 3, 4, rest
            self.ip6.learn_pmtu(idst, rest)
        elif t == w6.DEST_UNREACH:
            ctype, ccode, extra = 3, _UNREACH_CODE.get(code, 1), 0
        elif t == w6.TIME_EXCEEDED:
            ctype, ccode, extra = 11, code, 0
        else:
            ctype, ccode, extra = 12, 0, rest
        if nh == NH_ICMPV6 and len(l4) >= 8 and l4[0] == w6.ECHO_REQUEST:
            key = (int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big"))
            w = self.waiters.get(key)
            if w is not None and not w.event.is_set():
                w.error = Icmp6Error(t, code, info.src, rest)
                w.event.set()
                c["error_to_ping"] += 1
        h = self.ip6.error_handlers.get(nh)
        if h is None:
            c["error_no_handler"] += 1
            return
        c["error_dispatched"] += 1
        h(ctype, ccode, Addr(isrc), Addr(idst), l4, extra)

    # -- errors out ------------------------------------------------------------------
    def send_error(self, icmp_type: int, code: int, packet: memoryview, extra: int = 0,
                   *, multicast_ok: bool = False) -> bool:
        """An ICMPv6 error about ``packet`` (the offending datagram from its IPv6 header
        on) to its source, with RFC 4443 §2.4(e)'s suppression and the rate limit."""
        c = self.counters
        if len(packet) < HLEN:
            return False
        osrc = int.from_bytes(packet[8:24], "big")
        odst = int.from_bytes(packet[24:40], "big")
        if osrc == 0 or is_multicast6(osrc):
            c["error_suppressed_source"] += 1
            return False
        if is_multicast6(odst) and not (icmp_type == w6.PACKET_TOO_BIG or multicast_ok):
            c["error_suppressed_multicast"] += 1
            return False
        if packet[6] == NH_ICMPV6 and len(packet) > HLEN and \
                (packet[HLEN] < 128 or packet[HLEN] in w6.ND_TYPES):
            c["error_suppressed_icmp_error"] += 1  # not about errors (nor ND)
            return False
        if not self.limit.allow():
            c["error_ratelimited"] += 1
            return False
        quote = packet[:MAX_QUOTE]
        ip6 = self.ip6
        # from the address it was sent to, when that is ours; else by source selection
        src = odst if odst in ip6.local else None
        if src is None:
            s = ip6.source_for(osrc)
            if s is None:
                c["error_no_source"] += 1
                return False
            src = s
        ifname = None
        if _needs_scope(osrc):  # back out of the interface the source address is on
            ia = ip6.local.get(src)
            ifname = ia.ifname if ia is not None else None
        hdr = w6.build(icmp_type, code, extra, (quote,), src, osrc)
        err = ip6.output(src, osrc, NH_ICMPV6, [hdr, quote], ifname=ifname)
        if err:
            c["error_send_failed"] += 1
            return False
        c[f"out_error_{icmp_type}_{code}"] += 1
        return True

    # -- echo client -----------------------------------------------------------------
    async def ping_detail(self, dst: int, size: int = 56, hlim: int | None = None,
                          timeout: float = 1.0, *, src: int | None = None, tclass: int = 0,
                          ifname: str | None = None, seq: int | None = None,
                          ident: int | None = None, dontfrag: bool = False) -> EchoReply6:
        """One echo request and its reply (see stack/inet/icmp.py ``ping_detail``)."""
        if not 0 <= size <= 65527:
            raise OSError(errno.EMSGSIZE, "payload size out of range")
        ident = self._ident if ident is None else ident & 0xFFFF
        seq = (next(self._seq) & 0xFFFF) if seq is None else seq & 0xFFFF
        key = (ident, seq)
        payload = bytes(i & 0xFF for i in range(size))
        w = PingWaiter()
        self.waiters[key] = w
        ip6 = self.ip6
        try:
            s = src if src is not None else ip6.source_for(dst, ifname)
            if s is None:
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            hdr = w6.build(w6.ECHO_REQUEST, 0, ident << 16 | seq, (payload,), s, dst)
            w.sent = time.perf_counter()
            err = ip6.output(s, dst, NH_ICMPV6, [hdr, payload], ttl=hlim, tos=tclass,
                             ifname=ifname, on_error=w.fail, df=dontfrag)
            if err:
                raise OSError(err, os.strerror(err))
            self.counters["out_echo"] += 1
            with trio.move_on_after(timeout):
                await w.event.wait()
        finally:
            if self.waiters.get(key) is w:
                del self.waiters[key]
        if w.error is not None:
            raise w.error
        if w.reply is None:
            raise TimeoutError(errno.ETIMEDOUT, f"no reply from {format_addr(dst)} in {timeout} s")
        info, t_recv, n = w.reply
        return EchoReply6(t_recv - w.sent, IPv6Address(info.src), info.ttl, n, seq, ident)


def _needs_scope(a: int) -> bool:
    """Link-local and multicast destinations leave by a given interface."""
    return a >> 118 == 0xFE80 >> 6 or a >> 120 == 0xFF
