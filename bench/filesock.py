"""The socket API of bench/peer.py's client modes over one file of
bench/floor/fuse_relay.c, whose open connects a kernel socket: each ``sendall`` is one
``os.write`` (one FUSE WRITE), each ``recv``/``recv_into`` one ``os.read``/``os.readv``
(one FUSE READ), as through rmgr.libsocket with the stack's files. The floor rows
(bench/floors.py) run the unchanged client loops on it."""

from __future__ import annotations

import os
import socket
from typing import Any


class FileSocket:
    """One opened relay file; the relay chose the peer when it connected."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def settimeout(self, _t: float | None) -> None:
        """The file is blocking; the relay's connect has its own timeout."""

    def setsockopt(self, *_args: Any) -> None:
        """The relay sets TCP_NODELAY on every socket it connects."""

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def recv(self, n: int) -> bytes:
        return b"" if self.fd < 0 else os.read(self.fd, n)

    def recv_into(self, buf: bytearray) -> int:
        return 0 if self.fd < 0 else os.readv(self.fd, [buf])

    def shutdown(self, _how: int) -> None:
        """The relay shuts the socket down and reads to the peer's close when the file is
        closed (a FUSE file has no half-close): the rest of the exchange is done then, and
        reads here see EOF."""
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileSockets:
    """What peer.py's client modes take from the ``socket`` module."""

    IPPROTO_TCP = socket.IPPROTO_TCP
    TCP_NODELAY = socket.TCP_NODELAY
    SHUT_WR = socket.SHUT_WR

    def __init__(self, path: str) -> None:
        self.path = path

    def create_connection(self, _addr: tuple[str, int], timeout: float | None = None
                          ) -> FileSocket:
        return FileSocket(self.path)
