"""The IPv6 layer's data path (RFC 8200): input with the extension-header chain,
reassembly and local delivery, output with source selection and source fragmentation,
forwarding (never fragmenting in transit). Implements ``stack/network.py``'s
``NetworkLayer`` toward the transports, beside IPv4's (stack/inet/ipv4.py), whose route
table it shares (one table for both families, stack/inet/route.py).

The parts it composes: ``icmp`` (ICMPv6: echo, errors, the rate limiter), ``nd``
(Neighbor Discovery over stack/neighbour.py), ``addrconf`` (link-local addresses, DAD,
SLAAC, lifetimes, source selection), ``mld`` (MLDv2 listener reports), ``reass``,
``rtadv`` (router advertisements in router mode) and ``manage`` (the management API).

Scope. Link-local destinations need an interface: the caller's ``ifname`` (a socket's
scope id), else the interface of a link-local source, else the first interface with a
link-local address (as a host with one link does); multicast likewise.
"""

from __future__ import annotations

import errno
import random
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from stack.addr import AF_INET6, Addr, is_v4
from stack.counters import Counters
from stack.inet.route import Route, RouteTable
from stack.inet.timers import Timers
from stack.inet6.counters import IP6_COUNTERS
from stack.inet6.ifaddr import (
    SCOPE_LINK,
    IfAddr6,
    IfInet6,
    is_link_local,
    scope,
)
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import (
    EXTENSION_HEADERS,
    HLEN,
    NH_ICMPV6,
    NH_TCP,
    NH_UDP,
    PP_HEADER,
    PP_INCOMPLETE_CHAIN,
    PP_NEXT_HEADER,
    PP_OPTION,
    ChainError,
    pack_fragment,
    pack_header,
    walk_chain,
)
from stack.l2.ether import ETHERTYPE_IPV6
from stack.l2.gso import (
    GSO_FEATURE,
    GsoError,
    clamp_gso_size,
    complete_csum,
    device_finishes,
    segment_ip,
)
from stack.l2.iface import IFF_LOOPBACK, Interface
from stack.network import IPInfo
from stack.packet import GSO_NONE, Buffer, Packet, TxMeta
from stack.pfil import Reroute

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.network import ErrorHandler, RawTap, TransportHandler

_FIXED = struct.Struct("!IHBB")  # version/class/flow, payload length, next header, hop limit

MIN_MTU = 1280
PMTU_EXPIRE = 600.0
LOOPBACK6 = 1
#: minimal upper-layer header a first fragment must hold (RFC 7112)
_L4_MIN = {NH_TCP: 20, NH_UDP: 8, NH_ICMPV6: 4}


class IPv6Layer:
    family = AF_INET6

    def __init__(self, stack: Stack, routes: RouteTable) -> None:
        # the parts import this module's constants; built here, so imported late
        from stack.inet6.addrconf import AddrConf
        from stack.inet6.icmp6 import Icmp6
        from stack.inet6.manage import IPv6Management
        from stack.inet6.mld import Mld
        from stack.inet6.nd import NeighborDiscovery
        from stack.inet6.reass import Reassembler6
        from stack.inet6.rtadv import RouterAdvertiser

        self.stack = stack
        self.counters = Counters("ip6", IP6_COUNTERS)
        self.timers = Timers()
        self.protocols: dict[int, TransportHandler] = {}
        self.error_handlers: dict[int, ErrorHandler] = {}
        self.raw_taps: list[RawTap] = []
        #: usable unicast addresses (DAD passed) → their IfAddr6
        self.local: dict[int, IfAddr6] = {}
        #: tentative addresses (DAD running): ND's business only
        self.tentative: dict[int, IfAddr6] = {}
        self.routes = routes
        self.pmtu: dict[int, tuple[int, float]] = {}
        self._ident = random.randrange(1 << 32)
        reg = stack.sysctl.register
        self.k_forwarding = reg("net.inet6.ip6.forwarding", 0,
                                "forward IPv6 packets (router mode)", lo=0, hi=1,
                                on_change=self._forwarding_changed)
        self.k_hlim = reg("net.inet6.ip6.hlim", 64, "default hop limit", lo=1, hi=255)
        self.k_accept_rtadv = reg("net.inet6.ip6.accept_rtadv", 1,
                                  "accept router advertisements (hosts)", lo=0, hi=1)
        self.k_auto_linklocal = reg("net.inet6.ip6.auto_linklocal", 1,
                                    "give every interface a link-local address", lo=0, hi=1)
        tcpip = stack.config.tcpip
        if tcpip.flag("forward6"):  # -p tcpip forward6 (router mode from the start)
            self.k_forwarding.value = 1
        # -p tcpip auto_linklocal=0: no link-local addresses unless configured (and so
        # no DAD, MLD or router solicitations on links where nobody asked for IPv6)
        self.k_auto_linklocal.value = tcpip.get_int("auto_linklocal", 1, lo=0, hi=1) or 0
        self.pf = stack.pfil
        #: the "inet6_out_prefrag" hooks (stack/pfil.py; IPsec's IPv6 output point):
        #: tested per datagram after source selection, run by _prefrag_output when any
        self.prefrag = stack.pfil.inet6_out_prefrag
        self.icmp = Icmp6(self)
        self.reass = Reassembler6(self)
        self.nd = NeighborDiscovery(self)
        self.mld = Mld(self)
        self.addrconf = AddrConf(self)
        self.rtadv = RouterAdvertiser(self)
        self.manage = IPv6Management(self)
        self.protocols[NH_ICMPV6] = self.icmp.input

    # ============================================================ NetworkLayer contract
    def register_protocol(self, proto: int, handler: TransportHandler) -> None:
        if proto == NH_ICMPV6:
            raise ValueError("protocol 58 (ICMPv6) belongs to the IPv6 layer; use raw_taps")
        self.protocols[proto] = handler

    def unregister_protocol(self, proto: int) -> None:
        if proto != NH_ICMPV6:
            self.protocols.pop(proto, None)

    def register_error_handler(self, proto: int, fn: ErrorHandler) -> None:
        self.error_handlers[proto] = fn

    def is_local(self, addr: int) -> bool:
        return addr in self.local or addr == LOOPBACK6

    def is_broadcast(self, addr: int) -> bool:
        return addr >> 120 == 0xFF  # multicast: what a transport must not answer

    def source_for(self, dst: int, ifname: str | None = None) -> Addr | None:
        if is_v4(dst):
            return None
        if dst in self.local or dst == LOOPBACK6:
            return Addr(dst)
        iface = self._out_iface(dst, None, ifname)
        if iface is None:
            return None
        return self.addrconf.select_source(iface, dst)

    def route_mtu(self, dst: int) -> int:
        if is_v4(dst):
            return 0
        if dst in self.local or dst == LOOPBACK6:
            return self.stack.lo0.mtu
        iface = self._out_iface(dst, None, None)
        if iface is None:
            return 0
        r = None if is_link_local(dst) or dst >> 120 == 0xFF else self.routes.lookup(Addr(dst))
        return self._path_mtu(dst, iface, r)

    def route_offloads(self, dst: int) -> set[str]:
        if dst in self.local or dst == LOOPBACK6:
            return set(self.stack.lo0.offloads)
        iface = self._out_iface(dst, None, None)
        return set(iface.offloads) if iface is not None else set()

    def original_packet(self, info: IPInfo) -> memoryview:
        pkt = info.pkt
        if pkt is not None:
            data = pkt.data
            off = pkt.l3
            plen = int.from_bytes(data[off + 4:off + 6], "big")
            return data[off:off + HLEN + plen]
        body = bytes(info.payload)
        return memoryview(pack_header(info.tos, 0, len(body), info.proto, info.ttl, info.src,
                                      info.dst) + body)

    def port_unreachable(self, info: IPInfo) -> bool:
        if info.broadcast:
            return False
        return self.icmp.send_error(w6.DEST_UNREACH, w6.UNREACH_PORT,
                                    self.original_packet(info))

    # ---------------------------------------------------------------- which interface
    def _out_iface(self, d: int, src: int | None, ifname: str | None) -> Interface | None:
        """The interface a datagram to ``d`` leaves by (None: no route)."""
        stack = self.stack
        if ifname is not None:
            return stack.interfaces.get(ifname)
        if d >> 120 == 0xFF or is_link_local(d):
            if src is not None and is_link_local(src):
                ia = self.local.get(src)
                if ia is not None:
                    return stack.interfaces.get(ia.ifname)
            if d >> 120 == 0xFF and scope(d) > SCOPE_LINK:
                r = self.routes.lookup(Addr(d))
                if r is not None:
                    return stack.interfaces.get(r.ifname)
            return self.default_link()
        r = self.routes.lookup(Addr(d))
        if r is None:
            return None
        return stack.interfaces.get(r.ifname)

    def default_link(self) -> Interface | None:
        """For a link-local or multicast destination without a scope: the first up
        interface with a usable link-local address (Linux asks for a scope; a host with
        one link needs none)."""
        for iface in self.stack.interfaces.values():
            if not iface.up or iface.flags & IFF_LOOPBACK:
                continue
            for ia in self.iface_addrs(iface):
                if ia.usable and is_link_local(ia.addr):
                    return iface
        return None

    # ----------------------------------------------------------------------- output
    def output(self, src: int | None, dst: int, proto: int, payload: Sequence[Buffer], *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None, ident: int | None = None,
               ext: bytes = b"", ext_proto: int | None = None) -> int:
        """Route, pick the source (RFC 6724), fragment at the source when allowed
        (``df``: IPV6_DONTFRAG), resolve, send. 0 or an errno. ``ext``: extension headers
        to put first (MLD's hop-by-hop router alert), ``ext_proto`` their next header."""
        c = self.counters
        c["out_requests"] += 1
        d = dst
        s = 0 if src is None else src
        if is_v4(d) or (s and is_v4(s)):
            c["out_not_ipv6"] += 1
            return errno.EAFNOSUPPORT
        stack = self.stack
        plen = len(ext)
        for b in payload:
            plen += len(b)
        route: Route | None = None
        multicast = d >> 120 == 0xFF
        if d in self.local or d == LOOPBACK6:
            iface: Interface | None = stack.lo0
            nexthop = d
            if not s:
                s = d
            mtu = stack.lo0.mtu
        else:
            if ifname is not None or multicast or is_link_local(d):
                iface = self._out_iface(d, s, ifname)
                if iface is None:
                    c["out_no_scope" if ifname is None else "out_no_route"] += 1
                    return errno.ENETUNREACH if ifname is None else errno.ENXIO
                nexthop = d
                if ifname is not None and not multicast and not is_link_local(d):
                    route = self.routes.lookup(Addr(d))
                    if route is not None and route.ifname != ifname:
                        route = None
                    if route is not None and route.gateway is not None:
                        nexthop = route.gateway
            else:
                route = self.routes.lookup(Addr(d))
                if route is None:
                    c["out_no_route"] += 1
                    return errno.ENETUNREACH
                iface = stack.interfaces.get(route.ifname)
                if route.reject:
                    c["out_reject"] += 1
                    return errno.EHOSTUNREACH
                if route.blackhole:
                    c["out_blackhole"] += 1
                    return 0
                route.use += 1
                gw = route.gateway
                nexthop = d if gw is None else gw
            if iface is None or not iface.up:
                c["out_no_route"] += 1
                return errno.ENETUNREACH
            mtu = self._path_mtu(d, iface, route)
            if not s:
                sa = self.addrconf.select_source(iface, d)
                if sa is None:
                    c["out_no_source"] += 1
                    return errno.EADDRNOTAVAIL
                s = sa
        assert iface is not None
        if ttl is None:
            ttl = 1 if multicast else self.hop_limit(iface)
        first_nh = proto if ext_proto is None else ext_proto
        gso = meta is not None and meta.gso_type != GSO_NONE
        if plen > 65535:
            c["out_drop_too_long"] += 1
            return errno.EMSGSIZE
        fail = (self._local_unreach, (proto, s, d, payload, on_error))
        if self.prefrag:  # output hooks before fragmentation (IPsec; may re-route): see there
            return self._prefrag_output(iface, nexthop, s, d, first_nh, ext, payload, plen,
                                        mtu, ttl, tos, df, meta, ident, fail)
        # a super-segment (TSO) or super-datagram (USO) the interface cuts is not
        # fragmented: its pieces fit the MTU (the transport chose gso_size so)
        if HLEN + plen > mtu and not (gso and GSO_FEATURE.get(meta.gso_type, "") in iface.offloads):  # type: ignore[union-attr]
            if df or gso:
                c["out_drop_too_big"] += 1
                return errno.EMSGSIZE
            if meta is not None and meta.needs_csum:
                payload = complete_csum(payload, meta)
            return self._fragment(iface, nexthop, s, d, first_nh, ext, payload, plen, mtu, ttl,
                                  tos, ident, fail)
        hdr = pack_header(tos, 0, plen, first_nh, ttl, s, d)
        if ext:
            hdr += ext
        if meta is not None and (meta.needs_csum or gso):
            if meta.needs_csum and "csum" not in iface.offloads:
                payload = complete_csum(payload, meta)
                meta = None
            else:
                meta = meta.shifted(len(hdr) + iface.medium.hdr_len)
        c["out_packets"] += 1
        return self._send(iface, nexthop, [hdr, *payload], meta, fail)

    def link_output(self, iface: Interface, src: int, dst: int, nh: int,
                    bufs: Sequence[Buffer], hlim: int, lladdr: bytes | None = None) -> int:
        """Send on ``iface`` with exactly this source (``::`` for DAD and early MLD):
        the control messages of ND and MLD, which pick neither route nor source.
        Multicast goes to its 33:33 address, unicast to ``lladdr`` when given (a
        probe, an answer to a frame's sender), else through neighbour resolution."""
        if not iface.up or iface.stack is None:
            return errno.ENETDOWN
        n = 0
        for b in bufs:
            n += len(b)
        hdr = pack_header(0, 0, n, nh, hlim, src, dst)
        medium = iface.medium
        out: list[Buffer] = [hdr, *bufs]
        pf = self.pf
        if pf is not None and pf.inet6_out:  # filters see ND and MLD too (pf's ND rules)
            res = pf.run_chain(pf.inet6_out, "out", out, iface)
            if res is None:
                self.counters["drop_pfil_out"] += 1
                return errno.EPERM
            out = res
        if lladdr is not None and dst >> 120 != 0xFF:
            ok = medium.send_to(lladdr, ETHERTYPE_IPV6, out)
            return 0 if ok else errno.ENOBUFS
        return medium.output(out, Addr(dst), ETHERTYPE_IPV6)

    def hop_limit(self, iface: Interface | None) -> int:
        st = iface.proto.get("inet6") if iface is not None else None
        if st is not None and st.hop_limit:
            return int(st.hop_limit)
        return int(self.k_hlim.value)

    def _send(self, iface: Interface, nexthop: int, bufs: list[Buffer], meta: TxMeta | None,
              fail: Any) -> int:
        pf = self.pf
        if pf is not None and pf.inet6_out:
            res = pf.run_chain(pf.inet6_out, "out", bufs, iface)
            if res is None:
                self.counters["drop_pfil_out"] += 1
                return errno.EPERM
            bufs = res
        return iface.medium.output(bufs, Addr(nexthop), ETHERTYPE_IPV6, meta, fail)

    def _prefrag_output(self, iface: Interface, nexthop: int, s: int, d: int, nh: int,
                        ext: bytes, payload: Sequence[Buffer], plen: int, mtu: int, ttl: int,
                        tos: int, df: bool, meta: TxMeta | None, ident: int | None,
                        fail: Any) -> int:
        """The "inet6_out_prefrag" hooks (stack/pfil.py) on our own routed datagram, then
        source fragmentation and the send. As IPv4's: a partial checksum is completed
        and a super-segment cut into its segments first, each hooked on its own."""
        c = self.counters
        hdr = pack_header(tos, 0, plen, nh, ttl, s, d) + ext
        if meta is not None and meta.gso_type != GSO_NONE:
            shift = len(hdr)
            meta = meta.shifted(shift)
            try:
                datagrams = segment_ip(b"", memoryview(b"".join([hdr, *payload])), meta, mtu)
            except GsoError as exc:
                c["drop_prefrag_" + exc.reason] += 1
                return errno.EINVAL
            c["prefrag_offload_sw"] += 1
            err = 0
            for i, dgram in enumerate(datagrams):
                e = self._prefrag_one(iface, nexthop, [b for b in dgram if len(b)], mtu, df,
                                      ident, fail if i == 0 else None)
                err = err or e
            return err
        if meta is not None and meta.needs_csum:
            payload = complete_csum(payload, meta)
        return self._prefrag_one(iface, nexthop, [hdr, *payload], mtu, df, ident, fail)

    def _prefrag_one(self, iface: Interface, nexthop: int, bufs: list[Buffer], mtu: int,
                     df: bool, ident: int | None, fail: Any, forwarded: bool = False) -> int:
        c = self.counters
        res = self.stack.pfil.run_chain(self.prefrag, "out", bufs, iface)
        if res is None:
            c["drop_pfil_prefrag"] += 1  # dropped, or a hook raised (pfil counted it)
            return errno.EPERM
        if isinstance(res, Reroute):
            c["prefrag_rerouted"] += 1
            if res.bufs is not None:
                bufs = list(res.bufs)
            if res.iface is not None and res.iface is not iface:
                iface = res.iface
                st = iface.proto.get("inet6")
                mtu = st.mtu if st is not None and st.mtu else iface.mtu
                # on-link: the (new) datagram's destination
                nexthop = int.from_bytes(b"".join(bytes(b) for b in bufs)[24:40], "big")
            if res.nexthop is not None:
                nexthop = int(res.nexthop)
            if not iface.up or iface.stack is not self.stack:
                c["drop_prefrag_reroute_down"] += 1
                return errno.ENETUNREACH
        elif res is not bufs:
            c["prefrag_replaced"] += 1
            bufs = list(res)
        total = 0
        for b in bufs:
            total += len(b)
        if total <= mtu:
            if not forwarded:
                c["out_packets"] += 1
            return self._send(iface, nexthop, bufs, None, fail)
        if df:
            c["out_drop_too_big"] += 1
            return errno.EMSGSIZE
        dgram = b"".join(bytes(b) for b in bufs)
        if len(dgram) < HLEN or dgram[0] >> 4 != 6 \
                or HLEN + int.from_bytes(dgram[4:6], "big") != total:
            c["drop_prefrag_bad_replacement"] += 1
            return errno.EINVAL
        nh, ttl = dgram[6], dgram[7]
        tclass = (dgram[0] & 15) << 4 | dgram[1] >> 4
        ext = dgram[HLEN:HLEN + (dgram[HLEN + 1] + 1) * 8] if nh == 0 else b""  # hop-by-hop
        rest = memoryview(dgram)[HLEN + len(ext):]
        return self._fragment(iface, nexthop, int.from_bytes(dgram[8:24], "big"),
                              int.from_bytes(dgram[24:40], "big"), nh, ext, [rest], len(rest),
                              mtu, ttl, tclass, ident, fail)

    def _fragment(self, iface: Interface, nexthop: int, s: int, d: int, nh: int, ext: bytes,
                  payload: Sequence[Buffer], plen: int, mtu: int, ttl: int, tclass: int,
                  ident: int | None, fail: Any) -> int:
        """RFC 8200 §4.5 at the source: the unfragmentable part (``ext``: hop-by-hop)
        in every fragment, then a fragment header, then a slice of the rest."""
        c = self.counters
        chunk = (mtu - HLEN - len(ext) - 8) & ~7
        if chunk < 8:
            c["out_drop_mtu_too_small"] += 1
            return errno.EMSGSIZE
        if ident is None:
            self._ident = ident = (self._ident + 1) & 0xFFFFFFFF
        data = memoryview(b"".join(bytes(b) for b in payload))
        n = len(data)
        # the fragment header's next header is the first header after ``ext``
        frag_nh = nh
        first_nh = nh
        if ext:
            frag_nh = ext[0]  # the hop-by-hop header's next header
            ext = bytes((44,)) + ext[1:]
        else:
            first_nh = 44
        off = 0
        err = 0
        while off < n:
            take = min(chunk, n - off)
            more = off + take < n
            fh = pack_fragment(frag_nh, off, more, ident)
            hdr = pack_header(tclass, 0, len(ext) + 8 + take, first_nh, ttl, s, d) + ext + fh
            c["out_fragments"] += 1
            e = self._send(iface, nexthop, [hdr, data[off:off + take]], None,
                           fail if off == 0 else None)
            err = err or e
            off += take
        c["out_fragmented"] += 1
        return err

    def _local_unreach(self, err: int, proto: int, src: int, dst: int,
                       payload: Sequence[Buffer], on_error: Callable[[int], None] | None) -> None:
        """Neighbour resolution failed for a datagram we sent: tell the sender and the
        transport (address unreachable, mapped to host unreachable)."""
        self.counters["out_unresolved"] += 1
        if on_error is not None:
            on_error(err)
        h = self.error_handlers.get(proto)
        if h is not None:
            first = b"".join(bytes(b) for b in payload)[:8] if payload else b""
            h(3, 1, Addr(src), Addr(dst), memoryview(first), 0)

    # ------------------------------------------------------------------------ input
    def input(self, iface: Interface, pkt: Packet) -> None:
        c = self.counters
        c["in_receive"] += 1
        data = pkt.data
        off = pkt.l3
        n = len(data) - off
        if n < HLEN:
            c["drop_truncated"] += 1
            return
        vtf, plen, nh, hlim = _FIXED.unpack_from(data, off)
        if vtf >> 28 != 6:
            c["drop_bad_version"] += 1
            return
        if HLEN + plen > n:
            c["drop_truncated" if plen else "drop_bad_length"] += 1
            return
        total = HLEN + plen
        src = int.from_bytes(data[off + 8:off + 24], "big")
        dst = int.from_bytes(data[off + 24:off + 40], "big")
        # one test for the common case (a global or link-local unicast source, a
        # destination that is neither ::, ::1 nor IPv4-mapped), the details only when off
        if src >> 120 == 0xFF or src >> 32 == 0xFFFF or dst >> 32 <= 0xFFFF:
            if src >> 120 == 0xFF or src >> 32 == 0xFFFF:
                c["drop_bad_source"] += 1
                return
            if dst == LOOPBACK6:
                if not iface.flags & IFF_LOOPBACK:
                    c["drop_loopback_on_wire"] += 1  # RFC 4291 §2.5.3
                    return
            elif dst >> 32 == 0xFFFF or dst == 0:
                c["drop_bad_dest"] += 1
                return
        if src == LOOPBACK6 and not iface.flags & IFF_LOOPBACK:
            c["drop_loopback_on_wire"] += 1
            return
        pf = self.pf
        if pf is not None and pf.inet6_in:
            res = pf.run_chain(pf.inet6_in, "in", pkt, iface)
            if res is None:
                c["drop_pfil_in"] += 1
                return
            if res is not pkt:
                pkt = res
                data = pkt.data
                off = pkt.l3
                if len(data) - off < HLEN:
                    c["drop_pfil_bad_replacement"] += 1
                    return
                vtf, plen, nh, hlim = _FIXED.unpack_from(data, off)
                total = HLEN + plen
                if total > len(data) - off:
                    c["drop_pfil_bad_replacement"] += 1
                    return
                src = int.from_bytes(data[off + 8:off + 24], "big")
                dst = int.from_bytes(data[off + 24:off + 40], "big")
        multicast = dst >> 120 == 0xFF
        if multicast:
            st: IfInet6 | None = iface.proto.get("inet6")
            if st is None or dst not in st.groups:
                c["drop_multicast_not_joined"] += 1
                return
            c["in_multicast"] += 1
        elif dst in self.local:
            pass
        elif dst == LOOPBACK6:
            pass
        elif dst in self.tentative:
            # RFC 4862 §5.4: nothing addressed to a tentative address is taken (DAD's
            # messages go to the solicited-node group and all-nodes, not to it)
            c["drop_tentative_dest"] += 1
            return
        else:
            self._forward(iface, pkt, off, total, hlim, src, dst, nh)
            return
        reassembled = False
        nh_at = 6
        if nh not in EXTENSION_HEADERS:
            # the common case, no extension headers: no chain walk
            l4 = HLEN
            proto = nh
        else:
            try:
                ch = walk_chain(data, off, total, nh)
            except ChainError as e:
                c[e.reason] += 1
                code = e.code
                if code == -2:
                    code = -1 if multicast else PP_OPTION
                if code >= 0:
                    # RFC 8200 §4.2: action 10 reports even to a multicast destination
                    # (action 11, code -2, only to unicast ones: handled above)
                    self.icmp.send_error(w6.PARAM_PROBLEM, code, data[off:off + total],
                                         e.pointer, multicast_ok=e.code == PP_OPTION)
                return
            if ch.routing_at >= 0 and ch.segments_left:
                # RFC 5095: type 0 is deprecated; we route no source routes at all
                c["drop_routing_type0" if ch.routing_type == 0 else "drop_routing_header"] += 1
                self.icmp.send_error(w6.PARAM_PROBLEM, PP_HEADER, data[off:off + total],
                                     ch.routing_at + 2)
                return
            proto = ch.proto
            l4 = ch.l4
            nh_at = ch.nh_at
            fragment = ch.frag_at >= 0
            if fragment:
                if ch.frag_offset == 0 and not ch.frag_more:
                    c["atomic_fragments"] += 1  # RFC 6946: processed on its own
                else:
                    if ch.frag_offset == 0 and total - l4 < _L4_MIN.get(proto, 0):
                        c["drop_incomplete_first_fragment"] += 1  # RFC 7112
                        self.icmp.send_error(w6.PARAM_PROBLEM, PP_INCOMPLETE_CHAIN,
                                             data[off:off + total], 0)
                        return
                    # RFC 8200 §4.5: a fragment whose length is not a multiple of 8 (M
                    # set), or that reaches past 65,535 bytes, draws a Parameter Problem
                    # at the payload length / fragment offset field (reassembly drops
                    # and counts it)
                    flen = total - ch.frag_at - 8
                    if ch.frag_more and flen & 7:
                        self.icmp.send_error(w6.PARAM_PROBLEM, PP_HEADER,
                                             data[off:off + total], 4)
                    elif ch.frag_offset + flen > 65535 - (ch.unfragmentable_end - HLEN):
                        self.icmp.send_error(w6.PARAM_PROBLEM, PP_HEADER,
                                             data[off:off + total], ch.frag_at + 2)
                    whole = self.reass.input(data[off:off + ch.unfragmentable_end],
                                             data[off + ch.frag_at + 8:off + total],
                                             data[off + ch.frag_at], src, dst, ch.frag_ident,
                                             ch.frag_offset, ch.frag_more,
                                             ch.frag_nh_at)
                    if whole is None:
                        return
                    frag = pkt
                    pkt = Packet(memoryview(whole), iface)
                    pkt.src_mac, pkt.dst_mac, pkt.ethertype = frag.src_mac, frag.dst_mac, ETHERTYPE_IPV6
                    data = pkt.data
                    off = 0
                    total = len(whole)
                    try:
                        ch = walk_chain(data, 0, total, data[6])
                    except ChainError as e:
                        c[e.reason] += 1
                        return
                    proto = ch.proto
                    l4 = ch.l4
                    nh_at = ch.nh_at
                    reassembled = True
            if proto == NH_ICMPV6 and fragment and total > l4 \
                    and data[off + l4] in w6.ND_TYPES:
                c["drop_nd_fragment"] += 1  # RFC 6980
                return
        c["in_delivered"] += 1
        info = IPInfo(src, dst, proto, hlim, (vtf >> 20) & 0xFF,  # type: ignore[arg-type]
                      data[off + l4:off + total], pkt, pkt.csum_valid and not reassembled,
                      multicast)
        consumed = False
        for tap in self.raw_taps:
            if tap(info):
                consumed = True
        h = self.protocols.get(proto)
        if h is not None:
            h(info)
            return
        if consumed or proto == 59:  # no next header: nothing to deliver, nothing wrong
            return
        c["drop_unknown_protocol"] += 1
        if not multicast:
            # RFC 8200 §4: unrecognized next header, pointing at the byte that named it
            self.icmp.send_error(w6.PARAM_PROBLEM, PP_NEXT_HEADER, data[off:off + total], nh_at)

    # ------------------------------------------------------------------- forwarding
    def _forward(self, iface: Interface, pkt: Packet, off: int, total: int, hlim: int,
                 src: int, dst: int, nh: int) -> None:
        c = self.counters
        if not self.k_forwarding.value:
            c["drop_not_for_us"] += 1
            return
        data = pkt.data
        if src == 0 or is_link_local(src) or is_link_local(dst) or dst >> 120 == 0xFF:
            c["drop_fwd_scope"] += 1
            if is_link_local(src) and not is_link_local(dst) and dst >> 120 != 0xFF:
                self.icmp.send_error(w6.DEST_UNREACH, w6.UNREACH_BEYONDSCOPE,
                                     data[off:off + total])
            return
        if hlim <= 1:
            c["drop_hlim_exceeded"] += 1
            self.icmp.send_error(w6.TIME_EXCEEDED, w6.TIMXCEED_HOPLIMIT, data[off:off + total])
            return
        route = self.routes.lookup(Addr(dst))
        out = self.stack.interfaces.get(route.ifname) if route is not None else None
        if route is None or out is None or not out.up:
            c["drop_no_route"] += 1
            self.icmp.send_error(w6.DEST_UNREACH, w6.UNREACH_NOROUTE, data[off:off + total])
            return
        if route.reject or route.blackhole:
            c["drop_fwd_reject"] += 1
            if route.reject:
                self.icmp.send_error(w6.DEST_UNREACH, w6.UNREACH_REJECT, data[off:off + total])
            return
        if out.flags & IFF_LOOPBACK:
            c["drop_fwd_loopback"] += 1
            return
        mtu = self._path_mtu(dst, out, route)
        if total > mtu and pkt.gso_type == GSO_NONE:
            c["drop_fwd_too_big"] += 1  # RFC 8200 §5: never fragment in transit
            self.icmp.send_error(w6.PACKET_TOO_BIG, 0, data[off:off + total], mtu)
            return
        if data.readonly:
            frame = memoryview(bytearray(data[off:off + total]))
        else:
            frame = data[off:off + total]
        frame[7] = hlim - 1  # no header checksum in IPv6
        gw = route.gateway
        nexthop = dst if gw is None else gw
        route.use += 1
        if out is iface:
            c["fwd_same_interface"] += 1
        if self.prefrag:
            # the output hooks before fragmentation see forwarded datagrams too (an IPsec
            # gateway's tunnel): finished datagrams, one by one, as for our own; what they
            # make (an ESP packet) is ours and may be fragmented, the datagram itself fit
            self._forward_hooked(out, nexthop, frame, pkt.tx_meta(-off), mtu)
            return
        meta = pkt.tx_meta(out.medium.hdr_len - off)
        if meta is not None:
            if meta.gso_type and not clamp_gso_size(meta, frame, mtu):
                c["drop_fwd_gso_mtu"] += 1
                return
            if not device_finishes(meta, out.offloads):
                c["fwd_offload_sw"] += 1
        c["forwarded"] += 1
        err = self._send(out, nexthop, [frame], meta, (self._fwd_unreach, (frame,)))
        if err:
            c["fwd_send_failed"] += 1
            if err == errno.EHOSTUNREACH:
                self._fwd_unreach(err, frame)
            return
        ff = self.stack.l2.fastfwd
        if ff is not None and ff.enabled:
            # the next packets to ``dst`` go by layer 2's flow cache (stack/l2/fastfwd.py)
            mac = out.medium.link_address(Addr(nexthop))
            if mac is not None:
                ff.insert6(dst, out, mac, mtu)

    def _forward_hooked(self, out: Interface, nexthop: int, frame: memoryview,
                        meta: TxMeta | None, mtu: int) -> None:
        c = self.counters
        datagrams: list[list[Buffer]]
        if meta is None:
            datagrams = [[frame]]
        else:  # a super-segment or a partial checksum: finished first (the hooks read it)
            try:
                datagrams = [[b for b in d if len(b)]
                             for d in segment_ip(b"", frame, meta, mtu)]
            except GsoError as exc:
                c["drop_prefrag_" + exc.reason] += 1
                return
            c["prefrag_offload_sw"] += 1
        c["forwarded"] += 1
        fail = (self._fwd_unreach, (frame,))
        for i, bufs in enumerate(datagrams):
            err = self._prefrag_one(out, nexthop, bufs, mtu, False, None,
                                    fail if i == 0 else None, forwarded=True)
            if err:
                c["fwd_send_failed"] += 1
                if err == errno.EHOSTUNREACH:
                    self._fwd_unreach(err, frame)
                return

    def _fwd_unreach(self, err: int, frame: memoryview) -> None:
        self.icmp.send_error(w6.DEST_UNREACH, w6.UNREACH_ADDR, frame)

    def _forwarding_changed(self, value: int | str) -> None:
        """Router mode on/off: join or leave all-routers, start or stop advertising."""
        try:
            self.addrconf.forwarding_changed(bool(value))
            self.rtadv.forwarding_changed(bool(value))
        except AttributeError:
            pass  # during construction

    # -------------------------------------------------------------------- path MTU
    def _path_mtu(self, d: int, iface: Interface, route: Route | None) -> int:
        mtu = route.mtu if route is not None and route.mtu else 0
        if not mtu:
            st = iface.proto.get("inet6")
            mtu = st.mtu if st is not None and st.mtu else iface.mtu
        p = self.pmtu.get(d)
        if p is not None:
            if p[1] > trio.current_time():
                return min(mtu, p[0])
            del self.pmtu[d]
        return mtu

    def learn_pmtu(self, dst: int, mtu: int) -> None:
        """RFC 8201: a Packet Too Big lowered the path MTU to ``dst`` (never below 1280)."""
        if mtu < MIN_MTU:
            mtu = MIN_MTU
        old = self.pmtu.get(dst)
        if old is not None and old[0] <= mtu:
            self.counters["pmtu_ignored"] += 1
            return
        if len(self.pmtu) > 4096:
            self.pmtu.clear()
        self.pmtu[dst] = (mtu, trio.current_time() + PMTU_EXPIRE)
        self.counters["pmtu_learned"] += 1

    # -------------------------------------------------------------------- helpers
    def iface_addrs(self, iface: Interface) -> list[IfAddr6]:
        st = iface.proto.get("inet6")
        return st.addrs if st is not None else []

    def iface_state(self, iface: Interface) -> IfInet6:
        st = iface.proto.get("inet6")
        if st is None:
            st = iface.proto["inet6"] = IfInet6()
        return st

    def iface_event(self, event: str, iface: Interface) -> None:
        self.addrconf.iface_event(event, iface)

    def invalidate_fastpath(self) -> None:
        """Routes, addresses or neighbours changed: the flow cache forgets (both
        families: it does not know which entries depend on what)."""
        ff = self.stack.l2.fastfwd
        if ff is not None and (ff.flows6 or ff.flows):
            ff.invalidate_all()
