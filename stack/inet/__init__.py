"""The built-in IPv4 layer (io-pkt-v4-hc's IP half): ARP, IPv4, ICMP, routing,
forwarding. ``attach(stack)`` builds it as ``stack.inet`` at start.

Layout (PyTCP/smoltcp style): ``wire/`` parses and emits the formats, the modules here
hold the logic: ``ipv4`` (the layer and its management API), ``arp``, ``icmp``,
``route``, ``reass``, ``timers``. See docs/inet.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.inet.ipv4 import IfAddr, IPv4Layer
from stack.l2.ether import ETHERTYPE_ARP, ETHERTYPE_IPV4

if TYPE_CHECKING:
    from stack.core import Stack

__all__ = ["attach", "IPv4Layer", "IfAddr"]


def attach(stack: Stack) -> None:
    inet = IPv4Layer(stack)
    stack.inet = inet  # type: ignore[attr-defined]
    stack.l2.register(ETHERTYPE_IPV4, inet.input)
    stack.l2.register(ETHERTYPE_ARP, inet.arp.input)
    stack.iface_listeners.append(inet.iface_event)
    for iface in list(stack.interfaces.values()):
        inet.iface_event("attach", iface)
    inet.add_address(stack.lo0.name, "127.0.0.1/8")
    _hook_optional(stack, inet)
    stack.nursery.start_soon(inet.timers.run)


def _hook_optional(stack: Stack, inet: IPv4Layer) -> None:
    """The fast-forward cache and pfil hooks live in layer 2's files; use them when they
    exist (their interfaces are documented in docs/inet.md)."""
    ff = getattr(stack.l2, "fastfwd", None)
    if ff is not None:
        inet.fastfwd = ff
