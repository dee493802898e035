"""The transports: UDP, TCP and raw IP over a network layer.

``attach(stack)`` (called by ``stack.core`` after the IP layer) registers TCP and UDP
as the AF_INET transports 6 and 17, the raw sockets as a raw tap of the IPv4 layer, and
the three as the ``TRANSPORTS`` service (``stack.tcp``, ``stack.udp``, ``stack.raw``);
see docs/transport.md for the socket API. ``Transports`` takes any ``NetworkLayer``
(stack/network.py): the tests use an in-memory one (tests/transport/shim.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stack.network import NetworkLayer
from stack.registry import AF_INET, Registration, Registries
from stack.services import TRANSPORTS
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
        """TCP and UDP as AF_INET transports; raw IP taps every local datagram."""
        taps = self.inet.raw_taps
        tap = self.raw.input
        taps.append(tap)
        return [registries.transports.register((AF_INET, 6), self.tcp),
                registries.transports.register((AF_INET, 17), self.udp),
                Registration("raw tap", lambda: taps.remove(tap) if tap in taps else None)]


def attach(stack: Stack) -> None:
    t = Transports(stack.inet, stack.sysctl)
    t.register(stack.registries)
    # IPv4's group memberships (IGMP) for the sockets' multicast options
    t.udp.multicast[AF_INET] = t.raw.multicast[AF_INET] = stack.inet.igmp
    stack.services.register(TRANSPORTS, t)
    stack.nursery.start_soon(t.tcp.run)
