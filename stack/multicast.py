"""Multicast group membership for both IP families, on stack/addr.py ``Addr`` values:
the socket side (RFC 3678's any-source and source-specific socket API) and the
interface side (RFC 3376 §3.2: one filter per interface and group, merged from the
sockets' filters). IGMP (stack/inet/igmp.py) reports an IPv4 ``GroupTable``; MLDv2
will report an IPv6 one with the same classes — nothing here looks at a family.

Filters
    ``Filter(mode, sources)``: an immutable (INCLUDE | EXCLUDE, frozenset of ``Addr``);
    ``f.allows(src)``. Any-source membership is ``EXCLUDE {}`` (``ASM``); not being a
    member is ``INCLUDE {}``, which a table never stores.

The interface side: ``GroupTable``
    ``table.set(ifindex, group, owner, filter | None)``: an owner's (a socket's, or the
    stack's own, e.g. all-hosts) filter for ``group`` on interface ``ifindex``; None
    removes it. The interface's filter is recomputed (§3.2: EXCLUDE if any owner
    excludes, with the intersection of the EXCLUDE lists minus the union of the INCLUDE
    lists; else INCLUDE with the union of the INCLUDE lists), and each listener in
    ``table.listeners`` is called as ``fn(ifindex, group, old, new)`` (None: not a
    member) when it changed — the group protocol sends its state-change report there,
    and layer 2's filter follows joins and leaves.
    ``table.accepts(ifindex, group, src)`` (the IP layer's input check: joined, and the
    source passes), ``table.state(ifindex, group)``, ``table.groups(ifindex)`` (a
    read-only view: group -> Filter, what a general query is answered with),
    ``table.forget_interface(ifindex)`` (a detached interface; no listener is called).
    ``table.by_if`` is the hot path's dict: ifindex -> {group: Filter}.

The socket side: ``SocketMulticast``
    One per socket that used a multicast option (``sock.mcast``; None until then),
    holding the options and the socket's memberships, keyed (ifindex, group):
    ``ttl`` (IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS, default 1), ``loop``
    (IP_MULTICAST_LOOP, default on), ``ifindex`` and ``if_addr`` (IP_MULTICAST_IF /
    IPV6_MULTICAST_IF: 0 and None for "by route").
    ``join(ifindex, group)`` / ``leave(ifindex, group)`` (IP_ADD/DROP_MEMBERSHIP,
    IPV6_JOIN/LEAVE_GROUP: any-source), ``source(op, ifindex, group, src)`` with ``op``
    one of ``ADD_SOURCE``, ``DROP_SOURCE`` (source-specific, INCLUDE mode), ``BLOCK``,
    ``UNBLOCK`` (any-source with exclusions, EXCLUDE mode), ``accepts(ifindex, group,
    src)`` (the transports' per-socket delivery check), ``close()`` (leave everything).
    Errors are Linux's (OSError with the errno): EINVAL (not a multicast group, a
    source operation in the other mode, no prior join for BLOCK), EADDRINUSE (joined
    already), EADDRNOTAVAIL (not joined / no such source), ENOBUFS (more than
    ``MAX_MEMBERSHIPS`` groups or ``MAX_SOURCES`` sources).

What a family's IP layer offers the sockets: ``MulticastHost``
    ``groups`` (its ``GroupTable``), ``mcast_ifindex(ifindex, addr, group)`` (the
    interface a join or IP_MULTICAST_IF names: by index, by one of its addresses, or
    none given: the one the route to ``group`` leaves by; OSError ENODEV /
    EADDRNOTAVAIL), ``mcast_source(ifindex)`` (the address a datagram sent on that
    interface comes from), ``ifname(ifindex)`` and ``mcast_output(src, dst, proto,
    payload, ttl=, tos=, df=, ifindex=, loop=)`` (the send with the socket's multicast
    TTL, interface and loop setting).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from stack.addr import Addr, is_multicast
from stack.packet import Buffer

INCLUDE = 1  # MCAST_INCLUDE (RFC 3678), the record types' numbering in RFC 3376
EXCLUDE = 2  # MCAST_EXCLUDE

#: per socket, as Linux's net.ipv4.igmp_max_memberships and igmp_max_msf
MAX_MEMBERSHIPS = 20
MAX_SOURCES = 10

ADD_SOURCE, DROP_SOURCE, BLOCK, UNBLOCK = "add", "drop", "block", "unblock"


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Filter:
    """An immutable filter: ``mode`` (INCLUDE/EXCLUDE) and ``sources``."""

    __slots__ = ("mode", "sources")

    def __init__(self, mode: int, sources: frozenset[Addr] = frozenset()) -> None:
        self.mode = mode
        self.sources = sources

    def allows(self, src: Addr) -> bool:
        return (src in self.sources) is (self.mode == INCLUDE)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.mode == self.mode \
            and other.sources == self.sources

    def __hash__(self) -> int:
        return hash((self.mode, self.sources))

    def __repr__(self) -> str:
        from stack.addr import format_addr

        srcs = ",".join(sorted(format_addr(s) for s in self.sources))
        return f"{'INCLUDE' if self.mode == INCLUDE else 'EXCLUDE'}({srcs})"


#: any-source membership
ASM = Filter(EXCLUDE)


def merge(filters: list[Filter]) -> Filter | None:
    """RFC 3376 §3.2: the interface's filter from its owners' (None: not a member)."""
    if not filters:
        return None
    excl = [f.sources for f in filters if f.mode == EXCLUDE]
    incl: frozenset[Addr] = frozenset().union(*(f.sources for f in filters
                                                 if f.mode == INCLUDE))
    if excl:
        return Filter(EXCLUDE, frozenset.intersection(*excl) - incl)
    if not incl:
        return None  # INCLUDE {}: not a member
    return Filter(INCLUDE, incl)


#: ``fn(ifindex, group, old, new)``; None is "not a member"
GroupListener = Callable[[int, Addr, Filter | None, Filter | None], None]


class GroupTable:
    """One family's interface-level membership: (ifindex, group) -> merged Filter."""

    def __init__(self) -> None:
        #: ifindex -> group -> the interface's filter (the input path reads this)
        self.by_if: dict[int, dict[Addr, Filter]] = {}
        #: (ifindex, group) -> owner id -> that owner's filter
        self._owners: dict[tuple[int, Addr], dict[int, Filter]] = {}
        self.listeners: list[GroupListener] = []

    def set(self, ifindex: int, group: Addr, owner: object, f: Filter | None) -> None:
        key = (ifindex, group)
        owners = self._owners.get(key)
        if f is None:
            if owners is None or owners.pop(id(owner), None) is None:
                return
        else:
            if owners is None:
                owners = self._owners[key] = {}
            owners[id(owner)] = f
        new = merge(list(owners.values()))
        if not owners:
            del self._owners[key]
        groups = self.by_if.get(ifindex)
        old = groups.get(group) if groups is not None else None
        if new is None:
            if groups is not None:
                groups.pop(group, None)
                if not groups:
                    del self.by_if[ifindex]
        else:
            if groups is None:
                groups = self.by_if[ifindex] = {}
            groups[group] = new
        if old != new:
            for fn in list(self.listeners):
                fn(ifindex, group, old, new)

    def state(self, ifindex: int, group: Addr) -> Filter | None:
        groups = self.by_if.get(ifindex)
        return groups.get(group) if groups is not None else None

    def accepts(self, ifindex: int, group: Addr, src: Addr) -> bool:
        groups = self.by_if.get(ifindex)
        if groups is None:
            return False
        f = groups.get(group)
        return f is not None and f.allows(src)

    def groups(self, ifindex: int) -> Mapping[Addr, Filter]:
        return self.by_if.get(ifindex, {})

    def forget_interface(self, ifindex: int) -> None:
        self.by_if.pop(ifindex, None)
        for key in [k for k in self._owners if k[0] == ifindex]:
            del self._owners[key]


class MulticastHost(Protocol):
    """What the socket options need of a family's IP layer (stack/inet/igmp.py ``Igmp``
    for IPv4)."""

    groups: GroupTable

    def mcast_ifindex(self, ifindex: int, addr: Addr | None, group: Addr | None) -> int:
        """The interface named by index, else by one of its addresses, else (neither
        given) the one the route to ``group`` leaves by. OSError ENODEV/EADDRNOTAVAIL."""
        ...

    def mcast_source(self, ifindex: int) -> Addr | None:
        """The source address of a datagram sent on ``ifindex`` (None: it has none)."""
        ...

    def ifname(self, ifindex: int) -> str | None: ...

    def mcast_output(self, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer],
                     *, ttl: int, tos: int, df: bool, ifindex: int, loop: bool) -> int:
        """Send to group ``dst`` with this TTL (hop limit), on ``ifindex`` (0: by route),
        a copy to this host's members when ``loop``. 0 or an errno, as ``output``."""
        ...


class SocketMulticast:
    """A socket's multicast options and memberships (see the module docstring)."""

    def __init__(self, host: MulticastHost) -> None:
        self.host = host
        self.ttl = 1
        self.loop = True
        self.ifindex = 0
        self.if_addr: Addr | None = None
        #: (ifindex, group) -> [mode, set of sources] (this socket's own filter)
        self.memberships: dict[tuple[int, Addr], tuple[int, set[Addr]]] = {}

    # -- delivery ----------------------------------------------------------------------
    def accepts(self, ifindex: int, group: Addr, src: Addr) -> bool:
        m = self.memberships.get((ifindex, group))
        if m is None:
            return False
        return (src in m[1]) is (m[0] == INCLUDE)

    # -- any-source ----------------------------------------------------------------------
    def join(self, ifindex: int, group: Addr) -> None:
        if not is_multicast(group):
            raise _err(errno.EINVAL)
        key = (ifindex, group)
        if key in self.memberships:
            raise _err(errno.EADDRINUSE)
        if len(self.memberships) >= MAX_MEMBERSHIPS:
            raise _err(errno.ENOBUFS)
        self.memberships[key] = (EXCLUDE, set())
        self._push(key)

    def leave(self, ifindex: int, group: Addr) -> None:
        key = (ifindex, group)
        if key not in self.memberships:
            raise _err(errno.EADDRNOTAVAIL)
        del self.memberships[key]
        self.host.groups.set(ifindex, group, self, None)

    def joined(self, group: Addr) -> list[int]:
        """The interfaces this socket joined ``group`` on."""
        return [i for (i, g) in self.memberships if g == group]

    # -- source filters ----------------------------------------------------------------
    def source(self, op: str, ifindex: int, group: Addr, src: Addr) -> None:
        """IP_ADD_SOURCE_MEMBERSHIP and friends, as Linux's ip_mc_source."""
        if not is_multicast(group):
            raise _err(errno.EINVAL)
        key = (ifindex, group)
        mode = INCLUDE if op in (ADD_SOURCE, DROP_SOURCE) else EXCLUDE
        m = self.memberships.get(key)
        if m is None:
            if op != ADD_SOURCE:
                raise _err(errno.EINVAL)  # must have a prior join
            if len(self.memberships) >= MAX_MEMBERSHIPS:
                raise _err(errno.ENOBUFS)
            m = (INCLUDE, set())
        elif m[0] != mode:
            if m[1]:
                raise _err(errno.EINVAL)  # a filter in the other mode
            m = (mode, m[1])  # an empty filter may switch modes
        sources = m[1]
        if op in (ADD_SOURCE, BLOCK):
            if src in sources:
                raise _err(errno.EADDRNOTAVAIL)
            if len(sources) >= MAX_SOURCES:
                raise _err(errno.ENOBUFS)
            sources.add(src)
        else:
            if src not in sources:
                raise _err(errno.EADDRNOTAVAIL)
            if mode == INCLUDE and len(sources) == 1:  # INCLUDE {} is a leave
                self.leave(ifindex, group)
                return
            sources.discard(src)
        self.memberships[key] = m
        self._push(key)

    def close(self) -> None:
        """Leave every group (the socket is closing)."""
        table = self.host.groups
        for ifindex, group in list(self.memberships):
            table.set(ifindex, group, self, None)
        self.memberships.clear()

    def _push(self, key: tuple[int, Addr]) -> None:
        mode, sources = self.memberships[key]
        self.host.groups.set(key[0], key[1], self, Filter(mode, frozenset(sources)))
