"""Packets as buffers with metadata, not copies.

A received frame is read once into a stack-owned ``bytearray``; every layer works on a
``memoryview`` slice of it (``Packet.view(offset)``), so nothing is copied between layers.
The one copy on the way in is into the reader's buffer (socket receive queue).

On the way out a packet is a list of buffers (headers and payload slices) written with
one ``writev``: headers are prepended as new small ``bytes`` and the payload is never
joined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from stack.l2.iface import Interface

Buffer = Union[bytes, bytearray, memoryview]

# virtio-net gso types (linux/virtio_net.h)
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4


class Packet:
    """A received frame. ``data`` is the whole frame; ``l3`` is the offset of the
    network-layer header once layer 2 has parsed it."""

    __slots__ = ("data", "iface", "l3", "ethertype", "src_mac", "dst_mac", "vlan",
                 "csum_valid", "gso_type", "gso_size", "to_us")

    def __init__(self, data: memoryview, iface: Interface | None = None) -> None:
        self.data = data
        self.iface = iface
        self.l3 = 0
        self.ethertype = 0
        self.src_mac = b""
        self.dst_mac = b""
        self.vlan: int | None = None
        self.csum_valid = False  # the kernel (virtio header) vouched for L4 checksums
        self.gso_type = GSO_NONE
        self.gso_size = 0
        self.to_us = True  # destination MAC was ours/broadcast/multicast (not promisc-only)

    def payload(self) -> memoryview:
        return self.data[self.l3:]

    def __len__(self) -> int:
        return len(self.data)


@dataclass(slots=True)
class TxMeta:
    """What the driver needs to ask the device for offloads (a virtio-net header):
    checksum to be completed at csum_start+csum_offset, and segmentation of a super-
    segment into gso_size pieces."""

    csum_start: int = 0
    csum_offset: int = 0
    needs_csum: bool = False
    gso_type: int = GSO_NONE
    gso_size: int = 0
    hdr_len: int = 0
