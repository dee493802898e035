"""Packets as buffers with metadata, not copies.

A received frame is read once into a stack-owned ``bytearray``; every layer works on a
``memoryview`` slice of it (``Packet.view(offset)``), so nothing is copied between layers.
The one copy on the way in is into the reader's buffer (socket receive queue).

On the way out a packet is a list of buffers (headers and payload slices) written with
one ``writev``: headers are prepended as new small ``bytes`` and the payload is never
joined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # cycle: a Packet records the Interface it came in on; types only
    from stack.l2.iface import Interface

Buffer = bytes | bytearray | memoryview

# virtio-net gso types (linux/virtio_net.h)
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: one UDP datagram, to be IP-fragmented
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO (UDP_SEGMENT): gso_size-byte UDP datagrams


class Packet:
    """A received frame. ``data`` is the whole frame; ``l3`` is the offset of the
    network-layer header once layer 2 has parsed it."""

    __slots__ = ("data", "iface", "l3", "ethertype", "src_mac", "dst_mac", "vlan",
                 "csum_valid", "csum_partial", "csum_start", "csum_offset", "hdr_len",
                 "gso_type", "gso_size", "to_us")

    def __init__(self, data: memoryview, iface: Interface | None = None) -> None:
        self.data = data
        self.iface = iface
        self.l3 = 0
        self.ethertype = 0
        self.src_mac = b""
        self.dst_mac = b""
        self.vlan: int | None = None
        self.csum_valid = False  # the kernel (virtio header) vouched for L4 checksums
        #: the L4 checksum field holds only the pseudo-header sum (virtio NEEDS_CSUM: the
        #: frame came from this host and was never on a wire); csum_valid is set too, so
        #: upper layers skip verification. Forwarding it out needs TxMeta.needs_csum.
        self.csum_partial = False
        self.csum_start = 0  # with csum_partial: where the checksummed span begins
        self.csum_offset = 0  # ... and where the checksum field is, from csum_start
        self.hdr_len = 0  # GSO: Ethernet + IP + L4 header length (virtio hdr_len)
        self.gso_type = GSO_NONE
        self.gso_size = 0
        self.to_us = True  # destination MAC was ours/broadcast/multicast (not promisc-only)

    def tx_meta(self, shift: int = 0) -> TxMeta | None:
        """The TxMeta that forwards this frame unchanged (partial checksum and GSO kept;
        ``shift`` moves the offsets when headers grow/shrink, e.g. +4 for a VLAN tag)."""
        if not (self.csum_partial or self.gso_type):
            return None
        return TxMeta(csum_start=self.csum_start + shift, csum_offset=self.csum_offset,
                      needs_csum=self.csum_partial, gso_type=self.gso_type,
                      gso_size=self.gso_size, hdr_len=self.hdr_len + shift if self.hdr_len else 0)

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
    #: the device queue for this frame's flow (a multi-queue TAP steers the flow's
    #: return traffic to the queue it was sent on): QUEUE_SPARSE (the first, and every
    #: frame's unless said otherwise) or QUEUE_BULK for a flow moving bulk data, so a
    #: request's answer is never queued in the device behind a bulk flow's frames
    #: (fq_codel's sparse flows, by the queue)
    queue: int = 0

    def shifted(self, n: int) -> TxMeta:
        """This TxMeta for the frame with ``n`` more bytes of headers in front (the
        network header, an Ethernet header, a VLAN tag): the offsets move, the rest stays."""
        return TxMeta(self.csum_start + n, self.csum_offset, self.needs_csum, self.gso_type,
                      self.gso_size, self.hdr_len + n if self.hdr_len else 0, self.queue)


QUEUE_SPARSE = 0
QUEUE_BULK = 1


def locate_l4_csum(frame: Buffer, l3: int = 14) -> tuple[int, int] | None:
    """(csum_start, csum_offset) of the TCP/UDP checksum of an IPv4/IPv6 frame whose
    network header starts at ``l3`` (for devices that flag a partial checksum without
    saying where it is, such as AF_PACKET auxdata)."""
    if len(frame) < l3 + 40:
        return None
    v = frame[l3] >> 4
    if v == 4:
        start, proto = l3 + (frame[l3] & 0xF) * 4, frame[l3 + 9]
    elif v == 6:
        start, proto = l3 + 40, frame[l3 + 6]
    else:
        return None
    if proto == 6:
        return start, 16
    if proto == 17:
        return start, 6
    return None


_D = TypeVar("_D")


def send_each(send: Callable[[_D], object], datas: Iterable[_D]) -> int:
    """Datagrams one by one with sendmmsg's semantics: how many went; the first's error
    raises, a later one's ends the run (its error shows on the caller's next try)."""
    sent = 0
    for d in datas:
        try:
            send(d)
        except OSError:
            if not sent:
                raise
            break
        sent += 1
    return sent
