"""The built-in AF_INET and AF_INET6 rows of the socket table (NetBSD's inetsw[] and
inet6sw[] for the doors).

What each row makes is the caller's: ``stack.sockets.backend.socket_types`` gives them
the stack's transports, the tests' kernel double gives them the host's sockets. The doors
show every row (``2/1/6``, ``inet/tcp``, ``tcp/clone`` ...) from the table alone, so a
row registered later (AF_INET6, a module's protocol) needs no change there.
"""

from __future__ import annotations

from rmgr.libsocket import abi
from stack.registry import AF_INET, AF_INET6, SocketFactory, SocketType, SocketTypes

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58


def inet_socket_types(*, tcp: SocketFactory, udp: SocketFactory,
                      raw: SocketFactory) -> list[SocketType]:
    """TCP and UDP (the defaults of their types) and raw IP (root; any protocol 1-255)."""
    return [
        SocketType(AF_INET, abi.SOCK_STREAM, IPPROTO_TCP, tcp, "tcp", default=True,
                   aliases=(("stream", IPPROTO_TCP),)),
        SocketType(AF_INET, abi.SOCK_DGRAM, IPPROTO_UDP, udp, "udp", default=True,
                   aliases=(("dgram", IPPROTO_UDP),)),
        SocketType(AF_INET, abi.SOCK_RAW, SocketTypes.ANY, raw, "raw", privileged=True,
                   aliases=(("icmp", IPPROTO_ICMP),)),
    ]


def inet6_socket_types(*, tcp: SocketFactory, udp: SocketFactory,
                       raw: SocketFactory) -> list[SocketType]:
    """The AF_INET6 rows (``24/...``, ``inet6/tcp``, ``inet6/udp``, ``inet6/raw/P``,
    ``inet6/icmp6``). Their names are the AF_INET rows' (``tcp``, ``udp``, ``raw``): the
    text door lists sockets of both families under one ``tcp/``, ``udp/``, as Plan 9's
    /net does."""
    return [
        SocketType(AF_INET6, abi.SOCK_STREAM, IPPROTO_TCP, tcp, "tcp", default=True,
                   aliases=(("stream", IPPROTO_TCP),)),
        SocketType(AF_INET6, abi.SOCK_DGRAM, IPPROTO_UDP, udp, "udp", default=True,
                   aliases=(("dgram", IPPROTO_UDP),)),
        SocketType(AF_INET6, abi.SOCK_RAW, SocketTypes.ANY, raw, "raw", privileged=True,
                   aliases=(("icmp6", IPPROTO_ICMPV6),)),
    ]
