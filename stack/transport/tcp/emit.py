"""Where TCP's finished segments go (smoltcp's ``dispatch``): an ``Emitter``.

TCP (output.py, and proto.py for RSTs and SYN cookies) builds each segment whole: the
header with its checksum, or with the pseudo-header sum and ``meta.needs_csum`` when the
route's device completes it, and ``meta.gso_*`` for a TSO super-segment. It hands the
segment to ``proto.emit`` and never calls the network layer itself, so the state machine
runs and is tested without one (tests/transport/test_tcp_emitter.py records what it
emits). ``NetworkEmitter`` is the stack's: one ``NetworkLayer.output`` per segment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stack.addr import Addr
from stack.network import DualNetwork, NetworkLayer
from stack.packet import Buffer, TxMeta

IPPROTO_TCP = 6


class Emitter(Protocol):
    def emit(self, src: Addr, dst: Addr, header: bytearray, payload: Sequence[Buffer] | None,
             meta: TxMeta | None, ttl: int | None = None, tos: int = 0) -> int:
        """Send one finished segment from ``src`` to ``dst``; 0 or an errno (never raises).
        The buffers must not change afterwards (they may wait for the next hop)."""
        ...


class NetworkEmitter:
    """Segments out through a network layer (``NetworkLayer.output``)."""

    def __init__(self, net: NetworkLayer, proto: int = IPPROTO_TCP) -> None:
        self.net = net
        self.proto = proto
        self._output = self._output6 = net.output
        if isinstance(net, DualNetwork):  # both families: each segment to its own layer
            self._output = net.v4.output
            if net.v6 is not None:
                self._output6 = net.v6.output

    def emit(self, src: Addr, dst: Addr, header: bytearray, payload: Sequence[Buffer] | None,
             meta: TxMeta | None, ttl: int | None = None, tos: int = 0) -> int:
        # dst >> 32 == 0xFFFF: IPv4-mapped, the IPv4 layer's (stack/addr.py is_v4)
        return (self._output if dst >> 32 == 0xFFFF else self._output6)(
            src, dst, self.proto, [header, *payload] if payload else [header],
            ttl=ttl, tos=tos, meta=meta)
