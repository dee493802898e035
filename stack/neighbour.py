"""The neighbour layer: one cache and state machine for every family's next hops (Linux's
net/core/neighbour.c with its per-protocol ``neigh_table``; smoltcp's iface/neighbor.rs,
keyed by IP address whichever protocol fills it).

A ``NeighbourTable`` maps (interface, ``stack.addr.Addr``) to a link-layer address and
holds everything that does not depend on the protocol that asks the wire: the states,
the packets waiting for resolution, the timers, the bound on entries, the rules against
spoofing and their counters. The protocol that asks — ARP for IPv4 (stack/inet/arp.py),
IPv6's Neighbour Discovery next (NS/NA) — is a ``Resolver``: the table calls its
``solicit`` to send a request (broadcast or multicast) or a probe (unicast to the
address it has), and the resolver, parsing what comes back, tells the table what it
heard with ``input(iface, addr, lladdr, kind)``. A resolving medium (Ethernet,
stack/l2/medium.py) asks the table for the link address of a unicast next hop with
``resolve``; media without link addresses (point-to-point, tunnels) never use it.

``Neighbours`` (the ``NEIGHBOURS`` service) lists the stack's tables by family.

States (NUD, RFC 4861 §7.3.2, as Linux/NetBSD keep them): ``incomplete`` (resolving:
``solicit`` every ``rexmit_ms`` for ``retries`` tries, packets held up to ``queue`` per
entry), ``reachable`` (confirmed within ``reachable`` seconds), ``stale`` (still used;
the first use starts a unicast probe: NUD's DELAY and PROBE are folded into ``probe``,
so a stale entry is probed at once instead of after a DELAY of 5 s), ``probe``,
``failed`` (resolution failed: sends fail at once with EHOSTUNREACH for ``down``
seconds), ``permanent`` (static). At most ``maxentries`` entries; when full the oldest
dynamic entry is evicted, so a flood cannot grow memory. One timer per entry, on the
owner's deadline heap; no periodic scan.

Spoofing. An entry's link address changes only on evidence we asked for, never because
someone said so unasked. What the resolver heard is one of four ``kinds``:

========================  ===================================  ===========================
kind                      ARP                                  ND (next)
========================  ===================================  ===========================
``SOLICITED``             a reply addressed to us              NA with the S flag
``SOLICITATION``          a request for one of our addresses   NS for one of our addresses
``UNSOLICITED``           a reply not to us, gratuitous reply  NA without the S flag
``OVERHEARD``             a request for another host,          (none: NS for others are
                          a gratuitous request                 not seen)
========================  ===================================  ===========================

- an unresolved entry (``incomplete``, ``failed``) takes the address of a ``SOLICITED``
  answer; a ``failed`` one also that of a ``SOLICITATION``, as a new entry would (then
  ``stale``, checked by a unicast probe at first use); anything else is refused
  (``unsolicited``);
- a resolved entry is confirmed (reachable) only by a ``SOLICITED`` answer with its
  link address; the same address in anything else changes nothing (RFC 4861 §7.2.3,
  §7.2.5);
- a resolved entry (``reachable``, ``stale``, ``probe``) is never re-pointed by what it
  hears, whatever the kind: a claim of its address for another link address is refused
  and makes the table re-probe the *old* one (``solicit`` unicast, as for a stale
  entry). If the old one answers, the entry stays (confirmed, reachable). If it stays
  silent through the probe, the entry is resolved afresh (``solicit`` broadcast), and
  the answer to that is taken (``moved``, logged as BSD does: ``arp: A moved from X to
  Y on IF``, at most one line a second). A neighbour whose NIC really changed is so
  followed within ``retries`` x ``rexmit_ms``; a spoofer claiming a live host's address
  never wins;
- ``locktime`` seconds after the address was set or confirmed, conflicting claims are
  refused without starting a probe (a flood of claims costs the real host at most one
  probe a lock time);
- static entries never change.

Every refused update is counted: ``update_refused`` and ``update_refused_REASON`` with
REASON ``static``, ``unsolicited``, ``locked``, ``probing`` (a probe of the old address
is under way) or ``reachable``/``stale`` (a probe was started). A sender without an
entry gets one only from a ``SOLICITATION``; ``SOLICITED``/``UNSOLICITED`` answers for
unknown addresses create nothing (``drop_unsolicited``).

The counters are the resolver's group (``arp`` for IPv4), so ``netstat``/``render_stats``
shows one group per family with the protocol's counters and the table's together.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from stack.addr import AF_INET, AF_INET6, Addr, format_addr
from stack.counters import Counters, names
from stack.packet import Buffer, TxMeta
from stack.registry import Registration, ServiceKey, Services

if TYPE_CHECKING:
    # types only: the interface module imports the media, which use this layer, so a
    # run-time import of it here would close a cycle (iface → medium → neighbour → iface)
    from stack.l2.iface import Interface

INCOMPLETE = "incomplete"
REACHABLE = "reachable"
STALE = "stale"
PROBE = "probe"
FAILED = "failed"
PERMANENT = "permanent"

#: what a resolver heard from a neighbour (see the module docstring)
SOLICITED = "solicited"
SOLICITATION = "solicitation"
UNSOLICITED = "unsolicited"
OVERHEARD = "overheard"

#: at most one "moved" log line per this many seconds (a flood of moves for many
#: addresses is counted, not logged line by line)
MOVED_LOG_INTERVAL = 1.0

#: the table's counters (stack/counters.py), in the resolver's group: ARP's
#: (stack/inet/counters.py) include them; ``update_refused_<reason>`` per refusal reason
NEIGHBOUR_COUNTERS: frozenset[str] = names("""
    entries_created cache_full evicted drop_unresolved fail_callback_errors
    drop_failed_entry drop_queue_full queued queue_sent probe_failed reresolve
    resolve_failed moved drop_unsolicited updated update_refused
""") | frozenset(f"update_refused_{r}" for r in ("static", "unsolicited", "locked", "probing",
                                                 REACHABLE, STALE))

#: the states in which a packet goes to the entry's link address at once
_READY = frozenset({REACHABLE, PROBE, PERMANENT})

#: what to call when a held packet is dropped unresolved: (fn, args), called fn(errno, *args)
FailInfo = tuple[Callable[..., None], tuple[Any, ...]] | None


class Resolver(Protocol):
    """What the table needs of an address-resolution protocol (ARP, ND)."""

    def solicit(self, iface: Interface, addr: Addr, lladdr: bytes | None) -> None:
        """Ask who has ``addr`` on ``iface``: to everyone (broadcast / solicited-node
        multicast) when ``lladdr`` is None, else a probe unicast to ``lladdr``."""
        ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class TimerQueue(Protocol):
    """A deadline heap (stack/inet/timers.py ``Timers``)."""

    def call_at(self, deadline: float, fn: Callable[[], None]) -> TimerHandle: ...


class Knob(Protocol):
    """A tunable read at use (a sysctl knob)."""

    @property
    def value(self) -> int | str: ...


@dataclass(frozen=True)
class NeighbourParams:
    """The table's tunables, registered by the resolver under its own sysctl names
    (IPv4: ``net.inet.arp.*`` and ``net.link.ether.inet.locktime``)."""

    maxentries: Knob  # cache bound
    queue: Knob  # packets held per unresolved entry
    retries: Knob  # solicitations before resolution (or a probe) fails
    rexmit_ms: Knob  # interval between solicitations
    reachable: Knob  # seconds an entry stays reachable
    stale_gc: Knob  # seconds an unused stale entry lives
    down: Knob  # seconds a failed entry rejects sends
    locktime: Knob  # seconds a set/confirmed address refuses claims without a probe


class Neighbour:
    """One entry: a neighbour's link address on one interface."""

    __slots__ = ("ifname", "addr", "lladdr", "state", "queue", "tries", "timer", "published",
                 "expires", "updated", "contested", "old_lladdr")

    def __init__(self, ifname: str, addr: Addr) -> None:
        self.ifname = ifname
        self.addr = addr
        self.lladdr = b""
        self.state = INCOMPLETE
        #: packets waiting for resolution: (buffers, meta, on failure, protocol)
        self.queue: deque[tuple[Sequence[Buffer], TxMeta | None, FailInfo, int]] = deque()
        self.tries = 0
        self.timer: TimerHandle | None = None
        self.published = False  # proxy: answer solicitations for it (ARP's "pub")
        self.expires = 0.0
        #: when the resolver last set or confirmed ``lladdr`` (trio clock); see locktime
        self.updated = 0.0
        #: another link address was claimed for this address since the last confirmation
        self.contested = False
        #: the address before a contested entry was resolved afresh (for the "moved" line)
        self.old_lladdr = b""


def format_lladdr(lladdr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in lladdr)


class NeighbourTable:
    """One family's neighbour cache (Linux's ``neigh_table``: arp_tbl, nd_tbl)."""

    def __init__(self, *, family: int, name: str, resolver: Resolver,
                 interfaces: Mapping[str, Interface], timers: TimerQueue,
                 params: NeighbourParams, counters: Counters | None = None,
                 on_change: Callable[[], None] | None = None,
                 log: logging.Logger | None = None) -> None:
        self.family = family
        self.name = name
        self.resolver = resolver
        self.interfaces = interfaces
        self.timers = timers
        self.params = params
        self.counters = counters if counters is not None else \
            Counters(name, NEIGHBOUR_COUNTERS)
        #: called when an entry's link address appears, changes or goes (caches built
        #: on it, such as the fast-forward flows, must be dropped)
        self.on_change = on_change or (lambda: None)
        self.log = log or logging.getLogger(f"io-pkt.{name}")
        self.entries: OrderedDict[tuple[str, Addr], Neighbour] = OrderedDict()
        #: interface name → {address: link address} of the entries a packet is sent to
        #: at once (reachable, probe, permanent): the media's per-packet path reads it
        #: (one dict lookup), every state change below keeps it (``_set_state``)
        self.ready: dict[str, dict[Addr, bytes]] = {}
        self._moved_log_at = float("-inf")
        self._moved_suppressed = 0

    # -- states ----------------------------------------------------------------------
    def _set_state(self, e: Neighbour, state: str) -> None:
        e.state = state
        if state in _READY:
            self.ready_map(e.ifname)[e.addr] = e.lladdr
        else:
            d = self.ready.get(e.ifname)
            if d:
                d.pop(e.addr, None)

    def ready_map(self, ifname: str) -> dict[Addr, bytes]:
        """The ready link addresses of ``ifname``'s neighbours (the same dict for the
        interface's lifetime: a medium keeps it)."""
        d = self.ready.get(ifname)
        if d is None:
            d = self.ready[ifname] = {}
        return d

    # -- timers ----------------------------------------------------------------------
    def _arm(self, e: Neighbour, delay: float, fn: Callable[[Neighbour], None]) -> None:
        if e.timer is not None:
            e.timer.cancel()
        e.expires = trio.current_time() + delay
        e.timer = self.timers.call_at(e.expires, lambda: fn(e))

    def _disarm(self, e: Neighbour) -> None:
        if e.timer is not None:
            e.timer.cancel()
            e.timer = None

    # -- cache -----------------------------------------------------------------------
    def _new_entry(self, ifname: str, addr: Addr) -> Neighbour | None:
        ents = self.entries
        if len(ents) >= int(self.params.maxentries.value):
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
        e = Neighbour(ifname, addr)
        ents[(ifname, addr)] = e
        self.counters["entries_created"] += 1
        return e

    def _remove(self, e: Neighbour, err: int = errno.EHOSTUNREACH) -> None:
        self._disarm(e)
        if self.entries.get((e.ifname, e.addr)) is e:
            del self.entries[(e.ifname, e.addr)]
            d = self.ready.get(e.ifname)
            if d:
                d.pop(e.addr, None)
        self._fail_queue(e, err)
        self.on_change()

    def _fail_queue(self, e: Neighbour, err: int) -> None:
        q = e.queue
        while q:
            fail = q.popleft()[2]
            self.counters["drop_unresolved"] += 1
            if fail is not None:
                fn, args = fail
                try:
                    fn(err, *args)
                except Exception:
                    self.counters["fail_callback_errors"] += 1

    def lookup(self, ifname: str, addr: Addr) -> bytes | None:
        """The link address of a usable entry (fast-forward cache fill), else None."""
        e = self.entries.get((ifname, addr))
        if e is not None and e.state in (REACHABLE, STALE, PROBE, PERMANENT):
            return e.lladdr
        return None

    def published(self, addr: Addr) -> bytes | None:
        """The link address of a published (proxy) entry for ``addr``, else None."""
        for e in self.entries.values():
            if e.published and e.addr == addr:
                return e.lladdr
        return None

    # -- output ----------------------------------------------------------------------
    def resolve(self, iface: Interface, addr: Addr, proto: int, bufs: Sequence[Buffer],
                meta: TxMeta | None, fail: FailInfo = None) -> bytes | int:
        """The link address to send ``bufs`` (protocol ``proto``) to ``addr`` by now, or
        an int: 0 when the packet is held until resolution (then sent by
        ``iface.medium.send_to``, or dropped and ``fail`` called), else an errno."""
        e = self.entries.get((iface.name, addr))
        if e is not None:
            st = e.state
            if st == REACHABLE or st == PERMANENT or st == PROBE:
                return e.lladdr
            if st == STALE:
                # use it, and confirm with a unicast probe (NUD's DELAY/PROBE folded)
                self._set_state(e, PROBE)
                e.tries = 0
                self._probe(e)
                return e.lladdr
            if st == FAILED:
                self.counters["drop_failed_entry"] += 1
                return errno.EHOSTUNREACH
        else:
            e = self._new_entry(iface.name, addr)
            if e is None:
                return errno.ENOBUFS
            e.tries = 0
            self._solicit(e)
            if e.state != INCOMPLETE:  # could not even ask (interface gone)
                return errno.EHOSTUNREACH
        # incomplete: hold the packet
        q = e.queue
        if len(q) >= int(self.params.queue.value):
            self.counters["drop_queue_full"] += 1
            oldfail = q.popleft()[2]  # Linux drops the oldest
            if oldfail is not None:
                oldfail[0](errno.ENOBUFS, *oldfail[1])
        q.append((bufs, meta, fail, proto))
        self.counters["queued"] += 1
        return 0

    def _send_queue(self, e: Neighbour, iface: Interface, counted: bool) -> None:
        q = e.queue
        send = iface.medium.send_to
        lladdr = e.lladdr
        while q:
            bufs, meta, _, proto = q.popleft()
            send(lladdr, proto, bufs, meta)
            if counted:
                self.counters["queue_sent"] += 1

    def _solicit(self, e: Neighbour) -> None:
        """Ask everyone (incomplete) and arm the retry timer."""
        iface = self.interfaces.get(e.ifname)
        if e.tries >= int(self.params.retries.value) or iface is None:
            self._failed(e)
            return
        e.tries += 1
        self.resolver.solicit(iface, e.addr, None)
        self._arm(e, int(self.params.rexmit_ms.value) / 1000, self._solicit)

    def _probe(self, e: Neighbour) -> None:
        iface = self.interfaces.get(e.ifname)
        if e.tries >= int(self.params.retries.value) or iface is None:
            self.counters["probe_failed"] += 1
            if e.contested and iface is not None:
                self._reresolve(e)
            else:
                self._remove(e)
            return
        e.tries += 1
        self.resolver.solicit(iface, e.addr, e.lladdr)
        self._arm(e, int(self.params.rexmit_ms.value) / 1000, self._probe)

    def _reresolve(self, e: Neighbour) -> None:
        """The old address stayed silent while another was claimed: ask afresh; the
        answer to our solicitation sets the entry."""
        self.counters["reresolve"] += 1
        e.old_lladdr = e.lladdr
        e.lladdr = b""
        self._set_state(e, INCOMPLETE)
        e.contested = False
        e.tries = 0
        self.on_change()
        self._solicit(e)

    def _failed(self, e: Neighbour) -> None:
        self.counters["resolve_failed"] += 1
        self._set_state(e, FAILED)
        e.lladdr = b""
        self._fail_queue(e, errno.EHOSTUNREACH)
        down = int(self.params.down.value)
        if down:
            self._arm(e, down, self._remove)
        else:
            self._remove(e)

    def _to_stale(self, e: Neighbour) -> None:
        self._set_state(e, STALE)
        self._arm(e, int(self.params.stale_gc.value), self._remove)

    def _confirm(self, e: Neighbour, iface: Interface, lladdr: bytes,
                 state: str = REACHABLE) -> None:
        if e.state == PERMANENT:
            return
        changed = e.lladdr != lladdr
        now = trio.current_time()
        if e.old_lladdr and e.old_lladdr != lladdr:
            self.counters["moved"] += 1
            self._log_moved(now, e, e.old_lladdr, lladdr)
        e.old_lladdr = b""
        e.lladdr = lladdr
        e.updated = now
        self._set_state(e, state)
        e.tries = 0
        e.contested = False
        self.entries.move_to_end((e.ifname, e.addr))
        if state == REACHABLE:
            self._arm(e, int(self.params.reachable.value), self._to_stale)
        else:
            self._to_stale(e)
        self._send_queue(e, iface, True)
        if changed:
            self.on_change()

    # -- input (what the resolver heard) ---------------------------------------------
    def input(self, iface: Interface, addr: Addr, lladdr: bytes, kind: str) -> None:
        """The resolver heard ``addr`` claimed at ``lladdr`` on ``iface``, as ``kind``
        (SOLICITED, SOLICITATION, UNSOLICITED or OVERHEARD): apply the rules above."""
        e = self.entries.get((iface.name, addr))
        if e is not None:
            self._update(e, iface, lladdr, kind)
        elif kind == SOLICITATION:
            e = self._new_entry(iface.name, addr)
            if e is not None:
                e.lladdr = lladdr
                e.updated = trio.current_time()
                self._to_stale(e)
                self.on_change()
        elif kind != OVERHEARD:
            self.counters["drop_unsolicited"] += 1  # an answer nobody asked for creates nothing

    def _update(self, e: Neighbour, iface: Interface, lladdr: bytes, kind: str) -> None:
        """A claim of ``e``'s address at ``lladdr``: what it may change."""
        c = self.counters
        st = e.state
        if st == PERMANENT:
            if lladdr != e.lladdr:
                self._refuse("static")
            return
        if not e.lladdr:  # incomplete or failed: only an answer to us fills it
            if kind == SOLICITED:
                c["updated"] += 1
                self._confirm(e, iface, lladdr)
            elif kind == SOLICITATION and st == FAILED:
                # asked for us: as if the entry did not exist (stale, probed at use)
                c["updated"] += 1
                self._confirm(e, iface, lladdr, STALE)
            else:
                self._refuse("unsolicited")
            return
        if lladdr == e.lladdr:
            # the neighbour itself. Only an answer to us confirms it (and answers a probe
            # of it); the same address heard in a solicitation or an unsolicited answer
            # changes nothing (RFC 4861 §7.2.3, §7.2.5; Linux's neigh_update does the
            # same for ARP): a stale entry stays stale, to be probed at its next use
            if kind == SOLICITED:
                c["updated"] += 1
                self._confirm(e, iface, lladdr)
            return
        # another link address claims a resolved neighbour's address: a spoof or a real
        # move; never taken as said - the old one is probed and must stay silent first
        e.contested = True
        if st == PROBE:
            self._refuse("probing")
        elif trio.current_time() - e.updated < int(self.params.locktime.value):
            self._refuse("locked")
        else:
            self._refuse(st)
            self._set_state(e, PROBE)
            e.tries = 0
            self._probe(e)

    def _refuse(self, reason: str) -> None:
        c = self.counters
        c["update_refused"] += 1
        c["update_refused_" + reason] += 1

    def _log_moved(self, now: float, e: Neighbour, old: bytes, lladdr: bytes) -> None:
        if now - self._moved_log_at < MOVED_LOG_INTERVAL:
            self._moved_suppressed += 1
            return
        more = f" ({self._moved_suppressed} more not logged)" if self._moved_suppressed else ""
        self._moved_log_at = now
        self._moved_suppressed = 0
        self.log.info("%s: %s moved from %s to %s on %s%s", self.name, format_addr(e.addr),
                      format_lladdr(old), format_lladdr(lladdr), e.ifname, more)

    # -- management ------------------------------------------------------------------
    def set_static(self, ifname: str, addr: Addr, lladdr: bytes, *,
                   published: bool = False) -> Neighbour:
        e = self.entries.get((ifname, addr))
        if e is None:
            e = self._new_entry(ifname, addr)
            if e is None:
                raise OSError(errno.ENOBUFS, f"{self.name} cache full of static entries")
        self._disarm(e)
        e.lladdr = lladdr
        self._set_state(e, PERMANENT)
        e.published = published
        iface = self.interfaces.get(ifname)
        if iface is not None:
            self._send_queue(e, iface, False)
        self.on_change()
        return e

    def delete(self, addr: Addr, ifname: str | None = None) -> int:
        gone = [e for e in self.entries.values()
                if e.addr == addr and (ifname is None or e.ifname == ifname)]
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
        """Every entry, by interface then address: keys ``address lladdr interface
        state expires flags`` (``lladdr`` is ``(incomplete)`` while unresolved)."""
        now = trio.current_time()
        out = []
        for e in sorted(self.entries.values(), key=lambda e: (e.ifname, e.addr)):
            exp = "-" if e.state == PERMANENT or e.timer is None \
                else str(max(0, round(e.expires - now)))
            out.append({"address": format_addr(e.addr),
                        "lladdr": format_lladdr(e.lladdr) if e.lladdr else "(incomplete)",
                        "interface": e.ifname, "state": e.state, "expires": exp,
                        "flags": "published" if e.published else ""})
        return out


#: the stack's neighbour tables (one ``Neighbours`` per stack)
NEIGHBOURS: ServiceKey[Neighbours] = ServiceKey("neighbours")


class Neighbours:
    """The neighbour tables of one stack, by family. The IPv4 layer registers ARP's at
    start, an IPv6 layer registers ND's; resolving media find them here (once per
    interface, then by direct reference: ``v4``, ``v6``)."""

    def __init__(self) -> None:
        self.tables: dict[int, NeighbourTable] = {}
        self.v4: NeighbourTable | None = None
        self.v6: NeighbourTable | None = None

    @classmethod
    def of(cls, services: Services) -> Neighbours:
        """The stack's ``Neighbours``, made and offered as a service on first use."""
        n = services.get(NEIGHBOURS)
        if n is None:
            n = cls()
            services.register(NEIGHBOURS, n)
        return n

    def register(self, table: NeighbourTable) -> Registration:
        fam = table.family
        if fam in self.tables:
            raise ValueError(f"a neighbour table for family {fam} is already registered")
        self.tables[fam] = table
        self._sync()

        def undo() -> None:
            if self.tables.get(fam) is table:
                del self.tables[fam]
                self._sync()
                # media keep the table's ready maps (the per-packet lookup): emptied in
                # place, their next packet asks ``Neighbours`` again and finds the new
                # table, or none
                for ready in table.ready.values():
                    ready.clear()

        return Registration(f"neighbour table {table.name}", undo)

    def _sync(self) -> None:
        self.v4 = self.tables.get(AF_INET)
        self.v6 = self.tables.get(AF_INET6)

    def table(self, family: int) -> NeighbourTable | None:
        return self.tables.get(family)
