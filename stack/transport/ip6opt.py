"""The IPPROTO_IPV6 socket options of AF_INET6 sockets (RFC 3493, RFC 3542), with
Linux's numbers and value layouts, and the received datagram's ancillary facts.

==========================  ==========================================================
IPV6_V6ONLY (26)            the socket's ``::`` takes no IPv4 (default off, as Linux's
                            net.ipv6.bindv6only=0); only before bind/connect
IPV6_UNICAST_HOPS (16)      hop limit of unicast datagrams (-1: the default); the same
                            field as IP_TTL (which an IPv4 peer of a dual-stack socket
                            gets)
IPV6_TCLASS (67)            traffic class (-1: 0); the same field as IP_TOS
IPV6_DONTFRAG (62)          UDP/raw: never fragment at the source, EMSGSIZE instead
IPV6_MULTICAST_IF (17)      ifindex (0: by route)            \\  stack/transport/mcast6.py,
IPV6_MULTICAST_HOPS (18)    -1..255 (-1: 1)                   |  over the family-neutral
IPV6_MULTICAST_LOOP (19)    0/1 (default 1)                   |  membership model of
IPV6_JOIN_GROUP (20)        ``struct ipv6_mreq`` (group,      |  stack/multicast.py
IPV6_LEAVE_GROUP (21)       ifindex; 0: by route)            /
IPV6_RECVPKTINFO (49)       UDP/raw: record each datagram's destination and interface
IPV6_RECVHOPLIMIT (51)      ... its hop limit
IPV6_RECVTCLASS (66)        ... its traffic class
IPV6_PKTINFO (50)           sticky ``struct in6_pktinfo`` (source address, ifindex) for
                            what the socket sends (RFC 3542 §6.1)
==========================  ==========================================================

What a datagram was received with reaches the socket door as a ``RecvEndpoint`` (the
source endpoint carrying the destination, interface, hop limit and traffic class); the
door's ``IOP_RECVINFO`` returns it for the datagram read last, and rmgr.libsocket's
``recvmsg`` turns it into IPV6_PKTINFO / IPV6_HOPLIMIT / IPV6_TCLASS control messages.
"""

from __future__ import annotations

import errno
import sys
from typing import Any, Protocol

from stack.addr import Addr, ScopedEndpoint, addr_from_bytes
from stack.network import DualNetwork, NetworkLayer
from stack.transport.sockopt import sock_error

IPPROTO_IPV6 = 41
IPV6_UNICAST_HOPS = 16
IPV6_MULTICAST_IF = 17
IPV6_MULTICAST_HOPS = 18
IPV6_MULTICAST_LOOP = 19
IPV6_JOIN_GROUP = 20
IPV6_LEAVE_GROUP = 21
IPV6_V6ONLY = 26
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_DONTFRAG = 62
IPV6_RECVTCLASS = 66
IPV6_TCLASS = 67

#: the recv flags (``sock.recv6``) and what IOP_RECVINFO's ``flags`` say is valid
RECV_PKTINFO, RECV_HOPLIMIT, RECV_TCLASS = 1, 2, 4
_RECV_OPTS = {IPV6_RECVPKTINFO: RECV_PKTINFO, IPV6_RECVHOPLIMIT: RECV_HOPLIMIT,
              IPV6_RECVTCLASS: RECV_TCLASS}
MCAST_OPTIONS = frozenset({IPV6_MULTICAST_IF, IPV6_MULTICAST_HOPS, IPV6_MULTICAST_LOOP,
                           IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP})

_NATIVE = sys.byteorder


def int_value(value: Any) -> int:
    """An int option value (an int, or the 4 native bytes setsockopt(2) passes)."""
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) >= 4:
            return int.from_bytes(b[:4], _NATIVE, signed=True)
        if len(b) >= 1:
            return b[0]
    raise sock_error(errno.EINVAL)


class HasIP6Options(Protocol):
    ttl: int | None
    tos: int


def set_common(target: HasIP6Options, opt: int, value: Any) -> None:
    """IPV6_UNICAST_HOPS, IPV6_TCLASS and (where the socket has ``df``)
    IPV6_DONTFRAG, as Linux takes them; ENOPROTOOPT for the rest."""
    if opt == IPV6_UNICAST_HOPS:
        v = int_value(value)
        if not -1 <= v <= 255:
            raise sock_error(errno.EINVAL)
        target.ttl = None if v == -1 else v
    elif opt == IPV6_TCLASS:
        v = int_value(value)
        if not -1 <= v <= 255:
            raise sock_error(errno.EINVAL)
        target.tos = 0 if v == -1 else v
    elif opt == IPV6_DONTFRAG and hasattr(target, "df"):
        target.df = bool(int_value(value))
    else:
        raise sock_error(errno.ENOPROTOOPT)


def get_common(target: HasIP6Options, opt: int, default_hops: int = 64) -> int:
    if opt == IPV6_UNICAST_HOPS:
        return target.ttl if target.ttl is not None else default_hops
    if opt == IPV6_TCLASS:
        return target.tos
    if opt == IPV6_DONTFRAG and hasattr(target, "df"):
        return int(target.df)
    raise sock_error(errno.ENOPROTOOPT)


class HasDatagram6(HasIP6Options, Protocol):
    recv6: int
    v6only: bool
    pktinfo: tuple[Addr | None, int] | None
    df: bool


def set_datagram(target: HasDatagram6, opt: int, value: Any, bound: bool) -> None:
    """The options of UDP and raw AF_INET6 sockets beyond ``set_common`` (multicast
    excepted: mcast6.py)."""
    if opt == IPV6_V6ONLY:
        if bound:
            raise sock_error(errno.EINVAL)
        target.v6only = bool(int_value(value))
    elif opt in _RECV_OPTS:
        bit = _RECV_OPTS[opt]
        target.recv6 = target.recv6 | bit if int_value(value) else target.recv6 & ~bit
    elif opt == IPV6_PKTINFO:
        b = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""
        if len(b) == 0:
            target.pktinfo = None
            return
        if len(b) < 20:
            raise sock_error(errno.EINVAL)
        src = addr_from_bytes(b[:16])
        ifindex = int.from_bytes(b[16:20], _NATIVE, signed=True)
        target.pktinfo = (None if src == 0 else src, ifindex)
    else:
        set_common(target, opt, value)


def get_datagram(target: HasDatagram6, opt: int) -> int | bytes:
    if opt == IPV6_V6ONLY:
        return int(target.v6only)
    if opt in _RECV_OPTS:
        return int(bool(target.recv6 & _RECV_OPTS[opt]))
    if opt == IPV6_PKTINFO:
        src, ifindex = target.pktinfo or (None, 0)
        return (src or 0).to_bytes(16, "big") + ifindex.to_bytes(4, _NATIVE, signed=True)
    return get_common(target, opt)


class RecvEndpoint(ScopedEndpoint):
    """A received datagram's source, with what IPV6_RECVPKTINFO / RECVHOPLIMIT /
    RECVTCLASS asked to keep: ``dst`` (the address it was sent to), ``ifindex`` (where
    it arrived), ``hlim`` and ``tclass``; ``flags`` says which (RECV_*)."""

    dst: Addr
    ifindex: int
    hlim: int
    tclass: int
    flags: int

    def __new__(cls, addr: Addr, port: int, scope_id: int = 0) -> RecvEndpoint:
        return super().__new__(cls, addr, port, scope_id)  # type: ignore[return-value]


def recv_endpoint(src: Addr, port: int, scope_id: int, flags: int, dst: Addr, ifindex: int,
                  hlim: int, tclass: int) -> RecvEndpoint:
    ep = RecvEndpoint(src, port, scope_id)
    ep.flags, ep.dst, ep.ifindex, ep.hlim, ep.tclass = flags, dst, ifindex, hlim, tclass
    return ep


def scope_index(net: NetworkLayer, laddr: int) -> int:
    """The interface index of our link-local address ``laddr`` (0: none)."""
    if not isinstance(net, DualNetwork):
        return 0
    return net.index_of(laddr)
