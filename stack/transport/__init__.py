"""The transports: UDP, TCP and raw IP, attached to the IPv4 layer.

``attach(stack)`` (called by ``stack.core`` after the IP layer) registers TCP and UDP
as the AF_INET transports 6 and 17 and the three as the ``TRANSPORTS`` service
(``stack.tcp``, ``stack.udp``, ``stack.raw``); see docs/transport.md for the socket API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from stack.registry import AF_INET, Registration, Registries
from stack.services import TRANSPORTS
from stack.transport.raw import RawProto, RawSocket
from stack.transport.tcp import TCPProto, TCPSocket
from stack.transport.udp import UDPProto, UDPSocket

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.transport")

__all__ = ["attach", "TCPProto", "TCPSocket", "UDPProto", "UDPSocket", "RawProto", "RawSocket",
           "Transports"]


class Transports:
    """The three protocols over one IP layer (also used by tests with a fake one)."""

    def __init__(self, inet: Any, sysctl: Any = None) -> None:
        self.tcp = TCPProto(inet, sysctl)
        self.udp = UDPProto(inet, sysctl)
        self.raw = RawProto(inet)
        self.inet = inet

    def register(self, registries: Registries) -> list[Registration]:
        """TCP and UDP as AF_INET transports; raw IP taps every local datagram."""
        regs = [registries.transports.register((AF_INET, 6), self.tcp),
                registries.transports.register((AF_INET, 17), self.udp)]
        self.inet.raw_taps.append(self.raw.input)
        return regs

    def attach_direct(self) -> None:
        """Without a stack (tests over a fake IP layer): wire straight into ``inet``."""
        self.inet.register_protocol(6, self.tcp.input)
        self.inet.register_protocol(17, self.udp.input)
        self.inet.register_error_handler(6, self.tcp.icmp_error)
        self.inet.register_error_handler(17, self.udp.icmp_error)
        self.inet.raw_taps.append(self.raw.input)


def attach(stack: Stack) -> None:
    t = Transports(stack.inet, stack.sysctl)
    t.register(stack.registries)
    stack.services.register(TRANSPORTS, t)
    stack.nursery.start_soon(t.tcp.run)
