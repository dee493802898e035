"""TCP's state machine without a network layer (smoltcp's dispatch): segments go in
through ``TCPProto.input`` and come out through the protocol's emitter
(stack/transport/tcp/emit.py), here a recorder. The network layer is a stub that answers
route questions and fails the test if anything is sent through it."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from stack.addr import Addr, Endpoint, parse_addr, pseudo_header_sum
from stack.network import IPInfo, RawTap
from stack.packet import Buffer, TxMeta
from stack.transport.tcp import TCPProto
from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum, verify

ME, PEER = parse_addr("10.0.0.1"), parse_addr("10.0.0.2")
SYN, ACK, FIN, RST, PSH = wtcp.SYN, wtcp.ACK, wtcp.FIN, wtcp.RST, wtcp.PSH


class NoNetwork:
    """Answers route questions; sending through it is a failure (TCP must emit)."""

    def __init__(self) -> None:
        self.raw_taps: list[RawTap] = []

    def output(self, *args: object, **kw: object) -> int:
        raise AssertionError("TCP called the network layer instead of its emitter")

    def source_for(self, dst: Addr) -> Addr | None:
        return ME

    def is_local(self, addr: Addr) -> bool:
        return addr == ME

    def is_broadcast(self, addr: Addr) -> bool:
        return False

    def route_mtu(self, dst: Addr) -> int:
        return 1500

    def route_offloads(self, dst: Addr) -> set[str]:
        return set()

    def original_packet(self, info: IPInfo) -> memoryview:
        raise AssertionError("not needed")

    def port_unreachable(self, info: IPInfo) -> bool:
        raise AssertionError("not TCP's")


@dataclass
class Emitted:
    src: Addr
    dst: Addr
    seg: wtcp.TCPSegment
    data: bytes
    meta: TxMeta | None


class Recorder:
    """An emitter keeping every segment (checked and parsed)."""

    def __init__(self) -> None:
        self.out: list[Emitted] = []

    def emit(self, src: Addr, dst: Addr, header: bytearray, payload: Sequence[Buffer] | None,
             meta: TxMeta | None, ttl: int | None = None, tos: int = 0) -> int:
        data = bytes(header) + b"".join(bytes(b) for b in payload or ())
        # a finished segment: its checksum covers the pseudo header of either family
        assert verify((data,), pseudo_header_sum(src, dst, 6, len(data)))
        self.out.append(Emitted(src, dst, wtcp.parse(memoryview(data)), data, meta))
        return 0

    def take(self) -> list[Emitted]:
        out, self.out = self.out, []
        return out


def segment(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
            opts: bytes = b"", wnd: int = 65535) -> IPInfo:
    hdr = wtcp.emit_header(sport, dport, seq, ack, flags, wnd, opts)
    c = checksum((hdr, payload), pseudo_header_sum(PEER, ME, 6, len(hdr) + len(payload)))
    struct.pack_into("!H", hdr, 16, c)
    return IPInfo(PEER, ME, 6, 64, 0, memoryview(bytes(hdr) + payload), None, False)


@pytest.fixture
def tcp() -> tuple[TCPProto, Recorder]:
    rec = Recorder()
    return TCPProto(NoNetwork(), emitter=rec), rec


async def test_passive_open_data_and_close_through_the_emitter(
        autojump_clock: object, tcp: tuple[TCPProto, Recorder]) -> None:
    proto, rec = tcp
    lst = proto.socket()
    lst.bind(Endpoint(ME, 80))
    lst.listen(4)
    mss = struct.pack("!BBH", 2, 4, 1460)
    proto.input(segment(4000, 80, 1000, 0, SYN, opts=mss))
    (synack,) = rec.take()
    assert (synack.src, synack.dst) == (ME, PEER)
    assert synack.seg.flags == SYN | ACK and synack.seg.ack == 1001
    assert synack.seg.opts is not None and synack.seg.opts.mss == 1460
    iss = synack.seg.seq

    proto.input(segment(4000, 80, 1001, iss + 1, ACK))
    conn, peer = lst.accept_nowait()
    assert peer == Endpoint(PEER, 4000) and conn.getsockname() == Endpoint(ME, 80)
    assert rec.take() == []  # the handshake's last ACK needs no answer

    proto.input(segment(4000, 80, 1001, iss + 1, ACK | PSH, b"ping"))
    assert rec.take() == []  # one small segment: the ACK is delayed
    assert conn.recv_nowait(100) == b"ping"
    (update,) = rec.take()  # the reader opened the window (64 KB offered, no scaling)
    assert update.seg.ack == 1005 and proto.counters["window_updates"] == 1
    assert conn.send_nowait(b"pong") == 4
    (data,) = rec.take()
    assert data.seg.flags & ACK and data.seg.ack == 1005 and bytes(data.seg.payload) == b"pong"

    conn.close()
    (fin,) = rec.take()
    assert fin.seg.flags & FIN and fin.seg.seq == iss + 5
    assert not proto.inet.raw_taps


async def test_segments_of_no_connection_go_through_the_emitter(
        autojump_clock: object, tcp: tuple[TCPProto, Recorder]) -> None:
    proto, rec = tcp
    proto.input(segment(4000, 81, 5000, 0, SYN))  # nobody listens on 81
    (rst,) = rec.take()
    assert rst.seg.flags == RST | ACK and rst.seg.ack == 5001 and rst.dst == PEER
    assert proto.counters["rst_closed_port"] == 1


async def test_active_open_emits_a_syn(autojump_clock: object,
                                       tcp: tuple[TCPProto, Recorder]) -> None:
    proto, rec = tcp
    s = proto.socket()
    with pytest.raises(BlockingIOError):
        s.connect_nowait(("10.0.0.2", 7))  # the in-stack user's tuple, converted once
    (syn,) = rec.take()
    assert syn.seg.flags == SYN and (syn.src, syn.dst) == (ME, PEER) and syn.seg.dport == 7
    assert s.getsockname().addr == ME
