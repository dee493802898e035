"""One TCP output per receive batch (stack/batch.py): the segments a driver reads in one
batch are answered by one ACK at the batch's end, out-of-order ones at once."""

from __future__ import annotations

import struct

from stack.addr import Endpoint
from stack.batch import RxBatch
from stack.transport.tcp import TCPProto
from stack.transport.tcp.tcb import TCB

from .test_tcp_emitter import ACK, ME, PSH, SYN, NoNetwork, Recorder, segment

MSS = 1460


def _connected(batch: RxBatch | None) -> tuple[TCPProto, Recorder, TCB, int]:
    """A passive connection from PEER:4000 to ME:80, handshake done, nothing pending."""
    rec = Recorder()
    proto = TCPProto(NoNetwork(), emitter=rec)
    proto.batch = batch
    lst = proto.socket()
    lst.bind(Endpoint(ME, 80))
    lst.listen(4)
    proto.input(segment(4000, 80, 1000, 0, SYN, opts=struct.pack("!BBH", 2, 4, MSS) + b"\x04\x02\x01\x01"))
    (synack,) = rec.take()
    iss = synack.seg.seq
    proto.input(segment(4000, 80, 1001, iss + 1, ACK))
    conn, _peer = lst.accept_nowait()
    assert rec.take() == []
    return proto, rec, conn.tcb, iss


def _data(iss: int, i: int) -> object:
    return segment(4000, 80, 1001 + i * MSS, iss + 1, ACK | PSH, bytes(MSS))


async def test_a_batch_of_segments_gets_one_ack_at_its_end(autojump_clock: object) -> None:
    batch = RxBatch()
    proto, rec, _tcb, iss = _connected(batch)
    batch.begin()
    for i in range(6):
        proto.input(_data(iss, i))  # type: ignore[arg-type]
    assert rec.take() == []  # every ACK waits for the batch's end
    batch.end()
    (ack,) = rec.take()
    assert ack.seg.flags & ACK and ack.seg.ack == 1001 + 6 * MSS
    assert batch.counters["deferred"] == 1 and batch.counters["coalesced"] == 5
    assert batch.counters["flushed"] == 1 and not batch.pending


async def test_without_a_batch_every_second_segment_is_acked(autojump_clock: object) -> None:
    proto, rec, _tcb, iss = _connected(None)
    for i in range(6):
        proto.input(_data(iss, i))  # type: ignore[arg-type]
    acks = rec.take()
    assert [a.seg.ack for a in acks] == [1001 + 2 * MSS, 1001 + 4 * MSS, 1001 + 6 * MSS]


async def test_out_of_order_segments_are_acked_at_once(autojump_clock: object) -> None:
    batch = RxBatch()
    proto, rec, _tcb, iss = _connected(batch)
    batch.begin()
    proto.input(_data(iss, 0))  # type: ignore[arg-type]
    assert rec.take() == []
    for i in (2, 3, 4):  # segment 1 lost: three duplicate ACKs, each with SACK, now
        proto.input(_data(iss, i))  # type: ignore[arg-type]
    dups = rec.take()
    assert [d.seg.ack for d in dups] == [1001 + MSS] * 3
    assert all(d.seg.opts is not None and d.seg.opts.sack for d in dups)
    batch.end()


async def test_a_connection_closed_in_the_batch_sends_nothing_more(
        autojump_clock: object) -> None:
    batch = RxBatch()
    proto, rec, tcb, iss = _connected(batch)
    batch.begin()
    proto.input(_data(iss, 0))  # type: ignore[arg-type]
    tcb.destroy()  # e.g. a RST later in the same batch
    batch.end()
    assert rec.take() == []


def test_batch_runs_each_key_once_at_the_outermost_end() -> None:
    batch = RxBatch()
    ran: list[str] = []
    batch.begin()
    batch.begin()  # a bridge delivering to another interface inside a batch
    batch.defer(1, lambda: ran.append("a"))
    batch.defer(1, lambda: ran.append("again"))
    batch.end()
    assert ran == []  # the inner end runs nothing

    def chained() -> None:
        ran.append("b")
        batch.defer(3, lambda: ran.append("c"))  # deferred by the flush: same flush

    batch.defer(2, chained)
    batch.end()
    assert ran == ["a", "b", "c"] and not batch.active and not batch.pending
    assert batch.counters["batches"] == 1 and batch.counters["flushed"] == 3



async def test_a_send_inside_a_batch_waits_only_behind_data_in_flight(
        autojump_clock: object) -> None:
    """A FUSE WRITE's handler runs inside the batch: on an idle connection the segment
    goes at once (a request, an echo); with data in flight, after the reply (its ACKs
    clock it out anyway)."""
    batch = RxBatch()
    proto, rec, tcb, _iss = _connected(batch)
    assert tcb.sock is not None
    tcb.nodelay = True  # TCP_NODELAY, as an echo client: no Nagle behind "request"
    batch.begin()
    assert tcb.sock.send_nowait(b"request") == 7
    (seg,) = rec.take()  # nothing in flight: on the wire now
    assert bytes(seg.seg.payload) == b"request"
    assert tcb.sock.send_nowait(b"more") == 4
    assert rec.take() == []  # behind "request", still unacknowledged
    batch.end()
    (more,) = rec.take()
    assert bytes(more.seg.payload) == b"more"


async def test_a_window_update_inside_a_batch_goes_at_its_end(
        autojump_clock: object) -> None:
    batch = RxBatch()
    proto, rec, tcb, iss = _connected(batch)
    assert tcb.sock is not None
    n = 0
    while tcb.rcv_space() > MSS:  # fill the receive buffer (ACKed as it comes)
        proto.input(_data(iss, n))  # type: ignore[arg-type]
        n += 1
    rec.take()
    batch.begin()
    assert len(tcb.sock.recv_nowait(1 << 20)) == n * MSS
    assert rec.take() == []  # the READ's reply first
    batch.end()
    (update,) = rec.take()
    assert update.seg.ack == 1001 + n * MSS and proto.counters["window_updates"] == 1


def test_deferred_work_that_raises_is_counted_and_the_rest_runs() -> None:
    batch = RxBatch()
    ran: list[int] = []

    def broken() -> None:
        raise RuntimeError("a protocol's bug")

    batch.begin()
    batch.defer(1, broken)
    batch.defer(2, lambda: ran.append(2))
    batch.end()  # does not raise
    assert ran == [2] and batch.counters["work_failed"] == 1 and not batch.active


# -- a reader woken by a small message runs before the rest of the batch -------------
async def test_a_small_pushed_message_asks_the_batch_to_end_early(
        autojump_clock: object) -> None:
    batch = RxBatch()
    proto, _rec, _tcb, iss = _connected(batch)
    batch.begin()
    proto.input(segment(4000, 80, 1001, iss + 1, ACK, bytes(MSS)))  # type: ignore[arg-type]
    assert not batch.end_early  # a bulk sender's segment: not pushed
    proto.input(segment(4000, 80, 1001 + MSS, iss + 1, ACK | PSH, bytes(MSS)))  # type: ignore[arg-type]
    assert batch.end_early  # pushed, and 2 segments (< SMALL_MESSAGE) queued
    batch.end()
    batch.begin()
    assert not batch.end_early  # a new batch starts without the request
    proto.input(segment(4000, 80, 1001 + 2 * MSS, iss + 1, ACK | PSH, bytes(MSS)))  # type: ignore[arg-type]
    assert not batch.end_early  # three segments unread: more than a message
    batch.end()


class _FrameSource:
    """Just what the receive loop needs of a stack: its batch bracket."""

    def __init__(self) -> None:
        self.rx_batch = RxBatch()


async def test_the_driver_yields_to_the_woken_reader_before_its_next_frames() -> None:
    import socket

    import trio

    from stack.l2.fdio import RX_BUDGET_BYTES_SHORT, FdInterface

    order: list[str] = []
    woken = trio.Event()
    stack = _FrameSource()

    class Frames(FdInterface):
        def _read_one(self) -> bool:
            data = self.sock.recv(2048)  # type: ignore[union-attr]  # EAGAIN raises
            self.counters["ibytes"] += len(data)
            order.append(data.decode())
            if data == b"msg":  # what TCP does for a small pushed message
                woken.set()
                stack.rx_batch.reader_woken()
            return True

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    ifc = Frames("t0", mac=b"\x02\x00\x00\x00\x00\x01")
    ifc.sock, ifc.fd, ifc.stack = a, a.fileno(), stack  # type: ignore[assignment]
    for frame in (b"f1", b"f2", b"msg", b"f3", b"f4"):
        b.send(frame)

    async def reader() -> None:
        await woken.wait()
        order.append("reader")

    with a, b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            ifc.start(nursery)
            with trio.fail_after(5):
                while len(order) < 6:
                    await trio.sleep(0.01)
            ifc.closed = True
            nursery.cancel_scope.cancel()
    assert order == ["f1", "f2", "msg", "reader", "f3", "f4"]
    assert stack.rx_batch.counters["early_ends"] == 1
    assert ifc._short_until > 0 and RX_BUDGET_BYTES_SHORT < 256 << 10
