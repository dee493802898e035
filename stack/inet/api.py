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
