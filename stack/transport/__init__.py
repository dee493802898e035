"""The transports: UDP, TCP and raw IP over a network layer.

``attach(stack)`` (called by ``stack.core`` after the IP layers) builds them over both
families (stack/network.py ``DualNetwork``: each datagram goes to the layer of its
destination's family), registers TCP and UDP as the transports 6 and 17 of AF_INET and
AF_INET6, the raw sockets as a raw tap of both layers, and the three as the
``TRANSPORTS`` service (``stack.tcp``, ``stack.udp``, ``stack.raw``); one connection
table serves both families (stack/addr.py ``Addr``). See docs/transport.md for the
socket API. ``Transports`` takes any ``NetworkLayer`` (stack/network.py): the tests use
an in-memory one (tests/transport/shim.py)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from stack.network import DualNetwork, NetworkLayer, RawTap
from stack.registry import AF_INET, AF_INET6, Registration, Registries
from stack.services import IPV6, TRANSPORTS
from stack.sysctl import Sysctl
from stack.transport.raw import RawProto, RawSocket
from stack.transport.tcp import TCPProto, TCPSocket
from stack.transport.udp import UDPProto, UDPSocket

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.transport")

__all__ = ["attach", "TCPProto", "TCPSocket", "UDPProto", "UDPSocket", "RawProto", "RawSocket",
           "Transports"]


class Transports:
    """The three protocols over one network layer (also used by tests with a fake one)."""

    def __init__(self, inet: NetworkLayer, sysctl: Sysctl | None = None) -> None:
        self.tcp = TCPProto(inet, sysctl)
        self.udp = UDPProto(inet, sysctl)
        self.raw = RawProto(inet)
        self.inet = inet

    def register(self, registries: Registries) -> list[Registration]:
        """TCP and UDP as the transports of each family served (AF_INET, and AF_INET6
        over a ``DualNetwork`` with IPv6); raw IP taps every local datagram of each."""
        net = self.inet
        layers = net.layers if isinstance(net, DualNetwork) else (net,)
        families = (AF_INET, AF_INET6) if len(layers) > 1 else (AF_INET,)
        regs = []
        for fam in families:
            regs += [registries.transports.register((fam, 6), self.tcp),
                     registries.transports.register((fam, 17), self.udp)]
        tap = self.raw.input
        for layer in layers:
            taps = layer.raw_taps
            taps.append(tap)
            regs.append(Registration("raw tap", functools.partial(_untap, taps, tap)))
        return regs


def _untap(taps: list[RawTap], tap: RawTap) -> None:
    if tap in taps:
        taps.remove(tap)


def attach(stack: Stack) -> None:
    ip6 = stack.services.get(IPV6)

    def ifname_for(index: int) -> str | None:
        for iface in stack.interfaces.values():
            if iface.index == index:
                return iface.name
        return None

    def index_of(addr: int) -> int:
        ia = ip6.local.get(addr) if ip6 is not None else None
        iface = stack.interfaces.get(ia.ifname) if ia is not None else None
        return iface.index if iface is not None else 0

    t = Transports(DualNetwork(stack.inet, ip6, ifname_for, index_of), stack.sysctl)
    t.register(stack.registries)
    t.tcp.batch = stack.rx_batch
    # each family's group memberships (IGMP, MLD) for the sockets' multicast options
    t.udp.multicast[AF_INET] = t.raw.multicast[AF_INET] = stack.inet.igmp
    if ip6 is not None:
        from stack.transport.mcast6 import Mcast6Host

        t.udp.multicast[AF_INET6] = t.raw.multicast[AF_INET6] = Mcast6Host(ip6)
    stack.services.register(TRANSPORTS, t)
    stack.nursery.start_soon(t.tcp.run)
