"""Multicast Listener Discovery, listener side (RFC 3810 MLDv2; RFC 2710 MLDv1 when a
v1 querier is heard): the groups an interface listens to, and the reports that tell
snooping switches and routers so (the solicited-node groups above all: without them a
snooping bridge would not deliver ND; tests/inet6/test_mld6_kernel.py shows a Linux
bridge that floods nothing unregistered to us delivering ND only for reported groups).

``join``/``leave`` count joins per (interface, group) — the layer's own (all-nodes,
solicited-node, all-routers) and sockets' (IPV6_JOIN_GROUP) alike — and program the
link's multicast filter (33:33 + low 32 bits). A first join sends an unsolicited
report (CHANGE_TO_EXCLUDE {}, twice: the robustness variable), a last leave a
CHANGE_TO_INCLUDE {} (MLDv1: a Done). A link coming up reports all its groups at once.
Queries (general or group-specific, from a link-local source with hop limit 1) are
answered with current-state records after a random delay within the maximum response
delay. ff02::1 and groups of interface-local scope are never
reported (RFC 3810 §6). Reports go from the link-local address (``::`` while it is
tentative), hop limit 1, with a router alert.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr
from stack.counters import Counters
from stack.inet6.counters import MLD_COUNTERS
from stack.inet6.ifaddr import ALL_MLDV2_ROUTERS, ALL_NODES, is_link_local, multicast_mac
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import NH_HOPOPTS
from stack.l2.iface import IFF_LOOPBACK, Interface
from stack.network import IPInfo

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer

#: hop-by-hop options header: next header ICMPv6, router alert (MLD), PadN
ROUTER_ALERT_HBH = bytes((w6.NH_ICMPV6, 0, 5, 2, 0, 0, 1, 0))
UNSOLICITED_INTERVAL = 1.0  #: RFC 3810 §9.11
ROBUSTNESS = 2
V1_COMPAT_TIME = 260.0


class Mld:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.counters = Counters("mld6", MLD_COUNTERS)
        #: interface → when an MLDv1 querier was last heard (v1 compatibility mode)
        self.v1_until: dict[str, float] = {}
        #: interfaces seen up (a link coming up reports every group it listens to)
        self.up: set[str] = set()

    def link_state(self, iface: Interface) -> None:
        """The interface came up (report every group again: a snooping switch may have
        forgotten us while it was down) or went down."""
        if not iface.up:
            self.up.discard(iface.name)
            return
        if iface.name in self.up:
            return
        self.up.add(iface.name)
        groups = [g for g in self.ip6.iface_state(iface).groups if _reported(g)]
        if groups:
            self._send(iface, [(w6.CHANGE_TO_EXCLUDE, g) for g in groups])

    # -- membership ------------------------------------------------------------------
    def join(self, iface: Interface, group: Addr) -> None:
        st = self.ip6.iface_state(iface)
        n = st.groups.get(group, 0)
        st.groups[group] = n + 1
        if n:
            return
        self.counters["joined"] += 1
        stack = iface.stack
        if stack is not None and not iface.flags & IFF_LOOPBACK:
            stack.l2.join_multicast(iface, multicast_mac(group))
        if _reported(group):
            self._unsolicited(iface, group, w6.CHANGE_TO_EXCLUDE, ROBUSTNESS)

    def leave(self, iface: Interface, group: Addr) -> None:
        st = self.ip6.iface_state(iface)
        n = st.groups.get(group, 0)
        if n > 1:
            st.groups[group] = n - 1
            return
        if not n:
            return
        del st.groups[group]
        self.counters["left"] += 1
        stack = iface.stack
        if stack is not None and not iface.flags & IFF_LOOPBACK:
            stack.l2.leave_multicast(iface, multicast_mac(group))
        if _reported(group):
            self._send(iface, [(w6.CHANGE_TO_INCLUDE, group)], done=True)

    def report_now(self, iface: Interface, group: Addr) -> None:
        """Report ``group`` again (its solicited-node address just became usable)."""
        if group in self.ip6.iface_state(iface).groups and _reported(group):
            self._send(iface, [(w6.CHANGE_TO_EXCLUDE, group)])

    def _unsolicited(self, iface: Interface, group: Addr, rtype: int, times: int) -> None:
        self._send(iface, [(rtype, group)])
        timers = self.ip6.timers
        for i in range(1, times):
            def again() -> None:
                if group in self.ip6.iface_state(iface).groups and iface.stack is not None:
                    self._send(iface, [(rtype, group)])
            timers.call_at(trio.current_time() + random.uniform(0, UNSOLICITED_INTERVAL) * i,
                           again)

    # -- reports ---------------------------------------------------------------------
    def _send(self, iface: Interface, records: list[tuple[int, Addr]], done: bool = False) -> None:
        if iface.flags & IFF_LOOPBACK or not iface.up or iface.stack is None:
            return
        ip6 = self.ip6
        src = 0
        for ia in ip6.iface_addrs(iface):
            if ia.usable and is_link_local(ia.addr):
                src = ia.addr
                break
        v1 = self.v1_until.get(iface.name, 0.0) > trio.current_time()
        if v1:
            for rtype, g in records:
                kind = w6.MLD_DONE if done or rtype == w6.CHANGE_TO_INCLUDE else w6.MLD_REPORT_V1
                dst = Addr(0xFF02 << 112 | 2) if kind == w6.MLD_DONE else g
                msg = w6.mld_v1(kind, src, dst, g)
                self.counters["out_done" if kind == w6.MLD_DONE else "out_report"] += 1
                ip6.link_output(iface, src, dst, NH_HOPOPTS, [ROUTER_ALERT_HBH, msg], 1)
            return
        msg = w6.mld_report_v2(src, ALL_MLDV2_ROUTERS, [(t, g, ()) for t, g in records])
        self.counters["out_report"] += 1
        ip6.link_output(iface, src, ALL_MLDV2_ROUTERS, NH_HOPOPTS, [ROUTER_ALERT_HBH, msg], 1)

    # -- queries ---------------------------------------------------------------------
    def input(self, info: IPInfo, msg: memoryview) -> None:
        c = self.counters
        pkt = info.pkt
        iface = pkt.iface if pkt is not None else None
        if iface is None:
            return
        t = msg[0]
        if t != w6.MLD_QUERY:
            c["in_report" if t != w6.MLD_DONE else "in_done"] += 1
            return  # other listeners' reports: a host does nothing with them (MLDv2)
        c["in_query"] += 1
        if info.ttl != 1:
            c["drop_bad_hlim"] += 1
            return
        if not is_link_local(info.src):
            c["drop_bad_source"] += 1
            return
        try:
            q = w6.parse_mld_query(msg)
        except Exception:
            c["drop_truncated"] += 1
            return
        now = trio.current_time()
        if not q.v2:
            self.v1_until[iface.name] = now + V1_COMPAT_TIME
        st = self.ip6.iface_state(iface)
        if q.group == 0:
            c["query_general"] += 1
            groups = [g for g in st.groups if _reported(g)]
        else:
            c["query_group"] += 1
            groups = [Addr(q.group)] if q.group in st.groups and _reported(Addr(q.group)) else []
        if not groups:
            return
        delay = random.uniform(0, max(q.max_resp_ms, 1) / 1000)

        def answer() -> None:
            live = [g for g in groups if g in st.groups]
            if live and iface.stack is not None:
                self._send(iface, [(w6.MODE_IS_EXCLUDE, g) for g in live])

        self.ip6.timers.call_at(now + delay, answer)


def _reported(group: int) -> bool:
    return group != ALL_NODES and (group >> 112) & 0xF > 1
