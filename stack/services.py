"""The well-known services, in one place: ``stack.services.get(PF)`` is a ``Pf | None``.

A service is anything one part of the stack offers the others by name: the built-in
layers register theirs at attach, modules register theirs through their context
(``ctx.service(KEY, obj)``), which removes them at unload. A new module with a new
service declares its key in its own package, the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.registry import ServiceKey

if TYPE_CHECKING:
    # types only: the providers import this module at run time (to register), so a
    # run-time import the other way would be a cycle
    from stack.bpf.device import BpfDevice
    from stack.control import Control
    from stack.crypto.framework import Crypto
    from stack.dhcp import Dhcp
    from stack.dns import Resolver
    from stack.inet.ipv4 import IPv4Layer
    from stack.inet6.ipv6 import IPv6Layer
    from stack.pf.engine import Pf
    from stack.sockets.conn import SocketTable as OpenSockets
    from stack.transport import Transports

#: the IPv4 layer (ARP, ICMP, routes, forwarding)
IPV4: ServiceKey[IPv4Layer] = ServiceKey("ipv4")
#: the IPv6 layer (ND, ICMPv6, SLAAC, MLD, forwarding; stack/inet6)
IPV6: ServiceKey[IPv6Layer] = ServiceKey("ipv6")
#: TCP, UDP and raw IP over the IP layer
TRANSPORTS: ServiceKey[Transports] = ServiceKey("transports")
#: every open socket, whichever door made it
SOCKETS: ServiceKey[OpenSockets] = ServiceKey("sockets")
#: the config/ files and their change monitor
CONTROL: ServiceKey[Control] = ServiceKey("control")
#: lsm-pf's packet filter
PF: ServiceKey[Pf] = ServiceKey("pf")
#: lsm-bpf's capture device
BPF: ServiceKey[BpfDevice] = ServiceKey("bpf")
#: the resolver configuration its sources feed (DHCP, RA RDNSS) and the cs/dns files
RESOLVER: ServiceKey[Resolver] = ServiceKey("resolver")
#: the DHCP clients, one per interface (stack/dhcp)
DHCP: ServiceKey[Dhcp] = ServiceKey("dhcp")
#: the crypto framework: providers, sessions, requests (stack/crypto)
CRYPTO: ServiceKey[Crypto] = ServiceKey("crypto")
