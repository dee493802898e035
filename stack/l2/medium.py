"""Link media: what an interface's kind of link does for the network layers (Plan 9's
``Medium`` in sys/src/9/ip; Linux's ``header_ops`` with the neighbour output).

Every ``Interface`` has a ``medium`` (``Interface.medium_type`` makes it). A network
layer sends a datagram with ``iface.medium.output(bufs, nexthop, proto, meta, fail)``:
the medium turns the next hop (a ``stack.addr.Addr``) into whatever its link needs and
frames the datagram, so IP never knows what kind of link it sends on. ``proto`` is an
EtherType (0x0800 IPv4, 0x86DD IPv6), as Linux's ``skb->protocol``, on every medium.

=====================  =========  ==============================================  =====
medium                 header     next hop → link address                         input
=====================  =========  ==============================================  =====
``EthernetMedium``     14 bytes   IPv4 255.255.255.255 → ff:ff:ff:ff:ff:ff;        layer 2
                                  IPv4 multicast → 01:00:5e + low 23 bits
                                  (RFC 1112); IPv6 multicast → 33:33 + low 32
                                  bits (RFC 2464); unicast → the neighbour layer
                                  (stack/neighbour.py: ARP, ND)
``LoopbackMedium``     14 bytes   none: every frame to 00:00:00:00:00:00 (lo0)     layer 2
``PointToPointMedium`` none       none: the datagram is the frame (a tunnel, a     IP
                                  point-to-point link; enc0, a Qnet or PPP link)   version
=====================  =========  ==============================================  =====

A network layer decides what is a broadcast (IPv4's directed broadcasts are its own
knowledge) and says so by passing ``BROADCAST4`` as the next hop.

The methods:

* ``output(bufs, nexthop, proto, meta=None, fail=None) -> errno`` (0: sent or held
  until resolution; ``fail`` is called as ``fn(errno, *args)`` if a held packet is
  dropped unresolved);
* ``send_to(lladdr, proto, bufs, meta) -> bool``: frame for a resolved link address and
  hand to the interface (the neighbour layer sends held packets with it);
* ``link_address(nexthop)``: the link address the next hop resolves to now, or None
  (media without link addresses; caches such as fast forwarding use it);
* ``input(pkt)``: a received frame of a medium whose frames are not Ethernet (``ether``
  is False): find the network header, set ``pkt.l3``/``pkt.ethertype``, dispatch by the
  stack's network table. Ethernet frames go to layer 2 instead (bridge, VLAN, filters);
* ``split(bufs) -> (link header, datagram)``: for software segmentation
  (``Interface.output``, stack/l2/gso.py).

``hdr_len`` is the link header's length before the network header (offload offsets in
``TxMeta`` count from the start of the frame). A new link type (802.11, a Qnet link,
enc0) is a new ``Medium`` subclass and an ``Interface`` with ``medium_type`` set; IP
does not change.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stack.addr import AF_INET6, BROADCAST4, Addr
from stack.l2.gso import split_frame
from stack.neighbour import FailInfo, Neighbours, NeighbourTable
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:
    # types only: the interface module makes each interface's medium, so importing it
    # here at run time would close a cycle (iface → medium → iface)
    from stack.l2.iface import Interface

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\0" * 6
# EtherTypes (also in stack/l2/ether.py, which imports the interface module: a run-time
# import of it here would be a cycle)
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
#: the two bytes of the common EtherTypes, built once
_ETYPE_BYTES = {_ETHERTYPE_IPV4: b"\x08\x00", _ETHERTYPE_IPV6: b"\x86\xdd", 0x0806: b"\x08\x06"}


class Medium:
    """A link type (see the module docstring). One instance per interface."""

    name = "none"
    #: link header bytes before the network header
    hdr_len = 0
    #: received frames are Ethernet frames (go to layer 2's input)
    ether = False
    #: next hops are resolved to link addresses by the neighbour layer
    resolves = False

    def __init__(self, iface: Interface) -> None:
        self.iface = iface

    def output(self, bufs: Sequence[Buffer], nexthop: Addr, proto: int,
               meta: TxMeta | None = None, fail: FailInfo = None) -> int:
        raise NotImplementedError

    def send_to(self, lladdr: bytes, proto: int, bufs: Sequence[Buffer],
                meta: TxMeta | None = None) -> bool:
        raise NotImplementedError

    def link_address(self, nexthop: Addr) -> bytes | None:
        return None

    def input(self, pkt: Packet) -> None:
        self.iface.counters["drop_no_medium_input"] += 1

    def split(self, bufs: Sequence[Buffer]) -> tuple[bytes, memoryview]:
        """(link header, datagram) of a frame given as buffers."""
        n = self.hdr_len
        first = bufs[0]
        if len(bufs) == 2 and len(first) == n:
            return bytes(first), memoryview(bufs[1])
        frame = memoryview(first if len(bufs) == 1 else b"".join(bufs))
        return bytes(frame[:n]), frame[n:]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.iface.name}>"


class EthernetMedium(Medium):
    """Ethernet (and what looks like it: TAP, AF_PACKET, vwire, VLAN, bridge)."""

    name = "ether"
    hdr_len = 14
    ether = True
    resolves = True

    def __init__(self, iface: Interface) -> None:
        super().__init__(iface)
        #: the stack's neighbour tables, found at first use (the interface is attached
        #: to a stack after it is made)
        self._neigh: Neighbours | None = None
        #: the IPv4 table's ready link addresses for this interface (its ``ready_map``):
        #: the per-packet lookup; empty until bound at the first miss
        self._ready4: dict[Addr, bytes] = {}
        #: the same for IPv6's table (ND)
        self._ready6: dict[Addr, bytes] = {}

    def _table(self, nexthop: Addr) -> NeighbourTable | None:
        n = self._neigh
        if n is None:
            stack = self.iface.stack
            if stack is None:
                return None
            self._neigh = n = Neighbours.of(stack.services)
        return n.v4 if nexthop >> 32 == 0xFFFF else n.tables.get(AF_INET6)

    def _resolve(self, nexthop: Addr, proto: int, bufs: Sequence[Buffer],
                 meta: TxMeta | None, fail: FailInfo) -> bytes | int:
        """Not a ready neighbour: ask the family's table (which may hold the packet)."""
        t = self._table(nexthop)
        if t is None:
            self.iface.counters["drop_no_neighbour_table"] += 1
            return errno.EHOSTUNREACH
        if nexthop >> 32 == 0xFFFF:
            self._ready4 = t.ready_map(self.iface.name)
        else:
            self._ready6 = t.ready_map(self.iface.name)
        return t.resolve(self.iface, nexthop, proto, bufs, meta, fail)

    def output(self, bufs: Sequence[Buffer], nexthop: Addr, proto: int,
               meta: TxMeta | None = None, fail: FailInfo = None) -> int:
        if nexthop >> 32 == 0xFFFF:  # IPv4 (mapped)
            if nexthop & 0xF0000000 == 0xE0000000:
                dst = b"\x01\x00\x5e" + (nexthop & 0x7FFFFF).to_bytes(3, "big")
            elif nexthop == BROADCAST4:
                dst = BROADCAST_MAC
            else:
                mac = self._ready4.get(nexthop)
                if mac is not None:
                    dst = mac
                else:
                    r = self._resolve(nexthop, proto, bufs, meta, fail)
                    if isinstance(r, int):
                        return r  # held until resolved (0), or failed
                    dst = r
        elif nexthop >> 120 == 0xFF:  # IPv6 multicast
            dst = b"\x33\x33" + (nexthop & 0xFFFFFFFF).to_bytes(4, "big")
        else:
            mac = self._ready6.get(nexthop)
            if mac is not None:
                dst = mac
            else:
                r = self._resolve(nexthop, proto, bufs, meta, fail)
                if isinstance(r, int):
                    return r
                dst = r
        # send_to, inlined (the per-packet path)
        iface = self.iface
        hdr = dst + iface.mac + (_ETYPE_BYTES.get(proto) or proto.to_bytes(2, "big"))
        stack = iface.stack
        if stack is not None and stack.pfil.ether_out:
            ok = stack.l2.output_frame(iface, [hdr, *bufs], meta)
        else:
            ok = iface.output([hdr, *bufs], meta)
        return 0 if ok else errno.ENOBUFS

    def send_to(self, lladdr: bytes, proto: int, bufs: Sequence[Buffer],
                meta: TxMeta | None = None) -> bool:
        """The 14-byte header as its own small buffer (the payload is never joined), then
        pfil "ether" out (when hooked) and the interface."""
        iface = self.iface
        hdr = lladdr + iface.mac + (_ETYPE_BYTES.get(proto) or proto.to_bytes(2, "big"))
        stack = iface.stack
        if stack is not None and stack.pfil.ether_out:
            return stack.l2.output_frame(iface, [hdr, *bufs], meta)
        return iface.output([hdr, *bufs], meta)

    def link_address(self, nexthop: Addr) -> bytes | None:
        t = self._table(nexthop)
        return t.lookup(self.iface.name, nexthop) if t is not None else None

    def split(self, bufs: Sequence[Buffer]) -> tuple[bytes, memoryview]:
        return split_frame(bufs)  # VLAN tags included in the header


class LoopbackMedium(EthernetMedium):
    """lo0: Ethernet framing, nothing to resolve (layer 2 takes any destination there)."""

    name = "loopback"
    resolves = False

    def output(self, bufs: Sequence[Buffer], nexthop: Addr, proto: int,
               meta: TxMeta | None = None, fail: FailInfo = None) -> int:
        return 0 if self.send_to(ZERO_MAC, proto, bufs, meta) else errno.ENOBUFS

    def link_address(self, nexthop: Addr) -> bytes | None:
        return None


class PointToPointMedium(Medium):
    """A link with one peer and no link header or addresses (a tunnel such as enc0 or
    an IP-in-IP link, a point-to-point line): the datagram is the frame, the next hop is
    whoever is at the other end, and a received frame's protocol is its IP version."""

    name = "p2p"

    def output(self, bufs: Sequence[Buffer], nexthop: Addr, proto: int,
               meta: TxMeta | None = None, fail: FailInfo = None) -> int:
        return 0 if self.iface.output(bufs, meta) else errno.ENOBUFS

    def send_to(self, lladdr: bytes, proto: int, bufs: Sequence[Buffer],
                meta: TxMeta | None = None) -> bool:
        return self.iface.output(bufs, meta)

    def input(self, pkt: Packet) -> None:
        iface = self.iface
        stack = iface.stack
        data = pkt.data
        if not len(data):
            iface.counters["ierrors"] += 1
            return
        v = data[0] >> 4
        etype = _ETHERTYPE_IPV4 if v == 4 else _ETHERTYPE_IPV6 if v == 6 else 0
        handler = stack.l2.handlers.get(etype) if stack is not None and etype else None
        if handler is None:
            iface.counters["drop_unknown_protocol"] += 1
            return
        pkt.l3 = 0
        pkt.ethertype = etype
        handler(iface, pkt)
