"""ARP (RFC 826): IPv4's resolver for the neighbour layer (stack/neighbour.py).

The neighbour cache, its states (incomplete, reachable, stale, probe, failed,
permanent), the packets held while resolving, the timers and the rules against spoofing
are the family-neutral ``NeighbourTable``'s; see its docstring. This module is the wire
protocol for IPv4 over Ethernet: it sends requests (``solicit``: broadcast to resolve,
unicast to probe a known MAC), gratuitous ARP (``announce``) and replies (for our
addresses and published proxy entries), and tells the table what each received packet
says, as one of the table's kinds:

* a reply addressed to one of our addresses: ``SOLICITED`` (an answer to our request);
* a request for one of our addresses: ``SOLICITATION`` (the only thing that makes a new
  entry: ``stale``, checked by a unicast probe at first use);
* any other reply (to another host, gratuitous): ``UNSOLICITED``;
* a request for another host, a gratuitous request: ``OVERHEARD``.

So an unresolved entry takes only a reply to us; a resolved one is never re-pointed by
an ARP packet, whatever its kind: the claim is refused and the old MAC re-probed, and
only if it stays silent is the address asked for afresh (``moved``, logged ``arp: A
moved from X to Y on IF``, at most one line a second); ``net.link.ether.inet.locktime``
seconds after the MAC was set or confirmed, conflicting claims are refused without a
probe; static entries never change.

Counted here (group ``arp``, shared with the table's counters): ``in_packets``, parse
errors by reason, ``drop_own`` (our own frame), ``drop_bad_sender_mac`` (multicast
sender), ``dup_address`` (someone claims one of our addresses: address conflict
detection, never learnt), ``drop_bad_sender_ip`` (multicast/broadcast sender),
``drop_unsolicited`` (a reply without a sender address), ``in_request``,
``request_not_for_us``, ``proxy_reply``, ``in_reply``, ``out_request``,
``out_gratuitous``, ``out_reply``. A request for one of our addresses is answered even
when its claim is refused (the answer tells the requester only our own MAC).

ARP speaks only on media that resolve (Ethernet): a point-to-point or tunnel interface
gets no gratuitous ARP and never asks.

The methods the IPv4 layer's management API calls (``set_static``, ``delete``,
``flush``, ``list``, ``render``, ``lookup``) keep their IPv4 shapes (a 32-bit int or an
IPv4 ``Addr``; ``list()`` rows with a ``mac`` key) over the table, which is keyed by
``stack.addr.Addr``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stack.addr import AF_INET, V4MAPPED, Addr
from stack.counters import Counters
from stack.inet.counters import ARP_COUNTERS
from stack.inet.wire import ParseError
from stack.inet.wire import arp as warp
from stack.l2.ether import ETHERTYPE_ARP, ETHERTYPE_IPV4
from stack.l2.iface import BROADCAST_MAC, Interface
from stack.neighbour import (
    FAILED,
    INCOMPLETE,
    MOVED_LOG_INTERVAL,
    OVERHEARD,
    PERMANENT,
    PROBE,
    REACHABLE,
    SOLICITATION,
    SOLICITED,
    STALE,
    UNSOLICITED,
    FailInfo,
    Neighbour,
    NeighbourParams,
    Neighbours,
    NeighbourTable,
)
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:  # cycle: IPv4Layer owns this part and the part calls back into it; types only
    from stack.inet.ipv4 import IPv4Layer

__all__ = ["Arp", "ArpEntry", "INCOMPLETE", "REACHABLE", "STALE", "PROBE", "FAILED",
           "PERMANENT", "MOVED_LOG_INTERVAL", "FailInfo"]

ZERO_MAC = b"\0" * 6

log = logging.getLogger("io-pkt.arp")

#: an entry of the IPv4 neighbour table (the name it had when ARP owned the cache)
ArpEntry = Neighbour


def _addr(ip: int) -> Addr:
    """An IPv4 address as the table's key: a 32-bit int or an IPv4 ``Addr`` alike."""
    return Addr(V4MAPPED | ip)


class Arp:
    """ARP for one IPv4 layer: the resolver of its neighbour table (``self.table``)."""

    def __init__(self, inet: IPv4Layer) -> None:
        self.inet = inet
        self.stack = inet.stack
        self.counters = Counters("arp", ARP_COUNTERS)
        reg = self.stack.sysctl.register
        params = NeighbourParams(
            maxentries=reg("net.inet.arp.maxentries", 1024, "ARP cache size bound", lo=1),
            queue=reg("net.inet.arp.queue", 16, "packets held per unresolved entry", lo=1),
            retries=reg("net.inet.arp.retries", 3, "requests before resolution fails", lo=1),
            rexmit_ms=reg("net.inet.arp.rexmit_ms", 1000, "request retransmit interval (ms)",
                          lo=10),
            reachable=reg("net.inet.arp.reachable", 30, "seconds an entry stays reachable",
                          lo=1),
            stale_gc=reg("net.inet.arp.stale_gc", 60, "seconds an unused stale entry lives",
                         lo=1),
            down=reg("net.inet.arp.down", 20, "seconds a failed entry rejects sends", lo=0),
            locktime=reg("net.link.ether.inet.locktime", 1,
                         "seconds after an ARP update during which a conflicting claim "
                         "for the entry is refused without re-probing it (0: no lock)",
                         lo=0),
        )
        self.table = NeighbourTable(
            family=AF_INET, name="arp", resolver=self, interfaces=self.stack.interfaces,
            timers=inet.timers, params=params, counters=self.counters,
            on_change=inet.neighbour_changed, log=log)
        self.registration = Neighbours.of(self.stack.services).register(self.table)

    @property
    def entries(self) -> OrderedDict[tuple[str, Addr], Neighbour]:
        """The table's entries, keyed by (interface, Addr)."""
        return self.table.entries

    # -- the resolver: what the table asks of ARP ---------------------------------------
    def solicit(self, iface: Interface, addr: Addr, lladdr: bytes | None) -> None:
        """Who has ``addr``? To everyone, or a probe unicast to ``lladdr``."""
        self.request(iface, addr & 0xFFFFFFFF, unicast=lladdr)

    def request(self, iface: Interface, target: int, *, unicast: bytes | None = None,
                src: int | None = None) -> None:
        spa = src if src is not None else self.inet.iface_source(iface, target)
        if spa is None:
            spa = 0  # no address yet: an ARP probe (RFC 5227)
        frame = warp.build(warp.OP_REQUEST, iface.mac, spa, ZERO_MAC, target)
        self.stack.l2.output(iface, unicast or BROADCAST_MAC, ETHERTYPE_ARP, [frame])
        self.counters["out_request"] += 1

    def announce(self, iface: Interface, addr: int) -> None:
        """Gratuitous ARP: a request for our own new address (Ethernet-like links only)."""
        if not iface.medium.resolves:
            return
        frame = warp.build(warp.OP_REQUEST, iface.mac, addr, ZERO_MAC, addr)
        self.stack.l2.output(iface, BROADCAST_MAC, ETHERTYPE_ARP, [frame])
        self.counters["out_gratuitous"] += 1

    # -- output (the IPv4 layer sends through the interface's medium; kept for callers) --
    def output(self, iface: Interface, nexthop: int, bufs: Sequence[Buffer],
               meta: TxMeta | None, fail: FailInfo = None) -> int:
        """Send an IPv4 packet to ``nexthop`` on ``iface``, resolving it first if needed.
        Returns 0 (sent or queued) or an errno."""
        return iface.medium.output(bufs, _addr(nexthop), ETHERTYPE_IPV4, meta, fail)

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
        if spa:
            if is_request:
                kind = SOLICITATION if for_us else OVERHEARD
            else:
                kind = SOLICITED if for_us else UNSOLICITED
            self.table.input(iface, _addr(spa), a.sha, kind)
        elif not is_request:
            c["drop_unsolicited"] += 1  # a reply nobody asked for creates nothing
        if is_request:
            c["in_request"] += 1
            if for_us:
                self._reply(iface, a, iface.mac)
            else:
                pub = self.table.published(_addr(tpa))
                if pub is not None:
                    c["proxy_reply"] += 1
                    self._reply(iface, a, pub)
                else:
                    c["request_not_for_us"] += 1
        else:
            c["in_reply"] += 1

    def _reply(self, iface: Interface, a: warp.ArpPacket, mac: bytes) -> None:
        frame = warp.build(warp.OP_REPLY, mac, a.tpa, a.sha, a.spa)
        self.stack.l2.output(iface, a.sha, ETHERTYPE_ARP, [frame])
        self.counters["out_reply"] += 1

    # -- management (IPv4 shapes over the table) ----------------------------------------
    def lookup(self, ifname: str, ip: int) -> bytes | None:
        """The MAC for a usable entry (fast-forward cache fill), else None."""
        return self.table.lookup(ifname, _addr(ip))

    def set_static(self, ifname: str, ip: int, mac: bytes, *,
                   published: bool = False) -> Neighbour:
        return self.table.set_static(ifname, _addr(ip), mac, published=published)

    def delete(self, ip: int, ifname: str | None = None) -> int:
        return self.table.delete(_addr(ip), ifname)

    def flush(self, ifname: str | None = None, *, keep_static: bool = True) -> int:
        return self.table.flush(ifname, keep_static=keep_static)

    def list(self) -> list[dict[str, str]]:
        """Rows with keys ``address mac interface state expires flags``."""
        out = []
        for row in self.table.list():
            row["mac"] = row.pop("lladdr")
            out.append({k: row[k] for k in ("address", "mac", "interface", "state",
                                             "expires", "flags")})
        return out

    def render(self) -> str:
        """One entry per line; see docs/inet.md."""
        head = f"{'Address':<16} {'HWaddress':<18} {'Interface':<10} {'State':<11} {'Expires':>7}  Flags\n"
        return head + "".join(
            f"{d['address']:<16} {d['mac']:<18} {d['interface']:<10} {d['state']:<11} "
            f"{d['expires']:>7}  {d['flags']}\n" for d in self.list())
