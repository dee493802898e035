"""IGMP host side: IGMPv3 (RFC 3376) with IGMPv2 (RFC 2236) and IGMPv1 (RFC 1112)
compatibility, over the IPv4 group table (stack/multicast.py ``GroupTable``).

``Igmp`` is the IPv4 layer's ``MulticastHost`` (``inet.igmp``): the sockets' memberships
(stack/transport/mcast.py) land in ``igmp.groups``, whose changes it reports and which
layer 2's multicast filter follows (``Layer2.join_multicast`` with the RFC 1112 MAC of
the group). Every multicast-capable interface is a member of 224.0.0.1 (never
reported) from attach.

The protocol (per interface, ``IgmpIf``):

* Host compatibility mode (§7.2.1): an IGMPv1 or IGMPv2 query starts that version's
  Older Version Querier Present timer (Robustness Variable x Query Interval + the
  query's Max Response Time); while one runs the host speaks that version (v1 before
  v2). A change of mode cancels every pending response and retransmission.
* State changes (§5.1): a change of an interface's filter for a group sends a v3 report
  at once (TO_EX/TO_IN on a mode change: a join is TO_EX({}), a leave TO_IN({}); else
  ALLOW/BLOCK of the sources that changed), retransmitted Robustness Variable - 1 more
  times at random moments within the Unsolicited Report Interval (1 s), each
  retransmission recomputed from the current state. In v2 mode a join sends a v2
  report (repeated the same way within 10 s), a leave a v2 Leave to 224.0.0.2 if this
  host sent the last report for the group; source lists are not reported (§7.2.1). v1
  mode sends v1 reports and no leaves.
* Queries (§5.2; RFC 2236 §3): the response is delayed by a random time in
  [0, Max Resp Time]. v3: a general query (to 224.0.0.1 only) schedules the interface
  timer (current-state records of every group), a group or group-and-source query a
  group timer (merged with a pending one: the earlier time, the union of the sources;
  a group query empties the list), none if a general response is due earlier. The
  query's QRV and QQIC become the Robustness Variable and Query Interval. v1/v2: a timer
  per group, restarted only if the new delay is shorter; another host's report for
  the group cancels ours (suppression).
* Every message has TTL 1, the Router Alert option, TOS 0xc0 (as Linux), goes out on
  its interface only and is never looped back; v3 reports go to 224.0.0.22, v2 reports
  to the group, leaves to 224.0.0.2.

Input is validated (length, checksum, version by length, record and source counts,
a general query's destination, a query's group) and every refusal counted in the
``igmp`` group (stack/inet/counters.py).
"""

from __future__ import annotations

import errno
import functools
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr, v4, v4_bits
from stack.counters import Counters
from stack.inet.api import IPInfo
from stack.inet.counters import IGMP_COUNTERS
from stack.inet.timers import Timer
from stack.inet.wire import ParseError
from stack.inet.wire import igmp as w
from stack.l2.ether import ipv4_multicast_mac
from stack.l2.iface import IFF_MULTICAST, Interface
from stack.multicast import ASM, EXCLUDE, INCLUDE, Filter, GroupTable
from stack.packet import Buffer

if TYPE_CHECKING:  # cycle: the IPv4 layer owns this part and the part holds the layer
    from stack.inet.ipv4 import IPv4Layer

PROTO_IGMP = 2
ALL_HOSTS = v4(w.ALL_HOSTS)

ROBUSTNESS = 2  # RFC 3376 §8.1
QUERY_INTERVAL = 125.0  # §8.2
QUERY_RESPONSE_INTERVAL = 10.0  # §8.3
V3_UNSOLICITED_INTERVAL = 1.0  # §8.11
V2_UNSOLICITED_INTERVAL = 10.0  # RFC 2236 §8.10
TOS = 0xC0


class _Pending:
    """A group's state-change retransmissions still due (v3: the filter-mode-change
    record's count and each changed source's; v1/v2: reports to repeat)."""

    __slots__ = ("mode", "sources")

    def __init__(self) -> None:
        self.mode = 0
        #: source -> [ALLOW_NEW_SOURCES or BLOCK_OLD_SOURCES, retransmissions left]
        self.sources: dict[int, list[int]] = {}


class IgmpIf:
    """One interface's IGMP state."""

    def __init__(self, iface: Interface) -> None:
        self.iface = iface
        self.index = iface.index
        self.v1_until = -math.inf
        self.v2_until = -math.inf
        self.rv = ROBUSTNESS
        self.qi = QUERY_INTERVAL
        self.mode = 3  # the compatibility mode last acted in
        #: v3: the pending response to a general query
        self.general: Timer | None = None
        #: v3: group -> (timer, recorded sources: empty = a group-specific query);
        #: v1/v2: group -> (report timer, empty)
        self.responses: dict[int, tuple[Timer, set[int]]] = {}
        #: state changes still to retransmit, by group, and the one timer that sends them
        self.pending: dict[int, _Pending] = {}
        self.rexmit: Timer | None = None
        #: v2: groups whose last report on the link was ours (a leave is sent for them)
        self.reporter: set[int] = set()
        self.up = iface.up

    def compat(self, now: float) -> int:
        if now < self.v1_until:
            return 1
        if now < self.v2_until:
            return 2
        return 3

    def cancel_all(self) -> None:
        if self.general is not None:
            self.general.cancel()
            self.general = None
        for t, _ in self.responses.values():
            t.cancel()
        self.responses.clear()
        self.pending.clear()
        if self.rexmit is not None:
            self.rexmit.cancel()
            self.rexmit = None


class Igmp:
    """The IPv4 ``MulticastHost`` and IGMP engine (see the module docstring)."""

    family = 2

    def __init__(self, inet: IPv4Layer) -> None:
        self.inet = inet
        self.counters = Counters("igmp", IGMP_COUNTERS)
        self.groups = GroupTable()
        self.groups.listeners.append(self._changed)
        self.ifs: dict[int, IgmpIf] = {}
        #: the random delays (tests may fix them): uniform in [0, limit]
        self.uniform: Callable[[float, float], float] = random.uniform

    # ================================================================ MulticastHost
    def _iface(self, ifindex: int) -> Interface | None:
        st = self.ifs.get(ifindex)
        if st is not None:
            return st.iface
        for iface in self.inet.stack.interfaces.values():
            if iface.index == ifindex:
                return iface
        return None

    def ifname(self, ifindex: int) -> str | None:
        iface = self._iface(ifindex)
        return iface.name if iface is not None else None

    def mcast_ifindex(self, ifindex: int, addr: Addr | None, group: Addr | None) -> int:
        inet = self.inet
        if ifindex:
            if self._iface(ifindex) is None:
                raise OSError(errno.ENODEV, "no such interface")
            return ifindex
        if addr is not None:
            ia = inet.local.get(v4_bits(addr))
            iface = inet.stack.interfaces.get(ia.ifname) if ia is not None else None
        elif group is not None:
            r = inet.routes.lookup_v4(v4_bits(group))
            iface = inet.stack.interfaces.get(r.ifname) if r is not None else None
        else:
            iface = None
        if iface is None:
            raise OSError(errno.ENODEV, "no interface for the group")
        return iface.index

    def mcast_source(self, ifindex: int) -> Addr | None:
        iface = self._iface(ifindex)
        if iface is None:
            return None
        s = self.inet.iface_source(iface, 0)
        return None if s is None else v4(s)

    def mcast_output(self, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer],
                     *, ttl: int, tos: int, df: bool, ifindex: int, loop: bool) -> int:
        ifname = None
        if ifindex:
            ifname = self.ifname(ifindex)
            if ifname is None:
                return errno.ENXIO
        return self.inet.output(src, dst, proto, payload, ttl=ttl, tos=tos, df=df,
                                ifname=ifname, mcast_loop=loop)

    # ================================================================ interfaces
    def iface_event(self, event: str, iface: Interface) -> None:
        if event == "attach":
            if iface.flags & IFF_MULTICAST and iface.index not in self.ifs:
                self.ifs[iface.index] = IgmpIf(iface)
                self.groups.set(iface.index, ALL_HOSTS, self, ASM)
        elif event == "detach":
            st = self.ifs.pop(iface.index, None)
            if st is not None:
                st.cancel_all()
            self.groups.forget_interface(iface.index)
        elif event == "change":
            st = self.ifs.get(iface.index)
            if st is not None and iface.up != st.up:
                st.up = iface.up
                if iface.up:
                    self._announce(st)

    def _announce(self, st: IgmpIf) -> None:
        """The interface came up: report every group again, as after a join (Linux's
        ip_mc_up), so routers and switches that lost us learn the memberships."""
        for group, f in sorted(self.groups.groups(st.index).items()):
            if group != ALL_HOSTS:
                self._report_change(st, v4_bits(group), None, f)

    # ================================================================ state changes
    def _changed(self, ifindex: int, group: Addr, old: Filter | None,
                 new: Filter | None) -> None:
        st = self.ifs.get(ifindex)
        if st is None:
            return
        iface = st.iface
        l2 = self.inet.stack.l2
        g = v4_bits(group)
        if old is None:
            l2.join_multicast(iface, ipv4_multicast_mac(g))
            self.counters["joins"] += 1
        elif new is None:
            l2.leave_multicast(iface, ipv4_multicast_mac(g))
            self.counters["leaves"] += 1
        if group != ALL_HOSTS:
            self._report_change(st, g, old, new)

    def _report_change(self, st: IgmpIf, g: int, old: Filter | None,
                       new: Filter | None) -> None:
        """The state-change report of the current compatibility mode (§5.1, §7.2.1)."""
        mode = self._mode(st)
        if mode == 3:
            self._v3_change(st, g, old, new)
            return
        # v1/v2: only becoming a member and ceasing to be one are reported
        if old is not None and new is not None:
            return
        resp = st.responses.pop(g, None)
        if resp is not None:
            resp[0].cancel()
        if new is None:
            st.pending.pop(g, None)
            if mode == 2 and g in st.reporter:
                self._send(st, w.ALL_ROUTERS, w.emit(w.V2_LEAVE, g))
                self.counters["out_v2_leave"] += 1
            st.reporter.discard(g)
            return
        self._send_v12_report(st, g, mode)
        if st.rv > 1:
            p = st.pending.setdefault(g, _Pending())
            p.mode = st.rv - 1
            self._arm_rexmit(st, V2_UNSOLICITED_INTERVAL)

    def _v3_change(self, st: IgmpIf, g: int, old: Filter | None, new: Filter | None) -> None:
        old_mode = old.mode if old is not None else INCLUDE
        new_mode = new.mode if new is not None else INCLUDE
        a = old.sources if old is not None else frozenset()
        b = new.sources if new is not None else frozenset()
        p = st.pending.setdefault(g, _Pending())
        if old_mode != new_mode:
            p.mode = st.rv
            p.sources.clear()
        else:
            if new_mode == INCLUDE:
                allow, block = b - a, a - b
            else:
                allow, block = a - b, b - a
            for s in allow:
                p.sources[v4_bits(s)] = [w.ALLOW_NEW_SOURCES, st.rv]
            for s in block:
                p.sources[v4_bits(s)] = [w.BLOCK_OLD_SOURCES, st.rv]
        self._send_pending(st)

    def _mode(self, st: IgmpIf) -> int:
        """The compatibility mode now; a change cancels what was pending (§7.2.1)."""
        mode = st.compat(trio.current_time())
        if mode != st.mode:
            st.cancel_all()
            st.reporter.clear()
            st.mode = mode
            self.counters[f"compat_v{mode}"] += 1
        return mode

    def _arm_rexmit(self, st: IgmpIf, interval: float) -> None:
        if st.rexmit is None and st.pending:
            st.rexmit = self.inet.timers.call_later(self.uniform(0, interval),
                                                    lambda: self._rexmit(st))

    def _rexmit(self, st: IgmpIf) -> None:
        st.rexmit = None
        if self.ifs.get(st.index) is not st:
            return
        mode = self._mode(st)
        if mode == 3:
            self._send_pending(st)
            return
        for g, p in list(st.pending.items()):
            if self.groups.state(st.index, v4(g)) is not None:
                self._send_v12_report(st, g, mode)
            p.mode -= 1
            if p.mode <= 0:
                del st.pending[g]
        self._arm_rexmit(st, V2_UNSOLICITED_INTERVAL)

    def _send_pending(self, st: IgmpIf) -> None:
        """One v3 report of the state-change records due, recomputed from the current
        state (§5.1); the retransmission timer re-armed while any remain."""
        records: list[bytes] = []
        for g, p in list(st.pending.items()):
            cur = self.groups.state(st.index, v4(g))
            if p.mode > 0:
                if cur is None:
                    records.append(w.record(w.CHANGE_TO_INCLUDE, g))
                else:
                    records += _records(w.CHANGE_TO_INCLUDE if cur.mode == INCLUDE
                                        else w.CHANGE_TO_EXCLUDE, g, cur.sources)
                p.mode -= 1
            else:
                for kind in (w.ALLOW_NEW_SOURCES, w.BLOCK_OLD_SOURCES):
                    srcs = [s for s, (k, _n) in p.sources.items() if k == kind]
                    if srcs:
                        records += _records(kind, g, [v4(s) for s in srcs])
                for s in list(p.sources):
                    p.sources[s][1] -= 1
                    if p.sources[s][1] <= 0:
                        del p.sources[s]
            if p.mode <= 0 and not p.sources:
                del st.pending[g]
        if records:
            self._send_v3(st, records, True)
        self._arm_rexmit(st, V3_UNSOLICITED_INTERVAL)

    # ================================================================ input
    def input(self, info: IPInfo) -> None:
        c = self.counters
        c["in_messages"] += 1
        pkt = info.pkt
        iface = pkt.iface if pkt is not None else None
        st = self.ifs.get(iface.index) if iface is not None else None
        if st is None:
            c["drop_no_interface"] += 1
            return
        try:
            msg = w.parse(info.payload)
        except ParseError as exc:
            c[exc.reason] += 1
            return
        dst = v4_bits(info.dst)
        if msg.type == w.QUERY:
            if msg.group and msg.group >> 28 != 14:
                c["drop_bad_group"] += 1
                return
            if not msg.group and dst != w.ALL_HOSTS:
                c["drop_query_bad_dst"] += 1  # RFC 3376 §4.1.12 / RFC 2236 §2.1
                return
            c[f"in_query_v{msg.version}"] += 1
            self._query(st, msg)
        elif msg.type in (w.V1_REPORT, w.V2_REPORT):
            c["in_report"] += 1
            self._heard_report(st, msg.group)
        elif msg.type == w.V3_REPORT:
            c["in_v3_report"] += 1  # for routers; hosts ignore them
        elif msg.type == w.V2_LEAVE:
            c["in_leave"] += 1
        else:
            c["in_other_type"] += 1

    def _heard_report(self, st: IgmpIf, g: int) -> None:
        """RFC 2236 §3: another member's report stops ours (v1/v2 modes only)."""
        if self._mode(st) == 3:
            return
        resp = st.responses.pop(g, None)
        if resp is not None:
            resp[0].cancel()
            self.counters["report_suppressed"] += 1
        st.reporter.discard(g)

    def _query(self, st: IgmpIf, msg: w.Message) -> None:
        now = trio.current_time()
        if msg.version < 3:
            older = st.rv * st.qi + msg.max_resp
            if msg.version == 1:
                st.v1_until = now + older
            else:
                st.v2_until = now + older
        mode = self._mode(st)
        delay = self.uniform(0, msg.max_resp)
        timers = self.inet.timers
        if mode < 3:
            groups = [msg.group] if msg.group else [
                v4_bits(g) for g in self.groups.groups(st.index) if g != ALL_HOSTS]
            for g in groups:
                if self.groups.state(st.index, v4(g)) is None:
                    continue
                resp = st.responses.get(g)
                if resp is not None:
                    if resp[0].deadline - now <= delay:
                        continue
                    resp[0].cancel()
                st.responses[g] = (timers.call_later(delay, functools.partial(self._v12_timer, st, g)),
                                   set())
            return
        if msg.qrv:
            st.rv = msg.qrv
        st.qi = float(msg.qqi or QUERY_INTERVAL)
        deadline = now + delay
        if st.general is not None and st.general.deadline <= deadline:
            self.counters["query_covered"] += 1  # a general response is due sooner
            return
        if not msg.group:
            if st.general is not None:
                st.general.cancel()
            st.general = timers.call_at(deadline, lambda: self._general_timer(st))
            return
        if self.groups.state(st.index, v4(msg.group)) is None:
            self.counters["query_not_member"] += 1
            return
        resp = st.responses.get(msg.group)
        if resp is None:
            st.responses[msg.group] = (
                timers.call_at(deadline, lambda: self._group_timer(st, msg.group)),
                set(msg.sources))
            return
        t, srcs = resp
        if not msg.sources or not srcs:
            srcs.clear()
        else:
            srcs.update(msg.sources)
        if deadline < t.deadline:
            t.cancel()
            st.responses[msg.group] = (
                timers.call_at(deadline, lambda: self._group_timer(st, msg.group)), srcs)

    def _v12_timer(self, st: IgmpIf, g: int) -> None:
        st.responses.pop(g, None)
        if self.ifs.get(st.index) is not st:
            return
        mode = self._mode(st)
        if mode < 3 and self.groups.state(st.index, v4(g)) is not None:
            self._send_v12_report(st, g, mode)

    def _general_timer(self, st: IgmpIf) -> None:
        st.general = None
        if self.ifs.get(st.index) is not st or self._mode(st) != 3:
            return
        records: list[bytes] = []
        for group, f in sorted(self.groups.groups(st.index).items()):
            if group == ALL_HOSTS:
                continue
            records += _records(w.MODE_IS_INCLUDE if f.mode == INCLUDE else w.MODE_IS_EXCLUDE,
                                v4_bits(group), f.sources)
        if records:
            self._send_v3(st, records, False)

    def _group_timer(self, st: IgmpIf, g: int) -> None:
        resp = st.responses.pop(g, None)
        if self.ifs.get(st.index) is not st or self._mode(st) != 3:
            return
        f = self.groups.state(st.index, v4(g))
        if f is None:
            return
        queried = {v4(s) for s in resp[1]} if resp is not None else set()
        if not queried:
            recs = _records(w.MODE_IS_INCLUDE if f.mode == INCLUDE else w.MODE_IS_EXCLUDE, g,
                            f.sources)
        else:
            # §5.2: INCLUDE(A): IS_IN(A*B); EXCLUDE(A): IS_IN(B-A); nothing if empty
            srcs = queried & f.sources if f.mode == INCLUDE else queried - f.sources
            if not srcs:
                return
            recs = _records(w.MODE_IS_INCLUDE, g, srcs)
        self._send_v3(st, recs, False)

    # ================================================================ output
    def _send_v12_report(self, st: IgmpIf, g: int, mode: int) -> None:
        self._send(st, g, w.emit(w.V1_REPORT if mode == 1 else w.V2_REPORT, g))
        st.reporter.add(g)
        self.counters[f"out_v{mode}_report"] += 1

    def _send_v3(self, st: IgmpIf, records: list[bytes], state_change: bool) -> None:
        """Records packed into as few reports as the interface's MTU allows."""
        room = st.iface.mtu - 24 - 8  # IP header with Router Alert, IGMP header
        batch: list[bytes] = []
        size = 0
        for r in records:
            if batch and size + len(r) > room:
                self._send(st, w.V3_ROUTERS, w.emit_v3_report(batch))
                self.counters["out_v3_state_change" if state_change
                              else "out_v3_current_state"] += 1
                batch, size = [], 0
            batch.append(r)
            size += len(r)
        if batch:
            self._send(st, w.V3_ROUTERS, w.emit_v3_report(batch))
            self.counters["out_v3_state_change" if state_change
                          else "out_v3_current_state"] += 1

    def _send(self, st: IgmpIf, dst: int, msg: bytes) -> None:
        iface = st.iface
        if not iface.up:
            self.counters["out_iface_down"] += 1
            return
        err = self.inet.output(0, dst, PROTO_IGMP, [msg], ttl=1, tos=TOS, ifname=iface.name,
                               options=w.ROUTER_ALERT, mcast_loop=False)
        if err:
            self.counters["out_failed"] += 1


def _records(rtype: int, g: int, sources: frozenset[Addr] | set[Addr] | list[Addr]) -> list[bytes]:
    """A group record, split where its sources would not fit a 1500-byte report; an
    EXCLUDE-type record is cut to what fits instead (RFC 3376 §4.2.16)."""
    srcs = sorted(v4_bits(s) for s in sources)
    per = (1500 - 24 - 8 - 8) // 4
    if len(srcs) <= per:
        return [w.record(rtype, g, srcs)]
    if rtype in (w.MODE_IS_EXCLUDE, w.CHANGE_TO_EXCLUDE):
        return [w.record(rtype, g, srcs[:per])]
    return [w.record(rtype, g, srcs[i:i + per]) for i in range(0, len(srcs), per)]


__all__ = ["Igmp", "IgmpIf", "PROTO_IGMP", "EXCLUDE", "INCLUDE"]
