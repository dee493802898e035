"""The receive window never shrinks when window scaling is on (issue 14, item 1).

RFC 7323 2.4 / RFC 9293 3.8.6: a receiver must not move the right edge of the window it
offered to the left. With a scale factor the window field counts units of 2^scale bytes;
rounding the free space *down* to a unit moved the edge left by up to 2^scale - 1 bytes,
and input then trimmed data the peer had sent inside the window it was offered (counted
as ``beyond_window_trimmed``; the kernel took it for loss). Now the space is rounded *up*
(as Linux does, ALIGN(win, 1 << wscale)), ``rcv_adv`` is the largest right edge ever
advertised, and everything up to it is accepted, even when that overshoots the buffer
by less than one unit.

Deterministic, on MockClock over the in-memory wire; the kernel-peer version is
test_rcv_window_kernel.py.
"""

from __future__ import annotations

import random
import socket

import trio

from stack.transport.tcp import seq as sq
from stack.transport.wire import tcp as wtcp
from tests.transport.shim import Net, ip
from tests.transport.test_tcp_mock import A, B, _pair, _recv_exactly
from tests.transport.test_tcp_paths import _craft


def never_left(edges: list[int]) -> None:
    for a, b in zip(edges, edges[1:], strict=False):
        assert sq.ge(b, a), f"right edge moved left by {sq.sub(a, b)}: {edges}"


def _rcvbuf(n: int):  # noqa: ANN202
    return lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)  # limit 2n


async def test_advertise_never_moves_the_right_edge_left(autojump_clock: object, net: Net) -> None:
    """_advertise() itself: data arrives and is consumed in sizes that are not multiples of
    the scale unit; every advertisement keeps (or moves right) the edge, rcv_adv is the
    largest edge advertised, and the buffer takes everything offered."""
    net.b.sysctl.set("net.inet.tcp.recvbuf_auto", 0)
    lst, cli, srv = await _pair(net, server_opts=_rcvbuf(25_039))
    t = srv.tcb
    scale = t.rcv_scale
    assert t.ws_ok and scale > 0
    assert t.rcv_limit == 50_078 and t.rcv_limit % (1 << scale)  # not a whole unit
    rng = random.Random(14)
    unread = 0
    wnd = t._advertise()
    edge = sq.add(t.rcv_nxt, wnd << scale)
    assert edge == t.rcv_adv
    for _ in range(2000):
        room = sq.sub(t.rcv_adv, t.rcv_nxt)
        if room and rng.random() < 0.6:
            # the peer sends anything inside the offered window: a full-sized segment,
            # or a tail of odd size
            n = min(room, 1448 if rng.random() < 0.7 else rng.randint(1, 1448))
            assert t._receive_data(t.rcv_nxt, memoryview(bytes(n)), n)
            unread += n
        elif unread:
            n = min(unread, rng.choice((1, 333, 4096, 16384, 65536)))  # a partial read
            assert len(t.user_recv(n)) == n
            unread -= n
        space = t.rcv_space()
        wnd = t._advertise()
        new_edge = sq.add(t.rcv_nxt, wnd << scale)
        assert sq.ge(new_edge, edge), f"right edge moved left by {sq.sub(edge, new_edge)}"
        assert new_edge == t.rcv_adv
        if space >= t.rcv_mss:
            assert wnd << scale >= space  # the room is rounded up, never down
        edge = new_edge
    assert net.b.tcp.counters["rcv_wnd_rounded_down"] == 0
    # everything offered was taken: at most a unit past the limit... plus the slack
    # keeping the edge may commit while the peer fills it
    assert len(t.rcvbuf) == unread
    assert len(t.rcvbuf) + sq.sub(t.rcv_adv, t.rcv_nxt) <= t.rcv_limit + t._rcv_slack()


async def test_trickling_peer_cannot_grow_the_buffer(autojump_clock: object, net: Net) -> None:
    """A peer filling the offered window with segments smaller than a unit while nobody
    reads: keeping the edge would move it right by each segment's size for ever. The
    advertised window still closes, the buffer stays within rcv_limit + slack, and nothing
    offered is dropped (only the field is rounded down, by less than a unit)."""
    net.b.sysctl.set("net.inet.tcp.recvbuf_auto", 0)
    lst, cli, srv = await _pair(net, server_opts=_rcvbuf(25_039))
    t = srv.tcb
    scale = t.rcv_scale
    limit = t.rcv_limit + t._rcv_slack()
    wnd = t._advertise()
    for _ in range(100_000):
        if wnd == 0:
            break
        n = min(100, sq.sub(t.rcv_adv, t.rcv_nxt))
        assert t._receive_data(t.rcv_nxt, memoryview(bytes(n)), n)
        wnd = t._advertise()
        assert len(t.rcvbuf) + sq.sub(t.rcv_adv, t.rcv_nxt) <= limit
    assert wnd == 0
    assert net.b.tcp.counters["rcv_wnd_rounded_down"] > 0
    # what the last ACKs offered is still accepted up to rcv_adv, never trimmed
    room = sq.sub(t.rcv_adv, t.rcv_nxt)
    assert 0 <= room < 1 << scale
    assert len(t.rcvbuf) + room <= limit


async def test_data_up_to_the_advertised_edge_is_accepted(autojump_clock: object, net: Net) -> None:
    """Over the wire: segments of odd sizes, partial reads; the right edges in B's ACKs
    never move left, and a segment ending exactly at the largest edge B ever advertised
    is taken whole (nothing trimmed, nothing dropped, every byte readable)."""
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.timestamps", 0)  # crafted segments carry no options
    net.b.sysctl.set("net.inet.tcp.recvbuf_auto", 0)
    lst, cli, srv = await _pair(net, server_opts=_rcvbuf(20_007))
    t = srv.tcb
    scale = t.rcv_scale
    assert t.ws_ok and scale > 0
    assert t.rcv_limit == 40_014 and t.rcv_limit % (1 << scale)  # not a whole unit
    # from here B's segments go nowhere (the client would answer ACKs for data it never
    # sent); B's ACKs are read from the wire's tap, A's side is crafted
    edges: list[int] = []

    def tap(p) -> None:  # noqa: ANN001
        if p.src == ip(B):
            seg = p.tcp()
            if seg.flags & wtcp.ACK and not seg.flags & wtcp.RST:
                edges.append(sq.add(seg.ack, seg.wnd << scale))

    net.wire.taps.append(tap)
    net.wire.faults.drop = lambda s, d, p, data: s == ip(B)
    sport, dport = t.rport, t.lport
    seq = t.rcv_nxt
    ack = t.snd_nxt
    sent = bytearray()
    rng = random.Random(7)

    async def send(n: int) -> None:
        nonlocal seq
        payload = rng.randbytes(n)
        net.wire.send(_craft(A, B, sport, dport, seq, ack, wtcp.ACK, payload))
        sent.extend(payload)
        seq = sq.add(seq, n)
        await trio.sleep(0.5)  # past the delayed ACK

    got = bytearray()
    for n, consume in ((1000, 0), (777, 333), (1111, 0), (1448, 2000), (999, 0), (1301, 1)):
        await send(n)
        if consume:
            got += await _recv_exactly(srv, consume)
    t.ack_now = True
    t.output()  # one more advertisement after the last read
    await trio.sleep(0.1)
    assert len(edges) >= 4
    never_left(edges)
    top = edges[-1]
    assert top == t.rcv_adv
    # fill the window exactly up to the largest edge ever advertised
    while sq.lt(seq, top):
        await send(min(1448, sq.sub(top, seq)))
    never_left(edges)
    c = net.b.tcp.counters
    assert c["beyond_window_trimmed"] == 0
    assert c["drop_beyond_window"] == 0
    assert c["rcv_wnd_rounded_down"] == 0
    assert t.rcv_nxt == top
    assert t.rcv_limit < len(t.rcvbuf) <= t.rcv_limit + t._rcv_slack()  # a small overshoot, kept
    got += await _recv_exactly(srv, len(sent) - len(got))
    assert got == sent
