"""Neighbor Discovery (RFC 4861): the resolver of IPv6's neighbour table
(stack/neighbour.py holds the NUD states, held packets and anti-spoofing rules for both
families) and the handling of NS, NA, RS, RA and Redirect.

Every ND message must come with hop limit 255 and code 0 and parse cleanly (RFC 4861
§6.1, §7.1; RFC 6980: ND in fragments was dropped by the layer), or it is dropped and
counted. What ND hears feeds the table with the kind the table's rules expect: an NA
with the S flag is ``SOLICITED``, without it ``UNSOLICITED``; an NS, RS or RA carrying a
source link-layer address is a ``SOLICITATION`` (it may create a stale entry).

Router advertisements (hosts: ``accept_rtadv`` on the interface and
``net.inet6.ip6.accept_rtadv``, not in router mode) set the default router (a ``::/0``
route with the router's lifetime; lifetime 0 — a router's final RA — removes it at
once), on-link prefixes (routes of kind ``ra`` with their valid lifetime), the link MTU
(1280..the interface MTU), hop limit and RDNSS/DNSSL (RFC 8106, kept per interface with
their lifetimes; stack/inet6/addrconf.py ``dns_changed`` hands them to the resolver as
source ``ra:IFNAME`` and takes them back when they expire); autonomous prefixes go to
addrconf (SLAAC).

Redirects (hosts only, RFC 4861 §8.1): from a link-local source with hop limit 255, the
current first-hop router for the destination, not about a multicast destination, with a
target that is the destination itself (on-link) or link-local (a better router); they
install a ``/128`` route of kind ``redirect``. The Linux-side tests are
tests/inet6/test_radvd.py and tests/inet6/test_nd6_kernel.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from stack.addr import AF_INET6, Addr, Prefix, format_addr
from stack.counters import Counters
from stack.inet.route import Route
from stack.inet.timers import Timer
from stack.inet.wire import ParseError
from stack.inet6.counters import ND_COUNTERS
from stack.inet6.ifaddr import (
    ALL_NODES,
    is_link_local,
    is_multicast6,
    solicited_node,
)
from stack.inet6.wire import icmp6 as w6
from stack.l2.iface import IFF_LOOPBACK, Interface
from stack.neighbour import (
    SOLICITATION,
    SOLICITED,
    UNSOLICITED,
    NeighbourParams,
    Neighbours,
    NeighbourTable,
)
from stack.network import IPInfo
from stack.services import DHCP

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer

log = logging.getLogger("io-pkt.inet6")

ND_HLIM = 255


class NeighborDiscovery:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.stack = ip6.stack
        self.counters = Counters("nd6", ND_COUNTERS)
        reg = self.stack.sysctl.register
        params = NeighbourParams(
            maxentries=reg("net.inet6.ip6.nd6_maxentries", 1024, "ND cache size bound", lo=1),
            queue=reg("net.inet6.ip6.nd6_maxqueuelen", 16,
                      "packets held per unresolved entry", lo=1),
            retries=reg("net.inet6.ip6.nd6_mmaxtries", 3,
                        "solicitations before resolution fails", lo=1),
            rexmit_ms=reg("net.inet6.ip6.nd6_retrans_ms", 1000,
                          "NS retransmit interval (RetransTimer), ms", lo=10),
            reachable=reg("net.inet6.ip6.nd6_reachable", 30,
                          "seconds an entry stays reachable (ReachableTime)", lo=1),
            stale_gc=reg("net.inet6.ip6.nd6_gctimer", 60,
                         "seconds an unused stale entry lives", lo=1),
            down=reg("net.inet6.ip6.nd6_down", 20,
                     "seconds a failed entry rejects sends", lo=0),
            locktime=reg("net.inet6.ip6.nd6_locktime", 1,
                         "seconds after an update during which a conflicting claim is "
                         "refused without re-probing", lo=0),
        )
        self.params = params
        self.table = NeighbourTable(
            family=AF_INET6, name="nd6", resolver=self, interfaces=self.stack.interfaces,
            timers=ip6.timers, params=params, counters=self.counters,
            on_change=ip6.invalidate_fastpath, log=log)
        self.registration = Neighbours.of(self.stack.services).register(self.table)
        #: default routers from RAs: (ifname, router) → (route, expiry timer)
        self.routers: dict[tuple[str, int], tuple[Route, Timer]] = {}
        #: on-link prefixes from RAs: (ifname, prefix) → (route, expiry timer; None for
        #: an infinite lifetime)
        self.prefixes: dict[tuple[str, Prefix], tuple[Route, Timer | None]] = {}
        #: called with the interface when its RDNSS/DNSSL changes (besides the
        #: ``RESOLVER`` service, which addrconf.dns_changed feeds itself)
        self.dns_listeners: list[Callable[[Interface], None]] = []

    # -- sending -----------------------------------------------------------------------
    def _source(self, iface: Interface, toward: int) -> int | None:
        """A usable address of ``iface`` for an ND message about ``toward``."""
        return self.ip6.addrconf.select_source(iface, toward, link_only=True)

    def solicit(self, iface: Interface, addr: Addr, lladdr: bytes | None) -> None:
        """The table's request: NS to the solicited-node group, or a unicast probe."""
        src = self._source(iface, addr)
        if src is None:
            return  # no usable address yet (DAD running): the table retries
        dst = solicited_node(addr) if lladdr is None else addr
        msg = w6.ns(src, dst, addr, iface.mac if iface.mac else None)
        self.counters["out_ns"] += 1
        self.ip6.link_output(iface, src, dst, w6.NH_ICMPV6, [msg], ND_HLIM, lladdr)

    def send_dad(self, iface: Interface, target: int) -> None:
        dst = solicited_node(target)
        msg = w6.ns(0, dst, target, None)
        self.counters["dad_ns_out"] += 1
        self.ip6.link_output(iface, 0, dst, w6.NH_ICMPV6, [msg], ND_HLIM)

    def send_rs(self, iface: Interface) -> None:
        src = self._source(iface, 0xFF02 << 112 | 2) or 0
        dst = 0xFF02 << 112 | 2
        msg = w6.rs(src, dst, iface.mac if src and iface.mac else None)
        self.counters["out_rs"] += 1
        self.ip6.link_output(iface, src, dst, w6.NH_ICMPV6, [msg], ND_HLIM)

    def send_na(self, iface: Interface, src: int, dst: int, target: int, flags: int,
                lladdr: bytes | None) -> None:
        msg = w6.na(src, dst, target, flags, iface.mac if iface.mac else None)
        self.counters["out_na"] += 1
        self.ip6.link_output(iface, src, dst, w6.NH_ICMPV6, [msg], ND_HLIM, lladdr)

    # -- input -------------------------------------------------------------------------
    def input(self, info: IPInfo, msg: memoryview) -> None:
        c = self.counters
        pkt = info.pkt
        iface = pkt.iface if pkt is not None else None
        if iface is None or iface.flags & IFF_LOOPBACK:
            return
        if info.ttl != ND_HLIM:
            c["drop_bad_hlim"] += 1  # RFC 4861: off-link senders cannot forge 255
            return
        if msg[1] != 0:
            c["drop_bad_code"] += 1
            return
        t = msg[0]
        try:
            if t == w6.NEIGHBOR_SOLICIT:
                c["in_ns"] += 1
                self._ns(iface, info, msg, pkt.src_mac if pkt is not None else b"")
            elif t == w6.NEIGHBOR_ADVERT:
                c["in_na"] += 1
                self._na(iface, info, msg)
            elif t == w6.ROUTER_SOLICIT:
                c["in_rs"] += 1
                self._rs(iface, info, msg)
            elif t == w6.ROUTER_ADVERT:
                c["in_ra"] += 1
                self._ra(iface, info, msg)
            elif t == w6.REDIRECT:
                c["in_redirect"] += 1
                self._redirect(iface, info, msg)
        except ParseError as e:
            c[e.reason] += 1

    def _ns(self, iface: Interface, info: IPInfo, msg: memoryview, src_mac: bytes) -> None:
        c = self.counters
        target, opts = w6.parse_ns(msg)
        src = info.src
        if is_multicast6(target):
            c["drop_bad_target"] += 1
            return
        dad = src == 0
        if dad and (info.dst != solicited_node(target) or opts.slla is not None):
            c["drop_dad_ns_bad_dest"] += 1
            return
        ip6 = self.ip6
        tent = ip6.tentative.get(target)
        if tent is not None and tent.ifname == iface.name:
            if dad:
                # someone else is probing the address we are probing (RFC 4862 §5.4.3)
                c["dad_conflict_ns"] += 1
                ip6.addrconf.dad_failed(tent, "neighbor solicitation")
            return
        ia = ip6.local.get(target)
        ours = ia is not None and ia.ifname == iface.name
        proxy = None if ours else self.table.published(Addr(target))
        if not ours and proxy is None:
            c["ns_not_for_us"] += 1
            return
        rflag = w6.NA_ROUTER if ip6.k_forwarding.value else 0
        if dad:
            # the address is ours and in use: tell everyone (the prober sees a duplicate)
            self.send_na(iface, target, ALL_NODES, target, rflag | w6.NA_OVERRIDE, None)
            return
        if opts.slla is not None:
            self.table.input(iface, src, opts.slla, SOLICITATION)
        flags = rflag | w6.NA_SOLICITED | (w6.NA_OVERRIDE if proxy is None else 0)
        if proxy is not None:
            c["proxy_na"] += 1
        self.send_na(iface, target if ours else self._source(iface, src) or target, src,
                     target, flags, opts.slla or src_mac or None)

    def _na(self, iface: Interface, info: IPInfo, msg: memoryview) -> None:
        c = self.counters
        flags, target, opts = w6.parse_na(msg)
        if is_multicast6(target):
            c["drop_bad_target"] += 1
            return
        if is_multicast6(info.dst) and flags & w6.NA_SOLICITED:
            c["na_multicast_solicited"] += 1
            return
        ip6 = self.ip6
        tent = ip6.tentative.get(target)
        if tent is not None and tent.ifname == iface.name:
            c["dad_conflict_na"] += 1
            ip6.addrconf.dad_failed(tent, "neighbor advertisement")
            return
        if target in ip6.local:
            c["dup_address"] += 1
            log.warning("inet6: %s claims our address %s on %s",
                        opts.tlla.hex(":") if opts.tlla else "?", format_addr(target),
                        iface.name)
            return
        kind = SOLICITED if flags & w6.NA_SOLICITED else UNSOLICITED
        lladdr = opts.tlla
        if lladdr is None:
            e = self.table.entries.get((iface.name, Addr(target)))
            if e is None or not e.lladdr:
                return
            lladdr = e.lladdr
        self.table.input(iface, Addr(target), lladdr, kind)
        if not flags & w6.NA_ROUTER and (iface.name, target) in self.routers:
            self._router_gone(iface.name, target)  # RFC 4861 §7.2.5: no longer a router

    def _rs(self, iface: Interface, info: IPInfo, msg: memoryview) -> None:
        if len(msg) < 8:
            raise ParseError("drop_truncated")
        opts = w6.parse_options(msg[8:])
        if info.src == 0 and opts.slla is not None:
            raise ParseError("drop_bad_option")
        if info.src and opts.slla is not None:
            self.table.input(iface, info.src, opts.slla, SOLICITATION)
        self.ip6.rtadv.solicited(iface, info.src)

    def _ra(self, iface: Interface, info: IPInfo, msg: memoryview) -> None:
        c = self.counters
        src = info.src
        if not is_link_local(src):
            c["drop_ra_not_linklocal"] += 1
            return
        ra = w6.parse_ra(msg)
        ip6 = self.ip6
        st = ip6.iface_state(iface)
        if ip6.k_forwarding.value or not ip6.k_accept_rtadv.value or not st.accept_rtadv:
            c["drop_ra_ignored"] += 1
            return
        o = ra.options
        if o.slla is not None:
            self.table.input(iface, src, o.slla, SOLICITATION)
        if ra.hop_limit:
            st.hop_limit = ra.hop_limit
        if ra.reachable:
            st.reachable_ms = ra.reachable
        if ra.retrans:
            st.retrans_ms = ra.retrans
        if o.mtu is not None:
            if 1280 <= o.mtu <= iface.mtu:
                st.mtu = o.mtu
                c["ra_mtu"] += 1
            else:
                c["ra_mtu_ignored"] += 1
        self._router(iface, src, ra.lifetime)
        if ra.flags & (w6.RA_MANAGED | w6.RA_OTHER):  # DHCPv6 (stack/dhcp/client6.py)
            dhcp = self.stack.services.get(DHCP)
            if dhcp is not None:
                dhcp.v6.ra_flags(iface, bool(ra.flags & w6.RA_MANAGED),
                                 bool(ra.flags & w6.RA_OTHER))
        for pi in o.prefixes:
            c["ra_prefix"] += 1
            if is_link_local(pi.prefix) or pi.plen > 128:
                continue
            if pi.onlink:
                self._onlink(iface, Prefix(Addr(pi.prefix & _mask(pi.plen)), pi.plen), pi.valid)
            if pi.autonomous:
                ip6.addrconf.prefix_advertised(iface, pi)
        now = trio.current_time()
        changed = False
        for life, a in o.rdnss:
            c["ra_rdnss"] += 1
            if life:
                st.rdnss[Addr(a)] = now + life
            else:
                st.rdnss.pop(Addr(a), None)
            changed = True
        for life, names in o.dnssl:
            for n in names:
                if life:
                    st.dnssl[n] = now + life
                else:
                    st.dnssl.pop(n, None)
                changed = True
        if changed:
            ip6.addrconf.dns_changed(iface)

    def _router(self, iface: Interface, router: int, lifetime: int) -> None:
        key = (iface.name, router)
        cur = self.routers.get(key)
        routes = self.ip6.routes
        if lifetime == 0:
            if cur is not None:
                self._router_gone(iface.name, router)
            return
        deadline = trio.current_time() + lifetime
        if cur is not None:
            cur[1].cancel()
            route = cur[0]
        else:
            route = routes.add(Route(Prefix(Addr(0), 0), Addr(router), iface.name, kind="ra"))
            self.counters["ra_router"] += 1
        timer = self.ip6.timers.call_at(deadline, lambda: self._router_expired(key))
        self.routers[key] = (route, timer)

    def _router_expired(self, key: tuple[str, int]) -> None:
        self.counters["ra_router_expired"] += 1
        self._router_gone(*key)

    def _router_gone(self, ifname: str, router: int) -> None:
        cur = self.routers.pop((ifname, router), None)
        if cur is None:
            return
        cur[1].cancel()
        if cur[0] in list(self.ip6.routes):
            self.ip6.routes.remove(cur[0])

    def _onlink(self, iface: Interface, prefix: Prefix, valid: int) -> None:
        key = (iface.name, prefix)
        cur = self.prefixes.get(key)
        routes = self.ip6.routes
        if valid == 0:
            if cur is not None:
                self._prefix_gone(key)
            return
        if cur is not None:
            if cur[1] is not None:
                cur[1].cancel()
            route = cur[0]
        else:
            existing = [r for r in routes.exact(prefix) if r.ifname == iface.name]
            route = existing[0] if existing else routes.add(
                Route(prefix, None, iface.name, kind="ra"))
        if valid == w6.INFINITE:
            self.prefixes[key] = (route, None)
            return
        timer = self.ip6.timers.call_at(trio.current_time() + valid,
                                        lambda: self._prefix_gone(key))
        self.prefixes[key] = (route, timer)

    def _prefix_gone(self, key: tuple[str, Prefix]) -> None:
        cur = self.prefixes.pop(key, None)
        if cur is None:
            return
        if cur[1] is not None:
            cur[1].cancel()
        if cur[0].kind == "ra" and cur[0] in list(self.ip6.routes):
            self.ip6.routes.remove(cur[0])

    def _redirect(self, iface: Interface, info: IPInfo, msg: memoryview) -> None:
        c = self.counters
        target, dst, opts = w6.parse_redirect(msg)
        src = info.src
        if self.ip6.k_forwarding.value:
            c["drop_redirect_forwarding"] += 1  # RFC 4861 §8.2: routers take none
            return
        if not is_link_local(src) or is_multicast6(dst) or \
                not (target == dst or is_link_local(target)):
            c["drop_redirect_bad"] += 1
            return
        r = self.ip6.routes.lookup(Addr(dst))
        if r is None or r.gateway != src or r.ifname != iface.name:
            c["drop_redirect_not_router"] += 1  # RFC 4861 §8.1: only our first hop
            return
        host = Prefix(Addr(dst), 128)
        routes = self.ip6.routes
        for old in routes.exact(host):
            if old.kind == "redirect":
                routes.remove(old)
        routes.add(Route(host, None if target == dst else Addr(target), iface.name,
                         kind="redirect"))
        if opts.tlla is not None:
            self.table.input(iface, Addr(target), opts.tlla, SOLICITATION)
        c["redirect_installed"] += 1

    def flush_interface(self, ifname: str) -> None:
        for key in [k for k in self.routers if k[0] == ifname]:
            self._router_gone(*key)
        for pkey in [k for k in self.prefixes if k[0] == ifname]:
            self._prefix_gone(pkey)
        self.table.flush(ifname, keep_static=False)


def _mask(plen: int) -> int:
    return ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
