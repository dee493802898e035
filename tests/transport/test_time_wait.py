"""TIME_WAIT bounded in count and in size (issue 14, item 6c): a compact record takes the
closed connection's place (stack/transport/tcp/timewait.py), at most
``net.inet.tcp.max_tw_buckets`` of them (``tw_overflow`` counts the rest), and it still
does what TIME_WAIT did with the whole TCB: re-ACK a retransmitted FIN and restart 2MSL,
let a new SYN above RCV.NXT start a new incarnation, challenge or drop what RFC 5961
says, hold the port, show in the listings. Deterministic, on MockClock."""

from __future__ import annotations

import gc
import select
import socket
import sys
import tracemalloc
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from stack.control.backend import list_sockets
from stack.transport.tcp import seq as sq
from stack.transport.tcp.socket import TCPSocket
from stack.transport.tcp.tcb import TCB, State
from stack.transport.tcp.timewait import TimeWait
from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum, pseudo_header_sum
from tests.transport.shim import Host, Net, Sent, ip
from tests.transport.test_tcp_mock import A, B, _pair

MSL_MS = 5000  # 2MSL = 10 s


def _craft(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"", opts: bytes = b"") -> Sent:
    hdr = wtcp.emit_header(sport, dport, seq & sq.MASK, ack & sq.MASK, flags, 65535, opts)
    c = checksum((hdr, payload), pseudo_header_sum(ip(src), ip(dst), 6, len(hdr) + len(payload)))
    hdr[16:18] = c.to_bytes(2, "big")
    return Sent(trio.current_time(), ip(src), ip(dst), 6, bytes(hdr) + payload)


def time_waits(h: Host) -> list[TimeWait]:
    return [t for t in h.tcp.conns.values() if isinstance(t, TimeWait)]


def _set_msl(net: Net, ms: int = MSL_MS) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.msl", ms)


async def _client_time_wait(net: Net, *, data: int = 0) -> tuple[TimeWait, TCPSocket]:
    """A connection A→B closed by A first: A holds it in TIME_WAIT. Returns A's record
    and B's socket (closed)."""
    lst, cli, srv = await _pair(net)
    if data:
        await cli.send(b"c" * data)
        await srv.send(b"s" * data)
        got = 0
        while got < data:
            got += len(await srv.recv(1 << 20))
        got = 0
        while got < data:
            got += len(await cli.recv(1 << 20))
    key = cli.tcb.key
    cli.close()
    assert await srv.recv(10) == b""
    srv.close()
    lst.close()
    await trio.sleep(0.1)
    tw = net.a.tcp.conns[key]
    assert isinstance(tw, TimeWait)
    return tw, srv


# -- (a) the bound ------------------------------------------------------------------------
async def test_time_wait_entries_never_exceed_the_cap(autojump_clock: object, net: Net) -> None:
    cap, total = 20, 100
    _set_msl(net)
    b = net.b.tcp
    net.b.sysctl.set("net.inet.tcp.max_tw_buckets", cap)
    peak = 0

    def watch(_p: Sent) -> None:  # at every segment on the wire, not only between rounds
        nonlocal peak
        n = len(time_waits(net.b))
        assert n == b.tw_count <= cap
        peak = max(peak, n)

    net.wire.taps.append(watch)
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(64)
    for _ in range(total):
        cli = net.a.tcp.socket()
        async with trio.open_nursery() as n:
            n.start_soon(cli.connect, (B, 80))
            srv, _ = await lst.accept()
        await cli.send(b"q")
        assert await srv.recv(10) == b"q"
        srv.close()  # the server closes first: B takes TIME_WAIT
        assert await cli.recv(10) == b""
        cli.close()
        await trio.sleep(0.05)
    c = b.counters
    assert peak == cap and b.tw_count == cap
    assert c["tw_overflow"] == total - cap
    assert c["state_FIN_WAIT_2_to_TIME_WAIT"] + c["state_FIN_WAIT_1_to_TIME_WAIT"] == cap
    # an overflowed connection still sent its last ACK: the peer's LAST_ACK ended at once,
    # no FIN was retransmitted, nothing was reset
    assert not net.a.tcp.conns
    assert net.a.tcp.counters["rexmt_timeouts"] == 0
    assert net.a.tcp.counters["rst_in"] == 0 and c["rst_out"] == 0
    # the records expire 2MSL later and take their ports with them
    await trio.sleep(2 * MSL_MS / 1000 + 0.5)
    assert b.tw_count == 0 and c["timewait_expired"] == cap
    assert list(b.conns) == [] and list(b.ports) == [80]  # the listener only
    assert len(b.timers) == 0


async def test_cap_zero_keeps_no_time_wait(autojump_clock: object, net: Net) -> None:
    """max_tw_buckets 0 (as Linux allows): every close is final at once."""
    net.a.sysctl.set("net.inet.tcp.max_tw_buckets", 0)
    _lst, cli, srv = await _pair(net)
    tcb = cli.tcb
    cli.close()
    assert await srv.recv(10) == b""
    srv.close()
    await trio.sleep(0.1)
    assert tcb.state == State.CLOSED and not net.a.tcp.conns and not net.b.tcp.conns
    assert net.a.tcp.counters["tw_overflow"] == 1


# -- (b) the record holds no TCB ----------------------------------------------------------
async def test_time_wait_record_retains_no_tcb(autojump_clock: object, net: Net) -> None:
    _set_msl(net)
    lst, cli, srv = await _pair(net)
    await cli.send(b"c" * 300_000)  # buffers, scoreboard and windows all in use
    await srv.send(b"s" * 300_000)
    for s in (srv, cli):
        got = 0
        while got < 300_000:
            got += len(await s.recv(1 << 20))
    tcb_ref = weakref.ref(cli.tcb)
    key = cli.tcb.key
    cli.close()
    assert await srv.recv(10) == b""
    srv.close()
    await trio.sleep(0.1)
    tw = net.a.tcp.conns[key]
    assert type(tw) is TimeWait and tw.state == State.TIME_WAIT
    assert list(net.a.tcp.ports[key[1]]) == [tw]  # it holds the port in the TCB's place
    # it refers to nothing of the TCB: no buffers, no congestion or SACK state; its
    # timer entry is [deadline, order, itself]
    assert not hasattr(tw, "__dict__")
    refs = [r for r in gc.get_referents(tw) if r is not tw.timer_entry]
    assert not [r for r in refs if isinstance(r, (TCB, TCPSocket, bytearray, memoryview,
                                                  list, dict, tuple))], refs
    ent = tw.timer_entry
    assert ent is not None and ent == [tw.timer_at, ent[1], tw]
    assert sys.getsizeof(tw) <= 256
    # and the TCB itself is gone (the socket that held it too), while TIME_WAIT lasts
    del cli, s
    gc.collect()
    assert tcb_ref() is None
    assert net.a.tcp.conns[key] is tw and trio.current_time() < tw.timer_at


async def test_time_wait_memory_per_connection(autojump_clock: object, net: Net) -> None:
    """Memory held per TIME_WAIT connection (tracemalloc): the record, its table and
    timer entries - well under a kilobyte where the TCB was ~8 KB."""
    _set_msl(net, 600_000)
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(64)

    async def one() -> None:
        cli = net.a.tcp.socket()
        async with trio.open_nursery() as n:
            n.start_soon(cli.connect, (B, 80))
            srv, _ = await lst.accept()
        await cli.send(b"x" * 2000)
        got = 0
        while got < 2000:
            got += len(await srv.recv(4096))
        cli.close()  # A takes TIME_WAIT
        assert await srv.recv(10) == b""
        srv.close()
        await trio.sleep(0.05)

    for _ in range(20):
        await one()
    n = 300
    net.wire.log.clear()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            await one()
        net.wire.log.clear()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(time_waits(net.a)) == 20 + n
    per = held / n
    assert per < 2048, f"{per:.0f} bytes per TIME_WAIT connection"


async def test_open_socket_sees_time_wait_then_closed(autojump_clock: object, net: Net) -> None:
    """Shut for writing but not closed: the socket's TCB reads TIME_WAIT as before (its
    unread data still readable), the table holds the record, and when 2MSL ends the
    socket's connection is CLOSED."""
    _set_msl(net)
    _lst, cli, srv = await _pair(net)
    cli.shutdown(socket.SHUT_WR)
    assert await srv.recv(10) == b""
    await srv.send(b"bye")
    srv.close()
    await trio.sleep(0.1)
    assert cli.state == "TIME_WAIT"
    assert isinstance(net.a.tcp.conns[cli.tcb.key], TimeWait)
    mask = cli.poll_mask()
    assert mask & select.POLLIN and mask & select.POLLHUP
    assert await cli.recv(10) == b"bye"
    assert await cli.recv(10) == b""
    await trio.sleep(2 * MSL_MS / 1000 + 0.1)
    assert cli.state == "CLOSED" and not net.a.tcp.conns
    assert await cli.recv(10) == b""
    cli.close()


# -- (c) a retransmitted FIN ----------------------------------------------------------------
async def test_retransmitted_fin_is_reacked_and_restarts_2msl(autojump_clock: object,
                                                             net: Net) -> None:
    """A's ACK of B's FIN is lost: B (LAST_ACK) retransmits its FIN, A's TIME_WAIT record
    ACKs it again and starts 2MSL over from then; B then closes cleanly."""
    _set_msl(net)
    lst, cli, srv = await _pair(net)
    key = cli.tcb.key
    cli.close()
    assert await srv.recv(10) == b""
    await trio.sleep(0.1)
    dropped: list[float] = []
    fins: list[float] = []

    def drop_first_ack(src: Any, dst: Any, proto: int, data: bytes) -> bool:
        seg = wtcp.parse(memoryview(data))
        if src == ip(A) and seg.flags == wtcp.ACK and not dropped:
            dropped.append(trio.current_time())
            return True
        return False

    net.wire.faults.drop = drop_first_ack
    net.wire.taps.append(lambda p: fins.append(p.time)
                         if p.src == ip(B) and p.tcp().flags & wtcp.FIN else None)
    srv.close()
    await trio.sleep(0.01)
    tw = net.a.tcp.conns[key]
    assert isinstance(tw, TimeWait) and dropped
    first_deadline = tw.timer_at
    while len(fins) < 2:  # B's RTO
        await trio.sleep(0.05)
    await trio.sleep(0.1)
    assert net.a.tcp.counters["timewait_fin_reacked"] == 1
    assert not net.b.tcp.conns  # the second ACK arrived: B is done
    assert net.b.tcp.counters["rst_in"] == 0
    refin_at = fins[1] + net.wire.delay  # when A got it
    assert tw.timer_at == pytest.approx(refin_at + 2 * MSL_MS / 1000, abs=1e-6)
    assert tw.timer_at > first_deadline
    # still there at the first deadline, gone at the second
    await trio.sleep_until(first_deadline + 0.01)
    assert net.a.tcp.conns.get(key) is tw
    await trio.sleep_until(tw.timer_at + 0.01)
    assert key not in net.a.tcp.conns and net.a.tcp.counters["timewait_expired"] == 1


async def test_reack_carries_the_connection_numbers(autojump_clock: object, net: Net) -> None:
    """The re-ACK is <SEQ=SND.NXT><ACK=RCV.NXT><ACK> with the timestamps of the
    connection (TSval ours, TSecr the peer's last), as the TCB sent it."""
    _set_msl(net)
    tw, srv = await _client_time_wait(net, data=1000)
    t = srv.tcb
    sent = len(net.wire.log)
    ts = wtcp.emit_ts_sack((t.ts_now(), tw.ts_recent), None)
    net.wire.send(_craft(B, A, tw.rport, tw.lport, sq.sub(tw.rcv_nxt, 1) & sq.MASK,
                         tw.snd_nxt, wtcp.FIN | wtcp.ACK, opts=ts))
    await trio.sleep(0.1)
    out = [p.tcp() for p in net.wire.log[sent:] if p.src == ip(A)]
    assert len(out) == 1
    seg = out[0]
    assert seg.flags == wtcp.ACK and seg.seq == tw.snd_nxt and seg.ack == tw.rcv_nxt
    assert seg.opts is not None and seg.opts.ts is not None
    assert seg.opts.ts[1] == tw.ts_recent and seg.wnd > 0
    assert net.a.tcp.counters["timewait_fin_reacked"] == 1


# -- (d) a SYN to the tuple -------------------------------------------------------------------
async def test_syn_above_rcv_nxt_starts_a_new_incarnation(autojump_clock: object,
                                                          net: Net) -> None:
    """The server closed first and holds TIME_WAIT; the client comes back from the same
    port with a higher ISN: the record ends (timewait_reused) and the listener gets it."""
    _set_msl(net)
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(8)
    cli = net.a.tcp.socket()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cli.bind((A, 40000))
    net.a.tcp.isn.override = lambda: 1000
    async with trio.open_nursery() as n:
        n.start_soon(cli.connect, (B, 80))
        srv, _ = await lst.accept()
    srv.close()
    assert await cli.recv(10) == b""
    cli.close()
    await trio.sleep(0.1)
    key = (ip(B), 80, ip(A), 40000)
    tw = net.b.tcp.conns[key]
    assert isinstance(tw, TimeWait)
    # a SYN at or below RCV.NXT is an old duplicate: challenge ACK, TIME_WAIT stays (A,
    # which has no connection, would answer the ACK with a RST at exactly RCV.NXT and
    # end it - the TIME_WAIT assassination RFC 1337 describes: not let through here)
    acks = net.b.tcp.counters["challenge_acks"]
    net.wire.faults.drop = lambda src, dst, proto, data: bool(data[13] & wtcp.RST)
    net.wire.send(_craft(A, B, 40000, 80, tw.rcv_nxt, 0, wtcp.SYN))
    await trio.sleep(0.1)
    net.wire.faults.drop = None
    assert net.b.tcp.counters["challenge_acks"] == acks + 1
    assert net.b.tcp.conns[key] is tw and net.b.tcp.counters["timewait_reused"] == 0
    # a new incarnation from the same port, above RCV.NXT
    cli2 = net.a.tcp.socket()
    cli2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cli2.bind((A, 40000))
    net.a.tcp.isn.override = lambda: 1_000_000
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(cli2.connect, (B, 80))
            srv2, _ = await lst.accept()
    assert net.b.tcp.counters["timewait_reused"] == 1
    assert isinstance(net.b.tcp.conns[key], TCB) and srv2.state == "ESTABLISHED"
    assert not time_waits(net.b) and tw not in net.b.tcp.ports[80]
    await cli2.send(b"again")
    assert await srv2.recv(10) == b"again"


# -- RFC 5961 and the rest of TIME_WAIT's input ----------------------------------------------
async def test_rst_and_stray_segments(autojump_clock: object, net: Net) -> None:
    _set_msl(net)
    tw, _srv = await _client_time_wait(net)
    a = net.a.tcp
    c = a.counters
    key = tw.key
    sent = len(net.wire.log)
    # B has closed: it would answer A's ACKs with a RST at exactly RCV.NXT, which ends
    # TIME_WAIT; A's segments are seen on the wire but not delivered
    net.wire.faults.drop = lambda src, dst, proto, data: src == ip(A)

    def from_a() -> list[wtcp.TCPSegment]:
        return [p.tcp() for p in net.wire.log[sent:] if p.src == ip(A)]

    # an in-window bare ACK: absorbed, nothing sent
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt, tw.snd_nxt, wtcp.ACK))
    await trio.sleep(0.1)
    assert from_a() == [] and a.conns[key] is tw
    # an ACK of data never sent: dropped with an ACK
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt, tw.snd_nxt + 5000, wtcp.ACK))
    await trio.sleep(0.1)
    assert c["drop_ack_unsent"] == 1 and len(from_a()) == 1
    # no ACK flag: dropped
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt, 0, 0, b"zz"))
    await trio.sleep(0.1)
    assert c["drop_no_ack"] == 1 and len(from_a()) == 1
    # a RST in the window but not at RCV.NXT: challenge ACK; outside: dropped
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt + 10, 0, wtcp.RST))
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt + 2**30, 0, wtcp.RST))
    await trio.sleep(0.1)
    assert c["challenge_acks"] == 1 and c["drop_rst_out_of_window"] == 1
    assert len(from_a()) == 2 and a.conns[key] is tw
    # an ICMP error about it: ignored
    net.wire.icmp_error(ip(B), ip(A), 3, 1, 6, bytes(
        tw.lport.to_bytes(2, "big") + tw.rport.to_bytes(2, "big") + tw.snd_nxt.to_bytes(4, "big")))
    await trio.sleep(0.1)
    assert c["icmp_time_wait"] == 1 and a.conns[key] is tw
    # the RST at RCV.NXT ends TIME_WAIT (as before: RFC 1337 is not followed)
    net.wire.send(_craft(B, A, tw.rport, tw.lport, tw.rcv_nxt, 0, wtcp.RST))
    await trio.sleep(0.1)
    assert key not in a.conns and a.tw_count == 0 and c["rst_in"] == 1
    assert tw.lport not in a.ports and len(a.timers) == 0


async def test_paws_in_time_wait(autojump_clock: object, net: Net) -> None:
    _set_msl(net)
    tw, _srv = await _client_time_wait(net)
    assert tw.ts_ok
    old = wtcp.emit_ts_sack((sq.sub(tw.ts_recent, 1000) & sq.MASK, 0), None)
    sent = len(net.wire.log)
    net.wire.send(_craft(B, A, tw.rport, tw.lport, sq.sub(tw.rcv_nxt, 1), tw.snd_nxt,
                         wtcp.FIN | wtcp.ACK, opts=old))
    await trio.sleep(0.1)
    c = net.a.tcp.counters
    assert c["drop_paws"] == 1 and c["timewait_fin_reacked"] == 0
    assert len([p for p in net.wire.log[sent:] if p.src == ip(A)]) == 1  # the ACK


async def test_time_wait_holds_its_port_and_shows_in_listings(autojump_clock: object,
                                                              net: Net) -> None:
    _set_msl(net)
    tw, _srv = await _client_time_wait(net)
    port = tw.lport
    s = net.a.tcp.socket()
    with pytest.raises(OSError) as e:
        s.bind((A, port))
    assert e.value.errno == 98  # EADDRINUSE, as with the TCB in TIME_WAIT
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((A, port))  # BSD: SO_REUSEADDR shares the port with a connection
    with pytest.raises(OSError) as e:
        await s.connect((B, tw.rport))  # the same four-tuple
    assert e.value.errno == 98
    s.close()
    stack = SimpleNamespace(services=SimpleNamespace(get=lambda _key: net.a.t))
    rows = [r for r in list_sockets(stack) if r["proto"] == "tcp"]  # type: ignore[arg-type]
    assert rows == [{"proto": "tcp", "recvq": "0", "sendq": "0", "local": f"{A}:{port}",
                     "foreign": f"{B}:{tw.rport}", "state": "TIME_WAIT"}]
    assert net.a.tcp.connections() == [tw]
