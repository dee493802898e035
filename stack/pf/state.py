"""The pf state table: connections that passed a ``keep state`` rule, so their later
packets (both ways) pass without evaluating the rules.

A state created by a packet going ``dir`` with key (proto, src, sport, dst, dport) - the
addresses stack.addr ``Addr`` values of either family - is found by later packets going
``dir`` with that key and by packets going the other way with the reversed key (the
replies). ICMP and ICMPv6 queries use the id as both ports; errors pass when the packet
they quote belongs to a state. TCP is tracked as pf does without sequence windows
(SYN/FIN/ACK/RST move each side through SYN_SENT, ESTABLISHED, CLOSING, FIN_WAIT_2,
TIME_WAIT), which picks the timeout. States expire lazily on lookup and in a purge pass
every ``interval`` seconds; they belong to the table, not to the rule set, so loading
new rules keeps them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stack.addr import Addr, format_addr, is_v4
from stack.pf.rules import PROTO_NAMES

if TYPE_CHECKING:
    from stack.pf.rules import Rule

#: a state key: (proto, src, sport, dst, dport), addresses as stack.addr Addr values (so
#: one table holds both families); ports -1 where the protocol has none
StateKey = tuple[int, Addr, int, Addr, int]

# TCP side states (pf's TCPS_* numbering)
CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, \
    LAST_ACK, FIN_WAIT_2, TIME_WAIT = range(11)
TCP_STATE_NAMES = ["CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
                   "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT"]
# UDP / other side states
NO_TRAFFIC, SINGLE, MULTIPLE = 0, 1, 2
UDP_STATE_NAMES = ["NO_TRAFFIC", "SINGLE", "MULTIPLE"]

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
#: ICMP and ICMPv6: states of queries (the id as both ports), the icmp.* timeouts
_ICMP = (1, 58)

DEFAULT_TIMEOUTS = {
    "tcp.first": 120, "tcp.opening": 30, "tcp.established": 86400, "tcp.closing": 900,
    "tcp.finwait": 45, "tcp.closed": 90, "udp.first": 60, "udp.single": 30,
    "udp.multiple": 60, "icmp.first": 20, "icmp.error": 10, "other.first": 60,
    "other.single": 30, "other.multiple": 60, "interval": 10,
}
DEFAULT_LIMIT = 10000


class State:
    __slots__ = ("proto", "direction", "ifname", "src", "sport", "dst", "dport", "rule",
                 "created", "expire", "timeout", "s_state", "d_state", "pkts", "bytes",
                 "keys")

    def __init__(self, proto: int, direction: str, ifname: str, src: Addr, sport: int,
                 dst: Addr, dport: int, rule: Rule | None, now: float) -> None:
        self.proto = proto
        self.direction = direction
        self.ifname = ifname
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.rule = rule
        self.created = now
        self.expire = now
        self.timeout = 0
        self.s_state = 0  # the side that opened (sent the first packet)
        self.d_state = 0
        self.pkts = [0, 0]  # forward, reverse
        self.bytes = [0, 0]
        self.keys: tuple[tuple[str, StateKey], ...] = ()

    def state_names(self) -> str:
        if self.proto == 6:
            return f"{TCP_STATE_NAMES[self.s_state]}:{TCP_STATE_NAMES[self.d_state]}"
        if self.proto in _ICMP:
            return f"{self.s_state}:{self.d_state}"
        return f"{UDP_STATE_NAMES[self.s_state]}:{UDP_STATE_NAMES[self.d_state]}"

    def render(self, now: float, verbose: bool = False) -> str:
        pname = PROTO_NAMES.get(self.proto, str(self.proto))
        if self.proto in (6, 17, 1, 58):
            a, b = _endpoint(self.src, self.sport), _endpoint(self.dst, self.dport)
        else:
            a, b = format_addr(self.src), format_addr(self.dst)
        pair = f"{b} <- {a}" if self.direction == "in" else f"{a} -> {b}"
        line = f"all {pname} {pair}       {self.state_names()}\n"
        if verbose:
            age = _hms(now - self.created)
            left = _hms(max(0.0, self.expire - now))
            rule = self.rule.nr if self.rule is not None else -1
            line += (f"   age {age}, expires in {left}, {self.pkts[0]}:{self.pkts[1]} pkts, "
                     f"{self.bytes[0]}:{self.bytes[1]} bytes, rule {rule}, on {self.ifname} "
                     f"{self.direction}\n")
        return line


def _endpoint(a: Addr, port: int) -> str:
    """pfctl's forms: ``10.0.0.1:22``, ``2001:db8::1[22]``."""
    return f"{format_addr(a)}:{port}" if is_v4(a) else f"{format_addr(a)}[{port}]"


def _hms(sec: float) -> str:
    s = int(sec)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class StateTable:
    def __init__(self) -> None:
        #: direction → key → (state, side) where side 0 = forward, 1 = reply
        self.by_dir: dict[str, dict[StateKey, tuple[State, int]]] = {"in": {}, "out": {}}
        self.states: dict[int, State] = {}
        self.timeouts = dict(DEFAULT_TIMEOUTS)
        self.limit = DEFAULT_LIMIT
        self.inserts = 0
        self.removals = 0
        self.searches = 0

    def __len__(self) -> int:
        return len(self.states)

    def insert(self, proto: int, direction: str, ifname: str, src: Addr, sport: int,
               dst: Addr, dport: int, rule: Rule | None, flags: int,
               nbytes: int) -> State | None:
        if len(self.states) >= self.limit:
            return None
        now = time.monotonic()
        st = State(proto, direction, ifname, src, sport, dst, dport, rule, now)
        other = "out" if direction == "in" else "in"
        fwd: StateKey = (proto, src, sport, dst, dport)
        rev: StateKey = (proto, dst, dport, src, sport)
        st.keys = ((direction, fwd), (other, rev))
        self.by_dir[direction][fwd] = (st, 0)
        self.by_dir[other][rev] = (st, 1)
        self.states[id(st)] = st
        self.inserts += 1
        if rule is not None:
            rule.states_cur += 1
            rule.states_tot += 1
        to = self.timeouts
        if proto == 6:
            st.s_state = SYN_SENT if flags & TH_SYN else ESTABLISHED
            st.d_state = CLOSED if flags & TH_SYN else ESTABLISHED
            st.timeout = to["tcp.first"]
        elif proto in _ICMP:
            st.timeout = to["icmp.first"]
        else:
            st.s_state = SINGLE
            st.timeout = to["udp.first" if proto == 17 else "other.first"]
        st.expire = now + st.timeout
        st.pkts[0] = 1
        st.bytes[0] = nbytes
        return st

    def remove(self, st: State) -> None:
        if self.states.pop(id(st), None) is None:
            return
        for direction, key in st.keys:
            ent = self.by_dir[direction].get(key)
            if ent is not None and ent[0] is st:
                del self.by_dir[direction][key]
        if st.rule is not None:
            st.rule.states_cur -= 1
        self.removals += 1

    def update(self, st: State, side: int, flags: int, nbytes: int, now: float) -> None:
        """A packet of ``st`` from ``side`` (0: the opener, 1: the other end)."""
        st.pkts[side] += 1
        st.bytes[side] += nbytes
        to = self.timeouts
        p = st.proto
        if p == 6:
            if side == 0:
                src, dst = st.s_state, st.d_state
            else:
                src, dst = st.d_state, st.s_state
            if flags & TH_SYN and src < SYN_SENT:
                src = SYN_SENT
            if flags & TH_FIN and src < CLOSING:
                src = CLOSING
            if flags & TH_ACK:
                if dst == SYN_SENT:
                    dst = ESTABLISHED
                elif dst == CLOSING:
                    dst = FIN_WAIT_2
            if flags & TH_RST:
                src = dst = TIME_WAIT
            if src >= FIN_WAIT_2 and dst >= FIN_WAIT_2:
                t = to["tcp.closed"]
            elif src >= CLOSING and dst >= CLOSING:
                t = to["tcp.finwait"]
            elif src < ESTABLISHED or dst < ESTABLISHED:
                t = to["tcp.opening"]
            elif src >= CLOSING or dst >= CLOSING:
                t = to["tcp.closing"]
            else:
                t = to["tcp.established"]
            if side == 0:
                st.s_state, st.d_state = src, dst
            else:
                st.d_state, st.s_state = src, dst
        elif p in _ICMP:
            t = to["icmp.error"] if side else to["icmp.first"]
        else:
            if side == 0:
                if st.s_state < SINGLE:
                    st.s_state = SINGLE
                if st.d_state == SINGLE:
                    st.d_state = MULTIPLE
            else:
                if st.d_state < SINGLE:
                    st.d_state = SINGLE
                if st.s_state == SINGLE:
                    st.s_state = MULTIPLE
            pre = "udp" if p == 17 else "other"
            if st.s_state == MULTIPLE and st.d_state == MULTIPLE:
                t = to[f"{pre}.multiple"]
            else:
                t = to[f"{pre}.single"]
        st.timeout = t
        st.expire = now + t

    def purge(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        dead = [st for st in self.states.values() if st.expire < now]
        for st in dead:
            self.remove(st)
        return len(dead)

    def flush(self) -> int:
        n = len(self.states)
        for st in list(self.states.values()):
            self.remove(st)
        return n

    def render(self, verbose: bool = False) -> str:
        now = time.monotonic()
        return "".join(st.render(now, verbose) for st in self.states.values()
                       if st.expire >= now)
