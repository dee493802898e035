"""Ethernet dispatch: frames in by EtherType to registered protocols, frames out with a
14-byte header prepended (never joined with the payload)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from stack.counters import Counters
from stack.l2.iface import BROADCAST_MAC, IFF_PROMISC, Interface
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:
    from stack.core import Stack

ETH_HLEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD

#: A protocol's receive function: (interface, packet with ``l3`` set) → None.
EtherHandler = Callable[[Interface, Packet], None]

_unpack_hdr = struct.Struct("!6s6sH").unpack_from


class Layer2:
    """The layer-2 component: dispatch table, destination filtering, output."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.handlers: dict[int, EtherHandler] = {}
        self.counters = Counters("ether")

    def register(self, ethertype: int, handler: EtherHandler) -> None:
        """Protocols (IPv4, ARP, a module's own such as Qnet) register their EtherType."""
        if ethertype in self.handlers and self.handlers[ethertype] is not handler:
            raise ValueError(f"EtherType {ethertype:#06x} is already registered")
        self.handlers[ethertype] = handler

    def unregister(self, ethertype: int) -> None:
        self.handlers.pop(ethertype, None)

    def input(self, iface: Interface, pkt: Packet) -> None:
        data = pkt.data
        c = self.counters
        if len(data) < ETH_HLEN:
            c["drop_runt"] += 1
            iface.counters["ierrors"] += 1
            return
        dst, src, etype = _unpack_hdr(data)
        pkt.dst_mac = dst
        pkt.src_mac = src
        pkt.l3 = ETH_HLEN
        if iface.l2_hook is not None and iface.l2_hook(iface, pkt):
            return  # consumed by a bridge or VLAN
        if dst != iface.mac and dst != BROADCAST_MAC:
            if dst[0] & 1:
                if dst not in iface.multicast and not iface.flags & IFF_PROMISC:
                    c["drop_multicast_not_joined"] += 1
                    return
            elif iface.flags & IFF_PROMISC:
                pkt.to_us = False
                c["promisc_not_ours"] += 1
                return
            else:
                c["drop_not_our_mac"] += 1
                return
        pkt.ethertype = etype
        handler = self.handlers.get(etype)
        if handler is None:
            c["drop_unknown_ethertype"] += 1
            return
        c["in_" + hex(etype)] += 1
        handler(iface, pkt)

    def output(self, iface: Interface, dst: bytes, ethertype: int,
               payload: Sequence[Buffer], meta: TxMeta | None = None) -> bool:
        hdr = dst + iface.mac + ethertype.to_bytes(2, "big")
        return iface.output([hdr, *payload], meta)
