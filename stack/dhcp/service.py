"""What the DHCPv4 service (stack/dhcp/__init__.py ``Dhcp``) and the DHCPv6 one
(stack/dhcp/client6.py ``Dhcp6``) share: one client per interface, one UDP socket open
while any client runs (as dhclient's), a reader task handing each datagram to the client
whose transaction id it carries, and a task per client whose failure is logged, not
raised into the stack."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

if TYPE_CHECKING:  # the stack owns the service; types only
    from stack.core import Stack
    from stack.l2.iface import Interface
    from stack.transport.udp import UDPSocket


class RunningClient(Protocol):
    """What the service needs of a client (``Client``, ``Client6``)."""

    iface: Interface
    last_error: str

    async def run(self) -> None: ...


C = TypeVar("C", bound=RunningClient)


class ClientService(Generic[C]):
    """Clients by interface name, their transaction ids, the socket and its reader.
    A subclass makes the socket (``_make_socket``) and parses what comes
    (``dispatch``)."""

    #: what the log calls the protocol
    label = "DHCP"

    def __init__(self, stack: Stack, log: logging.Logger) -> None:
        self.stack = stack
        self.log = log
        self.clients: dict[str, C] = {}
        self._xids: dict[int, C] = {}
        self.sock: UDPSocket | None = None
        self._reader_scope: trio.CancelScope | None = None

    # -- transaction ids ------------------------------------------------------------------
    def register_xid(self, xid: int, client: C) -> None:
        self._xids[xid] = client

    def forget_xid(self, xid: int) -> None:
        self._xids.pop(xid, None)

    # -- the socket -------------------------------------------------------------------------
    def _make_socket(self) -> UDPSocket:
        raise NotImplementedError

    def dispatch(self, data: bytes) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        if self.sock is not None:
            return
        sock = self._make_socket()
        self.sock = sock
        self._reader_scope = trio.CancelScope()
        self.stack.nursery.start_soon(self._reader, sock, self._reader_scope)

    def _close_if_idle(self) -> None:
        if self.clients or self.sock is None:
            return
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        self.sock.close()
        self.sock = self._reader_scope = None

    async def _reader(self, sock: UDPSocket, scope: trio.CancelScope) -> None:
        """Every datagram to the client port goes to ``dispatch``."""
        with scope:
            while True:
                try:
                    data, _src = await sock.recvfrom(65536)
                except OSError:
                    return  # closed
                self.dispatch(data)

    # -- clients ----------------------------------------------------------------------------
    def _launch(self, client: C) -> None:
        """``client`` runs from now on, in the stack's nursery (the socket opened)."""
        self._open()
        self.clients[client.iface.name] = client
        self.stack.nursery.start_soon(self._run, client)

    async def _run(self, client: C) -> None:
        try:
            await client.run()
        except Exception:
            self.log.exception("%s: %s client failed", client.iface.name, self.label)
            client.last_error = "client failed (see the log)"
        finally:
            if self.clients.get(client.iface.name) is client:
                del self.clients[client.iface.name]
                self._close_if_idle()
