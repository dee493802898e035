"""Socket addresses of the transports: ``stack.addr.Endpoint`` in and out.

The transports' socket API takes an ``Endpoint`` (what the socket layer hands over) and
returns ``Endpoint`` values (``getsockname``, ``getpeername``, ``accept``, ``recvfrom``).
In-stack users (tests, bench, tools) may also pass what Python's ``socket`` module takes,
``(host, port)`` with a text host (``""`` for any); ``endpoint()`` / ``host_addr()`` here
are the one conversion. A socket serves one family: an address of the other one is
EAFNOSUPPORT, as Linux answers a sockaddr of the wrong family.
"""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv6Address

from stack.addr import ANY4, ANY6, Addr, Endpoint, family, from_ip, parse_addr, unspecified
from stack.transport.sockopt import sock_error

#: what the socket API takes: an ``Endpoint``, or ``(host, port)`` as Python's socket does
SockAddr = Endpoint | tuple[object, int]

#: either family's unspecified address: ``a in UNSPECIFIED`` is ``stack.addr.is_unspecified``
#: without a call (the transports test bound addresses per datagram)
UNSPECIFIED: frozenset[Addr] = frozenset({ANY4, ANY6})


def host_addr(host: object, fam: int) -> Addr:
    """An address of family ``fam`` from an ``Addr``, text, an ``ipaddress`` object, or
    ``""`` / ``None`` (the family's unspecified address)."""
    if host is None or host == "":
        return unspecified(fam)
    if isinstance(host, int):
        a = Addr(host)
    elif isinstance(host, str):
        try:
            a = parse_addr(host)
        except ValueError:
            raise sock_error(errno.EINVAL, f"bad address {host!r}") from None
    elif isinstance(host, IPv4Address | IPv6Address):
        a = from_ip(host)
    else:
        raise sock_error(errno.EINVAL, f"bad address {host!r}")
    if family(a) != fam:
        raise sock_error(errno.EAFNOSUPPORT)
    return a


def endpoint(address: SockAddr | object, fam: int) -> Endpoint:
    """An ``Endpoint`` of family ``fam`` from an ``Endpoint`` or a ``(host, port)`` pair."""
    if type(address) is Endpoint:
        a, port = address
        if family(a) != fam:
            raise sock_error(errno.EAFNOSUPPORT)
    else:
        try:
            host, port = address  # type: ignore[misc]
            port = int(port)
        except (TypeError, ValueError):
            raise sock_error(errno.EINVAL, "address must be (host, port)") from None
        a = host_addr(host, fam)
    if not 0 <= port <= 65535:
        raise sock_error(errno.EINVAL, f"port {port} out of range")
    return Endpoint(a, port)
