"""rmgr.libsocket's module-level API built on the socket: ``create_connection``,
``create_server``, and ``patch()``, which swaps the library into the stdlib ``socket``
module so unmodified programs (asyncio, selectors, http, urllib...) use the stack."""

from __future__ import annotations

import contextlib
import socket as _std
import sys
from collections.abc import Iterator
from socket import AF_INET, SOCK_STREAM, SOL_SOCKET
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


def has_dualstack_ipv6() -> bool:
    return False


def create_server(address: Address, *, family: int = AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> socket:
    if dualstack_ipv6 or not where.serves(family):
        raise ValueError(f"family {family} is not served by the stack")
    if reuse_port and not hasattr(_std, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT not supported on this platform")
    sock = socket(family, SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEPORT, 1)
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
            "fromfd", "has_dualstack_ipv6")


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

