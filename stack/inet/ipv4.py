"""The IPv4 layer: input validation and local delivery, output with fragmentation,
forwarding, addresses, and the management API the tools use. Implements the contract in
``stack/inet/api.py``.

Hot path rules: one ``struct.unpack_from`` per header, counters instead of logging,
payloads are ``memoryview`` slices of the received frame (no copy), output is a list of
buffers with the header prepended as new small ``bytes``.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

import trio

from stack.counters import Counters
from stack.inet.api import ErrorHandler, IPInfo, TransportHandler
from stack.inet.arp import Arp
from stack.inet.icmp import Icmp
from stack.inet.reass import Reassembler
from stack.inet.route import Route, RouteTable
from stack.inet.timers import Timers
from stack.inet.wire import icmp as wicmp
from stack.inet.wire import raw_sum
from stack.inet.wire.ipv4 import (
    FLAG_DF,
    HLEN,
    PROTO_ICMP,
    int_to_ip,
    ip_to_int,
    options_error,
    pack_header,
    prefix_mask,
    unpack_header,
)
from stack.l2.ether import ETH_HLEN, ETHERTYPE_IPV4
from stack.l2.gso import clamp_gso_size, device_finishes
from stack.l2.iface import BROADCAST_MAC, IFF_LOOPBACK, Interface, parse_mac
from stack.packet import GSO_NONE, Buffer, Packet, TxMeta

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.inet")

ZERO_MAC = b"\0" * 6
LIMITED_BROADCAST = 0xFFFFFFFF
PMTU_EXPIRE = 600.0

AddrLike = IPv4Address | int | str | None


def _as_int(a: AddrLike) -> int:
    if a is None:
        return 0
    if isinstance(a, int):
        return a
    if isinstance(a, IPv4Address):
        return int(a)
    return ip_to_int(a)


def parse_prefix(text: str, *, default_plen: int | None = None) -> tuple[int, int]:
    """``default`` | ``A.B.C.D/LEN`` | ``A.B.C.D`` (a host, or ``default_plen``)."""
    text = text.strip()
    if text in ("default", "0/0"):
        return 0, 0
    addr, sep, plen_s = text.partition("/")
    a = ip_to_int(addr)
    if sep:
        if "." in plen_s:
            from stack.inet.wire.ipv4 import mask_to_prefix
            plen = mask_to_prefix(ip_to_int(plen_s))
        else:
            if not plen_s.isdigit() or int(plen_s) > 32:
                raise ValueError(f"bad prefix length in {text!r}")
            plen = int(plen_s)
    elif default_plen is not None:
        plen = default_plen
    else:
        plen = 32
    return a, plen


def classful_plen(a: int) -> int:
    top = a >> 24
    return 8 if top < 128 else 16 if top < 192 else 24


@dataclass(slots=True, eq=False)
class IfAddr:
    addr: int
    plen: int
    ifname: str
    broadcast: int = 0

    @property
    def mask(self) -> int:
        return prefix_mask(self.plen)

    @property
    def network(self) -> int:
        return self.addr & self.mask

    def contains(self, a: int) -> bool:
        return (a ^ self.addr) & self.mask == 0

    def __str__(self) -> str:
        return f"{int_to_ip(self.addr)}/{self.plen}"


class IfInet:
    """Per-interface IPv4 state (``iface.proto["inet"]``)."""

    __slots__ = ("addrs",)

    def __init__(self) -> None:
        self.addrs: list[IfAddr] = []


class IPv4Layer:
    family = 2  # AF_INET

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.counters = Counters("ip")
        self.timers = Timers()
        self.protocols: dict[int, TransportHandler] = {}
        self.error_handlers: dict[int, ErrorHandler] = {}
        #: raw taps see every locally delivered datagram; return True if one consumed it
        #: (then no "protocol unreachable" is sent for an unregistered protocol)
        self.raw_taps: list[Callable[[IPInfo], bool]] = []
        self.local: dict[int, IfAddr] = {}
        self.bcast: dict[int, IfAddr] = {}
        self.routes = RouteTable(self._route_usable)
        self.routes.listeners.append(self._invalidate_fastpath)
        self.pmtu: dict[int, tuple[int, float]] = {}
        self._ident = random.randrange(0x10000)
        reg = stack.sysctl.register
        # layer 2's fast-forward cache may have registered it first (same knob)
        self.k_forwarding = reg("net.inet.ip.forwarding", 0, "forward IPv4 packets",
                                lo=0, hi=1)
        if stack.config.tcpip.flag("forward"):  # -p tcpip forward (QNX)
            stack.sysctl.set("net.inet.ip.forwarding", 1)
        self.k_ttl = reg("net.inet.ip.ttl", 64, "default TTL", lo=1, hi=255)
        self.k_dbcast = reg("net.inet.ip.directed-broadcast", 0,
                            "forward directed broadcasts", lo=0, hi=1)
        self.arp = Arp(self)
        self.reass = Reassembler(self)
        self.icmp = Icmp(self)
        self.protocols[PROTO_ICMP] = self.icmp.input
        #: layer 2's flow cache (stack/l2/fastfwd.py): filled after a slow-path forward
        self.fastfwd: Any = getattr(stack.l2, "fastfwd", None)
        self.pf: Any = getattr(stack.l2, "pfil", None) or getattr(stack, "pfil", None)

    # ================================================================ contract (api.py)
    def register_protocol(self, proto: int, handler: TransportHandler) -> None:
        if proto == PROTO_ICMP:
            # ICMP is ours; a raw/ICMP-socket user sees copies through a raw tap
            raise ValueError("protocol 1 (ICMP) belongs to the IP layer; use raw_taps")
        self.protocols[proto] = handler

    def unregister_protocol(self, proto: int) -> None:
        if proto != PROTO_ICMP:
            self.protocols.pop(proto, None)

    def register_error_handler(self, proto: int, fn: ErrorHandler) -> None:
        self.error_handlers[proto] = fn

    def is_local(self, addr: AddrLike) -> bool:
        a = _as_int(addr)
        return a in self.local or a >> 24 == 127

    def is_broadcast(self, addr: AddrLike) -> bool:
        a = _as_int(addr)
        return a == LIMITED_BROADCAST or a in self.bcast

    def source_for(self, dst: AddrLike) -> IPv4Address | None:
        d = _as_int(dst)
        if d in self.local:
            return IPv4Address(d)
        if d >> 24 == 127:
            return IPv4Address(0x7F000001)
        r = self.routes.lookup(d)
        if r is None:
            return None
        if r.src and r.src in self.local:
            return IPv4Address(r.src)
        iface = self.stack.interfaces.get(r.ifname)
        if iface is None:
            return None
        s = self.iface_source(iface, r.gateway or d)
        return IPv4Address(s) if s is not None else None

    def route_mtu(self, dst: AddrLike) -> int:
        d = _as_int(dst)
        if d in self.local or d >> 24 == 127:
            return self.stack.lo0.mtu
        r = self.routes.lookup(d)
        if r is None:
            return 0
        return self._path_mtu(d, r)

    def route_offloads(self, dst: AddrLike) -> set[str]:
        """Offloads (``csum``, ``tso4``...) of the interface a packet to ``dst`` leaves by."""
        d = _as_int(dst)
        if d in self.local or d >> 24 == 127:
            return set(self.stack.lo0.offloads)
        r = self.routes.lookup(d)
        iface = self.stack.interfaces.get(r.ifname) if r else None
        return set(iface.offloads) if iface else set()

    # ---------------------------------------------------------------------- output
    def output(self, src: AddrLike, dst: AddrLike, proto: int, payload: Sequence[Buffer], *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None, ident: int | None = None,
               options: bytes = b"") -> int:
        """Route, pick the source, fragment, resolve, send. Returns 0 or an errno. A
        failure found later (ARP resolution) is reported through ``on_error(errno)`` and
        the protocol's error handler (as ICMP host unreachable, like Linux)."""
        c = self.counters
        c["out_requests"] += 1
        d = dst if type(dst) is int else _as_int(dst)
        s = src if type(src) is int else _as_int(src)
        plen = 0
        for b in payload:
            plen += len(b)
        stack = self.stack
        bcast = False
        route: Route | None = None
        if d in self.local or d >> 24 == 127:
            iface: Interface | None = stack.lo0
            nexthop = d
            if not s:
                s = d if d in self.local else 0x7F000001
            mtu = iface.mtu  # type: ignore[union-attr]
        else:
            if ifname is not None:
                iface = stack.interfaces.get(ifname)
                route = self._route_on(d, ifname) if iface is not None else None
                if iface is None:
                    c["out_no_route"] += 1
                    return errno.ENXIO
            else:
                route = self.routes.lookup(d)
                if route is None:
                    if d == LIMITED_BROADCAST:
                        c["out_no_route"] += 1
                        return errno.ENETUNREACH
                    c["out_no_route"] += 1
                    return errno.ENETUNREACH
                iface = stack.interfaces.get(route.ifname)
                if iface is None or not iface.up:
                    c["out_no_route"] += 1
                    return errno.ENETUNREACH
            if route is not None:
                if route.reject:
                    c["out_reject"] += 1
                    return errno.EHOSTUNREACH
                if route.blackhole:
                    c["out_blackhole"] += 1
                    return 0
                route.use += 1
                nexthop = route.gateway or d
                mtu = self._path_mtu(d, route)
            else:
                nexthop = d
                mtu = iface.mtu  # type: ignore[union-attr]
            if d == LIMITED_BROADCAST or d in self.bcast:
                bcast = True
                nexthop = d
            if not s:
                if route is not None and route.src in self.local:
                    s = route.src
                else:
                    s = self.iface_source(iface, nexthop) or 0  # type: ignore[arg-type]
                if not s:
                    c["out_no_source"] += 1
                    return errno.EADDRNOTAVAIL
        assert iface is not None
        if ttl is None:
            ttl = int(self.k_ttl.value)
        if ident is None:
            self._ident = ident = (self._ident + 1) & 0xFFFF
        ihl = HLEN + len(options)
        total = ihl + plen
        gso = meta is not None and meta.gso_type != GSO_NONE
        if total > mtu and not (gso and "tso4" in iface.offloads):
            if df or gso:
                c["out_drop_df_too_big"] += 1
                return errno.EMSGSIZE
            if meta is not None and meta.needs_csum:
                payload = _complete_csum(payload, meta)
                meta = None
            return self._fragment(iface, nexthop, s, d, proto, payload, plen, mtu, ttl, tos,
                                  ident, options, bcast,
                                  (self._local_unreach, (proto, s, d, payload, on_error)))
        if total > 65535:
            c["out_drop_too_long"] += 1
            return errno.EMSGSIZE
        hdr = _header(s, d, proto, total, ttl, tos, ident, FLAG_DF if df else 0, options)
        if meta is not None and (meta.needs_csum or gso):
            if meta.needs_csum and "csum" not in iface.offloads:
                payload = _complete_csum(payload, meta)
                meta = None
            else:
                off = ihl + (0 if iface.flags & IFF_LOOPBACK else ETH_HLEN)
                meta = TxMeta(meta.csum_start + off, meta.csum_offset, meta.needs_csum,
                              meta.gso_type, meta.gso_size, meta.hdr_len + off if meta.hdr_len else 0)
        c["out_packets"] += 1
        return self._send(iface, nexthop, [hdr, *payload], meta, bcast,
                          (self._local_unreach, (proto, s, d, payload, on_error)))

    def _send(self, iface: Interface, nexthop: int, bufs: list[Buffer], meta: TxMeta | None,
              bcast: bool, fail: Any) -> int:
        pf = self.pf
        if pf is not None and pf.inet_out:
            res = pf.run_chain(pf.inet_out, "out", bufs, iface)
            if res is None:
                self.counters["drop_pfil_out"] += 1
                return errno.EPERM
            bufs = res
        if iface.flags & IFF_LOOPBACK:
            return 0 if self.stack.l2.output(iface, ZERO_MAC, ETHERTYPE_IPV4, bufs, meta) \
                else errno.ENOBUFS
        if bcast:
            return 0 if self.stack.l2.output(iface, BROADCAST_MAC, ETHERTYPE_IPV4, bufs, meta) \
                else errno.ENOBUFS
        if nexthop >> 28 == 14:
            mac = bytes((1, 0, 0x5E, (nexthop >> 16) & 0x7F, (nexthop >> 8) & 0xFF, nexthop & 0xFF))
            return 0 if self.stack.l2.output(iface, mac, ETHERTYPE_IPV4, bufs, meta) \
                else errno.ENOBUFS
        return self.arp.output(iface, nexthop, bufs, meta, fail)

    def _fragment(self, iface: Interface, nexthop: int, s: int, d: int, proto: int,
                  payload: Sequence[Buffer], plen: int, mtu: int, ttl: int, tos: int,
                  ident: int, options: bytes, bcast: bool,
                  fail: Any, base_off: int = 0, last_mf: bool = False) -> int:
        c = self.counters
        ihl = HLEN + len(options)
        chunk = (mtu - ihl) & ~7
        if chunk < 8:
            c["out_drop_mtu_too_small"] += 1
            return errno.EMSGSIZE
        views = [memoryview(b) for b in payload]
        vi = 0
        vo = 0
        off = 0
        err = 0
        while off < plen:
            n = min(chunk, plen - off)
            more = off + n < plen or last_mf
            parts: list[Buffer] = []
            need = n
            while need:
                v = views[vi]
                take = min(need, len(v) - vo)
                parts.append(v[vo:vo + take])
                vo += take
                need -= take
                if vo == len(v):
                    vi += 1
                    vo = 0
            # RFC 791: options without the copy flag go in the first fragment only
            opts = options if off == 0 else _copied_options(options)
            flags = (0x2000 if more else 0) | ((base_off + off) >> 3)
            hdr = _header(s, d, proto, HLEN + len(opts) + n, ttl, tos, ident, flags, opts)
            c["out_fragments"] += 1
            e = self._send(iface, nexthop, [hdr, *parts], None, bcast,
                           fail if off == 0 else None)
            err = err or e
            off += n
        c["out_fragmented"] += 1
        return err

    def _local_unreach(self, err: int, proto: int, src: int, dst: int,
                       payload: Sequence[Buffer], on_error: Callable[[int], None] | None) -> None:
        """A packet this host sent could not be delivered (ARP failure): tell the sender
        via its callback and the protocol's error handler (host unreachable)."""
        self.counters["out_unresolved"] += 1
        if on_error is not None:
            on_error(err)
        h = self.error_handlers.get(proto)
        if h is not None:
            first = b"".join(bytes(b) for b in payload)[:8] if payload else b""
            h(wicmp.DEST_UNREACH, wicmp.UNREACH_HOST, src, dst, memoryview(first), 0)

    # ----------------------------------------------------------------------- input
    def input(self, iface: Interface, pkt: Packet) -> None:
        c = self.counters
        c["in_receive"] += 1
        data = pkt.data
        off = pkt.l3
        n = len(data) - off
        if n < HLEN:
            c["drop_truncated"] += 1
            return
        vihl = data[off]
        if vihl != 0x45:
            if vihl >> 4 != 4:
                c["drop_bad_version"] += 1
                return
            ihl = (vihl & 15) << 2
            if ihl < HLEN:
                c["drop_bad_header_length"] += 1
                return
            if ihl > n:
                c["drop_truncated"] += 1
                return
        else:
            ihl = HLEN
        _, tos, total, ident, flags, ttl, proto, _, src, dst = unpack_header(data, off)
        if total < ihl:
            c["drop_bad_length"] += 1
            return
        if total > n:
            c["drop_truncated"] += 1
            return
        if int.from_bytes(data[off:off + ihl], "big") % 0xFFFF:
            c["drop_bad_checksum"] += 1
            return
        if src >> 28 >= 14 or src in self.bcast:
            c["drop_bad_source"] += 1
            return
        if src >> 24 == 127 and not iface.flags & IFF_LOOPBACK:
            c["drop_martian_source"] += 1
            return
        if ihl > HLEN:
            bad = options_error(data[off + HLEN:off + ihl])
            if bad >= 0:
                self._bad_options(data[off:off + total], HLEN + bad, dst)
                return
            c["in_options_skipped"] += 1  # well formed; none of them is acted on
        pf = self.pf
        if pf is not None and pf.inet_in:
            res = pf.run_chain(pf.inet_in, "in", pkt, iface)
            if res is None:
                c["drop_pfil_in"] += 1
                return
            if res is not pkt:  # a replacement: trust its header, re-read the fields
                pkt = res
                data = pkt.data
                off = pkt.l3
                ihl = (data[off] & 15) << 2
                _, tos, total, ident, flags, ttl, proto, _, src, dst = unpack_header(data, off)
                if total > len(data) - off or total < ihl:
                    c["drop_pfil_bad_replacement"] += 1
                    return
        bcast = False
        if dst in self.local:
            pass
        elif dst == LIMITED_BROADCAST or dst in self.bcast:
            bcast = True
        elif dst >> 28 == 14:
            if dst != 0xE0000001:  # all-hosts; no IGMP membership yet
                c["drop_multicast_not_joined"] += 1
                return
            bcast = True
        elif dst >> 24 == 127 and iface.flags & IFF_LOOPBACK:
            pass
        else:
            self._forward(iface, pkt, off, ihl, total, ttl, dst, src, flags)
            return
        if flags & 0x3FFF:  # MF or an offset: a fragment
            whole = self.reass.input(data[off:off + ihl], data[off + ihl:off + total], src, dst,
                                     proto, ident, (flags & 0x1FFF) << 3, bool(flags & 0x2000))
            if whole is None:
                return
            frag = pkt
            pkt = Packet(memoryview(whole), iface)
            pkt.src_mac, pkt.dst_mac, pkt.ethertype = frag.src_mac, frag.dst_mac, ETHERTYPE_IPV4
            data = pkt.data
            off = 0
            ihl = (whole[0] & 15) << 2
            total = len(whole)
        c["in_delivered"] += 1
        info = IPInfo(src, dst, proto, ttl, tos, data[off + ihl:off + total], pkt,
                      pkt.csum_valid, bcast)
        consumed = False
        for tap in self.raw_taps:
            if tap(info):
                consumed = True
        h = self.protocols.get(proto)
        if h is not None:
            h(info)
            return
        if consumed:
            return
        c["drop_unknown_protocol"] += 1
        if not bcast:
            self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_PROTOCOL,
                                 data[off:off + total], src=dst)

    def _bad_options(self, packet: memoryview, pointer: int, dst: int) -> None:
        """Drop a datagram whose options are malformed; RFC 1122 3.2.2.5 / RFC 1812
        5.2.5: answer with a parameter problem pointing at the bad octet (rate-limited
        and suppressed like every ICMP error), if it was for us or we forward."""
        self.counters["drop_bad_options"] += 1
        local = dst in self.local
        if local or self.k_forwarding.value:
            self.icmp.send_error(wicmp.PARAM_PROBLEM, 0, packet, pointer,
                                 src=dst if local else None)

    def original_packet(self, info: IPInfo) -> memoryview:
        """The datagram (IP header on) that ``info`` describes, for ICMP quoting."""
        pkt = info.pkt
        if pkt is not None:
            data = pkt.data
            off = pkt.l3
            total = int.from_bytes(data[off + 2:off + 4], "big")
            return data[off:off + total]
        body = bytes(info.payload[:8])
        return memoryview(_header(info.src, info.dst, info.proto, HLEN + len(body), info.ttl,
                                  info.tos, 0, 0, b"") + body)

    # ------------------------------------------------------------------ forwarding
    def _forward(self, iface: Interface, pkt: Packet, off: int, ihl: int, total: int, ttl: int,
                 dst: int, src: int, flags: int) -> None:
        c = self.counters
        if not self.k_forwarding.value:
            c["drop_not_for_us"] += 1
            return
        if pkt.dst_mac and pkt.dst_mac[0] & 1:
            c["drop_fwd_link_broadcast"] += 1
            return
        if src == 0 or dst == 0 or dst >> 24 == 127 or dst >> 24 == 0:
            c["drop_fwd_martian"] += 1
            return
        data = pkt.data
        if ttl <= 1:
            c["drop_ttl_exceeded"] += 1
            self.icmp.send_error(wicmp.TIME_EXCEEDED, wicmp.TIMXCEED_INTRANS,
                                 data[off:off + total])
            return
        route = self.routes.lookup(dst)
        out = self.stack.interfaces.get(route.ifname) if route is not None else None
        if route is None or out is None or not out.up:
            c["drop_no_route"] += 1
            self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_NET, data[off:off + total])
            return
        if route.reject or route.blackhole:
            c["drop_fwd_reject"] += 1
            if route.reject:
                self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_HOST,
                                     data[off:off + total])
            return
        if dst in self.bcast and not self.k_dbcast.value:
            c["drop_fwd_directed_broadcast"] += 1
            return
        if out.flags & IFF_LOOPBACK:
            c["drop_fwd_loopback"] += 1
            return
        if data.readonly:
            buf = bytearray(data[off:off + total])
            frame = memoryview(buf)
        else:
            frame = data[off:off + total]
        # TTL - 1 with an incremental checksum update (RFC 1624)
        frame[8] = ttl - 1
        csum = ((frame[10] << 8) | frame[11]) + 0x0100
        csum = (csum & 0xFFFF) + (csum >> 16)
        frame[10] = csum >> 8
        frame[11] = csum & 0xFF
        nexthop = route.gateway or dst
        route.use += 1
        mtu = self._path_mtu(dst, route)
        if out is iface:
            c["fwd_same_interface"] += 1  # BSD would send a redirect here
        if total > mtu and pkt.gso_type == GSO_NONE:
            if pkt.csum_partial:  # fragments cannot carry a partial checksum
                frame = memoryview(bytearray().join(_complete_csum(
                    [frame], TxMeta(pkt.csum_start - off, pkt.csum_offset, True))))
            if flags & FLAG_DF:
                c["drop_frag_needed"] += 1
                self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_NEEDFRAG,
                                     data[off:off + total], mtu)
                return
            opts = bytes(frame[HLEN:ihl])
            c["forwarded"] += 1
            self._fragment(out, nexthop, src, dst, frame[9], [frame[ihl:]], total - ihl, mtu,
                           ttl - 1, frame[1], int.from_bytes(frame[4:6], "big"), opts, False,
                           (self._fwd_unreach, (frame,)), base_off=(flags & 0x1FFF) << 3, last_mf=bool(flags & 0x2000))
            return
        # Offload metadata (partial checksum, TSO/USO super-segment) goes with the frame,
        # offsets for the Ethernet frame we send, segments cut to the path MTU; an out
        # interface without the offload finishes it in software (Interface.output →
        # stack.l2.gso: gso_frames, gso_segments, csum_completed there)
        meta = pkt.tx_meta(ETH_HLEN - off)
        bufs: list[Buffer] = [frame]
        if meta is not None:
            if meta.gso_type and not clamp_gso_size(meta, frame, mtu):
                c["drop_fwd_gso_mtu"] += 1  # the out MTU cannot carry the headers
                return
            if not device_finishes(meta, out.offloads):
                c["fwd_offload_sw"] += 1
        c["forwarded"] += 1
        err = self._send(out, nexthop, bufs, meta, False, (self._fwd_unreach, (frame,)))
        if err:
            c["fwd_send_failed"] += 1
            if err == errno.EHOSTUNREACH:
                self._fwd_unreach(err, frame)
            return
        ff = self.fastfwd
        if ff is not None:
            mac = self.arp.lookup(out.name, nexthop)
            if mac is not None:
                try:
                    ff.insert(dst, out, mac, mtu)
                except Exception:
                    c["fastfwd_learn_errors"] += 1

    def _fwd_unreach(self, err: int, frame: memoryview) -> None:
        self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_HOST, frame)

    # ---------------------------------------------------------------- path MTU
    def _path_mtu(self, d: int, route: Route) -> int:
        iface = self.stack.interfaces.get(route.ifname)
        mtu = route.mtu or (iface.mtu if iface is not None else 1500)
        p = self.pmtu.get(d)
        if p is not None:
            if p[1] > trio.current_time():
                return min(mtu, p[0])
            del self.pmtu[d]
        return mtu

    def learn_pmtu(self, dst: int, mtu: int) -> None:
        """RFC 1191: an ICMP frag-needed lowered the path MTU to ``dst``."""
        if len(self.pmtu) > 4096:
            self.pmtu.clear()
        self.pmtu[dst] = (mtu, trio.current_time() + PMTU_EXPIRE)
        self.counters["pmtu_learned"] += 1

    # ------------------------------------------------------------------ helpers
    def _route_usable(self, r: Route) -> bool:
        iface = self.stack.interfaces.get(r.ifname)
        return iface is not None and iface.up

    def _route_on(self, d: int, ifname: str) -> Route | None:
        for r in self.routes:
            if r.ifname == ifname and (d ^ r.dst) & prefix_mask(r.plen) == 0:
                return r
        return None

    def iface_addrs(self, iface: Interface) -> list[IfAddr]:
        st = iface.proto.get("inet")
        return st.addrs if st is not None else []

    def iface_has(self, iface: Interface, a: int) -> bool:
        for ia in self.iface_addrs(iface):
            if ia.addr == a:
                return True
        return False

    def iface_source(self, iface: Interface, toward: int) -> int | None:
        """The address of ``iface`` on the subnet of ``toward``, else its first."""
        addrs = self.iface_addrs(iface)
        for ia in addrs:
            if ia.contains(toward):
                return ia.addr
        return addrs[0].addr if addrs else None

    def neighbour_changed(self) -> None:
        self._invalidate_fastpath()

    def _invalidate_fastpath(self) -> None:
        ff = self.fastfwd
        if ff is not None:
            try:
                ff.invalidate_all()
            except Exception:
                self.counters["fastfwd_invalidate_errors"] += 1

    def iface_event(self, event: str, iface: Interface) -> None:
        if event == "attach":
            iface.proto.setdefault("inet", IfInet())
        elif event == "detach":
            for ia in list(self.iface_addrs(iface)):
                self._remove_ifaddr(iface, ia)
            self.routes.remove_where(lambda r: r.ifname == iface.name)
            self.arp.flush(iface.name, keep_static=False)
        elif event == "change":
            if not iface.up:
                self.arp.flush(iface.name)
            self.routes.changed()

    # ================================================================ management API
    def _iface(self, ifname: str) -> Interface:
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {ifname}")
        iface.proto.setdefault("inet", IfInet())
        return iface

    def add_address(self, ifname: str, cidr: str, *, broadcast: str | None = None) -> IfAddr:
        """``add_address("tap0", "10.0.0.2/24")`` (no length: classful, as BSD ifconfig).
        Adds the connected route and sends a gratuitous ARP."""
        iface = self._iface(ifname)
        a, plen = parse_prefix(cidr, default_plen=classful_plen(ip_to_int(cidr.split("/")[0])))
        if a == 0 or a >> 28 >= 14:
            raise OSError(errno.EINVAL, f"{cidr}: not a unicast address")
        if self.iface_has(iface, a):
            raise OSError(errno.EEXIST, f"{int_to_ip(a)} is already on {ifname}")
        ia = IfAddr(a, plen, ifname)
        if plen <= 30 and not iface.flags & IFF_LOOPBACK:
            ia.broadcast = ip_to_int(broadcast) if broadcast else (a | ~prefix_mask(plen) & 0xFFFFFFFF)
        iface.proto["inet"].addrs.append(ia)
        self.local.setdefault(a, ia)
        if ia.broadcast:
            self.bcast.setdefault(ia.broadcast, ia)
        if plen < 32 and not any(r.ifname == ifname and r.kind == "connected"
                                 for r in self.routes.exact(ia.network, plen)):
            self.routes.add(Route(ia.network, plen, 0, ifname, src=a, kind="connected"))
        else:
            self.routes.changed()
        self.counters["addr_added"] += 1
        if iface.up and not iface.flags & IFF_LOOPBACK:
            self.arp.announce(iface, a)
        self._pfil_addr_change(iface, "add", ia)
        return ia

    def remove_address(self, ifname: str, addr: str) -> None:
        iface = self._iface(ifname)
        a = ip_to_int(addr.split("/")[0])
        for ia in self.iface_addrs(iface):
            if ia.addr == a:
                self._remove_ifaddr(iface, ia)
                self._pfil_addr_change(iface, "delete", ia)
                return
        raise OSError(errno.EADDRNOTAVAIL, f"{addr} is not on {ifname}")

    def _remove_ifaddr(self, iface: Interface, ia: IfAddr) -> None:
        st = iface.proto["inet"]
        st.addrs.remove(ia)
        if self.local.get(ia.addr) is ia:
            del self.local[ia.addr]
            for other in self.stack.interfaces.values():  # another iface may hold it too
                for o in self.iface_addrs(other):
                    if o.addr == ia.addr:
                        self.local[ia.addr] = o
        if ia.broadcast and self.bcast.get(ia.broadcast) is ia:
            del self.bcast[ia.broadcast]
            for other in self.stack.interfaces.values():
                for o in self.iface_addrs(other):
                    if o.broadcast == ia.broadcast:
                        self.bcast[ia.broadcast] = o
        still = any(o.network == ia.network and o.plen == ia.plen for o in st.addrs)
        if not still:
            self.routes.remove_where(lambda r: r.kind == "connected" and r.ifname == iface.name
                                     and r.dst == ia.network and r.plen == ia.plen)
        else:
            for r in self.routes.exact(ia.network, ia.plen):
                if r.kind == "connected" and r.src == ia.addr:
                    r.src = next(o.addr for o in st.addrs if o.network == ia.network)
            self.routes.changed()
        self.counters["addr_removed"] += 1

    def _pfil_addr_change(self, iface: Interface, event: str, ia: IfAddr) -> None:
        self._invalidate_fastpath()
        pf = self.pf
        if pf is not None:
            pf.run_event("ifaddr", event, iface, IPv4Address(ia.addr), ia.plen)

    def addresses(self, ifname: str | None = None) -> list[IfAddr]:
        if ifname is not None:
            return list(self.iface_addrs(self._iface(ifname)))
        return [ia for i in self.stack.interfaces.values() for ia in self.iface_addrs(i)]

    # routes -------------------------------------------------------------------------
    def _gateway_iface(self, gw: int) -> str:
        r = self.routes.lookup(gw)
        if r is None or r.gateway:
            raise OSError(errno.ENETUNREACH, f"gateway {int_to_ip(gw)} is not on a connected network")
        return r.ifname

    def route_add(self, dest: str, gateway: str | None = None, *, ifname: str | None = None,
                  metric: int = 0, mtu: int = 0, reject: bool = False,
                  blackhole: bool = False) -> Route:
        """``route_add("default", "10.0.0.1")``, ``route_add("10.9.0.0/16", "10.0.0.254",
        metric=5)``, ``route_add("10.8.0.0/16", ifname="tap1")`` (on-link)."""
        d, plen = parse_prefix(dest)
        gw = ip_to_int(gateway) if gateway else 0
        if ifname is None:
            if gw:
                ifname = self._gateway_iface(gw)
            elif reject or blackhole:
                ifname = "lo0"
            else:
                raise OSError(errno.EINVAL, "a route needs a gateway or an interface")
        else:
            self._iface(ifname)
        r = Route(d, plen, gw, ifname, metric=metric, mtu=mtu, kind="static", reject=reject,
                  blackhole=blackhole)
        return self.routes.add(r)

    def route_delete(self, dest: str, gateway: str | None = None, *,
                     ifname: str | None = None) -> Route:
        d, plen = parse_prefix(dest)
        return self.routes.delete(d, plen, ip_to_int(gateway) if gateway else None, ifname)

    def route_change(self, dest: str, gateway: str | None = None, *, ifname: str | None = None,
                     metric: int | None = None, mtu: int | None = None) -> Route:
        d, plen = parse_prefix(dest)
        gw = ip_to_int(gateway) if gateway else None
        if gw is not None and ifname is None:
            ifname = self._gateway_iface(gw)
        return self.routes.change(d, plen, gateway=gw, ifname=ifname, metric=metric, mtu=mtu)

    def route_get(self, dst: str) -> dict[str, str]:
        """What ``route get`` prints: the route chosen for ``dst`` and the source used."""
        d = ip_to_int(dst)
        if d in self.local or d >> 24 == 127:
            return {"destination": int_to_ip(d), "route": f"{int_to_ip(d)}/32",
                    "gateway": "link", "interface": "lo0", "source": int_to_ip(d if d in self.local else 0x7F000001),
                    "flags": "UHL", "mtu": str(self.stack.lo0.mtu), "metric": "0"}
        r = self.routes.lookup(d)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {dst}")
        s = self.source_for(d)
        return {"destination": int_to_ip(d), "route": r.destination,
                "gateway": int_to_ip(r.gateway) if r.gateway else "link",
                "interface": r.ifname, "source": str(s) if s else "-", "flags": r.flags,
                "mtu": str(self._path_mtu(d, r)), "metric": str(r.metric)}

    def route_list(self) -> list[dict[str, str]]:
        return [r.describe() for r in self.routes]

    # ARP ----------------------------------------------------------------------------
    def arp_list(self) -> list[dict[str, str]]:
        return self.arp.list()

    def arp_delete(self, addr: str, ifname: str | None = None) -> None:
        if not self.arp.delete(ip_to_int(addr), ifname):
            raise OSError(errno.ENOENT, f"{addr}: no ARP entry")

    def arp_set(self, addr: str, mac: str, *, ifname: str | None = None,
                published: bool = False) -> None:
        """A static (permanent) entry; the interface defaults to the connected route's."""
        a = ip_to_int(addr)
        if ifname is None:
            r = self.routes.lookup(a)
            if r is None or r.gateway:
                raise OSError(errno.ENETUNREACH, f"{addr} is not on a connected network")
            ifname = r.ifname
        self._iface(ifname)
        self.arp.set_static(ifname, a, parse_mac(mac), published=published)

    # text ---------------------------------------------------------------------------
    def render_routes(self) -> str:
        return self.routes.render()

    def render_arp(self) -> str:
        return self.arp.render()

    def render_addresses(self) -> str:
        """``IFNAME ADDR/LEN broadcast BCAST`` per line (see docs/inet.md)."""
        out = []
        for name, iface in self.stack.interfaces.items():
            for ia in self.iface_addrs(iface):
                b = int_to_ip(ia.broadcast) if ia.broadcast else "-"
                out.append(f"{name} {ia} broadcast {b}\n")
        return "".join(out)

    def render_stats(self) -> str:
        """``group counter value`` per line: ip, icmp, arp, reass, route."""
        out = []
        for group in (self.counters, self.icmp.counters, self.arp.counters,
                      self.reass.counters, self.routes.counters):
            out += [f"{group.group} {k} {v}\n" for k, v in group.snapshot().items()]
        return "".join(out)

    # ping ---------------------------------------------------------------------------
    async def ping(self, dst: AddrLike, size: int = 56, ttl: int | None = None,
                   timeout: float = 1.0, **kw: Any) -> float:
        return await self.icmp.ping(dst, size, ttl, timeout, **kw)  # type: ignore[arg-type]


# ============================================================================ helpers
def _header(s: int, d: int, proto: int, total: int, ttl: int, tos: int, ident: int,
            flags: int, options: bytes) -> bytes:
    ihl = HLEN + len(options)
    hdr = pack_header(0x40 | ihl >> 2, tos, total, ident, flags, ttl, proto, 0, s, d)
    if options:
        hdr += options
    v = int.from_bytes(hdr, "big") % 0xFFFF
    csum = 0xFFFF - v if v else 0
    return hdr[:10] + csum.to_bytes(2, "big") + hdr[12:]


def _copied_options(options: bytes) -> bytes:
    """The options with the 'copied' flag (RFC 791), padded to 4 bytes."""
    if not options:
        return b""
    out = bytearray()
    i = 0
    n = len(options)
    while i < n:
        t = options[i]
        if t == 0:
            break
        if t == 1:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2:
            break
        ln = options[i + 1]
        if t & 0x80:
            out += options[i:i + ln]
        i += ln
    while len(out) & 3:
        out.append(0)
    return bytes(out)


def _complete_csum(payload: Sequence[Buffer], meta: TxMeta) -> list[Buffer]:
    """Finish a CHECKSUM_PARTIAL transport checksum in software: the field at
    csum_start+csum_offset holds the pseudo-header sum; fold in the data from csum_start."""
    bufs = list(payload)
    flat_views: list[memoryview] = []
    pos = 0
    start = meta.csum_start
    for b in bufs:
        v = memoryview(b)
        if pos + len(v) > start:
            flat_views.append(v[max(0, start - pos):])
        pos += len(v)
    s = raw_sum(flat_views)
    csum = 0xFFFF - s if s else 0xFFFF
    # the checksum field is complemented sum of data incl. the pseudo sum already in it
    at = start + meta.csum_offset
    pos = 0
    for i, b in enumerate(bufs):
        if pos <= at < pos + len(b):
            writable = b if isinstance(b, bytearray) else bytearray(b)
            k = at - pos
            if k + 1 < len(writable):
                writable[k:k + 2] = csum.to_bytes(2, "big")
                bufs[i] = writable
                break
            # the field straddles two buffers: join them (rare)
            joined = bytearray(b) + bytearray(bufs[i + 1])
            joined[k:k + 2] = csum.to_bytes(2, "big")
            bufs[i:i + 2] = [joined]
            break
        pos += len(b)
    return bufs
