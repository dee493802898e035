"""Sockets through files: the socket door (``2/<type>/<proto>``, ``inet/...``) and the
text door (``tcp/``, ``udp/``), both over one ``SocketTable`` of open sockets, both made
from the stack's socket types (``stack.registries.sockets``). See docs/sockets.md.

``attach`` registers the built-in AF_INET rows (stack/sockets/inet.py, made by
stack/sockets/backend.py over the transports) and publishes both doors; a row registered
later, by the stack or by a module (``ModuleContext.register_socket``), is served by both
doors from then on and removed with its registration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.services import SOCKETS

from .conn import Conn, SocketTable
from .door import SocketHandle
from .endpoint import Address, Endpoint
from .inet import inet_socket_types
from .text import TextDoor
from .tree import SocketDoor

if TYPE_CHECKING:
    # types only: the Stack owns this part and the part holds the Stack
    from stack.core import Stack

__all__ = ["attach", "Address", "Conn", "Endpoint", "SocketDoor", "SocketHandle",
           "SocketTable", "TextDoor", "inet_socket_types"]


def attach(stack: Stack) -> None:
    """Register the built-in socket types and publish both doors into ``stack.tree``
    (called by stack.core at start, after the transports)."""
    from . import backend

    types = stack.registries.sockets
    for row in backend.socket_types(stack):
        types.register(row)
    spawn = stack.nursery.start_soon if stack.nursery is not None else None
    table = SocketTable(types, spawn)
    stack.services.register(SOCKETS, table)
    SocketDoor(table, stack.tree).publish()
    TextDoor(table, stack.tree).publish()
