"""IPv6 multicast for UDP and raw AF_INET6 sockets: the ``MulticastHost`` over the IPv6
layer (stack/multicast.py's family-neutral model: the sockets' memberships merge in a
``GroupTable`` whose changes become MLD joins and leaves, ``stack.inet6.mld``), and the
IPPROTO_IPV6 multicast options as Linux takes them:

=========================  ==============================================================
IPV6_MULTICAST_IF (17)     an int ifindex (0: by route again)
IPV6_MULTICAST_HOPS (18)   -1..255 (-1: 1, the default)
IPV6_MULTICAST_LOOP (19)   0/1: our datagrams to a group joined here are delivered here too
IPV6_JOIN_GROUP (20)       ``struct ipv6_mreq { struct in6_addr group; int ifindex; }``
IPV6_LEAVE_GROUP (21)      (ifindex 0: the interface the route to the group leaves by)
=========================  ==============================================================

Delivery is stack/transport/mcast.py's ``receivers`` (joined on the arrival interface).
MLD reports any-source membership of the interface; per-socket source filters are not
offered for IPv6 (MCAST_JOIN_SOURCE_GROUP: ENOPROTOOPT).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stack.addr import Addr, addr_from_bytes, is_multicast
from stack.multicast import Filter, GroupTable, MulticastHost
from stack.packet import Buffer, Packet
from stack.transport.ip6opt import (
    IPV6_JOIN_GROUP,
    IPV6_LEAVE_GROUP,
    IPV6_MULTICAST_HOPS,
    IPV6_MULTICAST_IF,
    IPV6_MULTICAST_LOOP,
    int_value,
)
from stack.transport.mcast import HasMulticast, state
from stack.transport.sockopt import sock_error

if TYPE_CHECKING:  # the transports are built over the layer; types only
    from stack.inet6.ipv6 import IPv6Layer
    from stack.l2.iface import Interface

_NATIVE = sys.byteorder
_ETHERTYPE_IPV6 = 0x86DD


class Mcast6Host:
    """The IPv6 ``MulticastHost``: sockets' memberships → ``mld.join``/``leave`` on the
    interface (counted there, with the layer's own groups)."""

    family = 24

    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.groups = GroupTable()
        self.groups.listeners.append(self._changed)

    def _iface(self, ifindex: int) -> Interface | None:
        for iface in self.ip6.stack.interfaces.values():
            if iface.index == ifindex:
                return iface
        return None

    def ifname(self, ifindex: int) -> str | None:
        iface = self._iface(ifindex)
        return iface.name if iface is not None else None

    def mcast_ifindex(self, ifindex: int, addr: Addr | None, group: Addr | None) -> int:
        if ifindex:
            if self._iface(ifindex) is None:
                raise OSError(errno.ENODEV, "no such interface")
            return ifindex
        iface = None
        if addr is not None:
            ia = self.ip6.local.get(addr)
            iface = self.ip6.stack.interfaces.get(ia.ifname) if ia is not None else None
        elif group is not None:
            iface = self.ip6._out_iface(group, None, None)
        if iface is None:
            raise OSError(errno.ENODEV, "no interface for the group")
        return iface.index

    def mcast_source(self, ifindex: int) -> Addr | None:
        iface = self._iface(ifindex)
        if iface is None:
            return None
        return self.ip6.addrconf.select_source(iface, 0xFF02 << 112 | 1)

    def mcast_output(self, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer],
                     *, ttl: int, tos: int, df: bool, ifindex: int, loop: bool) -> int:
        ip6 = self.ip6
        iface = self._iface(ifindex) if ifindex else ip6._out_iface(dst, src, None)
        if iface is None:
            return errno.ENXIO if ifindex else errno.ENETUNREACH
        if src is None:
            src = ip6.addrconf.select_source(iface, dst)
            if src is None:
                return errno.EADDRNOTAVAIL
        bufs = [bytes(b) for b in payload]
        err = ip6.output(src, dst, proto, bufs, ttl=ttl, tos=tos, df=df, ifname=iface.name)
        if not err and loop and self.groups.state(iface.index, dst) is not None:
            self._loop(iface, src, dst, proto, bufs, ttl, tos)
        return err

    def _loop(self, iface: Interface, src: Addr, dst: Addr, proto: int, payload: list[bytes],
              hlim: int, tclass: int) -> None:
        """IPV6_MULTICAST_LOOP: our datagram to a group a socket here joined on ``iface``,
        delivered as if it had arrived there."""
        from stack.inet6.wire.ipv6 import pack_header

        body = b"".join(payload)
        if len(body) > 65535:
            return
        frame = bytearray(pack_header(tclass, 0, len(body), proto, hlim, src, dst) + body)
        pkt = Packet(memoryview(frame), iface)
        pkt.ethertype = _ETHERTYPE_IPV6
        self.ip6.input(iface, pkt)

    def _changed(self, ifindex: int, group: Addr, old: Filter | None,
                 new: Filter | None) -> None:
        iface = self._iface(ifindex)
        if iface is None:
            return
        if old is None and new is not None:
            self.ip6.mld.join(iface, group)
        elif new is None and old is not None:
            self.ip6.mld.leave(iface, group)


def set_option(sock: HasMulticast, hosts: dict[int, MulticastHost], opt: int,
               value: Any) -> None:
    m = state(sock, hosts)
    if opt == IPV6_MULTICAST_HOPS:
        v = int_value(value)
        if not -1 <= v <= 255:
            raise sock_error(errno.EINVAL)
        m.ttl = 1 if v == -1 else v
    elif opt == IPV6_MULTICAST_LOOP:
        v = int_value(value)
        if v not in (0, 1):
            raise sock_error(errno.EINVAL)
        m.loop = bool(v)
    elif opt == IPV6_MULTICAST_IF:
        v = int_value(value)
        if v:
            try:
                m.host.mcast_ifindex(v, None, None)
            except OSError:
                raise sock_error(errno.ENODEV) from None
        m.ifindex, m.if_addr = v, None
    elif opt in (IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP):
        b = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""
        if len(b) < 20:
            raise sock_error(errno.EINVAL)
        group = addr_from_bytes(b[:16])
        ifindex = int.from_bytes(b[16:20], _NATIVE, signed=True)
        if not is_multicast(group) or group >> 32 == 0xFFFF:
            raise sock_error(errno.EINVAL)
        if opt == IPV6_JOIN_GROUP:
            try:
                idx = m.host.mcast_ifindex(ifindex, None, group)
            except OSError as exc:
                raise sock_error(exc.errno or errno.ENODEV) from None
            m.join(idx, group)
        else:
            if ifindex:
                idx = ifindex
            else:
                joined = m.joined(group)
                idx = joined[0] if joined else 0
            m.leave(idx, group)
    else:
        raise sock_error(errno.ENOPROTOOPT)


def get_option(sock: HasMulticast, opt: int) -> int:
    m = sock.mcast
    if opt == IPV6_MULTICAST_HOPS:
        return m.ttl if m is not None else 1
    if opt == IPV6_MULTICAST_LOOP:
        return int(m.loop) if m is not None else 1
    if opt == IPV6_MULTICAST_IF:
        return m.ifindex if m is not None else 0
    raise sock_error(errno.ENOPROTOOPT)


__all__ = ["Mcast6Host", "get_option", "set_option"]
