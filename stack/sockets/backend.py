"""Adapters from the stack's transports (``stack.tcp``, ``stack.udp``, ``stack.raw``; see
stack/transport) to the socket files' ``Endpoint`` interface, and the socket-table rows
that make them (``socket_types``).

The transports speak ``stack.addr.Endpoint`` as the socket layer does, so addresses pass
straight through; a transport socket refuses an address of another family itself
(EAFNOSUPPORT, stack/transport/sockaddr.py)."""

from __future__ import annotations

import errno
import os
import select
import socket as _s
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rmgr.libsocket import abi
from stack.addr import AF_INET, AF_INET6
from stack.packet import Buffer
from stack.registry import SocketType
from stack.services import IPV6, TRANSPORTS
from stack.transport.sockaddr import any_for

from .endpoint import Address, Endpoint
from .inet import inet6_socket_types, inet_socket_types

if TYPE_CHECKING:
    from stack.core import Stack

_TCP_STATES = {
    "CLOSED": abi.ST_CLOSED, "LISTEN": abi.ST_LISTEN, "SYN_SENT": abi.ST_CONNECTING,
    "SYN_RECEIVED": abi.ST_CONNECTING, "ESTABLISHED": abi.ST_CONNECTED,
    "CLOSE_WAIT": abi.ST_CONNECTED,
}


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class _Wrapped(Endpoint):
    """Common parts: the transport socket is ``self.s`` with ``on_change`` callbacks."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self.s = sock
        sock.on_change.append(self.changed)

    def poll_mask(self) -> int:
        return int(self.s.poll_mask()) & ~select.POLLNVAL

    def bind(self, addr: Address) -> None:
        self.s.bind(addr)

    def getsockname(self) -> Address:
        return self.s.getsockname()  # type: ignore[no-any-return]

    def getpeername(self) -> Address:
        return self.s.getpeername()  # type: ignore[no-any-return]

    def setsockopt(self, level: int, name: int, value: int | tuple[int, int] | bytes) -> None:
        self.s.setsockopt(level, name, value)

    def getsockopt(self, level: int, name: int) -> int | tuple[int, int] | bytes:
        value = self.s.getsockopt(level, name)
        if isinstance(value, bytes):  # a struct (TCP_INFO), already in its C layout
            return value
        return tuple(value) if isinstance(value, (tuple, list)) else int(value)  # type: ignore[return-value]

    def pop_error(self) -> int:
        try:
            return int(self.s.getsockopt(_s.SOL_SOCKET, _s.SO_ERROR))
        except OSError:
            return 0

    def listen(self, backlog: int) -> None:
        raise _err(errno.EOPNOTSUPP)

    def set_family(self, family: int) -> bool:
        s = self.s
        if s.family == family:
            return True
        if family not in (AF_INET, AF_INET6) or s.type == abi.SOCK_RAW:
            return False
        any_ = any_for(family)
        if s.type == abi.SOCK_STREAM:
            t = s.tcb
            if t.bound or t.state.name != "CLOSED":
                return False
            t.laddr = t.raddr = any_
        else:
            if s.bound or s.connected:
                return False
            s.laddr = s.raddr = any_
        s.family = family
        return True

    def accept_nowait(self) -> tuple[Endpoint, Address]:
        raise _err(errno.EOPNOTSUPP)

    def abort(self) -> None:
        self.close()


class TCPEndpoint(_Wrapped):
    type = abi.SOCK_STREAM
    protocol = 6

    def __init__(self, sock: Any, spawn: Callable[..., object] | None = None) -> None:
        super().__init__(sock)
        self.spawn = spawn

    def state(self) -> int:
        name = self.s.state
        st = _TCP_STATES.get(name)
        if st is None:
            return abi.ST_CLOSING
        if st == abi.ST_CLOSED and getattr(self.s.tcb, "bound", False):
            return abi.ST_BOUND
        return st

    def connect(self, addr: Address) -> None:
        try:
            self.s.connect_nowait(addr)
        except BlockingIOError as exc:
            if exc.errno != errno.EINPROGRESS:
                raise

    def listen(self, backlog: int) -> None:
        self.s.listen(backlog)

    def accept_nowait(self) -> tuple[Endpoint, Address]:
        child, peer = self.s.accept_nowait()
        return TCPEndpoint(child, self.spawn), peer

    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int:
        return int(self.s.send_nowait(data))

    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        return self.s.recv_nowait(size, peek=peek), None

    def recv_gather_nowait(self, size: int) -> tuple[list[Buffer], int, Address | None]:
        parts, n = self.s.recv_views_nowait(size)
        return parts, n, None

    def nread(self) -> int:
        return int(self.s.bytes_readable())

    def shutdown(self, how: int) -> None:
        self.s.shutdown(how)

    def close(self) -> None:
        onoff, secs = getattr(self.s, "linger", (0, 0))
        if onoff and secs > 0 and self.spawn is not None and hasattr(self.s, "aclose"):
            self.spawn(self.s.aclose)  # SO_LINGER > 0: finish sending in the background
        else:
            self.s.close()

    def abort(self) -> None:
        self.s.abort()


class UDPEndpoint(_Wrapped):
    type = abi.SOCK_DGRAM
    protocol = 17

    def state(self) -> int:
        if self.s.closed:
            return abi.ST_CLOSED
        if self.s.connected:
            return abi.ST_CONNECTED
        return abi.ST_BOUND if self.s.bound else abi.ST_CLOSED

    def connect(self, addr: Address) -> None:
        self.s.connect(addr)

    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int:
        return int(self.s.sendto_nowait(data, addr))

    def send_many_nowait(self, datas: list[memoryview], addr: Address | None = None) -> int:
        return int(self.s.sendmany_nowait(datas, addr))  # USO when it can (udp.send_many)

    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        data, addr = self.s.recvfrom_nowait(size, peek=peek)
        return data, addr

    def nread(self) -> int:
        return int(self.s.bytes_readable())

    def next_datagram(self) -> int | None:
        q = self.s.queue
        return len(q[0][0]) if q else None

    def shutdown(self, how: int) -> None:
        self.s.shutdown(how)

    def close(self) -> None:
        self.s.close()


class RawEndpoint(_Wrapped):
    type = abi.SOCK_RAW

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self.protocol = int(sock.proto_number)

    def state(self) -> int:
        return abi.ST_CONNECTED if self.s.connected else abi.ST_CLOSED

    def connect(self, addr: Address) -> None:
        self.s.connect(addr)

    def send_nowait(self, data: memoryview, addr: Address | None = None) -> int:
        return int(self.s.sendto_nowait(data, addr))

    def recv_nowait(self, size: int, peek: bool = False) -> tuple[bytes, Address | None]:
        data, addr = self.s.recvfrom_nowait(size, peek=peek)
        return data, addr

    def nread(self) -> int:
        q = self.s.queue
        return len(q[0][0]) if q else 0

    def next_datagram(self) -> int | None:
        q = self.s.queue
        return len(q[0][0]) if q else None

    def shutdown(self, how: int) -> None:
        raise _err(errno.ENOTCONN)

    def close(self) -> None:
        self.s.close()


def socket_types(stack: Stack) -> list[SocketType]:
    """The built-in AF_INET rows over the stack's transports (none without them), and the
    AF_INET6 rows when the transports serve IPv6 too."""
    t = stack.services.get(TRANSPORTS)
    if t is None:
        return []
    tcp, udp, raw = t.tcp, t.udp, t.raw

    def spawn(fn: Callable[..., Any], *args: Any) -> None:
        if stack.nursery is not None:
            stack.nursery.start_soon(fn, *args)

    rows = inet_socket_types(tcp=lambda _proto: TCPEndpoint(tcp.socket(), spawn),
                             udp=lambda _proto: UDPEndpoint(udp.socket()),
                             raw=lambda proto: RawEndpoint(raw.socket(proto)))
    if stack.services.get(IPV6) is not None:
        rows += inet6_socket_types(
            tcp=lambda _proto: TCPEndpoint(tcp.socket(AF_INET6), spawn),
            udp=lambda _proto: UDPEndpoint(udp.socket(AF_INET6)),
            raw=lambda proto: RawEndpoint(raw.socket(proto, AF_INET6)))
    return rows
