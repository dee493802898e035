"""ARP (RFC 826) with a neighbour cache modelled on Linux/NetBSD.

States: ``incomplete`` (resolving: broadcast requests every ``rexmit`` for ``retries``
tries, packets queued up to ``queue`` per entry), ``reachable`` (confirmed within
``reachable`` seconds), ``stale`` (still used; the first use sends a unicast probe -
``probe``), ``failed`` (resolution failed: sends fail at once with EHOSTUNREACH for
``down`` seconds), ``permanent`` (static). The cache holds at most ``maxentries``;
when full the oldest dynamic entry is evicted, so a flood cannot grow memory.
One trio-deadline timer per entry; no periodic scan.

Spoofing. An entry's MAC changes only on evidence we asked for, never because someone
said so unasked:

- an unresolved entry (``incomplete``, ``failed``) takes the MAC of a *reply to us*
  (our request's answer); a ``failed`` one also that of a request for one of our
  addresses, as a new entry would (then ``stale``, checked by a unicast probe at first
  use);
- a resolved entry (``reachable``, ``stale``, ``probe``) is never re-pointed by an ARP
  packet, whatever its kind (reply, request, gratuitous): a packet claiming its address
  for another MAC is refused and makes us re-probe the *old* MAC (unicast requests, as
  for a stale entry). If the old MAC answers, the entry stays (confirmed, reachable). If
  it stays silent through the probe, the entry is resolved afresh by broadcast, and the
  MAC that answers our request is taken (``moved``, logged as BSD does: ``arp: A moved
  from X to Y on IF``, at most one line a second). A peer whose NIC really changed is so
  followed within ``retries`` x ``rexmit_ms`` (3 s by default); a spoofer claiming a
  live host's address never wins;
- ``net.link.ether.inet.locktime`` seconds after the MAC was set or confirmed,
  conflicting claims are refused without starting a probe (so a flood of claims costs
  the real host at most one probe a lock time);
- static entries never change.

Every refused update is counted: ``update_refused`` and ``update_refused_REASON`` with
REASON ``static``, ``unsolicited`` (gratuitous ARP, a request for another host or a
request while we resolve, for an unresolved entry), ``locked``, ``probing`` (a probe of
the old MAC is under way) or ``reachable``/``stale`` (a probe was started). A request for
one of our addresses is answered even when its claim is refused (the answer goes to the
requester's MAC, telling nothing but our own address). A sender without an entry gets
one only from a request for one of our addresses: unsolicited replies
(``drop_unsolicited``), gratuitous ARP and requests for other hosts
(``request_not_for_us``) create nothing. Gratuitous ARP claiming one of *our* addresses
is counted as ``dup_address`` (address conflict detection).
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from stack.counters import Counters
from stack.inet.timers import Timer
from stack.inet.wire import ParseError
from stack.inet.wire import arp as warp
from stack.inet.wire.ipv4 import int_to_ip
from stack.l2.ether import ETHERTYPE_ARP, ETHERTYPE_IPV4
from stack.l2.iface import BROADCAST_MAC, Interface, format_mac
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:  # cycle: IPv4Layer owns this part and the part calls back into it; types only
    from stack.inet.ipv4 import IPv4Layer

INCOMPLETE = "incomplete"
REACHABLE = "reachable"
STALE = "stale"
PROBE = "probe"
FAILED = "failed"
PERMANENT = "permanent"

ZERO_MAC = b"\0" * 6

log = logging.getLogger("io-pkt.arp")

#: at most one "moved" log line per this many seconds (a flood of MAC changes for many
#: addresses is counted, not logged line by line)
MOVED_LOG_INTERVAL = 1.0

#: what to call when a queued packet is dropped unresolved: (fn, args)
FailInfo = tuple[Callable[..., None], tuple[Any, ...]] | None


class ArpEntry:
    __slots__ = ("ifname", "ip", "mac", "state", "queue", "tries", "timer", "published",
                 "expires", "updated", "contested", "old_mac")

    def __init__(self, ifname: str, ip: int) -> None:
        self.ifname = ifname
        self.ip = ip
        self.mac = b""
        self.state = INCOMPLETE
        self.queue: deque[tuple[Sequence[Buffer], TxMeta | None, FailInfo]] = deque()
        self.tries = 0
        self.timer: Timer | None = None
        self.published = False
        self.expires = 0.0
        #: when an ARP packet last set or confirmed ``mac`` (trio clock); see locktime
        self.updated = 0.0
        #: another MAC was claimed for this address since ``mac`` was last confirmed
        self.contested = False
        #: the MAC before a contested entry was resolved afresh (for the "moved" line)
        self.old_mac = b""


class Arp:
    def __init__(self, inet: IPv4Layer) -> None:
        self.inet = inet
        self.stack = inet.stack
        self.counters = Counters("arp")
        self.entries: OrderedDict[tuple[str, int], ArpEntry] = OrderedDict()
        reg = self.stack.sysctl.register
        self.k_max = reg("net.inet.arp.maxentries", 1024, "ARP cache size bound", lo=1)
        self.k_queue = reg("net.inet.arp.queue", 16, "packets held per unresolved entry", lo=1)
        self.k_retries = reg("net.inet.arp.retries", 3, "requests before resolution fails", lo=1)
        self.k_rexmit = reg("net.inet.arp.rexmit_ms", 1000, "request retransmit interval (ms)", lo=10)
        self.k_reachable = reg("net.inet.arp.reachable", 30, "seconds an entry stays reachable", lo=1)
        self.k_stale = reg("net.inet.arp.stale_gc", 60, "seconds an unused stale entry lives", lo=1)
        self.k_down = reg("net.inet.arp.down", 20, "seconds a failed entry rejects sends", lo=0)
        self.k_locktime = reg("net.link.ether.inet.locktime", 1,
                              "seconds after an ARP update during which a conflicting claim "
                              "for the entry is refused without re-probing it (0: no lock)",
                              lo=0)
        self._moved_log_at = float("-inf")
        self._moved_suppressed = 0

    # -- timers ----------------------------------------------------------------------
    def _arm(self, e: ArpEntry, delay: float, fn: Callable[[ArpEntry], None]) -> None:
        if e.timer is not None:
            e.timer.cancel()
        e.expires = trio.current_time() + delay
        e.timer = self.inet.timers.call_at(e.expires, lambda: fn(e))

    def _disarm(self, e: ArpEntry) -> None:
        if e.timer is not None:
            e.timer.cancel()
            e.timer = None

    # -- cache -----------------------------------------------------------------------
    def _new_entry(self, ifname: str, ip: int) -> ArpEntry | None:
        ents = self.entries
        if len(ents) >= int(self.k_max.value):
            victim = None
            for e in ents.values():  # oldest first; never a static entry
                if e.state != PERMANENT:
                    victim = e
                    break
            if victim is None:
                self.counters["cache_full"] += 1
                return None
            self.counters["evicted"] += 1
            self._remove(victim, errno.ENOBUFS)
        e = ArpEntry(ifname, ip)
        ents[(ifname, ip)] = e
        self.counters["entries_created"] += 1
        return e

    def _remove(self, e: ArpEntry, err: int = errno.EHOSTUNREACH) -> None:
        self._disarm(e)
        if self.entries.get((e.ifname, e.ip)) is e:
            del self.entries[(e.ifname, e.ip)]
        self._fail_queue(e, err)
        self.inet.neighbour_changed()

    def _fail_queue(self, e: ArpEntry, err: int) -> None:
        q = e.queue
        while q:
            _, _, fail = q.popleft()
            self.counters["drop_unresolved"] += 1
            if fail is not None:
                fn, args = fail
                try:
                    fn(err, *args)
                except Exception:
                    self.counters["fail_callback_errors"] += 1

    def lookup(self, ifname: str, ip: int) -> bytes | None:
        """The MAC for a usable entry (fast-forward cache fill), else None."""
        e = self.entries.get((ifname, ip))
        if e is not None and e.state in (REACHABLE, STALE, PROBE, PERMANENT):
            return e.mac
        return None

    # -- output ----------------------------------------------------------------------
    def output(self, iface: Interface, nexthop: int, bufs: Sequence[Buffer],
               meta: TxMeta | None, fail: FailInfo = None) -> int:
        """Send an IPv4 packet to ``nexthop`` on ``iface``, resolving it first if needed.
        Returns 0 (sent or queued) or an errno."""
        e = self.entries.get((iface.name, nexthop))
        if e is not None:
            st = e.state
            if st == REACHABLE or st == PERMANENT or st == PROBE:
                return 0 if self.stack.l2.output(iface, e.mac, ETHERTYPE_IPV4, bufs, meta) \
                    else errno.ENOBUFS
            if st == STALE:
                # use it, and confirm with a unicast probe (NUD's DELAY/PROBE folded)
                e.state = PROBE
                e.tries = 0
                self._probe(e)
                return 0 if self.stack.l2.output(iface, e.mac, ETHERTYPE_IPV4, bufs, meta) \
                    else errno.ENOBUFS
            if st == FAILED:
                self.counters["drop_failed_entry"] += 1
                return errno.EHOSTUNREACH
        else:
            e = self._new_entry(iface.name, nexthop)
            if e is None:
                return errno.ENOBUFS
            e.tries = 0
            self._solicit(e)
            if e.state != INCOMPLETE:  # could not even ask (interface gone)
                return errno.EHOSTUNREACH
        # incomplete: hold the packet
        q = e.queue
        if len(q) >= int(self.k_queue.value):
            self.counters["drop_queue_full"] += 1
            _, _, oldfail = q.popleft()  # Linux drops the oldest
            if oldfail is not None:
                oldfail[0](errno.ENOBUFS, *oldfail[1])
        q.append((bufs, meta, fail))
        self.counters["queued"] += 1
        return 0

    def _solicit(self, e: ArpEntry) -> None:
        """Broadcast a request (incomplete) and arm the retry timer."""
        iface = self.stack.interfaces.get(e.ifname)
        if e.tries >= int(self.k_retries.value) or iface is None:
            self._failed(e)
            return
        e.tries += 1
        self.request(iface, e.ip)
        self._arm(e, int(self.k_rexmit.value) / 1000, self._solicit)

    def _probe(self, e: ArpEntry) -> None:
        iface = self.stack.interfaces.get(e.ifname)
        if e.tries >= int(self.k_retries.value) or iface is None:
            self.counters["probe_failed"] += 1
            if e.contested and iface is not None:
                self._reresolve(e)
            else:
                self._remove(e)
            return
        e.tries += 1
        self.request(iface, e.ip, unicast=e.mac)
        self._arm(e, int(self.k_rexmit.value) / 1000, self._probe)

    def _reresolve(self, e: ArpEntry) -> None:
        """The old MAC stayed silent while another was claimed: ask afresh (broadcast);
        the answer to our request sets the entry."""
        self.counters["reresolve"] += 1
        e.old_mac = e.mac
        e.mac = b""
        e.state = INCOMPLETE
        e.contested = False
        e.tries = 0
        self.inet.neighbour_changed()
        self._solicit(e)

    def _failed(self, e: ArpEntry) -> None:
        self.counters["resolve_failed"] += 1
        e.state = FAILED
        e.mac = b""
        self._fail_queue(e, errno.EHOSTUNREACH)
        down = int(self.k_down.value)
        if down:
            self._arm(e, down, self._remove)
        else:
            self._remove(e)

    def _to_stale(self, e: ArpEntry) -> None:
        e.state = STALE
        self._arm(e, int(self.k_stale.value), self._remove)

    def _confirm(self, e: ArpEntry, iface: Interface, mac: bytes, state: str = REACHABLE) -> None:
        if e.state == PERMANENT:
            return
        changed = e.mac != mac
        now = trio.current_time()
        if e.old_mac and e.old_mac != mac:
            self.counters["moved"] += 1
            self._log_moved(now, e, e.old_mac, mac)
        e.old_mac = b""
        e.mac = mac
        e.updated = now
        e.state = state
        e.tries = 0
        e.contested = False
        self.entries.move_to_end((e.ifname, e.ip))
        if state == REACHABLE:
            self._arm(e, int(self.k_reachable.value), self._to_stale)
        else:
            self._to_stale(e)
        q = e.queue
        out = self.stack.l2.output
        while q:
            bufs, meta, _ = q.popleft()
            out(iface, mac, ETHERTYPE_IPV4, bufs, meta)
            self.counters["queue_sent"] += 1
        if changed:
            self.inet.neighbour_changed()

    def request(self, iface: Interface, target: int, *, unicast: bytes | None = None,
                src: int | None = None) -> None:
        spa = src if src is not None else self.inet.iface_source(iface, target)
        if spa is None:
            spa = 0  # no address yet: an ARP probe (RFC 5227)
        frame = warp.build(warp.OP_REQUEST, iface.mac, spa, ZERO_MAC, target)
        self.stack.l2.output(iface, unicast or BROADCAST_MAC, ETHERTYPE_ARP, [frame])
        self.counters["out_request"] += 1

    def announce(self, iface: Interface, addr: int) -> None:
        """Gratuitous ARP: a request for our own new address."""
        frame = warp.build(warp.OP_REQUEST, iface.mac, addr, ZERO_MAC, addr)
        self.stack.l2.output(iface, BROADCAST_MAC, ETHERTYPE_ARP, [frame])
        self.counters["out_gratuitous"] += 1

    # -- input -----------------------------------------------------------------------
    def input(self, iface: Interface, pkt: Packet) -> None:
        c = self.counters
        c["in_packets"] += 1
        try:
            a = warp.parse(pkt.data[pkt.l3:])
        except ParseError as exc:
            c[exc.reason] += 1
            return
        if a.sha == iface.mac:
            c["drop_own"] += 1
            return
        if a.sha[0] & 1:
            c["drop_bad_sender_mac"] += 1
            return
        spa, tpa = a.spa, a.tpa
        inet = self.inet
        if spa and inet.iface_has(iface, spa):
            c["dup_address"] += 1  # someone else claims our address
            return
        if spa >> 28 == 14 or spa == 0xFFFFFFFF:
            c["drop_bad_sender_ip"] += 1
            return
        for_us = inet.iface_has(iface, tpa)
        is_request = a.op == warp.OP_REQUEST
        e = self.entries.get((iface.name, spa)) if spa else None
        if e is not None:
            self._update(e, iface, a.sha, for_us, is_request)
        elif for_us and spa and is_request:
            e = self._new_entry(iface.name, spa)
            if e is not None:
                e.mac = a.sha
                e.updated = trio.current_time()
                self._to_stale(e)
                inet.neighbour_changed()
        elif not is_request:
            c["drop_unsolicited"] += 1  # a reply nobody asked for creates nothing
        if a.op == warp.OP_REQUEST:
            c["in_request"] += 1
            if for_us:
                self._reply(iface, a, iface.mac)
            else:
                pub = self._published(tpa)
                if pub is not None:
                    c["proxy_reply"] += 1
                    self._reply(iface, a, pub)
                else:
                    c["request_not_for_us"] += 1
        else:
            c["in_reply"] += 1

    def _update(self, e: ArpEntry, iface: Interface, mac: bytes, for_us: bool,
                is_request: bool) -> None:
        """An ARP packet from ``e``'s address, sender MAC ``mac``: what it may change."""
        c = self.counters
        st = e.state
        if st == PERMANENT:
            if mac != e.mac:
                self._refuse("static")
            return
        if not e.mac:  # incomplete or failed: only an answer to us fills it
            if for_us and not is_request:
                c["updated"] += 1
                self._confirm(e, iface, mac)
            elif for_us and st == FAILED:
                # a request for us: as if the entry did not exist (stale, probed at use)
                c["updated"] += 1
                self._confirm(e, iface, mac, STALE)
            else:
                self._refuse("unsolicited")
            return
        if mac == e.mac:
            # the neighbour itself: confirms the entry (and answers a probe of it)
            c["updated"] += 1
            self._confirm(e, iface, mac)
            return
        # another MAC claims a resolved neighbour's address: a spoof or a real move;
        # never taken as said - the old MAC is probed and must stay silent first
        e.contested = True
        if st == PROBE:
            self._refuse("probing")
        elif trio.current_time() - e.updated < int(self.k_locktime.value):
            self._refuse("locked")
        else:
            self._refuse(st)
            e.state = PROBE
            e.tries = 0
            self._probe(e)

    def _refuse(self, reason: str) -> None:
        c = self.counters
        c["update_refused"] += 1
        c["update_refused_" + reason] += 1

    def _log_moved(self, now: float, e: ArpEntry, old: bytes, mac: bytes) -> None:
        if now - self._moved_log_at < MOVED_LOG_INTERVAL:
            self._moved_suppressed += 1
            return
        more = f" ({self._moved_suppressed} more not logged)" if self._moved_suppressed else ""
        self._moved_log_at = now
        self._moved_suppressed = 0
        log.info("arp: %s moved from %s to %s on %s%s", int_to_ip(e.ip), format_mac(old),
                 format_mac(mac), e.ifname, more)

    def _reply(self, iface: Interface, a: warp.ArpPacket, mac: bytes) -> None:
        frame = warp.build(warp.OP_REPLY, mac, a.tpa, a.sha, a.spa)
        self.stack.l2.output(iface, a.sha, ETHERTYPE_ARP, [frame])
        self.counters["out_reply"] += 1

    def _published(self, ip: int) -> bytes | None:
        for e in self.entries.values():
            if e.published and e.ip == ip:
                return e.mac
        return None

    # -- management ------------------------------------------------------------------
    def set_static(self, ifname: str, ip: int, mac: bytes, *, published: bool = False) -> ArpEntry:
        e = self.entries.get((ifname, ip))
        if e is None:
            e = self._new_entry(ifname, ip)
            if e is None:
                raise OSError(errno.ENOBUFS, "ARP cache full of static entries")
        self._disarm(e)
        e.mac = mac
        e.state = PERMANENT
        e.published = published
        iface = self.stack.interfaces.get(ifname)
        q = e.queue
        while q and iface is not None:
            bufs, meta, _ = q.popleft()
            self.stack.l2.output(iface, mac, ETHERTYPE_IPV4, bufs, meta)
        self.inet.neighbour_changed()
        return e

    def delete(self, ip: int, ifname: str | None = None) -> int:
        gone = [e for e in self.entries.values()
                if e.ip == ip and (ifname is None or e.ifname == ifname)]
        for e in gone:
            self._remove(e)
        return len(gone)

    def flush(self, ifname: str | None = None, *, keep_static: bool = True) -> int:
        gone = [e for e in self.entries.values()
                if (ifname is None or e.ifname == ifname)
                and not (keep_static and e.state == PERMANENT)]
        for e in gone:
            self._remove(e)
        return len(gone)

    def list(self) -> list[dict[str, str]]:
        now = trio.current_time()
        out = []
        for e in sorted(self.entries.values(), key=lambda e: (e.ifname, e.ip)):
            exp = "-" if e.state == PERMANENT or e.timer is None else str(max(0, round(e.expires - now)))
            out.append({"address": int_to_ip(e.ip), "mac": format_mac(e.mac) if e.mac else "(incomplete)",
                        "interface": e.ifname, "state": e.state, "expires": exp,
                        "flags": "published" if e.published else ""})
        return out

    def render(self) -> str:
        """One entry per line; see docs/inet.md."""
        head = f"{'Address':<16} {'HWaddress':<18} {'Interface':<10} {'State':<11} {'Expires':>7}  Flags\n"
        return head + "".join(
            f"{d['address']:<16} {d['mac']:<18} {d['interface']:<10} {d['state']:<11} "
            f"{d['expires']:>7}  {d['flags']}\n" for d in self.list())
