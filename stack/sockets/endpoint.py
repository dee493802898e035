"""What the socket files need from a transport socket: the ``Endpoint`` interface.

The socket layer drives transports only through non-blocking calls (``*_nowait``,
raising ``BlockingIOError``) plus one readiness callback; every blocking operation of the
socket door is built here as "try, else wait for a change, retry". That makes every
blocking call cancellation-safe: a cancelled (EINTR) recv/accept never loses data,
because nothing is taken from a queue until it can be handed to the caller.

Addresses are ``stack.addr.Endpoint`` (an ``Addr`` of either family and a port): the
doors decode sockaddrs into them and encode them back (rmgr/libsocket/abi.py), the text
door parses ``HOST!PORT`` into them, and an endpoint hands them to its transport.

``stack.sockets.backend`` adapts the stack's own transports (``stack.tcp``,
``stack.udp``, ``stack.raw``) to this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from rmgr.libsocket import abi
from stack.addr import Endpoint as Address
from stack.packet import Buffer, send_each

__all__ = ["Address", "Endpoint"]


class Endpoint(abc.ABC):
    """One transport socket seen from the socket files."""

    type: int = abi.SOCK_STREAM
    protocol: int = 0

    def __init__(self) -> None:
        self._listener: Callable[[], None] | None = None

    # -- readiness -------------------------------------------------------------------
    def set_listener(self, fn: Callable[[], None] | None) -> None:
        """``fn()`` is called (synchronously, from the stack) on every change of
        readiness or state."""
        self._listener = fn

    def changed(self) -> None:
        if self._listener is not None:
            self._listener()

    @abc.abstractmethod
    def poll_mask(self) -> int: ...

    @abc.abstractmethod
    def state(self) -> int:
        """One of ``abi.ST_*``."""

    # -- setup -----------------------------------------------------------------------
    @abc.abstractmethod
    def bind(self, addr: Address) -> None: ...

    @abc.abstractmethod
    def connect(self, addr: Address) -> None:
        """Start connecting (TCP) or set the peer (UDP/raw). Returns at once; for TCP
        the state is ST_CONNECTING until the handshake ends (then ``pop_error()``
        tells how)."""

    @abc.abstractmethod
    def listen(self, backlog: int) -> None: ...

    @abc.abstractmethod
    def accept_nowait(self) -> tuple[Endpoint, Address]: ...

    # -- data ------------------------------------------------------------------------
    @abc.abstractmethod
    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int: ...

    def send_many_nowait(self, datas: list[memoryview], addr: Address | None = None) -> int:
        """Datagrams to one destination (a message-mode write's run of records): how
        many went. The first's error raises; a later one's ends the run (sendmmsg).
        A transport that can send them at once (UDP's USO) overrides this."""
        return send_each(lambda d: self.send_nowait(d, addr), datas)

    @abc.abstractmethod
    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        """Stream: up to ``size`` bytes (``b""`` at EOF). Datagram: one datagram cut
        to ``size``. Raises BlockingIOError when there is nothing. ``peek`` (MSG_PEEK)
        leaves what it returns in the queue."""

    def recv_gather_nowait(self, size: int) -> tuple[list[Buffer], int, Address | None]:
        """``recv_nowait`` in pieces: (pieces, their size, source). A stream transport
        that queues what it received in chunks overrides this to hand them over
        without a copy; the pieces must not change afterwards."""
        data, addr = self.recv_nowait(size)
        return [data], len(data), addr

    @abc.abstractmethod
    def nread(self) -> int:
        """Bytes readable now (stream) or the size of the next datagram."""

    def next_datagram(self) -> int | None:
        """Datagram sockets: the size of the datagram queued first, None when none is
        (an empty datagram is 0). Message mode reads it to flag a cut datagram and to
        take more datagrams into one read only when they are there and fit; None (the
        default) makes every such read one datagram, never flagged."""
        return None

    # -- teardown --------------------------------------------------------------------
    @abc.abstractmethod
    def shutdown(self, how: int) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Orderly close (FIN); with SO_LINGER on and 0 seconds the transport resets."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Reset (RST) and forget."""

    # -- names and options -----------------------------------------------------------
    @abc.abstractmethod
    def getsockname(self) -> Address: ...

    @abc.abstractmethod
    def getpeername(self) -> Address: ...

    @abc.abstractmethod
    def setsockopt(self, level: int, name: int, value: int | tuple[int, int] | bytes) -> None:
        """An int, SO_LINGER's (onoff, seconds), or a C struct's bytes (ip_mreq...)."""

    @abc.abstractmethod
    def getsockopt(self, level: int, name: int) -> int | tuple[int, int] | bytes:
        """An int, a (onoff, seconds) linger pair, or a C struct's bytes (TCP_INFO)."""

    def set_family(self, family: int) -> bool:
        """Make a fresh socket (not bound, not connected) one of ``family`` (the door's
        numbering): the text door's ``tcp/clone`` makes an AF_INET socket that becomes
        AF_INET6 at its first IPv6 address. False: not possible (the default)."""
        return False

    @abc.abstractmethod
    def pop_error(self) -> int:
        """SO_ERROR: the pending error (0 if none), cleared by reading."""
