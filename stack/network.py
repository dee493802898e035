"""The narrow interface between a network layer and the transports, for both families
(gVisor's NetworkEndpoint / TransportDispatcher; NetBSD's pr_input / pr_ctlinput).

A network layer (IPv4 in stack/inet, IPv6 next in stack/inet6) delivers to the
transports registered for its family in ``stack.registries.transports`` (stack/
registry.py ``TransportProtocol``: ``input(info)`` and ``icmp_error(...)``), and the
transports send through a ``NetworkLayer``. Addresses are stack/addr.py ``Addr`` values
throughout (IPv4-mapped for IPv4), so a transport never looks at a family except to
pick header sizes: ``family(addr)``.

Control input (``icmp_error``) speaks ICMPv4's (type, code) vocabulary for both
families, as NetBSD's PRC_* codes do: an IPv6 layer maps ICMPv6 errors onto it
(destination unreachable / port → (3, 3), packet too big → (3, 4) with the MTU in
``extra``, time exceeded → (11, 0), parameter problem → (12, 0)), so the transports keep
one error path: ``control_errno(type, code)`` is the errno a socket sees.

A transport's header sizes depend on the family only through ``net_header_len(addr)``
(IPv4's 20 bytes, IPv6's 40): its MSS is ``route_mtu(dst) - net_header_len(dst) - 20``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stack.addr import Addr, is_v4
from stack.packet import Buffer, Packet, TxMeta

Payload = Sequence[Buffer]


@dataclass(slots=True)
class IPInfo:
    """What the network layer tells a transport about a received datagram (header
    already validated). ``payload`` is a zero-copy view of the transport header + data.
    ``ttl``/``tos`` are IPv6's hop limit and traffic class there. ``broadcast``: the
    datagram was sent to a broadcast or multicast address (a transport never answers
    those with a RST or an error, and TCP drops them)."""

    src: Addr
    dst: Addr
    proto: int
    ttl: int
    tos: int
    payload: memoryview
    pkt: Packet | None
    csum_valid: bool  # the device/kernel vouched for the transport checksum
    broadcast: bool = False


#: transport receive: (IPInfo) -> None
TransportHandler = Callable[[IPInfo], None]

#: raw tap: every datagram delivered locally (raw sockets); True = a socket took it (so
#: no "protocol unreachable" goes back for a protocol nothing else handles)
RawTap = Callable[[IPInfo], bool]

#: control input: (icmp_type, icmp_code, src, dst of the quoted datagram, its transport
#: header onwards, extra: e.g. the next-hop MTU)
ErrorHandler = Callable[[int, int, Addr, Addr, memoryview, int], None]


class NetworkLayer(Protocol):
    """What the transports need of the network layer. Methods return errno values on the
    data path (0 = sent), never raise there."""

    #: raw taps (``RawTap``), called before the protocol's handler
    raw_taps: list[RawTap]

    def output(self, src: Addr | None, dst: Addr, proto: int, payload: Payload, *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None) -> int:
        """Route, choose the source when ``src`` is None or unspecified, fragment when
        allowed, resolve the next hop, send. ``meta.needs_csum``: the checksum field
        holds the pseudo-header sum (CHECKSUM_PARTIAL), completed here or offloaded.
        Buffers must not change afterwards (they may wait for neighbour resolution)."""
        ...

    def source_for(self, dst: Addr) -> Addr | None:
        """The source address a datagram to ``dst`` gets (None: no route)."""
        ...

    def is_local(self, addr: Addr) -> bool: ...

    def is_broadcast(self, addr: Addr) -> bool: ...

    def route_mtu(self, dst: Addr) -> int:
        """Path MTU toward ``dst`` (the route's, the interface's, or a learned PMTU)."""
        ...

    def route_offloads(self, dst: Addr) -> set[str]:
        """What the egress interface can finish: "csum", "tso4", "tso6"..."""
        ...

    def original_packet(self, info: IPInfo) -> memoryview:
        """The received datagram from its network header on (raw sockets, ICMP errors)."""
        ...

    def port_unreachable(self, info: IPInfo) -> bool:
        """Answer ``info`` with the family's "port unreachable" (rate-limited; False
        when suppressed)."""
        ...


def net_header_len(addr: int) -> int:
    """The fixed network header of ``addr``'s family: 20 bytes for IPv4, 40 for IPv6."""
    return 20 if is_v4(addr) else 40


# -- control input vocabulary (ICMPv4's type and code numbers, for both families) ----------
ERR_UNREACH = 3        #: destination unreachable; code below
ERR_TIME_EXCEEDED = 11
ERR_PARAM_PROBLEM = 12
UNREACH_NET, UNREACH_HOST, UNREACH_PROTOCOL, UNREACH_PORT, UNREACH_NEEDFRAG = 0, 1, 2, 3, 4
UNREACH_SRCFAIL = 5

#: errno a socket (or ping) sees for destination unreachable, by code (BSD icmp_errmap,
#: Linux icmp_err_convert); other codes are EHOSTUNREACH
UNREACH_ERRNO = {
    UNREACH_NET: errno.ENETUNREACH,
    UNREACH_HOST: errno.EHOSTUNREACH,
    UNREACH_PROTOCOL: errno.ENOPROTOOPT,
    UNREACH_PORT: errno.ECONNREFUSED,
    UNREACH_NEEDFRAG: errno.EMSGSIZE,
    UNREACH_SRCFAIL: errno.EOPNOTSUPP,
}


def control_errno(icmp_type: int, code: int) -> int:
    """The errno for a control input (an ICMP error); 0: nothing for a socket (redirect,
    source quench...)."""
    if icmp_type == ERR_UNREACH:
        return UNREACH_ERRNO.get(code, errno.EHOSTUNREACH)
    if icmp_type == ERR_TIME_EXCEEDED:
        return errno.EHOSTUNREACH
    if icmp_type == ERR_PARAM_PROBLEM:
        return errno.EPROTO
    return 0


class DualNetwork:
    """Both families behind one ``NetworkLayer`` (the transports' view of a dual-stack
    host): each call goes to the layer of its destination's family (``v4`` for
    IPv4-mapped addresses, ``v6`` for the rest), so one TCP, one UDP and one raw protocol
    serve AF_INET and AF_INET6 sockets with one connection table. ``v6`` may be None (a
    stack without IPv6: IPv6 destinations are unreachable). The dispatch is one shift and
    compare (``a >> 32 == 0xFFFF`` is ``is_v4`` for a 128-bit ``Addr``); TCP's emitter
    (tcp/emit.py) does it inline and calls the layers' ``output`` directly.

    ``ifname_for(index)`` names the interface of a scope id (sin6_scope_id), for sockets
    that talk to link-local addresses; ``index_of(addr)`` is the index of the interface
    holding our address ``addr`` (the scope id a link-local socket name reports)."""

    def __init__(self, v4: NetworkLayer, v6: NetworkLayer | None,
                 ifname_for: Callable[[int], str | None] | None = None,
                 index_of: Callable[[int], int] | None = None) -> None:
        self.v4 = v4
        self.v6 = v6
        self._ifname_for = ifname_for
        self._index_of = index_of
        #: not used for delivery (each layer calls its own taps); the transports append
        #: their raw tap to every layer in ``layers``
        self.raw_taps: list[RawTap] = []
        self.layers: tuple[NetworkLayer, ...] = (v4,) if v6 is None else (v4, v6)

    def ifname_for(self, index: int) -> str | None:
        """The name of the interface with this index (None: none, or 0)."""
        if not index or self._ifname_for is None:
            return None
        return self._ifname_for(index)

    def index_of(self, addr: int) -> int:
        return self._index_of(addr) if self._index_of is not None else 0

    def output(self, src: Addr | None, dst: Addr, proto: int, payload: Payload, *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None) -> int:
        if dst >> 32 == 0xFFFF:
            return self.v4.output(src, dst, proto, payload, ttl=ttl, tos=tos, df=df, meta=meta,
                                  ifname=ifname, on_error=on_error)
        v6 = self.v6
        if v6 is None:
            return errno.EAFNOSUPPORT
        return v6.output(src, dst, proto, payload, ttl=ttl, tos=tos, df=df, meta=meta,
                         ifname=ifname, on_error=on_error)

    def source_for(self, dst: Addr, ifname: str | None = None) -> Addr | None:
        if dst >> 32 == 0xFFFF:
            return self.v4.source_for(dst)
        v6 = self.v6
        if v6 is None:
            return None
        if ifname is None:
            return v6.source_for(dst)
        return v6.source_for(dst, ifname)  # type: ignore[call-arg]

    def is_local(self, addr: Addr) -> bool:
        if addr >> 32 == 0xFFFF:
            return self.v4.is_local(addr)
        return self.v6 is not None and self.v6.is_local(addr)

    def is_broadcast(self, addr: Addr) -> bool:
        if addr >> 32 == 0xFFFF:
            return self.v4.is_broadcast(addr)
        return self.v6 is not None and self.v6.is_broadcast(addr)

    def route_mtu(self, dst: Addr) -> int:
        if dst >> 32 == 0xFFFF:
            return self.v4.route_mtu(dst)
        return self.v6.route_mtu(dst) if self.v6 is not None else 0

    def route_offloads(self, dst: Addr) -> set[str]:
        if dst >> 32 == 0xFFFF:
            return self.v4.route_offloads(dst)
        return self.v6.route_offloads(dst) if self.v6 is not None else set()

    def original_packet(self, info: IPInfo) -> memoryview:
        if info.dst >> 32 == 0xFFFF or self.v6 is None:
            return self.v4.original_packet(info)
        return self.v6.original_packet(info)

    def port_unreachable(self, info: IPInfo) -> bool:
        if info.dst >> 32 == 0xFFFF or self.v6 is None:
            return self.v4.port_unreachable(info)
        return self.v6.port_unreachable(info)


def scoped_source(net: NetworkLayer, dst: Addr, ifname: str | None) -> Addr | None:
    """``net.source_for(dst)``, on interface ``ifname`` when given (a scope id: only a
    ``DualNetwork`` or an IPv6 layer takes one)."""
    if ifname is None:
        return net.source_for(dst)
    return net.source_for(dst, ifname)  # type: ignore[call-arg]


def scope_ifname(net: NetworkLayer, scope_id: int) -> str | None:
    """The interface a scope id names (None: 0, unknown, or a layer without scopes)."""
    if not scope_id or not isinstance(net, DualNetwork):
        return None
    return net.ifname_for(scope_id)
