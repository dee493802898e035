"""UDP (RFC 768): sockets with bind/connect/sendto/recvfrom, broadcast, ICMP errors.

Receive queues are bounded in bytes (SO_RCVBUF); a datagram that does not fit is
dropped and counted (``rcv_queue_full``). A connected socket learns ECONNREFUSED from an
ICMP port unreachable and reports it on the next call (Linux semantics)."""

from __future__ import annotations

import errno
import select
import socket as _s
import struct
from collections import deque
from collections.abc import Callable, Sequence
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
from stack.network import IPInfo, NetworkLayer, net_header_len, scope_ifname, scoped_source
from stack.packet import GSO_UDP_L4, Buffer, TxMeta, send_each
from stack.sysctl import Sysctl
from stack.transport import ip6opt, mcast, mcast6
from stack.transport.counters import UDP_COUNTERS
from stack.transport.knobs import Knobs, register_sysctls
from stack.transport.ports import EphemeralPorts
from stack.transport.sockaddr import (
    UNSPECIFIED,
    SockAddr,
    accepts,
    any_for,
    endpoint,
    endpoint_scope,
    overlaps,
)
from stack.transport.sockopt import fire_change, get_ip_option, set_ip_option
from stack.transport.sockopt import sock_error as _err
from stack.transport.wire import udp as wire
from stack.transport.wire.checksum import ParseError, checksum, fold, verify

IPPROTO_UDP = 17
POLLIN = select.POLLIN | select.POLLRDNORM
POLLOUT = select.POLLOUT | select.POLLWRNORM
#: the most datagrams one USO super-datagram carries (Linux's UDP_MAX_SEGMENTS, 64
#: before 6.13; tun's virtio_net_hdr_to_skb refuses more than that many gso_size pieces)
USO_MAX_SEGMENTS = 64



class UDPConfig:
    recvspace: int = 208 * 1024
    maxdgram: int = 65507
    checksum: int = 1
    port_first: int = 49152
    port_last: int = 65535


KNOBS: Knobs = [
    ("net.inet.udp.recvspace", "recvspace", 0, "default UDP receive queue, bytes", 1024, 1 << 30),
    ("net.inet.udp.maxdgram", "maxdgram", 0, "largest datagram sent", 1, 65507),
    ("net.inet.udp.checksum", "checksum", 0, "compute checksums on send", 0, 1),
]


#: Linux's smallest SO_SNDBUF (2 * (2048 + sizeof(struct sk_buff)) on 64-bit)
SOCK_MIN_SNDBUF = 4608


class UDPSocket:
    type = _s.SOCK_DGRAM
    proto_number = IPPROTO_UDP

    def __init__(self, proto: UDPProto, family: int = AF_INET) -> None:
        self.proto = proto
        #: AF_INET, or AF_INET6 (dual-stack: IPv4 peers as IPv4-mapped, unless V6ONLY)
        self.family = family
        any_ = any_for(family)
        self.laddr: Addr = any_
        self.lport = 0
        #: the bound address when it can be a source (not unspecified, not a broadcast)
        self.src: Addr | None = None
        self.raddr: Addr = any_
        self.rport = 0
        #: the interface a connected link-local peer's scope id names
        self.ifname: str | None = None
        self.v6only = False
        #: IPV6_RECVPKTINFO / RECVHOPLIMIT / RECVTCLASS (ip6opt.RECV_* bits)
        self.recv6 = 0
        #: IPV6_PKTINFO: (source, ifindex) for what is sent
        self.pktinfo: tuple[Addr | None, int] | None = None
        self.bound = False
        self.connected = False
        self.closed = False
        self.reuseaddr = False
        self.broadcast = False
        self.ttl: int | None = None
        self.tos = 0
        self.df = False  # IP_MTU_DISCOVER DO/PROBE: no fragmenting, EMSGSIZE instead
        # SO_SNDBUF as Linux stores it (twice the value, at least SOCK_MIN_SNDBUF); UDP
        # keeps no send queue here, so it is only reported back
        self.sndbuf = 212992
        self.error = 0
        self.rcv_limit = proto.cfg.recvspace
        self.queue: deque[tuple[bytes, Endpoint]] = deque()
        self.queued = 0
        self.drops = 0
        self.rd_shut = False
        self.on_change: list[Callable[[], None]] = []
        self._event = trio.Event()
        #: multicast options and memberships (stack/transport/mcast.py), at first use
        self.mcast: SocketMulticast | None = None

    def __repr__(self) -> str:
        return f"<UDPSocket {Endpoint(self.laddr, self.lport)} q={len(self.queue)}>"

    def _notify(self) -> None:
        fire_change(self, self.proto.counters)

    def poll_mask(self) -> int:
        if self.closed:
            return select.POLLNVAL
        mask = POLLOUT
        if self.queue or self.rd_shut:
            mask |= POLLIN
        if self.error:
            mask |= select.POLLERR
        return mask

    def _check(self) -> None:
        if self.closed:
            raise _err(errno.EBADF)

    def bind(self, address: SockAddr) -> None:
        self._check()
        if self.bound:
            raise _err(errno.EINVAL, "socket is already bound")
        laddr, port = endpoint(address, self.family, self.v6only)
        self.proto.bind(self, laddr, port)

    def connect(self, address: SockAddr | None) -> None:
        """Fix the peer (AF_UNSPEC-style disconnect: ``connect(None)``)."""
        self._check()
        if address is None:
            self.connected = False
            self.raddr, self.rport = any_for(self.family), 0
            self.ifname = None
            return
        (raddr, rport), scope = endpoint_scope(address, self.family, self.v6only)
        if rport == 0:
            raise _err(errno.EINVAL)
        if self.proto.inet.is_broadcast(raddr) and not is_multicast(raddr):
            if not self.broadcast:
                raise _err(errno.EACCES)
        if not self.bound:
            self.proto.bind(self, any_for(self.family), 0)
        self.raddr, self.rport = raddr, rport
        self.ifname = scope_ifname(self.proto.inet, scope)
        self.connected = True
        self.error = 0

    def getsockname(self) -> Endpoint:
        laddr = self.laddr
        if laddr in UNSPECIFIED and self.connected:
            src = scoped_source(self.proto.inet, self.raddr, self.ifname)
            if src is not None:
                laddr = src
        return self._scoped(laddr, self.lport)

    def getpeername(self) -> Endpoint:
        if not self.connected:
            raise _err(errno.ENOTCONN)
        return self._scoped(self.raddr, self.rport)

    def _scoped(self, addr: Addr, port: int) -> Endpoint:
        if is_link_local6(addr):
            idx = ip6opt.scope_index(self.proto.inet, addr if self.proto.inet.is_local(addr)
                                     else self.getsockname().addr)
            if idx:
                return ScopedEndpoint(addr, port, idx)
        return Endpoint(addr, port)

    def _take_error(self) -> None:
        if self.error:
            err, self.error = self.error, 0
            raise _err(err)

    def sendto_nowait(self, data: bytes | bytearray | memoryview, address: SockAddr | None = None) -> int:
        raddr, rport, ifname = self._destination(address)
        return self.proto.send(self, data, raddr, rport, ifname)

    def sendmany_nowait(self, datas: Sequence[Buffer], address: SockAddr | None = None) -> int:
        """Datagrams to one destination (sendmmsg's run of equal addresses): how many
        went; the first's error raises (``UDPProto.send_many``)."""
        raddr, rport, ifname = self._destination(address)
        return self.proto.send_many(self, datas, raddr, rport, ifname)

    def _destination(self, address: SockAddr | None) -> tuple[Addr, int, str | None]:
        """(address, port, scope interface) a send goes to: ``address``, or the peer."""
        self._check()
        self._take_error()
        if address is None:
            if not self.connected:
                raise _err(errno.EDESTADDRREQ)
            raddr, rport = self.raddr, self.rport
            ifname = self.ifname
        else:
            if self.connected:
                raise _err(errno.EISCONN)
            (raddr, rport), scope = endpoint_scope(address, self.family, self.v6only)
            if rport == 0:
                raise _err(errno.EINVAL, "destination port 0")
            ifname = scope_ifname(self.proto.inet, scope) if scope else None
        return raddr, rport, ifname

    async def sendto(self, data: bytes | bytearray | memoryview, address: SockAddr | None = None) -> int:
        await trio.lowlevel.checkpoint()
        return self.sendto_nowait(data, address)

    send_nowait = sendto_nowait

    async def send(self, data: bytes | bytearray | memoryview) -> int:
        return await self.sendto(data)

    def recvfrom_nowait(self, n: int = 65536, *, peek: bool = False) -> tuple[bytes, Endpoint]:
        self._check()
        if self.queue:
            data, addr = self.queue[0] if peek else self.queue.popleft()
            if not peek:
                self.queued -= len(data)
            return data[:n], addr
        self._take_error()
        if self.rd_shut:
            return b"", Endpoint(any_for(self.family), 0)
        raise BlockingIOError(errno.EAGAIN, "no datagram")

    async def recvfrom(self, n: int = 65536) -> tuple[bytes, Endpoint]:
        while True:
            try:
                return self.recvfrom_nowait(n)
            except BlockingIOError:
                await self._event.wait()

    def recv_nowait(self, n: int = 65536) -> bytes:
        return self.recvfrom_nowait(n)[0]

    async def recv(self, n: int = 65536) -> bytes:
        return (await self.recvfrom(n))[0]

    def bytes_readable(self) -> int:
        """FIONREAD: size of the next datagram (Linux)."""
        return len(self.queue[0][0]) if self.queue else 0

    def shutdown(self, how: int) -> None:
        if not self.connected:
            raise _err(errno.ENOTCONN)
        if how in (_s.SHUT_RD, _s.SHUT_RDWR):
            self.rd_shut = True
            self._notify()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proto.unbind(self)
        if self.mcast is not None:
            self.mcast.close()
        self.queue.clear()
        self._notify()
        self.on_change.clear()

    async def aclose(self) -> None:
        self.close()

    def setsockopt(self, level: int, opt: int, value: Any) -> None:
        self._check()
        if level == _s.IPPROTO_IP and opt in mcast.OPTIONS:
            mcast.set_option(self, self.proto.multicast, opt, value)
            return
        if level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt in ip6opt.MCAST_OPTIONS:
                mcast6.set_option(self, self.proto.multicast, opt, value)
            else:
                ip6opt.set_datagram(self, opt, value, self.bound)
            return
        if isinstance(value, (bytes, bytearray)) and len(value) == 4:
            value = struct.unpack("i", value)[0]
        if level == _s.SOL_SOCKET:
            if opt == _s.SO_REUSEADDR:
                self.reuseaddr = bool(value)
            elif opt == _s.SO_BROADCAST:
                self.broadcast = bool(value)
            elif opt == _s.SO_RCVBUF:
                self.rcv_limit = max(int(value) * 2, 2048)
            elif opt == _s.SO_SNDBUF:
                self.sndbuf = max(int(value) * 2, SOCK_MIN_SNDBUF)
            elif opt in (_s.SO_KEEPALIVE, _s.SO_LINGER):
                pass
            else:
                raise _err(errno.ENOPROTOOPT)
        elif level == _s.IPPROTO_IP:
            set_ip_option(self, opt, value)
        else:
            raise _err(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, opt: int) -> Any:
        if level == _s.SOL_SOCKET:
            if opt == _s.SO_ERROR:
                err, self.error = self.error, 0
                return err
            if opt == _s.SO_REUSEADDR:
                return int(self.reuseaddr)
            if opt == _s.SO_BROADCAST:
                return int(self.broadcast)
            if opt == _s.SO_RCVBUF:
                return self.rcv_limit
            if opt == _s.SO_SNDBUF:
                return self.sndbuf
            if opt == _s.SO_TYPE:
                return _s.SOCK_DGRAM
            raise _err(errno.ENOPROTOOPT)
        if level == _s.IPPROTO_IP:
            if opt in mcast.OPTIONS:
                return mcast.get_option(self, opt)
            return get_ip_option(self, opt)
        if level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt in ip6opt.MCAST_OPTIONS:
                return mcast6.get_option(self, opt)
            return ip6opt.get_datagram(self, opt)
        raise _err(errno.ENOPROTOOPT)


class UDPProto:
    name = "udp"

    def __init__(self, inet: NetworkLayer, sysctl: Sysctl | None = None,
                 counters: Counters | None = None) -> None:
        self.inet = inet
        self.cfg = UDPConfig()
        if sysctl is not None:
            register_sysctls(sysctl, self.cfg, KNOBS)
            for name, attr in (("net.inet.ip.portrange.first", "port_first"),
                               ("net.inet.ip.portrange.last", "port_last")):
                if name in sysctl.knobs:
                    setattr(self.cfg, attr, sysctl.knobs[name].value)
                    sysctl.knobs[name].on_change.append(self._follow(attr))
        self.counters = counters if counters is not None else Counters("udp", UDP_COUNTERS)
        self.ports: dict[int, list[UDPSocket]] = {}
        self._ports = EphemeralPorts()
        #: each family's group membership service (stack/multicast.py), by family
        self.multicast: dict[int, MulticastHost] = {}

    def _follow(self, attr: str) -> Callable[[int | str], None]:
        """A sysctl change handler setting ``self.cfg.<attr>``."""
        def set_attr(v: int | str) -> None:
            setattr(self.cfg, attr, v)
        return set_attr

    def socket(self, family: int = AF_INET) -> UDPSocket:
        """A socket of ``family`` (AF_INET, or AF_INET6: dual-stack unless V6ONLY)."""
        return UDPSocket(self, family)

    # ------------------------------------------------------------- ports
    def bind(self, sock: UDPSocket, laddr: Addr, port: int) -> None:
        specific = laddr not in UNSPECIFIED
        # a group address binds like a broadcast one: it receives, never sources
        bcast = specific and (self.inet.is_broadcast(laddr) or is_multicast(laddr))
        if specific and not (bcast or self.inet.is_local(laddr)):
            raise _err(errno.EADDRNOTAVAIL)
        if port == 0:
            port = self._ephemeral()
        else:
            for other in self.ports.get(port, ()):
                if not overlaps(laddr, sock.v6only, other.laddr, other.v6only):
                    continue
                if sock.reuseaddr and other.reuseaddr:
                    continue
                self.counters["bind_addrinuse"] += 1
                raise _err(errno.EADDRINUSE)
        sock.laddr, sock.lport, sock.bound = laddr, port, True
        sock.src = laddr if specific and not bcast else None
        self.ports.setdefault(port, []).append(sock)

    def _ephemeral(self) -> int:
        return self._ports.pick(self.cfg.port_first, self.cfg.port_last, self.ports,
                                self.counters)

    def unbind(self, sock: UDPSocket) -> None:
        if sock.bound:
            lst = self.ports.get(sock.lport)
            if lst and sock in lst:
                lst.remove(sock)
                if not lst:
                    del self.ports[sock.lport]
            sock.bound = False

    # ------------------------------------------------------------- output
    def _route(self, sock: UDPSocket, n: int, raddr: Addr,
               ifname: str | None) -> tuple[Addr, str | None, bool]:
        """The checks every send makes for ``n`` bytes to ``raddr`` (size, broadcast
        permission, binding, family) and the source it goes from: (source, interface,
        to a group). Raises the socket error."""
        c = self.counters
        if n > self.cfg.maxdgram:
            c["send_too_big"] += 1
            raise _err(errno.EMSGSIZE)
        # (IPv6's is_broadcast is multicast: SO_BROADCAST is about broadcasts only)
        if not sock.broadcast and self.inet.is_broadcast(raddr) and not is_multicast(raddr):
            c["send_broadcast_denied"] += 1
            raise _err(errno.EACCES)
        if not sock.bound:
            self.bind(sock, any_for(sock.family), 0)
        laddr = sock.src
        if laddr is not None and laddr >> 32 != raddr >> 32 and (
                laddr >> 32 == 0xFFFF or raddr >> 32 == 0xFFFF):
            c["send_family_mismatch"] += 1  # bound to one family, sending to the other
            raise _err(errno.ENETUNREACH)
        if sock.pktinfo is not None:  # IPV6_PKTINFO (sticky): source and interface
            if sock.pktinfo[0] is not None and laddr is None:
                laddr = sock.pktinfo[0]
            if sock.pktinfo[1] and ifname is None:
                ifname = scope_ifname(self.inet, sock.pktinfo[1])
        group = is_multicast(raddr)
        if laddr is None and group:
            laddr = mcast.source(sock, raddr, self.multicast)
        if laddr is None:
            laddr = scoped_source(self.inet, raddr, ifname)
            if laddr is None:
                c["send_noroute"] += 1
                raise _err(errno.ENETUNREACH)
        return laddr, ifname, group

    def send(self, sock: UDPSocket, data: bytes | bytearray | memoryview, raddr: Addr,
             rport: int, ifname: str | None = None) -> int:
        """One datagram to ``raddr``; ``ifname``: the interface a link-local
        destination's scope id names."""
        c = self.counters
        n = len(data)
        laddr, ifname, group = self._route(sock, n, raddr, ifname)
        payload = bytes(data)  # the datagram must outlive the caller's buffer
        hdr = wire.emit_header(sock.lport, rport, n)
        if self.cfg.checksum:
            csum = checksum((hdr, payload), pseudo_header_sum(laddr, raddr, IPPROTO_UDP, n + 8))
            if csum == 0:
                csum = 0xFFFF  # RFC 768: zero means "no checksum"
            hdr[6] = csum >> 8
            hdr[7] = csum & 0xFF
        if group:  # the multicast TTL, interface and loop (stack/transport/mcast.py)
            err = mcast.send(sock, laddr, raddr, IPPROTO_UDP, [hdr, payload], self.multicast,
                             tos=sock.tos, df=sock.df)
        else:
            err = self.inet.output(laddr, raddr, IPPROTO_UDP, [hdr, payload], ttl=sock.ttl,
                                   tos=sock.tos, df=sock.df, ifname=ifname)
        if err:
            c["send_errors"] += 1
            raise _err(err)
        c["datagrams_out"] += 1
        c["bytes_out"] += n
        return n

    def send_many(self, sock: UDPSocket, datas: Sequence[Buffer], raddr: Addr, rport: int,
                  ifname: str | None = None) -> int:
        """Datagrams ``datas`` to one destination; returns how many went (the first's
        error raises, a later one's ends the batch: sendmmsg's semantics).

        Equal-sized datagrams (the last may be shorter) leave as one UDP super-datagram
        when the route's interface segments UDP (USO: Linux's UDP_SEGMENT, gso_type
        GSO_UDP_L4): one UDP header whose length and CHECKSUM_PARTIAL pseudo-header sum
        are the whole datagram's (Linux's udp_send_skb + udp4_hwcsum), ``gso_size`` the
        payload of each datagram without its UDP header, at most UDP_MAX_SEGMENTS (64)
        of them (a longer run is cut in such pieces), each small enough for the path MTU:
        the device (or the kernel behind a TAP) cuts it into the datagrams, with their
        lengths and checksums. One trip through IP and layer 2 instead of N. Anything
        else goes one by one (``uso_fallback_<why>``)."""
        k = len(datas)
        if k == 0:
            return 0
        if k == 1:
            self.send(sock, datas[0], raddr, rport, ifname)
            return 1
        c = self.counters
        seg = len(datas[0])
        total = 0
        for d in datas:
            total += len(d)
        if k > USO_MAX_SEGMENTS:  # in super-datagrams of 64 (sendmmsg takes up to 1024)
            c["uso_split"] += 1
            sent = 0
            for i in range(0, k, USO_MAX_SEGMENTS):
                part = datas[i:i + USO_MAX_SEGMENTS]
                try:
                    n = self.send_many(sock, part, raddr, rport, ifname)
                except OSError:
                    if not sent:
                        raise
                    break
                sent += n
                if n < len(part):
                    break
            return sent
        if seg == 0 or not 0 < len(datas[-1]) <= seg \
                or any(len(d) != seg for d in datas[1:-1]):
            c["uso_fallback_sizes"] += 1  # GSO cuts gso_size pieces: only the last shorter
        elif not self.cfg.checksum:
            c["uso_fallback_no_checksum"] += 1  # Linux: UDP_SEGMENT without checksums is EIO
        elif not {"uso", "csum"} <= self.inet.route_offloads(raddr):
            c["uso_fallback_no_offload"] += 1
        else:
            return self._send_uso(sock, datas, seg, total, raddr, rport, ifname)
        return self._send_each(sock, datas, raddr, rport, ifname)

    def _send_each(self, sock: UDPSocket, datas: Sequence[Buffer], raddr: Addr, rport: int,
                   ifname: str | None) -> int:
        """One by one: the first's error raises, a later one's ends the batch."""
        return send_each(lambda d: self.send(sock, d, raddr, rport, ifname), datas)

    def _send_uso(self, sock: UDPSocket, datas: Sequence[Buffer], seg: int, total: int,
                  raddr: Addr, rport: int, ifname: str | None) -> int:
        c = self.counters
        laddr, ifname, group = self._route(sock, seg, raddr, ifname)
        hlen = net_header_len(raddr)
        if group or self.inet.is_broadcast(raddr):
            c["uso_fallback_broadcast"] += 1  # the group paths (mcast.send) send each
            return self._send_each(sock, datas, raddr, rport, ifname)
        if ifname is not None:
            c["uso_fallback_scoped"] += 1  # route_offloads judged the routed interface
            return self._send_each(sock, datas, raddr, rport, ifname)
        if hlen + 8 + seg > self.inet.route_mtu(raddr):
            c["uso_fallback_mtu"] += 1  # each datagram would be IP-fragmented
            return self._send_each(sock, datas, raddr, rport, ifname)
        ulen = 8 + total
        if ulen > 65535 - (hlen if hlen == 20 else 0):
            c["uso_fallback_too_long"] += 1  # IPv4 total / IPv6 payload length > 65535
            return self._send_each(sock, datas, raddr, rport, ifname)
        hdr = wire.emit_header(sock.lport, rport, total)
        # CHECKSUM_PARTIAL: the field holds the pseudo-header sum over the whole UDP
        # length (as the length field); segmentation swaps in each datagram's length
        pseudo = fold(pseudo_header_sum(laddr, raddr, IPPROTO_UDP, ulen))
        hdr[6] = pseudo >> 8
        hdr[7] = pseudo & 0xFF
        meta = TxMeta(csum_start=0, csum_offset=6, needs_csum=True, gso_type=GSO_UDP_L4,
                      gso_size=seg, hdr_len=8)
        payload = b"".join(datas)  # one copy: the buffers must outlive the caller's
        err = self.inet.output(laddr, raddr, IPPROTO_UDP, [hdr, payload], ttl=sock.ttl,
                               tos=sock.tos, df=sock.df, meta=meta, ifname=ifname)
        if err:
            c["send_errors"] += 1
            raise _err(err)
        k = len(datas)
        c["uso_batches"] += 1
        c["uso_segments"] += k
        c["datagrams_out"] += k
        c["bytes_out"] += total
        return k

    # ------------------------------------------------------------- input
    def input(self, info: IPInfo) -> None:
        c = self.counters
        c["datagrams_in"] += 1
        try:
            d = wire.parse(info.payload)
        except ParseError:
            c["drop_malformed"] += 1
            return
        if d.csum == 0:
            if info.src >> 32 != 0xFFFF:
                c["drop_zero_checksum6"] += 1  # mandatory over IPv6 (RFC 8200 §8.1)
                return
            c["no_checksum"] += 1  # sender chose none (RFC 768)
        elif not info.csum_valid and not verify(
                (info.payload[:d.length],),
                pseudo_header_sum(info.src, info.dst, IPPROTO_UDP, d.length)):
            c["drop_bad_checksum"] += 1
            return
        bcast = info.broadcast  # or multicast: the network layer says (stack/network.py)
        targets = self._match(info.dst, d.dport, info.src, d.sport, bcast)
        if bcast and targets and is_multicast(info.dst):
            targets = mcast.receivers(targets, info)  # joined on that interface, source passes
        if not targets:
            c["no_port"] += 1
            if not bcast:
                self._port_unreachable(info)
            return
        data = bytes(d.payload)  # the one copy
        src = info.src
        addr = Endpoint(src, d.sport)
        if is_link_local6(src) and info.pkt is not None and info.pkt.iface is not None:
            addr = ScopedEndpoint(src, d.sport, info.pkt.iface.index)
        for sock in targets:
            frm = self._recv_endpoint(sock, info, d.sport) if sock.recv6 else addr
            if sock.rd_shut:
                c["drop_shut_rd"] += 1
                continue
            if sock.queued + len(data) > sock.rcv_limit:
                sock.drops += 1
                c["rcv_queue_full"] += 1
                continue
            sock.queue.append((data, frm))
            sock.queued += len(data)
            c["delivered"] += 1
            sock._notify()

    def _match(self, dst: Addr, dport: int, src: Addr, sport: int,
               bcast: bool) -> list[UDPSocket]:
        socks = self.ports.get(dport)
        if not socks:
            return []
        best: list[UDPSocket] = []
        best_score = -1
        for s in socks:
            if s.closed:
                continue
            if s.laddr != dst and not accepts(s.laddr, s.v6only, dst):
                continue  # a unicast-bound socket gets no broadcasts (BSD, Linux)
            if s.connected and (s.raddr != src or s.rport != sport):
                continue
            score = (2 if s.connected else 0) + (0 if s.laddr in UNSPECIFIED else 1)
            if bcast:
                best.append(s)  # broadcasts go to every matching socket
                continue
            if score > best_score:
                best, best_score = [s], score
        return best

    @staticmethod
    def _recv_endpoint(sock: UDPSocket, info: IPInfo, sport: int) -> Endpoint:
        """The source with what IPV6_RECVPKTINFO/HOPLIMIT/TCLASS keep (ip6opt.py)."""
        pkt = info.pkt
        ifindex = pkt.iface.index if pkt is not None and pkt.iface is not None else 0
        scope = ifindex if is_link_local6(info.src) else 0
        return ip6opt.recv_endpoint(info.src, sport, scope, sock.recv6, info.dst, ifindex,
                                    info.ttl, info.tos)

    def _port_unreachable(self, info: IPInfo) -> None:
        """ICMP port unreachable back to the sender (the network layer's, rate-limited)."""
        if self.inet.port_unreachable(info):
            self.counters["icmp_port_unreach_sent"] += 1
        else:
            self.counters["icmp_port_unreach_suppressed"] += 1

    def icmp_error(self, icmp_type: int, code: int, src: Addr, dst: Addr, hdr: memoryview,
                   extra: int = 0) -> None:
        if len(hdr) < 4:
            return
        sport = (hdr[0] << 8) | hdr[1]
        dport = (hdr[2] << 8) | hdr[3]
        err = 0
        if icmp_type == 3:
            err = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT,
                   3: errno.ECONNREFUSED, 4: errno.EMSGSIZE}.get(code, errno.EHOSTUNREACH)
        elif icmp_type == 11:
            err = errno.EHOSTUNREACH
        if not err:
            return
        for s in self.ports.get(sport, ()):
            if s.connected and s.raddr == dst and s.rport == dport:
                s.error = err
                self.counters[f"icmp_error_{errno.errorcode.get(err, err)}"] += 1
                s._notify()
