"""The transports: UDP, TCP and raw IP, attached to the IPv4 layer.

``attach(stack)`` (called by ``stack.core`` after ``stack.inet``) registers protocols 6
and 17 with ``stack.inet`` and exposes ``stack.tcp``, ``stack.udp`` and ``stack.raw``;
see docs/transport.md for the socket API."""

from __future__ import annotations

import logging
from typing import Any

from stack.transport.raw import RawProto, RawSocket
from stack.transport.tcp import TCPProto, TCPSocket
from stack.transport.udp import UDPProto, UDPSocket

log = logging.getLogger("io-pkt.transport")

__all__ = ["attach", "TCPProto", "TCPSocket", "UDPProto", "UDPSocket", "RawProto", "RawSocket",
           "Transports"]


class Transports:
    """The three protocols over one IP layer (also used by tests with a fake one)."""

    def __init__(self, inet: Any, sysctl: Any = None) -> None:
        self.tcp = TCPProto(inet, sysctl)
        self.udp = UDPProto(inet, sysctl)
        self.raw = RawProto(inet)
        inet.register_protocol(6, self.tcp.input)
        inet.register_protocol(17, self.udp.input)
        reg_err = getattr(inet, "register_error_handler", None)
        if reg_err is not None:
            reg_err(6, self.tcp.icmp_error)
            reg_err(17, self.udp.icmp_error)
        taps = getattr(inet, "raw_taps", None)
        if taps is not None:
            taps.append(self.raw.input)


def attach(stack: Any) -> None:
    inet = getattr(stack, "inet", None)
    if inet is None:
        log.error("transports: no IP layer (stack.inet) - TCP/UDP not attached")
        return
    t = Transports(inet, stack.sysctl)
    stack.tcp, stack.udp, stack.raw = t.tcp, t.udp, t.raw
    stack.transports = t
    stack.nursery.start_soon(t.tcp.run)
