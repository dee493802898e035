"""The IPv4 layer's data path: input validation and local delivery, output with
fragmentation, forwarding, and the state they read (local and broadcast addresses, the
route table, path MTUs). Implements the contract in ``stack/network.py``
(``NetworkLayer``) toward the transports. The management API (addresses, routes, ARP
operations, renderings, ping) is stack/inet/manage.py, composed here as ``self.manage``
with delegating methods of the same names.

The transports speak ``stack.addr.Addr`` (IPv4-mapped ints); this layer keeps 32-bit
ints inside and converts at its transport-facing entry points (``_bits`` / ``v4``).

Hot path rules: one ``struct.unpack_from`` per header, counters instead of logging,
payloads are ``memoryview`` slices of the received frame (no copy), output is a list of
buffers with the header prepended as new small ``bytes``.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

import trio

from stack.addr import BROADCAST4, V4MAPPED, Addr, Prefix, v4, v4_bits
from stack.counters import Counters
from stack.inet.api import ErrorHandler, IPInfo, TransportHandler
from stack.inet.arp import Arp
from stack.inet.counters import IP_COUNTERS
from stack.inet.icmp import Icmp
from stack.inet.ifaddr import IfAddr
from stack.inet.igmp import PROTO_IGMP, Igmp
from stack.inet.manage import IPv4Management, as_addr, as_dest, as_prefix
from stack.inet.reass import Reassembler
from stack.inet.route import Route, RouteTable
from stack.inet.timers import Timers
from stack.inet.wire import icmp as wicmp
from stack.inet.wire.ipv4 import (
    FLAG_DF,
    HLEN,
    PROTO_ICMP,
    copied_options,
    ip_to_int,
    options_error,
    pack_header,
    unpack_header,
)
from stack.l2.ether import ETHERTYPE_IPV4
from stack.l2.fastfwd import FastForward
from stack.l2.gso import (
    GSO_FEATURE,
    GsoError,
    clamp_gso_size,
    complete_csum,
    device_finishes,
    segment_ip,
)
from stack.l2.iface import IFF_LOOPBACK, Interface, parse_mac
from stack.packet import GSO_NONE, Buffer, Packet, TxMeta
from stack.pfil import Pfil, Reroute

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.inet")

LIMITED_BROADCAST = 0xFFFFFFFF
PMTU_EXPIRE = 600.0

AddrLike = IPv4Address | int | str | None


def _as_int(a: AddrLike) -> int:
    if a is None:
        return 0
    if isinstance(a, int):
        return a & 0xFFFFFFFF  # an Addr (stack.addr, IPv4-mapped) or a 32-bit value
    if isinstance(a, IPv4Address):
        return int(a)
    return ip_to_int(a)


def _bits(a: AddrLike) -> int:
    """A 32-bit address from what callers pass: an ``Addr`` (IPv4-mapped: the transports),
    a 32-bit int (this layer, ICMP), text or IPv4Address. -1 for an IPv6 ``Addr``."""
    if type(a) is int:
        if a >> 32:
            return a & 0xFFFFFFFF if a >> 32 == 0xFFFF else -1
        return a
    return _as_int(a)


class IPv4Layer:
    family = 2  # AF_INET

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.counters = Counters("ip", IP_COUNTERS)
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
        #: the management API (addresses, routes, ARP operations, renderings, ping)
        self.manage = IPv4Management(self)
        self.protocols[PROTO_ICMP] = self.icmp.input
        #: IGMP and the IPv4 group table (stack/inet/igmp.py; the sockets' MulticastHost)
        self.igmp = Igmp(self)
        self.protocols[PROTO_IGMP] = self.igmp.input
        #: the hot path's view of the group table: ifindex -> {group Addr: Filter}
        self.mc_groups = self.igmp.groups.by_if
        #: the "inet_out_prefrag" hooks (stack/pfil.py; IPsec's hook point): tested per
        #: datagram after routing, run by _prefrag_output when there are any
        self.prefrag = stack.pfil.inet_out_prefrag
        #: layer 2's flow cache (stack/l2/fastfwd.py): filled after a slow-path forward
        self.fastfwd: FastForward | None = stack.l2.fastfwd
        #: the "inet" pfil heads (and the "ifaddr" events the management API runs)
        self.pf: Pfil | None = stack.pfil

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
        a = _bits(addr)
        return a in self.local or a >> 24 == 127

    def is_broadcast(self, addr: AddrLike) -> bool:
        a = _bits(addr)
        return a == LIMITED_BROADCAST or a in self.bcast

    def source_for(self, dst: AddrLike) -> Addr | None:
        s = self._source(_bits(dst))
        return None if s is None else v4(s)

    def _source(self, d: int) -> int | None:
        if d < 0:
            return None
        if d in self.local:
            return d
        if d >> 24 == 127:
            return 0x7F000001
        r = self.routes.lookup_v4(d)
        if r is None:
            return None
        rs = r.src
        if rs is not None and rs & 0xFFFFFFFF in self.local:
            return rs & 0xFFFFFFFF
        iface = self.stack.interfaces.get(r.ifname)
        if iface is None:
            return None
        gw = r.gateway
        return self.iface_source(iface, d if gw is None else gw & 0xFFFFFFFF)

    def route_mtu(self, dst: AddrLike) -> int:
        d = _bits(dst)
        if d < 0:
            return 0
        if d in self.local or d >> 24 == 127:
            return self.stack.lo0.mtu
        r = self.routes.lookup_v4(d)
        if r is None:
            return 0
        return self._path_mtu(d, r)

    def route_offloads(self, dst: AddrLike) -> set[str]:
        """Offloads (``csum``, ``tso4``...) of the interface a packet to ``dst`` leaves by."""
        d = _bits(dst)
        if d < 0:
            return set()
        if d in self.local or d >> 24 == 127:
            return set(self.stack.lo0.offloads)
        r = self.routes.lookup_v4(d)
        iface = self.stack.interfaces.get(r.ifname) if r else None
        return set(iface.offloads) if iface else set()

    # ---------------------------------------------------------------------- output
    def output(self, src: AddrLike, dst: AddrLike, proto: int, payload: Sequence[Buffer], *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None, ident: int | None = None,
               options: bytes = b"", mcast_loop: bool = True) -> int:
        """Route, pick the source, fragment, resolve, send. Returns 0 or an errno. A
        failure found later (ARP resolution) is reported through ``on_error(errno)`` and
        the protocol's error handler (as ICMP host unreachable, like Linux).

        To a multicast group: the next hop is the group whatever the route's gateway,
        the TTL defaults to 1, and when ``mcast_loop`` and the out interface has joined
        the group a copy is delivered here as if received on it (IP_MULTICAST_LOOP);
        TTL 0 goes nowhere else."""
        c = self.counters
        c["out_requests"] += 1
        d = dst if type(dst) is int else _as_int(dst)
        s = src if type(src) is int else _as_int(src)
        if (d | s) >> 32:  # Addr values (the transports): IPv4-mapped (_bits inline)
            if d >> 32 != 0xFFFF or s >> 32 not in (0, 0xFFFF):
                c["out_not_ipv4"] += 1
                return errno.EAFNOSUPPORT
            d &= 0xFFFFFFFF
            s &= 0xFFFFFFFF
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
                route = self.routes.lookup_v4(d)
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
                # Route holds Addr values; & 0xFFFFFFFF is v4_bits, inlined
                gw = route.gateway
                nexthop = d if gw is None else gw & 0xFFFFFFFF
                mtu = self._path_mtu(d, route)
            else:
                nexthop = d
                mtu = iface.mtu  # type: ignore[union-attr]
            if d == LIMITED_BROADCAST or d in self.bcast:
                bcast = True
                nexthop = d
            elif d >> 28 == 14:
                nexthop = d  # a group is its own next hop (RFC 1112 mapping below)
            if not s:
                rs = route.src if route is not None else None
                if rs is not None and rs & 0xFFFFFFFF in self.local:
                    s = rs & 0xFFFFFFFF
                else:
                    s = self.iface_source(iface, nexthop) or 0  # type: ignore[arg-type]
                if not s:
                    c["out_no_source"] += 1
                    return errno.EADDRNOTAVAIL
        assert iface is not None
        if ttl is None:
            ttl = 1 if d >> 28 == 14 else int(self.k_ttl.value)
        fresh = ident is None
        if ident is None:
            self._ident = ident = (self._ident + 1) & 0xFFFF
        if d >> 28 == 14:
            if mcast_loop:
                groups = self.mc_groups.get(iface.index)
                if groups is not None and V4MAPPED | d in groups:
                    self._mcast_loop(iface, s, d, proto, payload, ttl, tos, ident, options, meta)
            if ttl == 0 or iface.flags & IFF_LOOPBACK:
                c["out_mcast_host_only"] += 1
                return 0
        ihl = HLEN + len(options)
        total = ihl + plen
        gso = meta is not None and meta.gso_type != GSO_NONE
        if gso and fresh and meta.gso_size > 0:  # type: ignore[union-attr]
            # the segments take ids ident, ident + 1... (Linux's ip_select_ident_segs)
            segs = -(-(plen - meta.hdr_len) // meta.gso_size)  # type: ignore[union-attr]
            self._ident = (ident + segs - 1) & 0xFFFF
        if self.prefrag:  # output hooks before fragmentation (may re-route): see there
            if total > 65535:
                c["out_drop_too_long"] += 1
                return errno.EMSGSIZE
            hdr = _header(s, d, proto, total, ttl, tos, ident, FLAG_DF if df else 0, options)
            return self._prefrag_output(iface, nexthop, [hdr, *payload], meta, ihl, bcast, mtu,
                                        (self._local_unreach, (proto, s, d, payload, on_error)),
                                        None)
        # a super-segment (TSO) or super-datagram (USO) the interface cuts is not
        # fragmented: its pieces fit the MTU (the transport chose gso_size so)
        if total > mtu and not (gso and GSO_FEATURE.get(meta.gso_type, "") in iface.offloads):  # type: ignore[union-attr]
            if df or gso:
                c["out_drop_df_too_big"] += 1
                return errno.EMSGSIZE
            if meta is not None and meta.needs_csum:
                payload = complete_csum(payload, meta)
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
                payload = complete_csum(payload, meta)
                meta = None
            else:
                meta = meta.shifted(ihl + iface.medium.hdr_len)
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
        # the egress interface's medium frames it and resolves the next hop (Ethernet:
        # broadcast/multicast mapping, else the neighbour layer; lo0 and point-to-point
        # links: nothing to resolve); V4MAPPED | x is stack.addr.v4(x) for a 32-bit
        # next hop and leaves an IPv4 Addr as it is
        return iface.medium.output(bufs, BROADCAST4 if bcast else V4MAPPED | nexthop,  # type: ignore[arg-type]
                                   ETHERTYPE_IPV4, meta, fail)

    def _prefrag_output(self, iface: Interface, nexthop: int, bufs: list[Buffer],
                        meta: TxMeta | None, shift: int, bcast: bool, mtu: int, fail: Any,
                        fwd: memoryview | None) -> int:
        """The "inet_out_prefrag" hooks (stack/pfil.py) on a routed datagram, then
        fragmentation and the send. ``bufs``: the whole datagram, IP header first;
        ``meta`` offsets count from ``shift`` bytes into it; ``fwd``: the forwarded
        datagram (ICMP errors quote it), None for our own. Hooks see finished datagrams:
        a partial checksum is completed and a super-segment cut into its segments first
        (Linux's xfrm output does the same), each then hooked on its own."""
        if meta is None:
            return self._prefrag_one(iface, nexthop, bufs, bcast, mtu, fail, fwd)
        c = self.counters
        if shift:
            meta = meta.shifted(shift)
        try:
            datagrams = segment_ip(b"", memoryview(b"".join(bufs)), meta, mtu)
        except GsoError as exc:
            c["drop_prefrag_" + exc.reason] += 1
            return errno.EINVAL
        c["prefrag_offload_sw"] += 1
        err = 0
        for i, dgram in enumerate(datagrams):
            e = self._prefrag_one(iface, nexthop, [b for b in dgram if len(b)], bcast, mtu,
                                  fail if i == 0 else None, fwd)
            err = err or e
        return err

    def _prefrag_one(self, iface: Interface, nexthop: int, bufs: list[Buffer], bcast: bool,
                     mtu: int, fail: Any, fwd: memoryview | None) -> int:
        c = self.counters
        res = self.stack.pfil.run_chain(self.prefrag, "out", bufs, iface)
        if res is None:
            c["drop_pfil_prefrag"] += 1  # dropped, or a hook raised (pfil counted it)
            return errno.EPERM
        changed = False
        if isinstance(res, Reroute):
            c["prefrag_rerouted"] += 1
            if res.bufs is not None:
                bufs = _as_bufs(res.bufs)
                changed = True
            if res.iface is not None and res.iface is not iface:
                iface = res.iface
                mtu = iface.mtu
                # on-link: the (new) datagram's destination
                nexthop = int.from_bytes(bytes(_head(bufs)[16:20]), "big")
                bcast = False
            if res.nexthop is not None:
                nexthop = res.nexthop
                bcast = False
            if not iface.up or iface.stack is not self.stack:
                c["drop_prefrag_reroute_down"] += 1
                return errno.ENETUNREACH
        elif res is not bufs:
            c["prefrag_replaced"] += 1
            bufs = _as_bufs(res)
            changed = True
        total = 0
        for b in bufs:
            total += len(b)
        if not changed and total <= mtu:
            if fwd is None:
                c["out_packets"] += 1
            return self._send(iface, nexthop, bufs, None, bcast, fail)
        head = _head(bufs)
        if len(head) < HLEN or head[0] >> 4 != 4 or (head[0] & 15) << 2 < HLEN \
                or (head[0] & 15) << 2 > len(head) \
                or int.from_bytes(head[2:4], "big") != total:
            c["drop_prefrag_bad_replacement"] += 1
            return errno.EINVAL
        if total <= mtu:
            if fwd is None:
                c["out_packets"] += 1
            return self._send(iface, nexthop, bufs, None, bcast, fail)
        _, tos, _, ident, flags, ttl, proto, _, src, dst = unpack_header(head, 0)
        if flags & FLAG_DF:
            if fwd is None:
                c["out_drop_df_too_big"] += 1
            else:
                c["drop_frag_needed"] += 1
                self.icmp.send_error(wicmp.DEST_UNREACH, wicmp.UNREACH_NEEDFRAG, fwd, mtu)
            return errno.EMSGSIZE
        ihl = (head[0] & 15) << 2
        return self._fragment(iface, nexthop, src, dst, proto, _skip(bufs, ihl), total - ihl,
                              mtu, ttl, tos, ident, bytes(head[HLEN:ihl]), bcast, fail,
                              base_off=(flags & 0x1FFF) << 3, last_mf=bool(flags & 0x2000))

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
            opts = options if off == 0 else copied_options(options)
            flags = (0x2000 if more else 0) | ((base_off + off) >> 3)
            hdr = _header(s, d, proto, HLEN + len(opts) + n, ttl, tos, ident, flags, opts)
            c["out_fragments"] += 1
            e = self._send(iface, nexthop, [hdr, *parts], None, bcast,
                           fail if off == 0 else None)
            err = err or e
            off += n
        c["out_fragmented"] += 1
        return err

    def _mcast_loop(self, iface: Interface, s: int, d: int, proto: int,
                    payload: Sequence[Buffer], ttl: int, tos: int, ident: int, options: bytes,
                    meta: TxMeta | None) -> None:
        """IP_MULTICAST_LOOP: our datagram to a group ``iface`` joined, delivered here as
        if it had arrived on ``iface`` (whole: input reassembles nothing)."""
        if meta is not None and meta.needs_csum:
            payload = complete_csum(payload, meta)
        plen = 0
        for b in payload:
            plen += len(b)
        if HLEN + len(options) + plen > 65535:
            return
        hdr = _header(s, d, proto, HLEN + len(options) + plen, ttl, tos, ident, 0, options)
        pkt = Packet(memoryview(bytearray(b"".join([hdr, *(bytes(b) for b in payload)]))), iface)
        pkt.ethertype = ETHERTYPE_IPV4
        self.counters["out_mcast_looped"] += 1
        self.input(iface, pkt)

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
            h(wicmp.DEST_UNREACH, wicmp.UNREACH_HOST, v4(src), v4(dst), memoryview(first), 0)

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
            # a group joined on this interface (stack/inet/igmp.py's table), whose
            # filter passes the source; IGMP itself sees every message to a group joined
            groups = self.mc_groups.get(iface.index)
            f = groups.get(V4MAPPED | dst) if groups is not None else None  # type: ignore[call-overload]
            if f is None:
                if dst != 0xE0000001:  # all-hosts (joined at attach where multicast works)
                    c["drop_multicast_not_joined"] += 1
                    return
            elif proto != PROTO_IGMP and not f.allows(V4MAPPED | src):
                c["drop_multicast_source_filtered"] += 1
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
        # the transports speak Addr: V4MAPPED | x is stack.addr.v4(x), inlined (no call
        # on the hot path; Addr(...) would be one, hence the ignore)
        info = IPInfo(V4MAPPED | src, V4MAPPED | dst, proto, ttl, tos,  # type: ignore[arg-type]
                      data[off + ihl:off + total], pkt, pkt.csum_valid, bcast)
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
        return memoryview(_header(v4_bits(info.src), v4_bits(info.dst), info.proto,
                                  HLEN + len(body), info.ttl, info.tos, 0, 0, b"") + body)

    def port_unreachable(self, info: IPInfo) -> bool:
        """ICMP port unreachable about ``info`` (rate-limited; False when suppressed)."""
        return self.icmp.send_unreachable(info, wicmp.UNREACH_PORT)

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
        route = self.routes.lookup_v4(dst)
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
        gw = route.gateway
        nexthop = dst if gw is None else gw & 0xFFFFFFFF
        route.use += 1
        mtu = self._path_mtu(dst, route)
        if out is iface:
            c["fwd_same_interface"] += 1  # BSD would send a redirect here
        if self.prefrag:  # the output hooks before fragmentation see forwarded ones too
            c["forwarded"] += 1
            err = self._prefrag_output(out, nexthop, [frame], pkt.tx_meta(-off), 0, False, mtu,
                                       (self._fwd_unreach, (frame,)), frame)
            if err:
                c["fwd_send_failed"] += 1
                if err == errno.EHOSTUNREACH:
                    self._fwd_unreach(err, frame)
            return
        if total > mtu and pkt.gso_type == GSO_NONE:
            if pkt.csum_partial:  # fragments cannot carry a partial checksum
                frame = memoryview(bytearray().join(complete_csum(
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
        meta = pkt.tx_meta(out.medium.hdr_len - off)
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
            # only a medium with link addresses (Ethernet) gives the flow its next hop's
            mac = out.medium.link_address(V4MAPPED | nexthop)  # type: ignore[arg-type]
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
            if r.ifname == ifname and r.prefix.contains(v4(d)):
                return r
        return None

    def iface_addrs(self, iface: Interface) -> list[IfAddr]:
        st = iface.proto.get("inet")
        return st.addrs if st is not None else []

    def iface_has(self, iface: Interface, a: int) -> bool:
        for ia in self.iface_addrs(iface):
            if ia.addr4 == a:
                return True
        return False

    def iface_source(self, iface: Interface, toward: int) -> int | None:
        """The address of ``iface`` on the subnet of ``toward``, else its first."""
        addrs = self.iface_addrs(iface)
        for ia in addrs:
            if ia.contains4(toward):
                return ia.addr4
        return addrs[0].addr4 if addrs else None

    def neighbour_changed(self) -> None:
        self._invalidate_fastpath()

    def _invalidate_fastpath(self) -> None:
        ff = self.fastfwd
        if ff is not None:
            try:
                ff.invalidate_all()
            except Exception:
                self.counters["fastfwd_invalidate_errors"] += 1

    # ================================================================ management API
    # stack/inet/manage.py holds it (``self.manage``, typed: Prefix and Addr values, as
    # the control plane passes them); these delegate and also take IPv4 text, for tests
    # and scripts (``stack.inet.add_address("tap0", "10.0.0.2/24")``).
    def iface_event(self, event: str, iface: Interface) -> None:
        self.manage.iface_event(event, iface)
        self.igmp.iface_event(event, iface)

    def add_address(self, ifname: str, addr: Prefix | Addr | str, *,
                    broadcast: Addr | str | None = None) -> IfAddr:
        """No length: classful, as BSD ifconfig. Adds the connected route, announces."""
        return self.manage.add_address(ifname, as_prefix(addr), broadcast=_opt_addr(broadcast))

    def remove_address(self, ifname: str, addr: Addr | str) -> IfAddr:
        return self.manage.remove_address(ifname, as_addr(addr))

    def addresses(self, ifname: str | None = None) -> list[IfAddr]:
        return self.manage.addresses(ifname)

    def route_add(self, dest: Prefix | str, gateway: Addr | str | None = None, *,
                  ifname: str | None = None, metric: int = 0, mtu: int = 0,
                  reject: bool = False, blackhole: bool = False) -> Route:
        """``route_add("default", "10.0.0.1")``, ``route_add("10.9.0.0/16", "10.0.0.254",
        metric=5)``, ``route_add("10.8.0.0/16", ifname="tap1")`` (on-link)."""
        return self.manage.route_add(as_dest(dest), _opt_addr(gateway), ifname=ifname,
                                     metric=metric, mtu=mtu, reject=reject,
                                     blackhole=blackhole)

    def route_delete(self, dest: Prefix | str, gateway: Addr | str | None = None, *,
                     ifname: str | None = None) -> Route:
        return self.manage.route_delete(as_dest(dest), _opt_addr(gateway), ifname=ifname)

    def route_change(self, dest: Prefix | str, gateway: Addr | str | None = None, *,
                     ifname: str | None = None, metric: int | None = None,
                     mtu: int | None = None) -> Route:
        return self.manage.route_change(as_dest(dest), _opt_addr(gateway), ifname=ifname,
                                        metric=metric, mtu=mtu)

    def route_get(self, dst: Addr | str) -> dict[str, str]:
        return self.manage.route_get(as_addr(dst))

    def route_list(self) -> list[dict[str, str]]:
        return self.manage.route_list()

    def arp_list(self) -> list[dict[str, str]]:
        return self.manage.arp_list()

    def arp_delete(self, addr: Addr | str, ifname: str | None = None) -> None:
        self.manage.arp_delete(as_addr(addr), ifname)

    def arp_set(self, addr: Addr | str, mac: bytes | str, *, ifname: str | None = None,
                published: bool = False) -> None:
        self.manage.arp_set(as_addr(addr), parse_mac(mac) if isinstance(mac, str) else mac,
                            ifname=ifname, published=published)

    def render_routes(self) -> str:
        return self.manage.render_routes()

    def render_arp(self) -> str:
        return self.manage.render_arp()

    def render_addresses(self) -> str:
        return self.manage.render_addresses()

    def render_stats(self) -> str:
        return self.manage.render_stats()

    async def ping(self, dst: Addr | IPv4Address | str, size: int = 56,
                   ttl: int | None = None, timeout: float = 1.0) -> float:
        return await self.manage.ping(as_addr(dst), size, ttl, timeout)


def _opt_addr(a: Addr | str | None) -> Addr | None:
    return None if a is None or a == "" else as_addr(a)


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


def _as_bufs(res: Any) -> list[Buffer]:
    """A hook's replacement datagram as a buffer list."""
    if isinstance(res, (bytes, bytearray, memoryview)):
        return [res]
    return list(res)


def _head(bufs: Sequence[Buffer]) -> bytes | bytearray | memoryview:
    """At least the IP header (all of it when shorter than 60 bytes) of a datagram."""
    first = bufs[0]
    if len(first) >= 60 or len(bufs) == 1:
        return first
    return b"".join(bytes(b) for b in bufs)[:60]


def _skip(bufs: Sequence[Buffer], n: int) -> list[memoryview]:
    """The datagram's buffers after its first ``n`` bytes (views, no copy)."""
    out = []
    for b in bufs:
        v = memoryview(b)
        if n >= len(v):
            n -= len(v)
            continue
        out.append(v[n:])
        n = 0
    return out


