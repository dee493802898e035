"""Address configuration (RFC 4862, RFC 8981, RFC 6724): link-local addresses, duplicate
address detection, stateless autoconfiguration from router advertisements, temporary
addresses, lifetimes, and source address selection.

An address is added ``tentative``: it joins its solicited-node group and DAD sends
``net.inet6.ip6.dad_count`` Neighbor Solicitations from ``::`` one RetransTimer apart.
An NA for it, or another node's DAD NS for it, makes it ``duplicated`` (logged, counted,
shown by ifconfig, never used); silence makes it ``preferred`` — usable — and a host
then solicits routers from its link-local address. ``dad_count`` 0 skips DAD.

SLAAC (``accept_rtadv``): an autonomous /64 prefix forms prefix + modified EUI-64
interface identifier, with the prefix's lifetimes; a later advertisement updates them
with RFC 4862 §5.5.3(e)'s two-hour rule. With ``net.inet6.ip6.use_tempaddr`` a random
temporary address (RFC 8981) is formed too and preferred as a source. When the
preferred lifetime ends the address is ``deprecated`` (not chosen as a source for new
traffic); when the valid lifetime ends it is removed.

Source selection (RFC 6724 §5) among the usable addresses: the destination itself; an
appropriate scope; not deprecated; on the outgoing interface; temporary when
``use_tempaddr`` prefers them; the longest matching prefix.
"""

from __future__ import annotations

import logging
import math
import os
import random
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr, Prefix, format_addr, to_ip
from stack.inet.route import Route
from stack.inet6.ifaddr import (
    ALL_NODES,
    ALL_ROUTERS,
    DEPRECATED,
    DUPLICATED,
    LINK_LOCAL_PREFIX,
    PREFERRED,
    TENTATIVE,
    IfAddr6,
    eui64,
    is_link_local,
    scope,
    solicited_node,
)
from stack.inet6.wire.icmp6 import INFINITE, PrefixInfo
from stack.l2.iface import IFF_LOOPBACK, Interface
from stack.services import RESOLVER

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer

log = logging.getLogger("io-pkt.inet6")

TWO_HOURS = 7200
MAX_RTR_SOLICITATIONS = 3
RTR_SOLICITATION_INTERVAL = 4.0


class AddrConf:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.stack = ip6.stack
        #: interfaces that joined all-routers for router mode
        self.routers_joined: set[str] = set()
        reg = self.stack.sysctl.register
        self.k_dad_count = reg("net.inet6.ip6.dad_count", 1,
                               "DAD probes before an address is used (0: no DAD)", lo=0, hi=15)
        self.k_tempaddr = reg("net.inet6.ip6.use_tempaddr", 0,
                              "form RFC 8981 temporary addresses and prefer them", lo=0, hi=1)
        self.k_temp_pltime = reg("net.inet6.ip6.temppltime", 86400,
                                 "preferred lifetime of temporary addresses, s", lo=60)
        self.k_temp_vltime = reg("net.inet6.ip6.tempvltime", 604800,
                                 "valid lifetime of temporary addresses, s", lo=60)
        self.k_rtsol = reg("net.inet6.ip6.rtsol", 1,
                           "solicit routers when an interface comes up (hosts)", lo=0, hi=1)

    # -- interface events ------------------------------------------------------------
    def iface_event(self, event: str, iface: Interface) -> None:
        ip6 = self.ip6
        if event == "attach":
            st = ip6.iface_state(iface)
            self.join(iface, ALL_NODES)
            if ip6.k_forwarding.value and iface.name not in self.routers_joined:
                self.routers_joined.add(iface.name)
                self.join(iface, ALL_ROUTERS)
            del st
            ip6.mld.link_state(iface)
            if iface.up:
                self._link_up(iface)
        elif event == "detach":
            for ia in list(ip6.iface_addrs(iface)):
                self.remove(ia)
            ip6.nd.flush_interface(iface.name)
            self.dns_forget(iface)
            self.routers_joined.discard(iface.name)
            ip6.routes.remove_where(lambda r: r.ifname == iface.name and
                                    r.prefix.family == 24)
            iface.proto.pop("inet6", None)
        elif event == "change":
            ip6.mld.link_state(iface)
            if iface.up:
                self._link_up(iface)
            else:
                ip6.nd.table.flush(iface.name)
            ip6.routes.changed()

    def _link_up(self, iface: Interface) -> None:
        """An interface came up: a link-local address (auto_linklocal), DAD again for
        the tentative ones."""
        ip6 = self.ip6
        st = ip6.iface_state(iface)
        if iface.flags & IFF_LOOPBACK:
            return
        if not getattr(iface.medium, "resolves", False) or not iface.mac:
            return  # no link addresses: no EUI-64, no ND (point-to-point, tunnels)
        if st.auto_linklocal and ip6.k_auto_linklocal.value and \
                not any(is_link_local(a.addr) for a in st.addrs):
            ll = Prefix(Addr(LINK_LOCAL_PREFIX.addr | eui64(iface.mac)), 64)
            self.add(iface, ll)
        for ia in st.addrs:
            if ia.state == TENTATIVE and ia.timer is None:
                self._start_dad(iface, ia)

    # -- adding and removing ---------------------------------------------------------
    def add(self, iface: Interface, prefix: Prefix, *, autoconf: bool = False,
            temporary: bool = False, valid: float = math.inf,
            preferred: float = math.inf, dad: bool = True) -> IfAddr6:
        """Put ``prefix`` (address/length) on ``iface``, tentative until DAD passes."""
        ip6 = self.ip6
        st = ip6.iface_state(iface)
        ia = IfAddr6(prefix, iface.name, TENTATIVE, autoconf, temporary)
        now = trio.current_time()
        ia.valid_until = now + valid
        ia.preferred_until = now + preferred
        st.addrs.append(ia)
        a = prefix.addr
        self.join(iface, solicited_node(a))
        net = Prefix(prefix.network, prefix.plen)
        if prefix.plen < 128 and not any(r.ifname == iface.name and
                                         r.kind in ("connected", "ra")
                                         for r in ip6.routes.exact(net)):
            ip6.routes.add(Route(net, None, iface.name, src=a, kind="connected"))
        ip6.counters["addr_added"] += 1
        self._arm_lifetimes(ia)
        if not dad or iface.flags & IFF_LOOPBACK or not int(self.k_dad_count.value) \
                or not getattr(iface.medium, "resolves", False):
            self._dad_ok(ia)
        else:
            ip6.tentative[a] = ia
            if iface.up:
                self._start_dad(iface, ia)
        return ia

    def remove(self, ia: IfAddr6) -> None:
        ip6 = self.ip6
        iface = self.stack.interfaces.get(ia.ifname)
        self._cancel(ia)
        a = ia.addr
        if ip6.tentative.get(a) is ia:
            del ip6.tentative[a]
        if ip6.local.get(a) is ia:
            del ip6.local[a]
            for other in self.stack.interfaces.values():  # held elsewhere too?
                for o in ip6.iface_addrs(other):
                    if o.addr == a and o is not ia and o.usable:
                        ip6.local[a] = o
        if iface is not None:
            st = ip6.iface_state(iface)
            if ia in st.addrs:
                st.addrs.remove(ia)
            self.leave(iface, solicited_node(a))
            net = ia.network
            if not any(o.network == net for o in st.addrs):
                ip6.routes.remove_where(lambda r: r.kind == "connected" and
                                        r.ifname == iface.name and r.prefix == net)
            else:
                ip6.routes.changed()
            self._pfil_event(iface, "delete", ia)
        ip6.counters["addr_removed"] += 1

    def _cancel(self, ia: IfAddr6) -> None:
        t = ia.timer
        if t is not None:
            t.cancel()  # type: ignore[attr-defined]
            ia.timer = None

    # -- DAD -------------------------------------------------------------------------
    def _start_dad(self, iface: Interface, ia: IfAddr6) -> None:
        ia.dad_sent = 0
        # RFC 4862 §5.4.2: a random delay before the first probe (bounded small: this
        # stack comes up with its links)
        delay = random.uniform(0, 0.05)
        ia.timer = self.ip6.timers.call_at(trio.current_time() + delay,
                                           lambda: self._dad_step(ia))

    def _dad_step(self, ia: IfAddr6) -> None:
        ia.timer = None
        if ia.state != TENTATIVE:
            return
        iface = self.stack.interfaces.get(ia.ifname)
        if iface is None:
            return
        if not iface.up:
            return  # resumed at link up
        if ia.dad_sent >= int(self.k_dad_count.value):
            self._dad_ok(ia)
            return
        ia.dad_sent += 1
        self.ip6.nd.send_dad(iface, ia.addr)
        ia.timer = self.ip6.timers.call_at(trio.current_time() + self._retrans(iface),
                                           lambda: self._dad_step(ia))

    def _retrans(self, iface: Interface) -> float:
        st = self.ip6.iface_state(iface)
        ms = st.retrans_ms or int(self.ip6.nd.params.rexmit_ms.value)
        return ms / 1000

    def _dad_ok(self, ia: IfAddr6) -> None:
        ip6 = self.ip6
        a = ia.addr
        if ip6.tentative.get(a) is ia:
            del ip6.tentative[a]
        ia.state = PREFERRED if trio.current_time() < ia.preferred_until else DEPRECATED
        ip6.local.setdefault(a, ia)
        ip6.counters["addr_dad_ok"] += 1
        self._arm_lifetimes(ia)
        iface = self.stack.interfaces.get(ia.ifname)
        if iface is None:
            return
        ip6.routes.changed()
        ip6.mld.report_now(iface, solicited_node(a))
        self._pfil_event(iface, "add", ia)
        if is_link_local(a) and not ip6.k_forwarding.value and self.k_rtsol.value \
                and ip6.iface_state(iface).accept_rtadv and ip6.k_accept_rtadv.value:
            self.solicit_routers(iface)

    def dad_failed(self, ia: IfAddr6, how: str) -> None:
        """DAD heard another node on our tentative address (RFC 4862 §5.4.5)."""
        ip6 = self.ip6
        if ip6.tentative.get(ia.addr) is ia:
            del ip6.tentative[ia.addr]
        self._cancel(ia)
        ia.state = DUPLICATED
        ip6.counters["addr_duplicated"] += 1
        log.warning("inet6: %s: DAD detected duplicate IPv6 address %s (%s)",
                    ia.ifname, format_addr(ia.addr), how)
        iface = self.stack.interfaces.get(ia.ifname)
        if iface is not None:
            self._pfil_event(iface, "duplicated", ia)

    def solicit_routers(self, iface: Interface) -> None:
        """Up to MAX_RTR_SOLICITATIONS RS, RTR_SOLICITATION_INTERVAL apart (stops once
        a router answered)."""
        st = self.ip6.iface_state(iface)
        st.rs_sent = 0

        def step() -> None:
            if iface.stack is None or not iface.up:
                return
            if any(k[0] == iface.name for k in self.ip6.nd.routers):
                return
            if st.rs_sent >= MAX_RTR_SOLICITATIONS:
                return
            st.rs_sent += 1
            self.ip6.nd.send_rs(iface)
            self.ip6.timers.call_at(trio.current_time() + RTR_SOLICITATION_INTERVAL, step)

        self.ip6.timers.call_at(trio.current_time() + random.uniform(0, 0.1), step)

    # -- lifetimes -------------------------------------------------------------------
    def _arm_lifetimes(self, ia: IfAddr6) -> None:
        if ia.state == TENTATIVE or ia.state == DUPLICATED:
            return
        self._cancel(ia)
        now = trio.current_time()
        if ia.preferred_until > now and ia.preferred_until < ia.valid_until:
            when, fn = ia.preferred_until, self._deprecate
        elif ia.valid_until < math.inf:
            when, fn = ia.valid_until, self._expire
        else:
            return
        ia.timer = self.ip6.timers.call_at(when, lambda: fn(ia))

    def _deprecate(self, ia: IfAddr6) -> None:
        ia.timer = None
        if ia.state == PREFERRED:
            ia.state = DEPRECATED
            self.ip6.counters["addr_deprecated"] += 1
        self._arm_lifetimes(ia)

    def _expire(self, ia: IfAddr6) -> None:
        ia.timer = None
        self.ip6.counters["addr_expired"] += 1
        self.remove(ia)

    # -- SLAAC -----------------------------------------------------------------------
    def prefix_advertised(self, iface: Interface, pi: PrefixInfo) -> None:
        """RFC 4862 §5.5.3 for an autonomous prefix."""
        ip6 = self.ip6
        c = ip6.counters
        if pi.preferred > pi.valid or pi.plen != 64 or not iface.mac:
            c["slaac_ignored"] += 1
            return
        now = trio.current_time()
        net = pi.prefix & ~((1 << 64) - 1)
        valid = math.inf if pi.valid == INFINITE else float(pi.valid)
        preferred = math.inf if pi.preferred == INFINITE else float(pi.preferred)
        existing = [ia for ia in ip6.iface_addrs(iface)
                    if ia.autoconf and ia.plen == 64 and ia.addr >> 64 == net >> 64]
        for ia in existing:
            if ia.state == DUPLICATED:
                continue
            remaining = ia.valid_until - now
            # (e): a short valid lifetime only shortens the address down to two hours
            if valid > TWO_HOURS or valid > remaining:
                new_valid = valid
            elif remaining <= TWO_HOURS:
                new_valid = remaining
            else:
                new_valid = TWO_HOURS
            if ia.temporary:
                new_valid = min(new_valid, ia.valid_until - now)
                preferred_t = min(preferred, ia.preferred_until - now)
                ia.preferred_until = now + preferred_t
            else:
                ia.preferred_until = now + preferred
            ia.valid_until = now + new_valid
            if ia.state == DEPRECATED and ia.preferred_until > now:
                ia.state = PREFERRED
            c["slaac_updated"] += 1
            self._arm_lifetimes(ia)
        if existing or valid == 0:
            return
        a = Addr(net | eui64(iface.mac))
        self.add(iface, Prefix(a, 64), autoconf=True, valid=valid, preferred=preferred)
        c["slaac_added"] += 1
        if self.k_tempaddr.value and preferred > 0:
            iid = int.from_bytes(os.urandom(8), "big") & ~(0x02 << 56)
            tv = min(valid, float(int(self.k_temp_vltime.value)))
            tp = min(preferred, float(int(self.k_temp_pltime.value)))
            self.add(iface, Prefix(Addr(net | iid), 64), autoconf=True, temporary=True,
                     valid=tv, preferred=tp)
            c["tempaddr_added"] += 1

    # -- source selection (RFC 6724 §5) ----------------------------------------------
    def select_source(self, iface: Interface, dst: int, *,
                      link_only: bool = False) -> Addr | None:
        ip6 = self.ip6
        if dst in ip6.local:
            return Addr(dst)
        dscope = scope(dst)
        prefer_temp = bool(self.k_tempaddr.value)
        best: IfAddr6 | None = None
        best_key: tuple[int, ...] = ()
        cands = [ia for ia in ip6.iface_addrs(iface) if ia.usable]
        if not link_only and dscope > 2:
            # addresses of other interfaces are candidates too (rule 5 ranks them lower)
            for other in self.stack.interfaces.values():
                if other is not iface:
                    cands.extend(ia for ia in ip6.iface_addrs(other) if ia.usable)
        for ia in cands:
            s = scope(ia.addr)
            if s < dscope and s <= 2 and dscope > 2:
                scope_rank = 0  # too small a scope for the destination (rule 2)
            elif s >= dscope:
                scope_rank = 2 * 16 - s  # rule 2: the smallest adequate scope
            else:
                scope_rank = 16 + s
            key = (scope_rank,
                   0 if ia.state == DEPRECATED else 1,          # rule 3
                   1 if ia.ifname == iface.name else 0,          # rule 5
                   (1 if ia.temporary else 0) if prefer_temp else (0 if ia.temporary else 1),
                   _common_prefix(ia.addr, dst))                 # rule 8
            if best is None or key > best_key:
                best, best_key = ia, key
        return best.addr if best is not None else None

    # -- groups ----------------------------------------------------------------------
    def join(self, iface: Interface, group: Addr) -> None:
        self.ip6.mld.join(iface, group)

    def leave(self, iface: Interface, group: Addr) -> None:
        self.ip6.mld.leave(iface, group)

    def forwarding_changed(self, on: bool) -> None:
        """Router mode on: every interface listens to all-routers (once, however often
        the sysctl is written); off: they leave it."""
        for iface in list(self.stack.interfaces.values()):
            if on and iface.name not in self.routers_joined:
                self.routers_joined.add(iface.name)
                self.join(iface, ALL_ROUTERS)
            elif not on and iface.name in self.routers_joined:
                self.routers_joined.discard(iface.name)
                self.leave(iface, ALL_ROUTERS)

    def dns_changed(self, iface: Interface) -> None:
        """RDNSS/DNSSL of ``iface`` changed (an RA, or a lifetime ran out): drop what
        expired, give the resolver (the ``RESOLVER`` service, when the stack has one)
        what is left as source ``ra:IFNAME`` (servers and domains in the order first
        heard; a link-local server with its scope, ``fe80::1%tap0``), call
        ``nd.dns_listeners``, and arm a timer for the next expiry (RFC 8106 §5.1)."""
        st = self.ip6.iface_state(iface)
        now = trio.current_time()
        for a in [a for a, until in st.rdnss.items() if until <= now]:
            del st.rdnss[a]
        for n in [n for n, until in st.dnssl.items() if until <= now]:
            del st.dnssl[n]
        if st.dns_timer is not None:
            st.dns_timer.cancel()
            st.dns_timer = None
        nxt = min([*st.rdnss.values(), *st.dnssl.values()], default=math.inf)
        if nxt < math.inf and iface.stack is not None:
            st.dns_timer = self.ip6.timers.call_at(nxt, lambda: self.dns_changed(iface))
        res = self.stack.services.get(RESOLVER)
        if res is not None:
            servers = [format_addr(a) + (f"%{iface.name}" if is_link_local(a) else "")
                       for a in st.rdnss]
            res.set_source(f"ra:{iface.name}", nameservers=servers, search=list(st.dnssl))
        for fn in self.ip6.nd.dns_listeners:
            try:
                fn(iface)
            except Exception:
                log.exception("inet6: a DNS listener failed")

    def dns_forget(self, iface: Interface) -> None:
        """The interface goes: its RDNSS/DNSSL leave the resolver."""
        st = self.ip6.iface_state(iface)
        st.rdnss.clear()
        st.dnssl.clear()
        self.dns_changed(iface)

    def _pfil_event(self, iface: Interface, event: str, ia: IfAddr6) -> None:
        self.ip6.invalidate_fastpath()  # a cached flow's destination may be ours now
        pf = self.ip6.pf
        if pf is not None:
            pf.run_event("ifaddr", event, iface, to_ip(ia.addr), ia.plen)


def _common_prefix(a: int, b: int) -> int:
    x = (a ^ b) >> 64  # RFC 6724 rule 8 compares up to the prefix (64 bits)
    return 64 - x.bit_length()
