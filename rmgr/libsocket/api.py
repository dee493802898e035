"""rmgr.libsocket's module-level API built on the socket: ``create_connection``,
``create_server``, and ``patch()``, which swaps the library into the stdlib ``socket``
module so unmodified programs (asyncio, selectors, http, urllib...) use the stack."""

from __future__ import annotations

import contextlib
import socket as _std
import sys
from collections.abc import Iterator
from socket import AF_INET, AF_INET6, IPPROTO_IPV6, IPV6_V6ONLY, SOCK_STREAM, SOL_SOCKET
from typing import Any

from . import where
from .resolver import getaddrinfo
from .sock import Address, socket

_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def create_connection(address: Address, timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
                      source_address: Address | None = None, *,
                      all_errors: bool = False) -> socket:
    host, port = address[0], address[1]
    exceptions: list[OSError] = []
    for af, socktype, proto, _canon, sa in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(af, socktype, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sa)
            exceptions.clear()
            return sock
        except OSError as exc:
            exceptions.append(exc)
            if sock is not None:
                sock.close()
    if exceptions:
        try:
            if not all_errors:
                raise exceptions[0]
            raise ExceptionGroup("create_connection failed", exceptions)  # noqa: F821
        finally:
            exceptions.clear()
    raise OSError("getaddrinfo returns an empty list")


#: the stack speaks IPv6 (as the stdlib's constant: whether a given stack serves it is
#: ``has_dualstack_ipv6()``)
has_ipv6 = True


def has_dualstack_ipv6() -> bool:
    """Whether the stack serves AF_INET6 sockets (every one of which can be dual-stack:
    IPV6_V6ONLY off)."""
    return where.serves(AF_INET6)


def create_server(address: Address, *, family: int = AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> socket:
    """As the stdlib's: an AF_INET6 server is IPV6_V6ONLY unless ``dualstack_ipv6``,
    which accepts IPv4 clients too (seen as ``::ffff:a.b.c.d``)."""
    if not where.serves(family):
        raise ValueError(f"family {family} is not served by the stack")
    if dualstack_ipv6 and family != AF_INET6:
        raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    if reuse_port and not hasattr(_std, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT not supported on this platform")
    sock = socket(family, SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEPORT, 1)
        if family == AF_INET6:
            sock.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0 if dualstack_ipv6 else 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror} (while attempting to bind on address "
                                     f"{address!r})") from None
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
        return sock
    except OSError:
        sock.close()
        raise


_PATCHED = ("socket", "SocketType", "create_connection", "create_server", "getaddrinfo",
            "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getfqdn", "getnameinfo",
            "fromfd", "has_dualstack_ipv6", "has_ipv6", "if_nametoindex", "if_indextoname",
            "if_nameindex")


@contextlib.contextmanager
def patch(prefix: str | None = None) -> Iterator[None]:
    """Within the block, the stdlib ``socket`` module (and so asyncio, selectors,
    socketserver, http, urllib, ...) uses the stack for AF_INET."""
    saved = {name: getattr(_std, name) for name in _PATCHED}
    saved_prefix = where.override()
    if prefix is not None:
        where.setsockprefix(prefix)
    # the package's names, not this module's: what ``rmgr.libsocket`` exports is what a
    # program gets (run-time lookup: the package imports this module)
    here = sys.modules[__package__ or "rmgr.libsocket"]
    try:
        for name in _PATCHED:
            setattr(_std, name, getattr(here, name))
        yield
    finally:
        for name, value in saved.items():
            setattr(_std, name, value)
        if prefix is not None:
            where.restore(saved_prefix)

