"""A test double: an ``Endpoint`` over the host kernel's own sockets.

It lets the socket files, rmgr.libsocket and the C examples be tested end to end through
FUSE independently of the stack's transports (the same tests then run on the stack)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import select
import socket
import struct
import termios

import trio

from rmgr.libsocket import abi
from stack.addr import format_addr, parse_addr
from stack.registry import SocketType
from stack.sockets.endpoint import Address, Endpoint
from stack.sockets.inet import inet_socket_types


def _k(addr: Address) -> tuple[str, int]:
    """The kernel's address of one of the socket layer's."""
    return format_addr(addr.addr), addr.port


def _a(addr: tuple[str, int]) -> Address:
    return Address(parse_addr(addr[0]), addr[1])


class KernelEndpoint(Endpoint):
    def __init__(self, nursery: trio.Nursery, sock_type: int, proto: int,
                 sock: socket.socket | None = None, state: int = abi.ST_CLOSED) -> None:
        super().__init__()
        self.type = sock_type
        self.protocol = proto
        self.sock = sock or socket.socket(socket.AF_INET, sock_type, proto)
        self.sock.setblocking(False)
        self._state = state
        self._err = 0
        self._kick = trio.Event()
        self._closed = False
        self._reported = -1  # the mask _watch last reported with changed()
        self._lowered = 0  # bits of it that an operation has cleared since
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN | select.POLLOUT)
        nursery.start_soon(self._watch)

    # -- readiness ---------------------------------------------------------------------
    def _mask(self) -> int:
        ev = self._poller.poll(0)
        return ev[0][1] if ev else 0

    def kick(self) -> None:
        # an operation (recv, accept ...) may have lowered the mask; the watcher may only
        # run after the peer has raised it again, and a poller that saw it low must
        # still be woken: remember what went low
        if not self._closed:
            self._lowered |= self._reported & ~self._mask()
        self._kick.set()

    async def _watch(self) -> None:
        while not self._closed:
            mask = self._mask()
            if self._state == abi.ST_CONNECTING and mask & (select.POLLOUT | select.POLLERR
                                                            | select.POLLHUP):
                self._err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self._state = abi.ST_CLOSED if self._err else abi.ST_CONNECTED
                self._reported = -1
            if mask != self._reported or mask & self._lowered:
                self._reported, self._lowered = mask, 0
                self.changed()
            self._kick = trio.Event()
            async with trio.open_nursery() as n:
                async def waiter(fn, *a) -> None:  # type: ignore[no-untyped-def]
                    # close() may come first (fd -1) or wake us (ClosedResourceError):
                    # either way this round is over and the loop ends
                    with contextlib.suppress(trio.ClosedResourceError):
                        if not self._closed:
                            await fn(*a)
                    n.cancel_scope.cancel()
                n.start_soon(waiter, self._kick.wait)
                if not mask & select.POLLIN and not mask & (select.POLLHUP | select.POLLERR):
                    n.start_soon(waiter, trio.lowlevel.wait_readable, self.sock)
                if not mask & select.POLLOUT and self._state != abi.ST_LISTEN:
                    n.start_soon(waiter, trio.lowlevel.wait_writable, self.sock)

    def poll_mask(self) -> int:
        if self._state == abi.ST_CLOSED and self.type == abi.SOCK_STREAM and not self._err:
            return select.POLLOUT | select.POLLHUP if self._closed else select.POLLOUT
        m = self._mask()
        if self._state == abi.ST_CONNECTING:
            m &= ~select.POLLOUT
        if self._err:
            m |= select.POLLERR
        return m

    def state(self) -> int:
        return self._state

    # -- setup -------------------------------------------------------------------------
    def bind(self, addr: Address) -> None:
        self.sock.bind(_k(addr))
        if self._state == abi.ST_CLOSED:
            self._state = abi.ST_BOUND

    def connect(self, addr: Address) -> None:
        err = self.sock.connect_ex(_k(addr))
        if self.type != abi.SOCK_STREAM:
            if err:
                raise OSError(err, "connect")
            self._state = abi.ST_CONNECTED
            return
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            self._state = abi.ST_CONNECTING
        elif err:
            raise OSError(err, "connect")
        else:
            self._state = abi.ST_CONNECTED
        self.kick()

    def listen(self, backlog: int) -> None:
        self.sock.listen(backlog)
        self._state = abi.ST_LISTEN
        self.kick()

    def accept_nowait(self) -> tuple[Endpoint, Address]:
        conn, peer = self.sock.accept()
        self.kick()
        return KernelEndpoint(self._nursery, self.type, self.protocol, conn,
                              abi.ST_CONNECTED), _a(peer)

    @property
    def _nursery(self) -> trio.Nursery:
        return NURSERY[0]

    # -- data --------------------------------------------------------------------------
    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int:
        try:
            if addr is not None:
                return self.sock.sendto(data, _k(addr))
            return self.sock.send(data)
        finally:
            self.kick()

    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        flags = socket.MSG_PEEK if peek else 0
        try:
            if self.type == abi.SOCK_STREAM:
                return self.sock.recv(size, flags), None
            data, addr = self.sock.recvfrom(size, flags)
            return data, _a(addr)
        finally:
            self.kick()

    def nread(self) -> int:
        buf = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    # -- teardown ----------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)
        self.kick()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        self.kick()

    def abort(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # -- names, options ----------------------------------------------------------------
    def getsockname(self) -> Address:
        return _a(self.sock.getsockname())

    def getpeername(self) -> Address:
        return _a(self.sock.getpeername())

    def setsockopt(self, level: int, name: int, value: int | tuple[int, int]) -> None:
        if isinstance(value, tuple):
            self.sock.setsockopt(level, name, struct.pack("ii", *value))
        else:
            self.sock.setsockopt(level, name, value)

    def getsockopt(self, level: int, name: int) -> int | tuple[int, int]:
        return self.sock.getsockopt(level, name)

    def pop_error(self) -> int:
        err, self._err = self._err, 0
        return err or self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


NURSERY: list[trio.Nursery] = []


def kernel_socket_types(nursery: trio.Nursery) -> list[SocketType]:
    """The built-in AF_INET rows, each making kernel sockets."""
    NURSERY[:] = [nursery]

    def make(sock_type: int, proto: int) -> Endpoint:
        return KernelEndpoint(nursery, sock_type, proto)

    tcp, udp, raw = (functools.partial(make, t) for t in (abi.SOCK_STREAM, abi.SOCK_DGRAM,
                                                          abi.SOCK_RAW))
    return inet_socket_types(tcp=tcp, udp=udp, raw=raw)
