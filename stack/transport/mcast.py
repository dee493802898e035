"""The IPv4 multicast socket options of UDP and raw sockets, as Linux takes them, and
the transports' multicast send and receive checks. The memberships themselves are
stack/multicast.py's ``SocketMulticast`` (``sock.mcast``, made at the first option), the
interface side its family's ``MulticastHost`` (IPv4: stack/inet/igmp.py), which the
transports find in ``proto.multicast`` by family.

Options (level IPPROTO_IP, Linux numbers and layouts; values are the bytes
setsockopt(2) takes, an int where Linux takes an int or a char):

==========================  ==========================================================
IP_MULTICAST_IF (32)        ``struct in_addr`` (an interface's address; 0.0.0.0: by
                            route again), ``struct ip_mreq`` (its second field) or
                            ``struct ip_mreqn`` (address, ifindex); get: the in_addr
IP_MULTICAST_TTL (33)       0-255, -1 = 1 (the default); 0 stays on this host
IP_MULTICAST_LOOP (34)      deliver our own datagrams to sockets here (default 1)
IP_ADD_MEMBERSHIP (35)      ``struct ip_mreq`` (group, interface address: 0.0.0.0 = by
IP_DROP_MEMBERSHIP (36)     route to the group) or ``struct ip_mreqn`` (+ ifindex)
IP_ADD_SOURCE_MEMBERSHIP    ``struct ip_mreq_source`` (group, interface, source):
IP_DROP_SOURCE_MEMBERSHIP   source-specific (INCLUDE mode), RFC 3678
IP_BLOCK_SOURCE             ... any-source with sources excluded (EXCLUDE mode)
IP_UNBLOCK_SOURCE
==========================  ==========================================================

Delivery: a UDP socket receives a multicast datagram only for a group it joined on the
interface it arrived on, from a source its filter passes (BSD's rule; Linux's default
IP_MULTICAST_ALL=1, which hands a socket every group any socket joined, is not copied).
A raw socket with no memberships receives every multicast datagram of its protocol the
host accepted (BSD's rip_input; an IGMP daemon's socket), one with memberships only
theirs.
"""

from __future__ import annotations

import errno
import socket as _s
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from stack.addr import ANY4, Addr, addr_bytes, addr_from_bytes, is_multicast
from stack.multicast import (
    ADD_SOURCE,
    BLOCK,
    DROP_SOURCE,
    UNBLOCK,
    MulticastHost,
    SocketMulticast,
)
from stack.network import IPInfo
from stack.packet import Buffer
from stack.transport.sockopt import sock_error

IP_MULTICAST_IF = getattr(_s, "IP_MULTICAST_IF", 32)
IP_MULTICAST_TTL = getattr(_s, "IP_MULTICAST_TTL", 33)
IP_MULTICAST_LOOP = getattr(_s, "IP_MULTICAST_LOOP", 34)
IP_ADD_MEMBERSHIP = getattr(_s, "IP_ADD_MEMBERSHIP", 35)
IP_DROP_MEMBERSHIP = getattr(_s, "IP_DROP_MEMBERSHIP", 36)
IP_UNBLOCK_SOURCE = getattr(_s, "IP_UNBLOCK_SOURCE", 37)
IP_BLOCK_SOURCE = getattr(_s, "IP_BLOCK_SOURCE", 38)
IP_ADD_SOURCE_MEMBERSHIP = getattr(_s, "IP_ADD_SOURCE_MEMBERSHIP", 39)
IP_DROP_SOURCE_MEMBERSHIP = getattr(_s, "IP_DROP_SOURCE_MEMBERSHIP", 40)

_SOURCE_OPS = {IP_ADD_SOURCE_MEMBERSHIP: ADD_SOURCE, IP_DROP_SOURCE_MEMBERSHIP: DROP_SOURCE,
               IP_BLOCK_SOURCE: BLOCK, IP_UNBLOCK_SOURCE: UNBLOCK}

#: options whose value is a struct: the socket door hands their bytes over as they are
STRUCT_OPTIONS = frozenset({IP_MULTICAST_IF, IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP,
                            *_SOURCE_OPS})
#: every option this module handles (level IPPROTO_IP)
OPTIONS = STRUCT_OPTIONS | {IP_MULTICAST_TTL, IP_MULTICAST_LOOP}

_NATIVE = sys.byteorder


class HasMulticast(Protocol):
    family: int
    mcast: SocketMulticast | None


S = TypeVar("S", bound=HasMulticast)


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, int):
        return value.to_bytes(4, _NATIVE, signed=value < 0)
    raise sock_error(errno.EINVAL)


def _int(value: Any) -> int:
    """An int or char option value (Linux takes either for these)."""
    if isinstance(value, int):
        return value
    b = _bytes(value)
    if len(b) >= 4:
        return int.from_bytes(b[:4], _NATIVE, signed=True)
    if len(b) >= 1:
        return b[0]
    raise sock_error(errno.EINVAL)


def _addr(b: bytes) -> Addr | None:
    a = addr_from_bytes(b)
    return None if a == ANY4 else a


def _mreqn(b: bytes) -> tuple[Addr, Addr | None, int]:
    """(group, interface address or None, ifindex) of an ip_mreq / ip_mreqn."""
    if len(b) < 8:
        raise sock_error(errno.EINVAL)
    ifindex = int.from_bytes(b[8:12], _NATIVE, signed=True) if len(b) >= 12 else 0
    return addr_from_bytes(b[:4]), _addr(b[4:8]), ifindex


def state(sock: HasMulticast, hosts: dict[int, MulticastHost]) -> SocketMulticast:
    m = sock.mcast
    if m is None:
        host = hosts.get(sock.family)
        if host is None:
            raise sock_error(errno.ENOPROTOOPT)
        m = sock.mcast = SocketMulticast(host)
    return m


def set_option(sock: HasMulticast, hosts: dict[int, MulticastHost], opt: int,
               value: Any) -> None:
    m = state(sock, hosts)
    host = m.host
    if opt == IP_MULTICAST_TTL:
        v = _int(value)
        if not -1 <= v <= 255:
            raise sock_error(errno.EINVAL)
        m.ttl = 1 if v == -1 else v
    elif opt == IP_MULTICAST_LOOP:
        m.loop = bool(_int(value))
    elif opt == IP_MULTICAST_IF:
        b = _bytes(value)
        if len(b) >= 12:
            _g, addr, ifindex = _mreqn(b)
        elif len(b) >= 8:
            addr, ifindex = _addr(b[4:8]), 0
        elif len(b) >= 4:
            addr, ifindex = _addr(b[:4]), 0
        else:
            raise sock_error(errno.EINVAL)
        if addr is None and not ifindex:
            m.ifindex, m.if_addr = 0, None
            return
        try:
            m.ifindex = host.mcast_ifindex(ifindex, addr, None)
        except OSError as exc:
            raise sock_error(errno.EADDRNOTAVAIL if ifindex == 0 else exc.errno or errno.ENODEV) \
                from None
        m.if_addr = addr
    elif opt in (IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP):
        group, addr, ifindex = _mreqn(_bytes(value))
        if not is_multicast(group):
            raise sock_error(errno.EINVAL)
        if opt == IP_ADD_MEMBERSHIP:
            m.join(host.mcast_ifindex(ifindex, addr, group), group)
        else:
            m.leave(_leave_ifindex(m, host, group, addr, ifindex), group)
    elif opt in _SOURCE_OPS:
        b = _bytes(value)
        if len(b) < 12:
            raise sock_error(errno.EINVAL)
        group, addr, src = addr_from_bytes(b[:4]), _addr(b[4:8]), addr_from_bytes(b[8:12])
        if not is_multicast(group):
            raise sock_error(errno.EINVAL)
        op = _SOURCE_OPS[opt]
        ifindex = host.mcast_ifindex(0, addr, group) if op == ADD_SOURCE \
            else _leave_ifindex(m, host, group, addr, 0)
        m.source(op, ifindex, group, src)
    else:
        raise sock_error(errno.ENOPROTOOPT)


def _leave_ifindex(m: SocketMulticast, host: MulticastHost, group: Addr, addr: Addr | None,
                   ifindex: int) -> int:
    """The membership a drop names: the interface given, else (none given) the one the
    route leaves by, else the only interface this socket joined ``group`` on."""
    try:
        idx = host.mcast_ifindex(ifindex, addr, group)
    except OSError:
        idx = 0
    if (idx, group) in m.memberships or ifindex or addr is not None:
        return idx
    joined = m.joined(group)
    return joined[0] if joined else idx


def get_option(sock: HasMulticast, opt: int) -> int | bytes:
    m = sock.mcast
    if opt == IP_MULTICAST_TTL:
        return m.ttl if m is not None else 1
    if opt == IP_MULTICAST_LOOP:
        return int(m.loop) if m is not None else 1
    if opt == IP_MULTICAST_IF:
        a = m.if_addr if m is not None and m.if_addr is not None else ANY4
        return addr_bytes(a)
    raise sock_error(errno.ENOPROTOOPT)


# -- data path -------------------------------------------------------------------------
def receivers(socks: Sequence[S], info: IPInfo, *, raw: bool = False) -> list[S]:
    """The sockets among ``socks`` that take multicast ``info`` (joined on the interface
    it came in on, and their filter passes its source); ``raw``: a socket that never
    used a multicast option takes every one."""
    pkt = info.pkt
    ifindex = pkt.iface.index if pkt is not None and pkt.iface is not None else 0
    out = []
    for s in socks:
        m = s.mcast
        if m is None:
            if raw:
                out.append(s)
        elif m.accepts(ifindex, info.dst, info.src) or (raw and not m.memberships):
            out.append(s)
    return out


def send(sock: HasMulticast, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer],
         hosts: dict[int, MulticastHost], *, tos: int, df: bool) -> int:
    """Send to multicast ``dst`` with the socket's multicast TTL, interface and loop
    setting (the family's ``MulticastHost.mcast_output``). Returns 0 or an errno."""
    m = sock.mcast
    host = m.host if m is not None else hosts.get(sock.family)
    if host is None:
        return errno.ENETUNREACH
    if m is None:
        return host.mcast_output(src, dst, proto, payload, ttl=1, tos=tos, df=df,
                                 ifindex=0, loop=True)
    if src is None and m.if_addr is not None:
        src = m.if_addr
    return host.mcast_output(src, dst, proto, payload, ttl=m.ttl, tos=tos, df=df,
                             ifindex=m.ifindex, loop=m.loop)


def source(sock: HasMulticast, dst: Addr, hosts: dict[int, MulticastHost]) -> Addr | None:
    """The source of a datagram to multicast ``dst`` when the socket chose the interface
    (IP_MULTICAST_IF): its address, or the interface's; None: by route."""
    m = sock.mcast
    if m is None:
        return None
    if m.if_addr is not None:
        return m.if_addr
    if m.ifindex:
        return m.host.mcast_source(m.ifindex)
    return None


# -- the text door's ctl commands ------------------------------------------------------------
#: verb -> (option, what follows the group: "if", "src [if]", "value")
TEXT_VERBS = {
    "addmulti": IP_ADD_MEMBERSHIP, "remmulti": IP_DROP_MEMBERSHIP,
    "addsource": IP_ADD_SOURCE_MEMBERSHIP, "remsource": IP_DROP_SOURCE_MEMBERSHIP,
    "block": IP_BLOCK_SOURCE, "unblock": IP_UNBLOCK_SOURCE,
    "mcastif": IP_MULTICAST_IF, "mcastttl": IP_MULTICAST_TTL, "mcastloop": IP_MULTICAST_LOOP,
}


def text_option(verb: str, args: list[str]) -> tuple[int, bytes | int]:
    """A text-door ctl command as (option, value): ``addmulti GROUP [IFADDR]``,
    ``remmulti GROUP [IFADDR]``, ``addsource|remsource|block|unblock GROUP SOURCE
    [IFADDR]``, ``mcastif IFADDR`` (``*``: by route), ``mcastttl N``, ``mcastloop on|off``.
    ValueError for a malformed one."""
    from stack.addr import parse_addr

    def a4(text: str) -> bytes:
        if text in ("*", "0", ""):
            return bytes(4)
        b = addr_bytes(parse_addr(text))
        if len(b) != 4:
            raise ValueError(text)
        return b

    opt = TEXT_VERBS[verb]
    if opt in (IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP) and 1 <= len(args) <= 2:
        return opt, a4(args[0]) + a4(args[1] if len(args) > 1 else "*")
    if opt in _SOURCE_OPS and 2 <= len(args) <= 3:
        return opt, a4(args[0]) + a4(args[2] if len(args) > 2 else "*") + a4(args[1])
    if opt == IP_MULTICAST_IF and len(args) == 1:
        return opt, a4(args[0])
    if opt == IP_MULTICAST_TTL and len(args) == 1:
        return opt, int(args[0])
    if opt == IP_MULTICAST_LOOP and len(args) == 1 and args[0] in ("on", "off", "1", "0"):
        return opt, int(args[0] in ("on", "1"))
    raise ValueError(" ".join([verb, *args]))


__all__ = ["OPTIONS", "STRUCT_OPTIONS", "TEXT_VERBS", "get_option", "receivers", "send",
           "set_option", "source", "state", "text_option"]
