"""ICMP: echo reply, errors out (rate-limited by a token bucket), errors in (dispatched
to the error handler of the protocol that sent the quoted packet), and the stack's own
echo client (``ping``)."""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

import trio

from stack.addr import v4, v4_bits
from stack.counters import Counters
from stack.icmp_common import ErrorRateLimit, PingWaiter
from stack.inet.api import IPInfo
from stack.inet.counters import ICMP_COUNTERS
from stack.inet.wire import icmp as wicmp
from stack.inet.wire import raw_sum
from stack.inet.wire.ipv4 import PROTO_ICMP, int_to_ip
from stack.network import control_errno
from stack.packet import Buffer

if TYPE_CHECKING:  # cycle: IPv4Layer owns this part and the part calls back into it; types only
    from stack.inet.ipv4 import IPv4Layer

#: RFC 1812 4.3.2.3: quote as much as fits in 576 bytes
MAX_QUOTE = 576 - 20 - 8
TOS_INTERNETCONTROL = 0xC0

#: the errno for an ICMP error: the control input vocabulary of stack/network.py
icmp_errno = control_errno


class IcmpError(OSError):
    """An ICMP error came back for one of our echo requests."""

    def __init__(self, icmp_type: int, code: int, source: int, extra: int = 0) -> None:
        self.icmp_type = icmp_type
        self.code = code
        self.source = IPv4Address(source)
        self.extra = extra
        self.text = wicmp.describe(icmp_type, code)
        super().__init__(icmp_errno(icmp_type, code) or errno.EHOSTUNREACH,
                         f"From {self.source}: {self.text}")


@dataclass(slots=True)
class EchoReply:
    rtt: float  # seconds
    source: IPv4Address
    ttl: int
    size: int  # ICMP payload bytes in the reply
    seq: int
    ident: int


class Icmp:
    def __init__(self, inet: IPv4Layer) -> None:
        self.inet = inet
        self.counters = Counters("icmp", ICMP_COUNTERS)
        reg = inet.stack.sysctl.register
        self.k_rate = reg("net.inet.icmp.errppslimit", 100,
                          "ICMP errors per second (token bucket rate; 0: unlimited)", lo=0)
        self.k_burst = reg("net.inet.icmp.errburst", 50, "ICMP error burst (bucket size)", lo=1)
        self.k_bcastecho = reg("net.inet.icmp.bmcastecho", 0,
                               "answer echo requests sent to broadcast", lo=0, hi=1)
        #: the error rate limit (its ``clock`` is what tests freeze)
        self.limit = ErrorRateLimit(self.k_rate, self.k_burst)
        self.waiters: dict[tuple[int, int], PingWaiter] = {}
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)

    # -- input -----------------------------------------------------------------------
    def input(self, info: IPInfo) -> None:
        c = self.counters
        buf = info.payload
        if len(buf) < wicmp.HLEN:
            c["drop_truncated"] += 1
            return
        if not info.csum_valid and raw_sum((buf,)) != 0:
            c["drop_bad_checksum"] += 1
            return
        t = buf[0]
        if t == wicmp.ECHO_REQUEST:
            c["in_echo"] += 1
            self._echo_reply(info, buf)
        elif t == wicmp.ECHO_REPLY:
            c["in_echo_reply"] += 1
            key = (int.from_bytes(buf[4:6], "big"), int.from_bytes(buf[6:8], "big"))
            w = self.waiters.get(key)
            if w is None or w.event.is_set():
                c["echo_reply_unmatched"] += 1
                return
            w.reply = (info, time.perf_counter(), len(buf) - wicmp.HLEN)
            w.event.set()
        elif t in wicmp.ERROR_TYPES:
            c[f"in_error_{t}"] += 1
            self._error_input(info, buf)
        else:
            c["in_other_type"] += 1

    def _echo_reply(self, info: IPInfo, buf: memoryview) -> None:
        c = self.counters
        if info.broadcast and not self.k_bcastecho.value:
            c["drop_broadcast_echo"] += 1
            return
        # IPInfo carries Addr values (stack/network.py): & 0xFFFFFFFF is v4_bits, inline
        src = info.dst & 0xFFFFFFFF
        if info.broadcast:
            s = self.inet.source_for(info.src)
            if s is None:
                return
            src = v4_bits(s)
        # type 8 -> 0: the checksum moves by +0x0800 (RFC 1624 incremental update)
        old = (buf[2] << 8) | buf[3]
        new = old + 0x0800
        new = (new & 0xFFFF) + (new >> 16)
        hdr = bytes((0, buf[1])) + new.to_bytes(2, "big") + bytes(buf[4:8])
        err = self.inet.output(src, info.src & 0xFFFFFFFF, PROTO_ICMP, [hdr, buf[8:]],
                               tos=info.tos)
        c["out_echo_reply" if not err else "out_echo_reply_failed"] += 1

    def _error_input(self, info: IPInfo, buf: memoryview) -> None:
        c = self.counters
        inner = buf[8:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            c["drop_error_bad_quote"] += 1
            return
        ihl = (inner[0] & 15) << 2
        if ihl < 20 or len(inner) < ihl:
            c["drop_error_bad_quote"] += 1
            return
        proto = inner[9]
        isrc = int.from_bytes(inner[12:16], "big")
        idst = int.from_bytes(inner[16:20], "big")
        l4 = inner[ihl:]
        t, code = buf[0], buf[1]
        extra = 0
        if t == wicmp.DEST_UNREACH and code == wicmp.UNREACH_NEEDFRAG:
            extra = (buf[6] << 8) | buf[7]
            if extra >= 68:
                self.inet.learn_pmtu(idst, extra)
        elif t == wicmp.PARAM_PROBLEM:
            extra = buf[4]
        elif t == wicmp.REDIRECT:
            extra = int.from_bytes(buf[4:8], "big")
            c["in_redirect_ignored"] += 1
        if proto == PROTO_ICMP and len(l4) >= 8 and l4[0] == wicmp.ECHO_REQUEST:
            key = (int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big"))
            w = self.waiters.get(key)
            if w is not None and not w.event.is_set():
                w.error = IcmpError(t, code, v4_bits(info.src), extra)
                w.event.set()
                c["error_to_ping"] += 1
        h = self.inet.error_handlers.get(proto)
        if h is None:
            c["error_no_handler"] += 1
            return
        c["error_dispatched"] += 1
        h(t, code, v4(isrc), v4(idst), l4, extra)  # transports speak Addr (stack/network.py)

    # -- errors out ------------------------------------------------------------------
    def send_error(self, icmp_type: int, code: int, packet: memoryview, extra: int = 0,
                   *, src: int | None = None) -> bool:
        """Send an ICMP error about ``packet`` (the offending datagram from its IP header
        on) back to its source. Applies RFC 1122/1812 suppression rules and the rate
        limit. Returns True if sent."""
        c = self.counters
        if len(packet) < 20:
            return False
        ihl = (packet[0] & 15) << 2
        osrc = int.from_bytes(packet[12:16], "big")
        odst = int.from_bytes(packet[16:20], "big")
        inet = self.inet
        if (osrc == 0 or osrc >> 28 >= 14 or inet.is_broadcast(osrc)
                or odst >> 28 >= 14 or odst == 0xFFFFFFFF or inet.is_broadcast(odst)):
            c["error_suppressed_bcast"] += 1
            return False
        if int.from_bytes(packet[6:8], "big") & 0x1FFF:
            c["error_suppressed_fragment"] += 1
            return False
        if packet[9] == PROTO_ICMP and len(packet) > ihl and \
                packet[ihl] not in (wicmp.ECHO_REQUEST, wicmp.ECHO_REPLY, wicmp.TIMESTAMP,
                                    wicmp.TIMESTAMP_REPLY):
            c["error_suppressed_icmp_error"] += 1
            return False
        if not self.limit.allow():
            c["error_ratelimited"] += 1
            return False
        total = int.from_bytes(packet[2:4], "big")
        quote = packet[:min(len(packet), total, MAX_QUOTE)]
        rest = extra & 0xFFFF if icmp_type == wicmp.DEST_UNREACH else (
            (extra & 0xFF) << 24 if icmp_type == wicmp.PARAM_PROBLEM else 0)
        hdr = wicmp.build_header(icmp_type, code, rest, (quote,))
        if src is None or not inet.is_local(src):
            s = inet.source_for(v4(osrc))
            if s is None:
                c["error_no_source"] += 1
                return False
            src = v4_bits(s)
        err = inet.output(src, osrc, PROTO_ICMP, [hdr, quote], tos=TOS_INTERNETCONTROL)
        if err:
            c["error_send_failed"] += 1
            return False
        c[f"out_error_{icmp_type}_{code}"] += 1
        return True

    def send_unreachable(self, info: IPInfo, code: int) -> bool:
        """For transports: destination unreachable (``wicmp.UNREACH_PORT``, ...) about a
        packet they were handed. Not sent for broadcasts."""
        if info.broadcast:
            self.counters["error_suppressed_bcast"] += 1
            return False
        return self.send_error(wicmp.DEST_UNREACH, code, self.inet.original_packet(info),
                               src=v4_bits(info.dst))

    # -- echo client -----------------------------------------------------------------
    async def ping_detail(self, dst: IPv4Address | str | int, size: int = 56,
                          ttl: int | None = None, timeout: float = 1.0, *,
                          src: IPv4Address | str | int | None = None, tos: int = 0,
                          df: bool = False, seq: int | None = None,
                          ident: int | None = None) -> EchoReply:
        """Send one echo request and wait for its reply. Raises ``OSError`` (the send
        failed: ENETUNREACH, EHOSTUNREACH after ARP failure, EMSGSIZE...),
        ``IcmpError`` (an ICMP error came back, e.g. "Time to live exceeded") or
        ``TimeoutError`` (no answer within ``timeout`` seconds)."""
        d = int(IPv4Address(dst)) if not isinstance(dst, int) else dst
        s = None if src is None else (int(IPv4Address(src)) if not isinstance(src, int) else src)
        if not 0 <= size <= 65507:
            raise OSError(errno.EMSGSIZE, "payload size out of range")
        ident = self._ident if ident is None else ident & 0xFFFF
        seq = (next(self._seq) & 0xFFFF) if seq is None else seq & 0xFFFF
        key = (ident, seq)
        payload = bytes(i & 0xFF for i in range(size))
        w = PingWaiter()
        self.waiters[key] = w
        try:
            hdr = wicmp.build_header(wicmp.ECHO_REQUEST, 0, ident << 16 | seq, (payload,))
            w.sent = time.perf_counter()
            err = self.inet.output(s, d, PROTO_ICMP, [hdr, payload], ttl=ttl, tos=tos, df=df,
                                   on_error=w.fail)
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
            raise TimeoutError(errno.ETIMEDOUT, f"no reply from {int_to_ip(d)} in {timeout} s")
        info, t_recv, n = w.reply
        return EchoReply(t_recv - w.sent, IPv4Address(v4_bits(info.src)), info.ttl, n, seq,
                         ident)

    async def ping(self, dst: IPv4Address | str | int, size: int = 56, ttl: int | None = None,
                   timeout: float = 1.0, **kw: object) -> float:
        """One echo round trip; returns the RTT in seconds (see ``ping_detail``)."""
        r = await self.ping_detail(dst, size, ttl, timeout, **kw)  # type: ignore[arg-type]
        return r.rtt


def quote_of(bufs: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(b) for b in bufs)[:MAX_QUOTE]
