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
one error path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stack.addr import Addr
from stack.packet import Buffer, Packet, TxMeta

Payload = Sequence[Buffer]


@dataclass(slots=True)
class IPInfo:
    """What the network layer tells a transport about a received datagram (header
    already validated). ``payload`` is a zero-copy view of the transport header + data.
    ``ttl``/``tos`` are IPv6's hop limit and traffic class there."""

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

#: control input: (icmp_type, icmp_code, src, dst of the quoted datagram, its transport
#: header onwards, extra: e.g. the next-hop MTU)
ErrorHandler = Callable[[int, int, Addr, Addr, memoryview, int], None]


class NetworkLayer(Protocol):
    """What the transports need of the network layer. Methods return errno values on the
    data path (0 = sent), never raise there."""

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
