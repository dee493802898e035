"""Raw IP sockets (root only; the socket layer checks) and the ICMP socket of ping.

A raw socket of protocol P receives a copy of every IP packet of protocol P delivered to
this host, IP header included as on BSD and Linux (ping reads the TTL there), plus the
source address; ``sendto`` hands the payload to the IP layer with protocol P (no
IP_HDRINCL)."""

from __future__ import annotations

import errno
import select
import socket as _s
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from stack.addr import AF_INET, ANY4, Addr, Endpoint, is_multicast
from stack.counters import Counters
from stack.multicast import MulticastHost, SocketMulticast
from stack.network import IPInfo, NetworkLayer
from stack.transport import mcast
from stack.transport.counters import RAW_COUNTERS
from stack.transport.sockaddr import UNSPECIFIED, SockAddr, host_addr
from stack.transport.sockopt import fire_change, get_ip_option, set_ip_option
from stack.transport.sockopt import sock_error as _err


def _host(address: SockAddr | object) -> object:
    """A raw socket's address is a host: ``(host, port)`` (the port ignored) or a host."""
    return address[0] if isinstance(address, tuple) else address


class RawSocket:
    family = AF_INET
    type = _s.SOCK_RAW

    def __init__(self, proto: RawProto, protocol: int) -> None:
        if not 0 < protocol < 256:
            raise _err(errno.EPROTONOSUPPORT)
        self.rawproto = proto
        self.proto_number = protocol
        self.laddr: Addr = ANY4
        self.raddr: Addr = ANY4
        self.connected = False
        self.closed = False
        self.broadcast = False
        self.ttl: int | None = None
        self.tos = 0
        self.df = False  # IP_MTU_DISCOVER: send with DF (ping -D)
        self.rcv_limit = 212992
        self.queued = 0
        self.queue: deque[tuple[bytes, Endpoint]] = deque()
        self.on_change: list[Callable[[], None]] = []
        self._event = trio.Event()
        #: multicast options and memberships (stack/transport/mcast.py), at first use
        self.mcast: SocketMulticast | None = None
        proto.sockets.append(self)

    def _notify(self) -> None:
        fire_change(self, self.rawproto.counters)

    def poll_mask(self) -> int:
        if self.closed:
            return select.POLLNVAL
        return select.POLLOUT | select.POLLWRNORM | (select.POLLIN | select.POLLRDNORM if self.queue else 0)

    def bind(self, address: SockAddr | object) -> None:
        a = host_addr(_host(address), self.family)
        if a not in UNSPECIFIED and not self.rawproto.inet.is_local(a):
            raise _err(errno.EADDRNOTAVAIL)
        self.laddr = a

    def connect(self, address: SockAddr | object) -> None:
        self.raddr = host_addr(_host(address), self.family)
        self.connected = True

    def getsockname(self) -> Endpoint:
        return Endpoint(self.laddr, 0)

    def getpeername(self) -> Endpoint:
        if not self.connected:
            raise _err(errno.ENOTCONN)
        return Endpoint(self.raddr, 0)

    def sendto_nowait(self, data: bytes | bytearray | memoryview,
                      address: SockAddr | object = None) -> int:
        if self.closed:
            raise _err(errno.EBADF)
        if address is None:
            if not self.connected:
                raise _err(errno.EDESTADDRREQ)
            dst = self.raddr
        else:
            dst = host_addr(_host(address), self.family)
        inet = self.rawproto.inet
        if inet.is_broadcast(dst) and not self.broadcast:
            raise _err(errno.EACCES)
        src = None if self.laddr in UNSPECIFIED else self.laddr
        if is_multicast(dst):  # the multicast TTL, interface and loop
            err = mcast.send(self, src, dst, self.proto_number, [bytes(data)],
                             self.rawproto.multicast, tos=self.tos, df=self.df)
        else:
            err = inet.output(src, dst, self.proto_number, [bytes(data)], ttl=self.ttl,
                              tos=self.tos, df=self.df)
        if err:
            raise _err(err)
        self.rawproto.counters["packets_out"] += 1
        return len(data)

    async def sendto(self, data: bytes | bytearray | memoryview,
                     address: SockAddr | object = None) -> int:
        await trio.lowlevel.checkpoint()
        return self.sendto_nowait(data, address)

    def recvfrom_nowait(self, n: int = 65536, *, peek: bool = False) -> tuple[bytes, Endpoint]:
        if self.queue:
            if peek:
                data, addr = self.queue[0]
                return data[:n], addr
            data, addr = self.queue.popleft()
            self.queued -= len(data)
            return data[:n], addr
        raise BlockingIOError(errno.EAGAIN, "no packet")

    async def recvfrom(self, n: int = 65536) -> tuple[bytes, Endpoint]:
        while True:
            try:
                return self.recvfrom_nowait(n)
            except BlockingIOError:
                await self._event.wait()

    def setsockopt(self, level: int, opt: int, value: Any) -> None:
        if level == _s.IPPROTO_IP and opt in mcast.OPTIONS:
            mcast.set_option(self, self.rawproto.multicast, opt, value)
        elif level == _s.SOL_SOCKET and opt == _s.SO_BROADCAST:
            self.broadcast = bool(value)
        elif level == _s.SOL_SOCKET and opt == _s.SO_RCVBUF:
            self.rcv_limit = int(value) * 2
        elif level == _s.IPPROTO_IP:
            set_ip_option(self, opt, value)
        else:
            raise _err(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, opt: int) -> Any:
        if level == _s.SOL_SOCKET and opt == _s.SO_ERROR:
            return 0
        if level == _s.SOL_SOCKET and opt == _s.SO_TYPE:
            return _s.SOCK_RAW
        if level == _s.IPPROTO_IP:
            if opt in mcast.OPTIONS:
                return mcast.get_option(self, opt)
            return get_ip_option(self, opt)
        raise _err(errno.ENOPROTOOPT)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.mcast is not None:
                self.mcast.close()
            if self in self.rawproto.sockets:
                self.rawproto.sockets.remove(self)
            self._notify()
            self.on_change.clear()

    async def aclose(self) -> None:
        self.close()


class RawProto:
    name = "raw"

    def __init__(self, inet: NetworkLayer, counters: Counters | None = None) -> None:
        self.inet = inet
        self.counters = counters if counters is not None else Counters("raw", RAW_COUNTERS)
        self.sockets: list[RawSocket] = []
        #: each family's group membership service (stack/multicast.py), by family
        self.multicast: dict[int, MulticastHost] = {}

    def socket(self, protocol: int = _s.IPPROTO_ICMP) -> RawSocket:
        return RawSocket(self, protocol)

    def input(self, info: IPInfo) -> bool:
        """A copy of an IP packet delivered to this host (an IP-layer raw tap). Returns
        True when a raw socket of that protocol exists (no "protocol unreachable")."""
        if not self.sockets:
            return False
        data: bytes | None = None
        matched = False
        socks = self.sockets
        if info.broadcast and is_multicast(info.dst):
            socks = mcast.receivers(socks, info, raw=True)
        for s in socks:
            if s.proto_number != info.proto:
                continue
            if s.laddr != info.dst and s.laddr not in UNSPECIFIED:
                continue
            if s.connected and s.raddr != info.src:
                continue
            matched = True
            if data is None:  # the whole datagram, network header first (BSD, Linux)
                data = bytes(self.inet.original_packet(info))
            if s.queued + len(data) > s.rcv_limit:
                self.counters["rcv_queue_full"] += 1
                continue
            s.queue.append((data, Endpoint(info.src, 0)))
            s.queued += len(data)
            self.counters["delivered"] += 1
            s._notify()
        return matched
