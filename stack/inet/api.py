"""The narrow interface between the IP layer and the transports (gVisor-style).

The IPv4 layer (``stack.inet``) provides, on ``stack.inet`` (an ``IPv4Layer``):

* ``register_protocol(proto: int, handler: TransportHandler)`` - deliver packets of IP
  protocol ``proto`` (6 TCP, 17 UDP, 1 ICMP is the IP layer's own; raw sockets see copies).
* ``register_error_handler(proto, fn: ErrorHandler)`` - ICMP errors about packets of
  ``proto`` that this host sent (so UDP sees ECONNREFUSED and TCP soft/hard errors).
* ``output(src, dst, proto, payload, *, ttl=None, tos=0, df=False, meta=None) -> int`` -
  route, choose the source address when ``src`` is None/0, fragment when needed, resolve
  the next hop, send. Returns 0 or a positive errno (EHOSTUNREACH, ENETUNREACH, EMSGSIZE,
  ENOBUFS) - no exceptions on the data path.
* ``source_for(dst) -> IPv4Address | None`` - the source address a packet to ``dst`` gets.
* ``is_local(addr) / is_broadcast(addr)``, ``route_mtu(dst) -> int``.

Additive extensions (implemented in ``stack/inet/ipv4.py``; see docs/inet.md):

* ``output(..., ifname=None, on_error=None, ident=None, options=b"")`` - ``ifname`` sends
  out of one interface (SO_BINDTODEVICE / limited broadcast); ``on_error(errno)`` is
  called later if the packet is dropped unresolved (ARP failure: EHOSTUNREACH). Either
  way the protocol's error handler also sees ICMP (3, 1) "host unreachable", as Linux
  reports neighbour failures. Buffers handed to ``output`` must not be changed afterwards
  (they may wait in the ARP queue or the driver's queue).
* ``meta`` (TxMeta): ``needs_csum`` means the checksum field holds the pseudo-header sum
  (CHECKSUM_PARTIAL); ``csum_start``/``hdr_len`` are relative to the start of the
  transport header (the first payload byte). The IP layer makes them frame-relative for
  the driver, or completes the checksum in software when the interface lacks the "csum"
  offload or the datagram is fragmented. GSO (``gso_type``) only when
  ``route_offloads(dst)`` contains "tso4" (else EMSGSIZE).
* ``route_offloads(dst) -> set[str]``; ``unregister_protocol(proto)``;
  ``raw_taps: list[Callable[[IPInfo], bool]]`` (every local datagram; True = consumed);
  ``icmp.send_unreachable(info, code) -> bool`` (port unreachable is code 3);
  ``icmp.send_error(type, code, packet_view, extra=0, src=None)``;
  the errno for an ICMP error: ``stack.inet.icmp.icmp_errno(type, code)`` (module function).

Addresses are ``ipaddress.IPv4Address`` at API boundaries that users see and plain ``int``
on the hot path (``IPv4Address(int)`` is cheap when needed); v6 will use its own layer with
the same shape, so the transports never assume 4-byte addresses except through ``family``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stack.packet import Buffer, Packet, TxMeta


@dataclass(slots=True)
class IPInfo:
    """What the IP layer tells a transport about a received packet (header already
    validated). ``payload`` is a zero-copy view of the transport header + data."""

    src: int
    dst: int
    proto: int
    ttl: int
    tos: int
    payload: memoryview
    pkt: Packet | None
    csum_valid: bool  # the device/kernel vouched for the transport checksum
    broadcast: bool = False


#: transport receive: (IPInfo) -> None
TransportHandler = Callable[[IPInfo], None]

#: ICMP error: (icmp_type, icmp_code, original IPInfo-like (src, dst, proto, first bytes
#: of the transport header as memoryview), extra: int (e.g. next-hop MTU))
ErrorHandler = Callable[[int, int, int, int, memoryview, int], None]

Payload = Sequence[Buffer]
__all__ = ["IPInfo", "TransportHandler", "ErrorHandler", "Payload", "TxMeta"]
