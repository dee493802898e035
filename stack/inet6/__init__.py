"""The built-in IPv6 layer (io-pkt-v6-hc's IPv6 half): IPv6 with its extension headers
and reassembly, ICMPv6, Neighbor Discovery, SLAAC and DAD, MLDv2, forwarding and router
advertisements in router mode. ``attach(stack)`` builds it after IPv4 (whose route table
it shares), registers it as the ``IPV6`` service (``stack.inet6``) with EtherType
0x86DD, puts ::1 on lo0 and gives every interface its link-local address.

Layout as stack/inet: ``wire/`` parses and emits (``ipv6``: header and extension-header
chain; ``icmp6``: ICMPv6, ND, MLD), the modules here hold the logic: ``ipv6`` (the data
path), ``icmp6``, ``nd``, ``addrconf``, ``mld``, ``rtadv``, ``reass``, ``manage``,
``ifaddr`` (interface state and address helpers). See docs/inet6.md.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from stack.addr import AF_INET6, LOOPBACK6, Prefix
from stack.inet6.ipv6 import IPv6Layer
from stack.l2.ether import ETHERTYPE_IPV6
from stack.registry import TransportProtocol
from stack.services import IPV6

if TYPE_CHECKING:
    from stack.core import Stack

__all__ = ["attach", "IPv6Layer"]


def attach(stack: Stack) -> None:
    ip6 = IPv6Layer(stack, stack.inet.routes)
    reg = stack.registries
    reg.services.register(IPV6, ip6)
    stack.l2.register(ETHERTYPE_IPV6, ip6.input)
    reg.transports.watchers.append(functools.partial(_transport_changed, ip6))
    for key, proto in reg.transports.items():
        _transport_changed(ip6, key, proto)
    stack.iface_listeners.append(ip6.iface_event)
    for iface in list(stack.interfaces.values()):
        ip6.iface_event("attach", iface)
    ip6.manage.add_address(stack.lo0.name, Prefix(LOOPBACK6, 128), dad=False)
    stack.nursery.start_soon(ip6.timers.run)


def _transport_changed(ip6: IPv6Layer, key: tuple[int, int],
                       proto: TransportProtocol | None) -> None:
    family, number = key
    if family != AF_INET6:
        return
    if proto is None:
        ip6.unregister_protocol(number)
        ip6.error_handlers.pop(number, None)
    else:
        ip6.register_protocol(number, proto.input)
        ip6.register_error_handler(number, proto.icmp_error)
