"""The pf engine: pfil hooks on "inet" and "inet6" in/out, the state table, the actions.

Per packet (only while enabled; disabled = the hooks are not registered at all):

1. ``set skip on IF`` interfaces pass.
2. Read the IP header in place - IPv4 with the IPv4 wire module's view
   (stack/inet/wire/ipv4.py ``classify``: addresses come out as stack.addr ``Addr``
   values); IPv6's fixed header, then its extension headers walked by their lengths
   (stack/inet6/wire/ipv6.py ``upper_layer``) to the transport header - and the first
   bytes of TCP/UDP/ICMP/ICMPv6 (no copy).
3. State lookup (one dict lookup, keys on ``Addr``): a match passes and updates the
   state. An ICMP error passes when the packet it quotes belongs to a state.
4. Otherwise the rule set compiled for the packet's family (rules.py) picks the last
   matching rule (or the first ``quick`` one); no rule = pass. ``block`` drops
   (``return``: TCP RST / ICMP or ICMPv6 port unreachable back to the sender, for
   packets coming in); ``pass`` with ``keep state`` adds a state. ``log`` keeps a copy of the packet in
   a bounded ring (``<prefix>/dev/pf/log``, a pcap file of raw IP packets) and counts it.

Packets pf itself sends (RST, ICMP) are not filtered. A rule evaluation that raises
drops the packet (pfil counts it as a hook error; pf counts ``errors``) and the stack
goes on.

Two front ends, one per pfil head: ``_filter`` (IPv4, "inet") and ``_filter6`` (IPv6,
"inet6"). Each parses only its own header (IPv4: length, options, fragment; IPv6: the
extension-header chain) and hands the fields to ``_decide``, the one family-neutral
core (the transport header's first bytes, then steps 3 and 4), as the rules, tables and
states behind it are family-neutral (the compiled rule set has one set of functions
per family, ``match[AF_INET]`` and ``match[AF_INET6]``). The IPv6 front end sees every
IPv6 packet the layer receives (before reassembly, as IPv4's) and sends, including
Neighbor Discovery: a default-deny rule set must pass ND (``pass inet6 proto icmp6
icmp6-type { neighbrsol, neighbradv, routersol, routeradv }``). A chain it cannot walk
(longer than the layer's bound, or running past the packet) is dropped and counted
``short``; unknown options are left to the layer (which answers them with a Parameter
Problem).
"""

from __future__ import annotations

import collections
import errno
import logging
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stack.addr import AF_INET, AF_INET6, Addr, pseudo_header_sum, v4_bits
from stack.inet.wire.icmp import ERROR_TYPES as ICMP_ERRORS
from stack.inet.wire.ipv4 import CLASSIFY_LEN, classify
from stack.inet6.wire.ipv6 import EXTENSION_HEADERS, HLEN, ChainError, upper_layer
from stack.pf.counters import (
    BLOCK_BY_DIR,
    COUNTER_NAMES,
    FILTER_NAMES,
    PASS_BY_DIR,
    PF_FILTER_COUNTERS,
)
from stack.pf.parse import ParseError, parse
from stack.pf.rules import Matchers, MatchFn, Rule, Ruleset, compile_ruleset
from stack.pf.state import DEFAULT_LIMIT, DEFAULT_TIMEOUTS, StateTable
from stack.services import IPV4, IPV6

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.l2.iface import Interface
    from stack.packet import Packet

log = logging.getLogger("io-pkt.pf")

_ports = struct.Struct("!HH")  # TCP and UDP alike, either family
_tcp_head = struct.Struct("!HH9xB")  # ports and flags
_monotonic = time.monotonic
_PASS = PASS_BY_DIR
_BLOCK = BLOCK_BY_DIR
_tcp_seq = struct.Struct("!II")
_MAX_IHL = 60
LOG_RING = 1024
LINKTYPE_RAW = 101
#: ICMP messages whose id pf uses as both ports (ICMP_ERRORS: those quoting a packet)
ICMP_QUERIES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))
#: ICMPv6: echo request/reply carry an id; errors (types 1-4) quote a packet
ICMP6_QUERIES = frozenset((128, 129))
ICMP6_ERRORS = frozenset((1, 2, 3, 4))
#: ICMPv6 destination unreachable, port unreachable (what ``return`` sends for non-TCP)
ICMP6_UNREACH, ICMP6_UNREACH_PORT = 1, 4
#: bytes of a transport header the IPv6 front end reads (TCP: ports and flags)
_L4_NEED = {6: 14, 17: 4, 58: 8}


def _joined(bufs: Sequence[Any], n: int) -> bytes:
    """The first ``n`` bytes of a buffer list (a header split across buffers: rare)."""
    return b"".join(bytes(b) for b in bufs)[:n]


class Pf:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.enabled = False
        self.since = time.time()
        self.ruleset = Ruleset()
        #: the compiled rule set: family → direction → protocol → function
        self.match: Matchers = {}
        self._match4: dict[str, dict[int | None, MatchFn]] = {}
        self._match6: dict[str, dict[int | None, MatchFn]] = {}
        self._install(compile_ruleset(self.ruleset))
        self.states = StateTable()
        self.skip: set[str] = set()
        #: pf's counters and the filter's (stack/pf/counters.py): plain dicts holding
        #: exactly the declared names, from 0 - an undeclared one is a KeyError, and an
        #: increment costs what it cost (a Counters, a dict subclass, costs ~7 ns more)
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.stats: dict[str, int] = dict.fromkeys(sorted(PF_FILTER_COUNTERS), 0)
        self.logring: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=LOG_RING)
        self._hooks: list[Any] = []
        self._generating = False
        #: > 0: the next N evaluations raise (fault injection for tests: ctl ``fault N``)
        self.fault_next = 0
        self.block_policy = "drop"

    # -- control ---------------------------------------------------------------------
    def enable(self) -> None:
        if self.enabled:
            raise OSError(errno.EEXIST, "pf already enabled")
        pfil = self.stack.pfil
        self._hooks = [pfil.add_hook(self.hook_in, "inet", 1, name="pf"),
                       pfil.add_hook(self.hook_out, "inet", 2, name="pf"),
                       pfil.add_hook(self.hook_in6, "inet6", 1, name="pf"),
                       pfil.add_hook(self.hook_out6, "inet6", 2, name="pf")]
        self.enabled = True
        self.since = time.time()

    def disable(self) -> None:
        if not self.enabled:
            raise OSError(errno.ENOENT, "pf not enabled")
        for h in self._hooks:
            self.stack.pfil.remove_hook(h)
        self._hooks = []
        self.enabled = False
        self.since = time.time()

    def load(self, text: str, filename: str = "pf.conf") -> Ruleset:
        """Parse, compile, then swap in one assignment (atomic: a packet sees the old
        rule set or the new one, never a mix). States are kept. Raises ParseError."""
        rs = parse(text, filename)
        match = compile_ruleset(rs)
        self.ruleset = rs
        self._install(match)
        self.skip = set(rs.skip)
        self.block_policy = rs.options.get("block-policy", "drop")
        timeouts = dict(DEFAULT_TIMEOUTS)
        timeouts.update(rs.timeouts)
        self.states.timeouts = timeouts
        self.states.limit = int(rs.options.get("limit-states", DEFAULT_LIMIT))
        return rs

    @staticmethod
    def check(text: str, filename: str = "pf.conf") -> Ruleset:
        rs = parse(text, filename)
        compile_ruleset(rs)
        return rs

    def flush_rules(self) -> int:
        n = len(self.ruleset.rules)
        tables = self.ruleset.tables
        self.ruleset = Ruleset(tables=tables)
        self._install(compile_ruleset(self.ruleset))
        self.skip = set()
        return n

    def flush_tables(self) -> int:
        n = len(self.ruleset.tables)
        used = {a.table for r in self.ruleset.rules for a in r.src + r.dst if a.kind == "table"}
        for name, t in self.ruleset.tables.items():
            if name in used:
                t.flush()  # rules still refer to it: empty it
        self.ruleset.tables = {k: v for k, v in self.ruleset.tables.items() if k in used}
        return n

    def flush_info(self) -> None:
        self.counters.update(dict.fromkeys(self.counters, 0))
        self.stats.update(dict.fromkeys(self.stats, 0))
        st = self.states
        st.inserts = st.removals = st.searches = 0
        self.logring.clear()

    def recompile(self) -> None:
        self._install(compile_ruleset(self.ruleset))

    def _install(self, match: Matchers) -> None:
        """Swap in a compiled rule set. The hot paths read each family's functions
        through ``_match4``/``_match6``; all are set before the next packet (one trio
        thread), so a packet sees the old set or the new one."""
        self.match = match
        self._match4 = match[AF_INET]
        self._match6 = match[AF_INET6]

    # -- the hooks -------------------------------------------------------------------
    def hook_in(self, pkt: Packet, iface: Interface, direction: str) -> bool | None:
        if iface.name in self.skip:
            return None
        return self._filter("in", iface, pkt.data, pkt.l3, None)

    def hook_out(self, bufs: Sequence[Any], iface: Interface, direction: str) -> bool | None:
        if self._generating or iface.name in self.skip:
            return None
        return self._filter("out", iface, bufs[0], 0, bufs)

    def _filter(self, dirn: str, iface: Interface, data: Any, off: int,
                bufs: Sequence[Any] | None) -> bool | None:
        """An IPv4 packet at ``off`` in ``data``: returns None (pass) or False (drop).
        ``bufs``: going out, the IP layer's buffer list (``data`` is its first buffer,
        the header; the transport header may be in the next one - nothing is joined
        unless a header is split across buffers)."""
        split = False
        if len(data) - off < CLASSIFY_LEN:
            if bufs is None or len(bufs) == 1:
                self.counters["short"] += 1
                return False
            # the IP header itself is split across buffers (rare): join what is needed
            data = _joined(bufs, _MAX_IHL + 64)
            bufs = None
            split = True
            if len(data) < CLASSIFY_LEN:
                self.counters["short"] += 1
                return False
        ihl, total, frag, p, s, d = classify(data, off)
        l4 = data
        l4off = off + ihl
        if bufs is not None and len(data) < l4off + 20 and len(bufs) > 1:
            if len(data) == l4off and len(bufs[1]) >= 20:
                l4, l4off = bufs[1], 0
            else:
                data = l4 = _joined(bufs, ihl + 64)
        elif split:
            data = l4 = data[:ihl + 64]
        return self._decide(False, dirn, iface, p, s, d, total, not frag, data, off, ihl, l4,
                            l4off, len(l4) - l4off, bufs)

    def _decide(self, v6: bool, dirn: str, iface: Interface, p: int, s: Addr, d: Addr,
                total: int, first: bool, data: Any, off: int, hl: int, l4: Any, l4off: int,
                avail: int, bufs: Sequence[Any] | None) -> bool | None:
        """Both front ends' decision once their own header is parsed: None (pass) or False
        (drop). ``v6``: the family (IPv6 or IPv4; a constant in each front end's call,
        cheaper than comparing an address family); ``p``, ``s``, ``d``: the transport
        protocol and the addresses; ``total``: the datagram's length; ``first``: not a
        later fragment; ``hl``: the bytes of IP headers before the transport header,
        which is at ``l4[l4off:]`` with ``avail`` bytes of it there; ``data``, ``off``,
        ``bufs``: the packet as the front end holds it (for log and ``return``). The
        transport header's ports, TCP flags and ICMP/ICMPv6 type and code are read here,
        in place (read by a helper, they would come back in a tuple: one more object a
        packet)."""
        c = self.counters
        sp = dp = fl = it = ic = -1
        if not first:
            c["fragment"] += 1
        elif p == 6:
            if avail >= 14:
                sp, dp, fl = _tcp_head.unpack_from(l4, l4off)
            else:
                c["short"] += 1
        elif p == 17:
            if avail >= 4:
                sp, dp = _ports.unpack_from(l4, l4off)
            else:
                c["short"] += 1
        elif p == (58 if v6 else 1):
            if avail >= 8:
                it = l4[l4off]
                ic = l4[l4off + 1]
                if it in (ICMP6_QUERIES if v6 else ICMP_QUERIES):
                    sp = dp = (l4[l4off + 4] << 8) | l4[l4off + 5]
            else:
                c["short"] += 1
        # 1. states
        st_table = self.states
        st_table.searches += 1
        ent = st_table.by_dir[dirn].get((p, s, sp, d, dp))
        stats = self.stats
        if ent is not None:
            st, side = ent
            now = _monotonic()
            if st.expire >= now:
                st_table.update(st, side, fl if fl > 0 else 0, total, now)
                stats[_PASS[dirn]] += 1
                stats["state-match"] += 1
                return None
            st_table.remove(st)
        if it >= 0:  # the family's ICMP: an error whose quoted packet has a state passes
            if v6:
                quoted = it in ICMP6_ERRORS and self._icmp6_error_state(
                    dirn, data, bufs, total, hl, l4, l4off, avail)
            else:
                quoted = it in ICMP_ERRORS and avail >= 8 + 20 + 8 and self._icmp_error_state(
                    dirn, l4, l4off + 8)
            if quoted:
                stats[_PASS[dirn]] += 1
                stats["state-match"] += 1
                return None
        # 2. rules
        if self.fault_next:
            self.fault_next -= 1
            stats["errors"] += 1
            raise RuntimeError("pf: injected rule evaluation fault")
        stats["evaluations"] += 1
        fns = (self._match6 if v6 else self._match4)[dirn]
        fn = fns.get(p) or fns[None]
        try:
            rule = fn(iface.name, p, s, d, sp, dp, fl, it, ic)
        except Exception:
            stats["errors"] += 1
            raise
        if rule is None:
            stats[_PASS[dirn]] += 1
            return None
        c["match"] += 1
        rule.packets += 1
        rule.bytes += total
        if rule.log:
            if v6:
                self._log6(data, off, total, bufs)
            else:
                self._log(data, off, total, l4, l4off, hl)
        if rule.action == "block":
            stats[_BLOCK[dirn]] += 1
            mode = rule.return_mode or ("return" if self.block_policy == "return" else "")
            if mode and dirn == "in" and first:
                if v6:
                    self._send_return6(mode, iface, data, off, hl, total, p, s, d, sp, dp, fl,
                                       l4, l4off)
                else:
                    self._send_return(mode, iface, data, off, hl, total, p, s, d, sp, dp, fl,
                                      l4, l4off)
            return False
        stats[_PASS[dirn]] += 1
        if rule.keep_state:
            new = st_table.insert(p, dirn, iface.name, s, sp, d, dp, rule, fl if fl > 0 else 0,
                                  total)
            if new is None:
                c["state-limit"] += 1
                stats[_BLOCK[dirn]] += 1
                return False
        return None

    def _icmp_error_state(self, dirn: str, buf: Any, q: int) -> bool:
        """An ICMP error travelling ``dirn``: does the packet it quotes (at ``q``) belong
        to a state? The quoted packet went the other way."""
        ihl, _t, _f, p, s, d = classify(buf, q)
        qi = q + ihl
        if len(buf) < qi + 8:
            return False
        sp = dp = -1
        if p in (6, 17):
            sp, dp = _ports.unpack_from(buf, qi)
        elif p == 1:
            sp = dp = (buf[qi + 4] << 8) | buf[qi + 5]
        other = "out" if dirn == "in" else "in"
        ent = self.states.by_dir[other].get((p, s, sp, d, dp))
        if ent is None or ent[0].expire < time.monotonic():
            return False
        return True

    # -- IPv6 -------------------------------------------------------------------------
    def hook_in6(self, pkt: Packet, iface: Interface, direction: str) -> bool | None:
        if iface.name in self.skip:
            return None
        return self._filter6("in", iface, pkt.data, pkt.l3, None)

    def hook_out6(self, bufs: Sequence[Any], iface: Interface, direction: str) -> bool | None:
        if self._generating or iface.name in self.skip:
            return None
        return self._filter6("out", iface, bufs[0], 0, bufs)

    def _filter6(self, dirn: str, iface: Interface, data: Any, off: int,
                 bufs: Sequence[Any] | None) -> bool | None:
        """An IPv6 packet at ``off`` in ``data``: None (pass) or False (drop). Going
        out, ``bufs`` is the layer's buffer list (``data`` its first buffer: the fixed
        header and any extension headers; the transport header is then usually the
        next buffer, read in place)."""
        if len(data) - off < HLEN:
            if bufs is None or len(bufs) == 1:
                self.counters["short"] += 1
                return False
            data = _joined(bufs, 1 << 17)  # the header itself split (rare)
            bufs = None
            if len(data) < HLEN:
                self.counters["short"] += 1
                return False
        total = HLEN + ((data[off + 4] << 8) | data[off + 5])
        nh = data[off + 6]
        s = Addr(int.from_bytes(data[off + 8:off + 24], "big"))
        d = Addr(int.from_bytes(data[off + 24:off + 40], "big"))
        frag = -1
        if nh in EXTENSION_HEADERS:
            try:
                p, l4h, frag = upper_layer(data, off, min(total, len(data) - off), nh)
            except ChainError as e:
                if bufs is None or len(bufs) == 1 or e.reason != "drop_truncated_chain":
                    self.counters["short"] += 1
                    return False
                data = _joined(bufs, total)  # the chain runs into the next buffer
                bufs = None
                try:
                    p, l4h, frag = upper_layer(data, 0, min(total, len(data)), nh)
                except ChainError:
                    self.counters["short"] += 1
                    return False
        else:
            p, l4h = nh, HLEN
        # the transport header: in ``data``, else (going out) at the start of the next
        # buffer, else the first bytes joined
        l4 = data
        l4off = off + l4h
        need = min(_L4_NEED.get(p, 0), total - l4h) if frag <= 0 else 0
        if bufs is not None and len(data) < l4off + need and len(bufs) > 1:
            if len(data) == l4off and len(bufs[1]) >= need:
                l4, l4off = bufs[1], 0
            else:
                data = l4 = _joined(bufs, l4h + 64)
                l4off = l4h
        avail = min(len(l4) - l4off, total - l4h)
        return self._decide(True, dirn, iface, p, s, d, total, frag <= 0, data, off, l4h, l4,
                            l4off, avail, bufs)

    def _icmp6_error_state(self, dirn: str, data: Any, bufs: Sequence[Any] | None, total: int,
                           l4h: int, l4: Any, l4off: int, avail: int) -> bool:
        """An ICMPv6 error travelling ``dirn`` (its header at ``l4[l4off:]``, ``avail``
        bytes there): does the IPv6 packet it quotes belong to a state? The quoted packet
        went the other way."""
        buf = l4
        q = l4off + 8
        end = l4off + avail
        if bufs is not None and l4 is not data:  # the quote is in later buffers
            buf = _joined(bufs, total)
            q = l4h + 8
            end = min(len(buf), total)
        if end - q < HLEN or buf[q] >> 4 != 6:
            return False
        s = Addr(int.from_bytes(buf[q + 8:q + 24], "big"))
        d = Addr(int.from_bytes(buf[q + 24:q + 40], "big"))
        try:
            p, l4h, frag = upper_layer(buf, q, end - q, buf[q + 6])
        except ChainError:
            return False
        qi = q + l4h
        if frag > 0 or end < qi + 8:
            return False
        sp = dp = -1
        if p in (6, 17):
            sp, dp = _ports.unpack_from(buf, qi)
        elif p == 58 and buf[qi] in ICMP6_QUERIES:
            sp = dp = (buf[qi + 4] << 8) | buf[qi + 5]
        other = "out" if dirn == "in" else "in"
        ent = self.states.by_dir[other].get((p, s, sp, d, dp))
        return ent is not None and ent[0].expire >= time.monotonic()

    def _send_return6(self, mode: str, iface: Interface, data: Any, off: int, l4h: int,
                      total: int, p: int, s: Addr, d: Addr, sp: int, dp: int, fl: int, l4: Any,
                      l4off: int) -> None:
        """``block return`` for IPv6: a TCP RST, or an ICMPv6 port unreachable (through
        the layer's error path: its rate limit and RFC 4443 suppression apply)."""
        ip6 = self.stack.services.get(IPV6)
        if ip6 is None:
            return
        self._generating = True
        try:
            if p == 6 and mode in ("return", "return-rst"):
                if fl >= 0 and not fl & 0x04:
                    # link-local peers are answered on the link the segment came in by
                    scoped = s >> 118 == 0xFE80 >> 6
                    ifname = iface.name if scoped else None

                    def out(src: Addr, dst: Addr, proto: int, payload: list[bytes]) -> int:
                        return ip6.output(src, dst, proto, payload, ifname=ifname)

                    self._send_rst(out, total, l4h, s, d, sp, dp, fl, l4, l4off)
            elif mode in ("return", "return-icmp", "return-icmp6") \
                    and not (p == 6 and mode == "return"):
                pkt = memoryview(bytes(data[off:off + total]))
                ok = ip6.icmp.send_error(ICMP6_UNREACH, ICMP6_UNREACH_PORT, pkt)
                self.stats["return-icmp" if ok else "return-failed"] += 1
        finally:
            self._generating = False

    # -- actions ---------------------------------------------------------------------
    def _log(self, data: Any, off: int, total: int, l4: Any, l4off: int, ihl: int) -> None:
        self.stats["logged"] += 1
        if l4 is data:
            pkt = bytes(data[off:off + total])
        else:
            pkt = bytes(data[off:off + ihl]) + bytes(l4[l4off:])
        self.logring.append((time.time(), pkt))

    def _log6(self, data: Any, off: int, total: int, bufs: Sequence[Any] | None) -> None:
        self.stats["logged"] += 1
        whole = data[off:off + total] if bufs is None else _joined(bufs, total)
        self.logring.append((time.time(), bytes(whole)))

    def _send_return(self, mode: str, iface: Interface, data: Any, off: int, ihl: int,
                     total: int, p: int, s: Addr, d: Addr, sp: int, dp: int, fl: int, l4: Any,
                     l4off: int) -> None:
        """``block return`` for IPv4: a TCP RST, or an ICMP port unreachable (``iface``:
        unused, the IPv6 one's signature)."""
        inet = self.stack.services.get(IPV4)
        if inet is None:
            return
        self._generating = True
        try:
            if p == 6 and mode in ("return", "return-rst"):
                if fl >= 0 and not fl & 0x04:
                    self._send_rst(inet.output, total, ihl, s, d, sp, dp, fl, l4, l4off)
            elif mode in ("return", "return-icmp") and not (p == 6 and mode == "return"):
                pkt = memoryview(bytes(data[off:off + total]))
                # ICMP's error path speaks the IPv4 layer's 32-bit values (the quoted
                # header's): the IPv4 front end hands it one
                inet.icmp.send_error(3, 3, pkt, src=v4_bits(d))
                self.stats["return-icmp"] += 1
        finally:
            self._generating = False

    def _send_rst(self, output: Any, total: int, ihl: int, s: Addr, d: Addr, sp: int, dp: int,
                  fl: int, l4: Any, l4off: int) -> None:
        """A RST answering the TCP segment at ``l4[l4off:]`` (``ihl``: the bytes of IP
        headers before it in the ``total``-byte datagram), sent with ``output(src, dst,
        proto, payload)``: the network layer's, either family."""
        from stack.transport.wire.checksum import checksum

        seq, ack = _tcp_seq.unpack_from(l4, l4off + 4)
        doff = (l4[l4off + 12] >> 4) * 4
        dlen = total - ihl - doff
        if fl & 0x10:  # ACK: RST with seq = their ack
            rseq, rack, rfl = ack, 0, 0x04
        else:
            rseq = 0
            rack = (seq + dlen + (1 if fl & 0x02 else 0) + (1 if fl & 0x01 else 0)) & 0xFFFFFFFF
            rfl = 0x14
        hdr = bytearray(struct.pack("!HHIIBBHHH", dp, sp, rseq, rack, 5 << 4, rfl, 0, 0, 0))
        csum = checksum([hdr], pseudo_header_sum(d, s, 6, len(hdr)))
        hdr[16:18] = csum.to_bytes(2, "big")
        err = output(d, s, 6, [bytes(hdr)])  # Addr values (stack/network.py contract)
        self.stats["return-rst" if not err else "return-failed"] += 1

    # -- views -----------------------------------------------------------------------
    def render_info(self) -> str:
        secs = int(time.time() - self.since)
        days, rest = divmod(secs, 86400)
        status = "Enabled" if self.enabled else "Disabled"
        lines = [f"Status: {status} for {days} days {rest // 3600:02d}:{rest // 60 % 60:02d}:"
                 f"{rest % 60:02d}{'':>14}Debug: err", ""]
        el = max(time.time() - self.since, 1e-9)
        st = self.states

        def row(name: str, v: int, rate: bool = True) -> str:
            r = f"{v / el:14.1f}/s" if rate else ""
            return f"  {name:<25}{v:>14}{r}"

        lines.append(f"{'State Table':<27}{'Total':>14}{'Rate':>17}")
        lines.append(row("current entries", len(st), False))
        lines.append(row("searches", st.searches))
        lines.append(row("inserts", st.inserts))
        lines.append(row("removals", st.removals))
        lines.append("Counters")
        for name in COUNTER_NAMES:
            lines.append(row(name, self.counters.get(name, 0)))
        lines.append("Filter")
        for name in FILTER_NAMES:
            lines.append(row(name, self.stats.get(name, 0)))
        lines.append(f"  {'rules':<25}{len(self.ruleset.rules):>14}")
        lines.append(f"  {'tables':<25}{len(self.ruleset.tables):>14}")
        return "\n".join(lines) + "\n"

    def render_tables(self) -> str:
        return "".join(f"{name}\n" for name in self.ruleset.tables)

    def render_log_pcap(self) -> bytes:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
        for ts, pkt in list(self.logring):
            sec = int(ts)
            out.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(pkt), len(pkt)))
            out.append(pkt)
        return b"".join(out)

    def table_command(self, name: str, op: str, addrs: list[str]) -> str:
        from stack.pf.parse import _address, _LineError
        from stack.pf.rules import Table

        t = self.ruleset.tables.get(name)
        if op == "show":
            if t is None:
                raise OSError(errno.ENOENT, f"table <{name}> does not exist")
            return "".join(f"   {e}\n" for e in t.entries())
        if t is None:
            if op != "add":
                raise OSError(errno.ENOENT, f"table <{name}> does not exist")
            t = self.ruleset.tables[name] = Table(name)
            self.recompile()
        if op == "flush":
            return f"{t.flush()} addresses deleted.\n"
        n = 0
        for text in addrs:
            try:
                a = _address(text)
            except _LineError as exc:
                raise OSError(errno.EINVAL, str(exc)) from None
            if a.prefix is None or a.neg:
                raise OSError(errno.EINVAL, f"{text}: not an address")
            if op == "add":
                n += t.add(a.prefix)
            elif op == "delete":
                n += t.delete(a.prefix)
            else:
                raise OSError(errno.EINVAL, f"unknown table command {op!r}")
        return f"{n}/{len(addrs)} addresses {'added' if op == 'add' else 'deleted'}.\n"


__all__ = ["Pf", "ParseError", "Rule"]
