"""The built-in IPv4 layer (io-pkt-v4-hc's IP half): ARP, IPv4, ICMP, routing,
forwarding. ``attach(stack)`` builds it at start and registers it as the ``IPV4``
service (``stack.inet``), with EtherTypes IPv4 and ARP.

Layout (PyTCP/smoltcp style): ``wire/`` parses and emits the formats, the modules here
hold the logic: ``ipv4`` (the data path: input, output, forwarding, fragmentation),
``manage`` (its management API: addresses, routes, ARP operations, renderings, ping),
``ifaddr`` (interface addresses), ``arp``, ``icmp``, ``route``, ``reass``, ``timers``.
See docs/inet.md.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from stack.addr import LOOPBACK4, Prefix
from stack.inet.ifaddr import IfAddr
from stack.inet.ipv4 import IPv4Layer
from stack.l2.ether import ETHERTYPE_ARP, ETHERTYPE_IPV4
from stack.registry import AF_INET, TransportProtocol
from stack.services import IPV4

if TYPE_CHECKING:
    from stack.core import Stack

__all__ = ["attach", "IPv4Layer", "IfAddr"]


def attach(stack: Stack) -> None:
    inet = IPv4Layer(stack)
    reg = stack.registries
    reg.services.register(IPV4, inet)
    stack.l2.register(ETHERTYPE_IPV4, inet.input)
    stack.l2.register(ETHERTYPE_ARP, inet.arp.input)
    # transports registered for AF_INET (now or later, by a module) reach IPv4's demux
    reg.transports.watchers.append(functools.partial(_transport_changed, inet))
    for key, proto in reg.transports.items():
        _transport_changed(inet, key, proto)
    stack.iface_listeners.append(inet.iface_event)
    for iface in list(stack.interfaces.values()):
        inet.iface_event("attach", iface)
    inet.manage.add_address(stack.lo0.name, Prefix(LOOPBACK4, 8))
    inet.fastfwd = stack.l2.fastfwd
    stack.nursery.start_soon(inet.timers.run)


def _transport_changed(inet: IPv4Layer, key: tuple[int, int],
                       proto: TransportProtocol | None) -> None:
    family, number = key
    if family != AF_INET:
        return
    if proto is None:
        inet.unregister_protocol(number)
        inet.error_handlers.pop(number, None)
    else:
        inet.register_protocol(number, proto.input)
        inet.register_error_handler(number, proto.icmp_error)
