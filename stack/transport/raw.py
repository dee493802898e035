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

from stack.addr import (
    AF_INET,
    AF_INET6,
    Addr,
    Endpoint,
    ScopedEndpoint,
    is_link_local6,
    is_multicast,
    pseudo_header_sum,
)
from stack.counters import Counters
from stack.multicast import MulticastHost, SocketMulticast
from stack.network import IPInfo, NetworkLayer, scope_ifname, scoped_source
from stack.transport import ip6opt, mcast, mcast6
from stack.transport.counters import RAW_COUNTERS
from stack.transport.sockaddr import UNSPECIFIED, SockAddr, any_for, host_addr
from stack.transport.sockopt import fire_change, get_ip_option, set_ip_option
from stack.transport.sockopt import sock_error as _err
from stack.transport.wire.checksum import checksum

IPV6_CHECKSUM = 7
IPPROTO_ICMPV6 = 58


def _host(address: SockAddr | object) -> object:
    """A raw socket's address is a host: ``(host, port)`` (the port ignored) or a host."""
    return address[0] if isinstance(address, tuple) else address


def _scope(address: SockAddr | object) -> int:
    """The scope id of an AF_INET6 raw socket's address: a ``ScopedEndpoint``'s, or the
    fourth item of ``(host, port, flowinfo, scope_id)``."""
    if isinstance(address, tuple) and len(address) == 4 and not isinstance(address, Endpoint):
        return int(address[3])
    return int(getattr(address, "scope_id", 0))


class RawSocket:
    """A raw socket of ``family``: AF_INET receives IPv4 datagrams with their header;
    AF_INET6 (IPv6 only: a raw socket has no IPv4-mapped side, as Linux's raw6) receives
    the payload after the IPv6 header and extension headers (RFC 3542 §3), and for
    ICMPv6 (or with IPV6_CHECKSUM) the stack computes the checksum of what it sends."""

    type = _s.SOCK_RAW

    def __init__(self, proto: RawProto, protocol: int, family: int = AF_INET) -> None:
        if not 0 < protocol < 256:
            raise _err(errno.EPROTONOSUPPORT)
        self.rawproto = proto
        self.proto_number = protocol
        self.family = family
        self.laddr: Addr = any_for(family)
        self.raddr: Addr = any_for(family)
        self.ifname: str | None = None  # a connected link-local peer's scope
        self.v6only = True  # raw AF_INET6 sockets carry IPv6 only
        self.recv6 = 0
        self.pktinfo: tuple[Addr | None, int] | None = None
        #: IPV6_CHECKSUM: where the stack puts the checksum (-1: nowhere); ICMPv6 always 2
        self.csum_offset = 2 if family == AF_INET6 and protocol == IPPROTO_ICMPV6 else -1
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
        a = host_addr(_host(address), self.family, True)
        if a not in UNSPECIFIED and not self.rawproto.inet.is_local(a):
            raise _err(errno.EADDRNOTAVAIL)
        self.laddr = a

    def connect(self, address: SockAddr | object) -> None:
        self.raddr = host_addr(_host(address), self.family, True)
        self.ifname = scope_ifname(self.rawproto.inet, _scope(address))
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
            ifname = self.ifname
        else:
            dst = host_addr(_host(address), self.family, True)
            ifname = scope_ifname(self.rawproto.inet, _scope(address))
        inet = self.rawproto.inet
        if not self.broadcast and inet.is_broadcast(dst) and not is_multicast(dst):
            raise _err(errno.EACCES)
        src = None if self.laddr in UNSPECIFIED else self.laddr
        if self.pktinfo is not None:  # IPV6_PKTINFO (sticky)
            src = src or self.pktinfo[0]
            if self.pktinfo[1] and ifname is None:
                ifname = scope_ifname(inet, self.pktinfo[1])
        payload = bytes(data)
        if self.csum_offset >= 0:  # ICMPv6, IPV6_CHECKSUM: the stack's job (RFC 3542 §3.1)
            payload, src = self._checksum(payload, src, dst, ifname)
        if is_multicast(dst):  # the multicast TTL, interface and loop
            err = mcast.send(self, src, dst, self.proto_number, [payload],
                             self.rawproto.multicast, tos=self.tos, df=self.df)
        else:
            err = inet.output(src, dst, self.proto_number, [payload], ttl=self.ttl,
                              tos=self.tos, df=self.df, ifname=ifname)
        if err:
            raise _err(err)
        self.rawproto.counters["packets_out"] += 1
        return len(data)

    def _checksum(self, payload: bytes, src: Addr | None, dst: Addr,
                  ifname: str | None) -> tuple[bytes, Addr | None]:
        off = self.csum_offset
        if len(payload) < off + 2:
            raise _err(errno.EINVAL)
        if src is None:
            if is_multicast(dst):
                src = mcast.source(self, dst, self.rawproto.multicast)
            if src is None:
                src = scoped_source(self.rawproto.inet, dst, ifname)
            if src is None:
                raise _err(errno.ENETUNREACH)
        buf = bytearray(payload)
        buf[off:off + 2] = b"\0\0"
        c = checksum((buf,), pseudo_header_sum(src, dst, self.proto_number, len(buf)))
        buf[off] = c >> 8
        buf[off + 1] = c & 0xFF
        return bytes(buf), src

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
        if level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt in ip6opt.MCAST_OPTIONS:
                mcast6.set_option(self, self.rawproto.multicast, opt, value)
            elif opt == IPV6_CHECKSUM:
                v = ip6opt.int_value(value)
                if self.proto_number == IPPROTO_ICMPV6 or v < -1 or (v > 0 and v % 2):
                    raise _err(errno.EINVAL)  # ICMPv6's is fixed (Linux: EINVAL)
                self.csum_offset = v
            elif opt == ip6opt.IPV6_V6ONLY:
                pass
            else:
                ip6opt.set_datagram(self, opt, value, False)
        elif level == _s.IPPROTO_IP and opt in mcast.OPTIONS:
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
        if level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt in ip6opt.MCAST_OPTIONS:
                return mcast6.get_option(self, opt)
            if opt == IPV6_CHECKSUM:
                return self.csum_offset
            return ip6opt.get_datagram(self, opt)
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

    def socket(self, protocol: int = _s.IPPROTO_ICMP, family: int = AF_INET) -> RawSocket:
        return RawSocket(self, protocol, family)

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
        fam = AF_INET if info.dst >> 32 == 0xFFFF else AF_INET6
        for s in socks:
            if s.proto_number != info.proto or s.family != fam:
                continue
            if s.laddr != info.dst and s.laddr not in UNSPECIFIED:
                continue
            if s.connected and s.raddr != info.src:
                continue
            matched = True
            if data is None:
                # IPv4: the whole datagram, network header first (BSD, Linux); IPv6:
                # what follows the IPv6 header chain (RFC 3542 §3)
                data = bytes(self.inet.original_packet(info)) if fam == AF_INET \
                    else bytes(info.payload)
            if s.queued + len(data) > s.rcv_limit:
                self.counters["rcv_queue_full"] += 1
                continue
            s.queue.append((data, self._source(s, info)))
            s.queued += len(data)
            self.counters["delivered"] += 1
            s._notify()
        return matched

    @staticmethod
    def _source(s: RawSocket, info: IPInfo) -> Endpoint:
        src = info.src
        if src >> 32 == 0xFFFF:
            return Endpoint(src, 0)
        pkt = info.pkt
        ifindex = pkt.iface.index if pkt is not None and pkt.iface is not None else 0
        scope = ifindex if is_link_local6(src) else 0
        if s.recv6:
            return ip6opt.recv_endpoint(src, 0, scope, s.recv6, info.dst, ifindex, info.ttl,
                                        info.tos)
        return ScopedEndpoint(src, 0, scope) if scope else Endpoint(src, 0)
