"""lsm-loopsock: a protocol module that adds a socket type, for tests/sockets/test_socket_types.py.

It registers (AF_INET, SOCK_DGRAM, 253) and (AF_INET6, SOCK_DGRAM, 253), both named
``loop`` with the alias ``loopback``, through its context (``ctx.register_socket``), so
both are removed when it unloads. A ``loop`` socket hands every datagram sent on it back
to itself, from its own address: enough to see the doors open it, the text door list it,
and sockaddr_in / sockaddr_in6 go in and out unchanged.
"""

from __future__ import annotations

import errno
import functools
import select
from collections import deque

from rmgr.libsocket import abi
from stack.addr import AF_INET, AF_INET6, unspecified
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.registry import SocketType
from stack.sockets.endpoint import Address, Endpoint

IPPROTO_EXPERIMENT = 253


class LoopEndpoint(Endpoint):
    type = abi.SOCK_DGRAM

    def __init__(self, family: int, proto: int) -> None:
        super().__init__()
        self.protocol = proto
        self.local = Address(unspecified(family), 0)
        self.peer: Address | None = None
        self.queue: deque[tuple[bytes, Address]] = deque()

    def poll_mask(self) -> int:
        return select.POLLOUT | (select.POLLIN if self.queue else 0)

    def state(self) -> int:
        if self.peer is not None:
            return abi.ST_CONNECTED
        return abi.ST_BOUND if self.local.port else abi.ST_CLOSED

    def bind(self, addr: Address) -> None:
        self.local = addr

    def connect(self, addr: Address) -> None:
        self.peer = addr

    def listen(self, backlog: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "datagrams")

    def accept_nowait(self) -> tuple[Endpoint, Address]:
        raise OSError(errno.EOPNOTSUPP, "datagrams")

    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int:
        if addr is None and self.peer is None:
            raise OSError(errno.EDESTADDRREQ, "no destination")
        self.queue.append((bytes(data), self.local))
        self.changed()
        return len(data)

    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        data, src = self.queue[0] if peek else self.queue.popleft()
        return data[:size], src

    def nread(self) -> int:
        return len(self.queue[0][0]) if self.queue else 0

    def shutdown(self, how: int) -> None:
        raise OSError(errno.ENOTCONN, "datagrams")

    def close(self) -> None:
        self.queue.clear()

    def abort(self) -> None:
        self.close()

    def getsockname(self) -> Address:
        return self.local

    def getpeername(self) -> Address:
        if self.peer is None:
            raise OSError(errno.ENOTCONN, "not connected")
        return self.peer

    def setsockopt(self, level: int, name: int, value: int | tuple[int, int]) -> None:
        raise OSError(errno.ENOPROTOOPT, "no options")

    def getsockopt(self, level: int, name: int) -> int | tuple[int, int]:
        raise OSError(errno.ENOPROTOOPT, "no options")

    def pop_error(self) -> int:
        return 0


async def main(ctx: ModuleContext) -> None:
    for family in (AF_INET, AF_INET6):
        ctx.register_socket(SocketType(
            family, abi.SOCK_DGRAM, IPPROTO_EXPERIMENT, functools.partial(LoopEndpoint, family),
            "loop", aliases=(("loopback", IPPROTO_EXPERIMENT),)))
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="test: a socket type of its own")
