"""Sockets through files: the socket door (``2/<type>/<proto>``, ``inet/...``) and the
text door (``tcp/``, ``udp/``), both over one ``SocketTable``. See docs/sockets.md."""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from rmgr.libsocket import abi
from rmgr.nodes import Directory, Handle, HandleFile, OpenRequest
from stack.services import SOCKETS

from .conn import Conn, EndpointFactory, SocketTable
from .door import SocketHandle
from .text import TextDoor

if TYPE_CHECKING:
    from stack.core import Stack

__all__ = ["attach", "SocketDoor", "SocketTable", "Conn", "SocketHandle", "TextDoor"]

DEFAULT_PROTO = {abi.SOCK_STREAM: 6, abi.SOCK_DGRAM: 17}


class SocketDoor:
    def __init__(self, table: SocketTable) -> None:
        self.table = table
        self._raw_nodes: dict[int, HandleFile] = {}

    def node(self, sock_type: int, proto: int) -> HandleFile:
        mode = 0o600 if sock_type == abi.SOCK_RAW else 0o666
        return HandleFile(lambda req: self.open_socket(sock_type, proto, req), mode=mode)

    def raw_node(self, proto: int) -> HandleFile:
        node = self._raw_nodes.get(proto)
        if node is None:
            node = self._raw_nodes[proto] = self.node(abi.SOCK_RAW, proto)
        return node

    def open_socket(self, sock_type: int, proto: int, req: OpenRequest) -> Handle:
        if sock_type == abi.SOCK_RAW and not req.caller.is_root:
            raise OSError(errno.EPERM, "raw sockets need root")
        if sock_type in DEFAULT_PROTO and proto not in (0, DEFAULT_PROTO[sock_type]):
            raise OSError(errno.EPROTONOSUPPORT, f"protocol {proto} is not for this type")
        if sock_type == abi.SOCK_RAW and not 0 < proto < 256:
            raise OSError(errno.EPROTONOSUPPORT, "raw sockets need a protocol 1-255")
        conn = self.table.create(sock_type, proto or DEFAULT_PROTO.get(sock_type, 0),
                                 uid=req.caller.uid, gid=req.caller.gid)
        try:
            return SocketHandle(self.table, conn, req.caller, req.nonblock)
        except BaseException:
            conn.close(abort=True)
            raise

    def publish(self, tree: Directory) -> None:
        tcp, udp = self.node(abi.SOCK_STREAM, 6), self.node(abi.SOCK_DGRAM, 17)
        inet = Directory({
            "1": Directory({"0": tcp, "6": tcp}),
            "2": Directory({"0": udp, "17": udp}),
            "3": Directory({str(p): self.raw_node(p) for p in (1, 6, 17, 255)},
                           dynamic=lambda: _RawNodes(self)),
        })
        tree.add("2", inet)
        tree.add("inet", Directory({
            "tcp": tcp, "stream": tcp, "udp": udp, "dgram": udp,
            "icmp": self.raw_node(1),
            "raw": Directory({str(p): self.raw_node(p) for p in (1, 6, 17, 255)},
                             dynamic=lambda: _RawNodes(self)),
        }))


class _RawNodes(Mapping[str, HandleFile]):
    def __init__(self, door: SocketDoor) -> None:
        self.door = door

    def __getitem__(self, name: str) -> HandleFile:
        if not name.isdigit() or not 0 < int(name) < 256 or name != str(int(name)):
            raise KeyError(name)
        return self.door.raw_node(int(name))

    def __iter__(self) -> Iterator[str]:
        return iter([str(p) for p in sorted(self.door._raw_nodes)])

    def __len__(self) -> int:
        return len(self.door._raw_nodes)


def attach(stack: Stack, factory: EndpointFactory | None = None) -> None:
    """Publish both doors into ``stack.tree`` (called by stack.core at start)."""
    if factory is None:
        from .backend import endpoint_factory

        factory = endpoint_factory(stack)
    spawn = stack.nursery.start_soon if stack.nursery is not None else None
    table = SocketTable(factory, spawn)
    stack.services.register(SOCKETS, table)
    SocketDoor(table).publish(stack.tree)
    TextDoor(table).publish(stack.tree)
