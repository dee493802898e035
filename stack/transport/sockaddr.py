"""Socket addresses of the transports: ``stack.addr.Endpoint`` in and out.

The transports' socket API takes an ``Endpoint`` (what the socket layer hands over) and
returns ``Endpoint`` values (``getsockname``, ``getpeername``, ``accept``, ``recvfrom``).
In-stack users (tests, bench, tools) may also pass what Python's ``socket`` module takes,
``(host, port)`` with a text host (``""`` for any); ``endpoint()`` / ``host_addr()`` here
are the one conversion. A socket serves one family: an address of the other one is
EAFNOSUPPORT, as Linux answers a sockaddr of the wrong family - except that an AF_INET6
socket takes IPv4 addresses too (IPv4-mapped, ``::ffff:a.b.c.d``: in stack/addr.py that
*is* the IPv4 address) unless it is IPV6_V6ONLY. A scope id (``ScopedEndpoint``, or the
fourth item of Python's ``(host, port, flowinfo, scope_id)``) comes back from
``endpoint_scope``.
"""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv6Address

from stack.addr import (
    AF_INET,
    AF_INET6,
    ANY4,
    ANY6,
    Addr,
    Endpoint,
    family,
    from_ip,
    parse_addr,
    unspecified,
)
from stack.transport.sockopt import sock_error

#: what the socket API takes: an ``Endpoint``, or ``(host, port)`` as Python's socket does
SockAddr = Endpoint | tuple[object, int]

#: either family's unspecified address: ``a in UNSPECIFIED`` is ``stack.addr.is_unspecified``
#: without a call (the transports test bound addresses per datagram)
UNSPECIFIED: frozenset[Addr] = frozenset({ANY4, ANY6})


def _family_ok(a: Addr, fam: int, v6only: bool) -> None:
    f = family(a)
    if f == fam or (fam == AF_INET6 and f == AF_INET and not v6only):
        return
    raise sock_error(errno.EAFNOSUPPORT)


def host_addr(host: object, fam: int, v6only: bool = False) -> Addr:
    """An address for a socket of family ``fam`` from an ``Addr``, text, an ``ipaddress``
    object, or ``""`` / ``None`` (the family's unspecified address). An AF_INET6 socket
    takes IPv4 (mapped) addresses unless ``v6only``."""
    if host is None or host == "":
        return unspecified(fam)
    if isinstance(host, int):
        a = Addr(host)
    elif isinstance(host, str):
        try:
            a = parse_addr(host.partition("%")[0])
        except ValueError:
            raise sock_error(errno.EINVAL, f"bad address {host!r}") from None
    elif isinstance(host, IPv4Address | IPv6Address):
        a = from_ip(host)
    else:
        raise sock_error(errno.EINVAL, f"bad address {host!r}")
    _family_ok(a, fam, v6only)
    return a


def endpoint_scope(address: SockAddr | object, fam: int,
                   v6only: bool = False) -> tuple[Endpoint, int]:
    """(``Endpoint``, scope id) for a socket of family ``fam`` from an ``Endpoint`` (a
    ``ScopedEndpoint`` carries its scope), ``(host, port)`` or, for AF_INET6, ``(host,
    port, flowinfo, scope_id)``."""
    scope = 0
    if isinstance(address, Endpoint):
        a, port = address
        _family_ok(a, fam, v6only)
        scope = getattr(address, "scope_id", 0)
    else:
        try:
            if isinstance(address, tuple) and len(address) == 4 and fam == AF_INET6:
                host, port, _flow, scope = address
                scope = int(scope)
            else:
                host, port = address  # type: ignore[misc]
            port = int(port)
        except (TypeError, ValueError):
            raise sock_error(errno.EINVAL, "address must be (host, port)") from None
        a = host_addr(host, fam, v6only)
    if not 0 <= port <= 65535:
        raise sock_error(errno.EINVAL, f"port {port} out of range")
    return Endpoint(a, port), scope


def endpoint(address: SockAddr | object, fam: int, v6only: bool = False) -> Endpoint:
    """An ``Endpoint`` for a socket of family ``fam`` from an ``Endpoint`` or a ``(host,
    port)`` pair (the scope id, if any, dropped: ``endpoint_scope`` keeps it)."""
    if type(address) is Endpoint:  # the socket layer's: no conversion
        a = address.addr
        if family(a) != fam:
            _family_ok(a, fam, v6only)
        return address
    return endpoint_scope(address, fam, v6only)[0]


def any_for(fam: int) -> Addr:
    """What an unbound socket of ``fam`` is bound to: ``0.0.0.0`` or ``::``."""
    return ANY6 if fam == AF_INET6 else ANY4


def overlaps(a: Addr, a_v6only: bool, b: Addr, b_v6only: bool) -> bool:
    """Do local addresses ``a`` and ``b`` (with their sockets' IPV6_V6ONLY) share a
    port's traffic, so that binding both is a conflict (Linux's inet_bind_conflict and
    ipv6_rcv_saddr_equal): equal; or one unspecified covering the other's family - an
    AF_INET6 ``::`` covers IPv4 too unless IPV6_V6ONLY."""
    if a == b:
        return True
    if a == ANY4:
        return family(b) == AF_INET or (b == ANY6 and not b_v6only)
    if b == ANY4:
        return family(a) == AF_INET or (a == ANY6 and not a_v6only)
    if a == ANY6:
        return family(b) == AF_INET6 or not a_v6only
    if b == ANY6:
        return family(a) == AF_INET6 or not b_v6only
    return False


def accepts(laddr: Addr, v6only: bool, dst: Addr) -> bool:
    """Does a socket bound to ``laddr`` receive what is sent to ``dst``: the same
    address, or its family's unspecified one (``::`` also IPv4 unless IPV6_V6ONLY)."""
    if laddr == dst:
        return True
    if laddr == ANY4:
        return dst >> 32 == 0xFFFF
    if laddr == ANY6:
        return dst >> 32 != 0xFFFF or not v6only
    return False
