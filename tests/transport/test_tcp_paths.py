"""Close paths, timers (RTO/back-off, persist, keepalive, TIME_WAIT), RFC 5961, SYN
floods, Nagle and delayed ACKs - deterministic, on MockClock."""

from __future__ import annotations

import errno
import select
import socket

import pytest
import trio

from stack.transport.tcp.tcb import State
from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum, pseudo_header_sum
from tests.transport.shim import Net, Sent, ip
from tests.transport.test_tcp_mock import A, B, _pair, _recv_all, _recv_exactly


def _tcbs(net: Net):
    return net.a.tcp.conns, net.b.tcp.conns


def _craft(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"", wnd: int = 65535, opts: bytes = b"") -> Sent:
    hdr = wtcp.emit_header(sport, dport, seq, ack, flags, wnd, opts)
    c = checksum((hdr, payload), pseudo_header_sum(ip(src), ip(dst), 6, len(hdr) + len(payload)))
    hdr[16:18] = c.to_bytes(2, "big")
    return Sent(trio.current_time(), ip(src), ip(dst), 6, bytes(hdr) + payload)


async def test_active_close_time_wait_2msl(autojump_clock: object, net: Net) -> None:
    net.a.sysctl.set("net.inet.tcp.msl", 5000)
    lst, cli, srv = await _pair(net)
    tcb = cli.tcb
    cli.close()
    assert tcb.state == State.FIN_WAIT_1
    assert await srv.recv(10) == b""
    assert srv.state == "CLOSE_WAIT"
    await trio.sleep(0.05)
    assert tcb.state == State.FIN_WAIT_2
    srv.close()
    assert srv.tcb.state == State.LAST_ACK
    await trio.sleep(0.05)
    assert tcb.state == State.TIME_WAIT
    assert srv.tcb.state == State.CLOSED
    t0 = trio.current_time()
    while tcb.state != State.CLOSED:
        await trio.sleep(0.1)
    assert 9.9 <= trio.current_time() - t0 <= 10.2  # 2 x MSL
    assert not net.a.tcp.conns and not net.b.tcp.conns


async def test_simultaneous_close(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    cli.close()
    srv.close()  # both FINs cross on the wire
    assert cli.tcb.state == srv.tcb.state == State.FIN_WAIT_1
    await trio.sleep(0.004)
    await trio.sleep(0.05)
    assert cli.tcb.state == State.TIME_WAIT and srv.tcb.state == State.TIME_WAIT
    assert net.a.tcp.counters["simultaneous_close"] == 1
    assert net.a.tcp.counters["state_FIN_WAIT_1_to_CLOSING"] == 1


async def test_half_close(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    await cli.send(b"request")
    cli.shutdown(socket.SHUT_WR)
    assert await _recv_all(srv) == b"request"
    assert srv.poll_mask() & select.POLLIN
    # the server can still send after the client's FIN
    await srv.send(b"x" * 100_000)
    srv.close()
    assert await _recv_all(cli) == b"x" * 100_000
    with pytest.raises(BrokenPipeError):
        await cli.send(b"more")


async def test_linger_zero_resets(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 0))
    cli.close()
    assert not net.a.tcp.conns
    with pytest.raises(ConnectionResetError):
        await srv.recv(10)
    assert srv.poll_mask() & select.POLLHUP
    assert net.b.tcp.counters["rst_in"] == 1


async def test_close_with_unread_data_resets(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    await cli.send(b"unread")
    await trio.sleep(0.1)
    srv.close()
    assert net.b.tcp.counters["close_rst"] == 1
    with pytest.raises(ConnectionResetError):
        await cli.recv(10)


async def test_data_after_close_resets(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    srv.close()
    await trio.sleep(0.1)
    assert cli.state == "CLOSE_WAIT"
    await cli.send(b"late data")
    await trio.sleep(0.1)
    assert net.b.tcp.counters["rst_data_after_close"] == 1
    assert cli.tcb.state == State.CLOSED


async def test_rto_backoff_and_timeout(autojump_clock: object, net: Net) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.retries", 5)
    lst, cli, srv = await _pair(net)
    net.wire.faults.drop = lambda s, d, p, data: s == ip(A)
    times: list[float] = []
    net.wire.taps.append(lambda p: times.append(p.time)
                         if p.src == ip(A) and p.tcp().payload else None)
    await cli.send(b"data")
    with pytest.raises(TimeoutError):
        await cli.recv(10)
    # first send + 5 retransmissions; each interval doubles
    assert len(times) == 6
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for g1, g2 in zip(gaps, gaps[1:], strict=False):
        assert g2 == pytest.approx(2 * g1, rel=0.01)
    assert gaps[0] == pytest.approx(0.2, abs=0.02)  # rto_min, RTT is 10 ms here
    assert net.a.tcp.counters["conn_timeouts"] == 1
    assert cli.tcb.state == State.CLOSED


async def test_syn_backoff(autojump_clock: object, net: Net) -> None:
    net.wire.faults.drop = lambda s, d, p, data: True
    net.a.sysctl.set("net.inet.tcp.syn_retries", 3)
    times: list[float] = []
    net.wire.taps.append(lambda p: times.append(p.time))
    s = net.a.tcp.socket()
    t0 = trio.current_time()
    with pytest.raises(TimeoutError):
        await s.connect((B, 80))
    assert [round(t - t0, 3) for t in times] == [0, 1, 3, 7]
    assert trio.current_time() - t0 == pytest.approx(15)


async def test_persist_zero_window_and_resume(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net, server_opts=lambda s: s.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 8192))
    net.b.sysctl.set("net.inet.tcp.recvbuf_auto", 0)
    srv.tcb.rcv_limit = 16384
    data = bytes(range(256)) * 400  # 100 KB
    async with trio.open_nursery() as n:
        n.start_soon(cli.send, data)
        await trio.sleep(1)
        assert cli.tcb.snd_wnd == 0
        assert net.a.tcp.counters["persist_armed"] >= 1
        probes0 = net.a.tcp.counters["persist_probes"]
        await trio.sleep(30)
        probes = net.a.tcp.counters["persist_probes"] - probes0
        assert 3 <= probes <= 10  # backed off, not one per RTT
        assert cli.tcb.state == State.ESTABLISHED  # persist never gives up
        got = await _recv_exactly(srv, len(data))
    assert got == data
    assert net.a.tcp.counters["window_reopened"] >= 1


async def test_keepalive_probe_and_drop(autojump_clock: object, net: Net) -> None:
    for k, v in (("keepidle", 10_000), ("keepintvl", 1000), ("keepcnt", 3)):
        net.a.sysctl.set(f"net.inet.tcp.{k}", v)
    lst, cli, srv = await _pair(net)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    await trio.sleep(25)  # peer alive: probes answered
    assert net.a.tcp.counters["keepalive_probes"] >= 2
    assert cli.state == "ESTABLISHED"
    net.wire.faults.drop = lambda s, d, p, data: s == ip(B)
    t0 = trio.current_time()
    with pytest.raises(TimeoutError):
        await cli.recv(1)
    assert trio.current_time() - t0 <= 13.1
    # dropped keepidle + keepcnt * keepintvl after the last segment heard
    assert trio.current_time() - cli.tcb.last_rcv == pytest.approx(13, abs=0.1)
    assert net.a.tcp.counters["keepalive_drops"] == 1


async def test_keepalive_times_per_socket(autojump_clock: object, net: Net) -> None:
    # the sysctls say two hours; the socket's own times win, and accept() inherits them
    lst, cli, srv = await _pair(net)
    idle, intvl, cnt = socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT
    assert [cli.getsockopt(socket.IPPROTO_TCP, o) for o in (idle, intvl, cnt)] == [7200, 75, 8]
    for opt, bad in ((idle, 0), (idle, 32768), (intvl, -1), (cnt, 128)):
        with pytest.raises(OSError) as e:
            cli.setsockopt(socket.IPPROTO_TCP, opt, bad)
        assert e.value.errno == errno.EINVAL
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, v in ((idle, 5), (intvl, 2), (cnt, 2)):
        cli.setsockopt(socket.IPPROTO_TCP, opt, v)
    assert [cli.getsockopt(socket.IPPROTO_TCP, o) for o in (idle, intvl, cnt)] == [5, 2, 2]
    await trio.sleep(30)  # idle, answered probes: the connection stays
    assert net.a.tcp.counters["keepalive_probes"] >= 5 and cli.state == "ESTABLISHED"
    await srv.send(b"segments received restart the socket's own idle time")
    await _recv_exactly(cli, 52)
    net.a.tcp.counters["keepalive_probes"] = 0
    net.wire.faults.drop = lambda s, d, p, data: s == ip(B)
    t0 = cli.tcb.last_rcv
    with pytest.raises(TimeoutError):
        await cli.recv(1)
    assert trio.current_time() - t0 == pytest.approx(5 + 2 * 2, abs=0.1)
    assert net.a.tcp.counters["keepalive_probes"] == 2
    assert net.a.tcp.counters["keepalive_drops"] == 1
    # a listener's times pass to the connections it accepts
    net.wire.faults.drop = None
    lst2 = net.b.tcp.socket()
    lst2.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    lst2.setsockopt(socket.IPPROTO_TCP, idle, 30)
    lst2.bind((B, 6000))
    lst2.listen(1)
    c2 = net.a.tcp.socket()
    await c2.connect((B, 6000))
    s2, _ = await lst2.accept()
    assert s2.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert s2.getsockopt(socket.IPPROTO_TCP, idle) == 30


async def test_rfc5961_rst_and_syn_challenge(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    t = srv.tcb
    # RST in the window but not at RCV.NXT: challenge ACK, connection survives
    net.wire.send(_craft(A, B, t.rport, t.lport, (t.rcv_nxt + 100) & 0xFFFFFFFF, 0, wtcp.RST))
    await trio.sleep(0.1)
    assert net.b.tcp.counters["challenge_acks"] == 1
    assert srv.state == "ESTABLISHED"
    # RST out of window: silently dropped
    net.wire.send(_craft(A, B, t.rport, t.lport, (t.rcv_nxt + 2**30) & 0xFFFFFFFF, 0, wtcp.RST))
    await trio.sleep(0.1)
    assert net.b.tcp.counters["drop_rst_out_of_window"] == 1
    # SYN on an established connection: challenge ACK
    net.wire.send(_craft(A, B, t.rport, t.lport, 12345, 0, wtcp.SYN))
    await trio.sleep(0.1)
    assert net.b.tcp.counters["challenge_acks"] == 2
    assert srv.state == "ESTABLISHED"
    # an exact RST resets
    net.wire.send(_craft(A, B, t.rport, t.lport, t.rcv_nxt, 0, wtcp.RST))
    await trio.sleep(0.1)
    with pytest.raises(ConnectionResetError):
        await srv.recv(1)
    # never an RST for an RST
    assert net.b.tcp.counters["rst_out"] == 0


async def test_rst_for_stray_ack_and_never_for_rst(autojump_clock: object, net: Net) -> None:
    net.wire.send(_craft(A, B, 1111, 2222, 5, 77, wtcp.ACK))
    net.wire.send(_craft(A, B, 1111, 2222, 5, 77, wtcp.RST))
    await trio.sleep(0.1)
    c = net.b.tcp.counters
    assert c["rst_closed_port"] == 1 and c["drop_rst_closed_port"] == 1
    rsts = [p.tcp() for p in net.wire.log if p.src == ip(B)]
    assert len(rsts) == 1 and rsts[0].flags == wtcp.RST and rsts[0].seq == 77


@pytest.mark.parametrize("cookies", [1, 0])
async def test_syn_flood(autojump_clock: object, net: Net, cookies: int) -> None:
    net.b.sysctl.set("net.inet.tcp.syncookies", cookies)
    net.b.sysctl.set("net.inet.tcp.syncache.limit", 64)
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(128)
    # the flood: spoofed SYNs that never complete (answers go nowhere)
    for i in range(2000):
        net.wire.send(_craft("10.0.9.9", B, 1024 + i, 80, i * 7919, 0, wtcp.SYN))
    await trio.sleep(0.02)
    assert len(lst.tcb.syn_queue) <= 64
    c = net.b.tcp.counters
    assert (c["syncookies_sent"] if cookies else c["syn_queue_evicted"]) > 1000
    # a real client still gets in
    cli = net.a.tcp.socket()
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(cli.connect, (B, 80))
            srv, _ = await lst.accept()
    await cli.send(b"hi")
    assert await srv.recv(2) == b"hi"
    if cookies:
        assert c["syncookies_accepted"] == 1
        assert srv.info()["timestamps"] and srv.info()["sack"] and srv.info()["wscale"]


async def test_accept_backlog(autojump_clock: object, net: Net) -> None:
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(2)
    socks = [net.a.tcp.socket() for _ in range(4)]
    for s in socks:
        with pytest.raises(BlockingIOError):
            s.connect_nowait((B, 80))
    await trio.sleep(0.5)
    assert len(lst.tcb.accept_queue) == 2
    # like Linux: the clients think they are connected; the server ignored two third ACKs
    assert len(lst.tcb.syn_queue) == 2
    assert net.b.tcp.counters["listen_overflow_ack_dropped"] == 2
    for _ in range(2):
        lst.accept_nowait()
    await trio.sleep(4)  # SYN-ACK retransmitted, the client re-ACKs, the server accepts
    assert len(lst.tcb.accept_queue) == 2 and not lst.tcb.syn_queue
    for _ in range(2):
        s, _addr = lst.accept_nowait()
        assert s.state == "ESTABLISHED"


async def test_nagle_and_nodelay(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    base = net.a.tcp.counters["data_segs_out"]
    for _ in range(50):
        await cli.send(b"x")
    await trio.sleep(0.5)
    nagle_segs = net.a.tcp.counters["data_segs_out"] - base
    assert nagle_segs <= 3
    assert await _recv_exactly(srv, 50) == b"x" * 50
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    base = net.a.tcp.counters["data_segs_out"]
    for _ in range(50):
        await cli.send(b"y")
    assert net.a.tcp.counters["data_segs_out"] - base == 50


async def test_delayed_ack(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    acks: list[float] = []
    net.wire.taps.append(lambda p: acks.append(p.time) if p.src == ip(B) else None)
    t0 = trio.current_time()
    await cli.send(b"one")
    await trio.sleep(0.2)
    assert len(acks) == 1
    assert acks[0] - t0 == pytest.approx(0.005 + 0.04, abs=0.002)
    assert net.b.tcp.counters["delayed_acks"] == 1


async def test_reuseaddr_and_bind_errors(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net, port=8080)
    s = net.b.tcp.socket()
    with pytest.raises(OSError) as ei:
        s.bind((B, 8080))
    assert ei.value.errno == errno.EADDRINUSE
    srv.close()
    lst.close()
    await trio.sleep(0.2)  # server side in FIN_WAIT_2 / TIME_WAIT
    s2 = net.b.tcp.socket()
    with pytest.raises(OSError):
        s2.bind((B, 8080))
    s3 = net.b.tcp.socket()
    s3.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s3.bind((B, 8080))
    s3.listen(1)
    with pytest.raises(OSError) as ei:
        net.b.tcp.socket().bind(("10.9.9.9", 1))
    assert ei.value.errno == errno.EADDRNOTAVAIL


async def test_poll_masks(autojump_clock: object, net: Net) -> None:
    fresh = net.a.tcp.socket()
    assert fresh.poll_mask() == select.POLLOUT | select.POLLWRNORM | select.POLLHUP
    lst, cli, srv = await _pair(net)
    assert lst.poll_mask() == 0
    m = cli.poll_mask()
    assert m & select.POLLOUT and not m & select.POLLIN
    changes: list[int] = []
    srv.on_change.append(lambda: changes.append(srv.poll_mask()))
    await cli.send(b"z")
    await trio.sleep(0.1)
    assert changes and changes[-1] & select.POLLIN
    cli.close()
    await trio.sleep(0.1)
    assert srv.poll_mask() & select.POLLRDHUP


async def test_tso_and_csum_offload(autojump_clock: object, net: Net) -> None:
    net.a.inet.offloads = {"csum", "tso4"}
    lst, cli, srv = await _pair(net)
    assert cli.tcb.tso_max > cli.tcb.snd_mss
    data = bytes(range(256)) * 4000
    async with trio.open_nursery() as n:
        n.start_soon(cli.send, data)
        got = await _recv_exactly(srv, len(data))
    assert got == data
    big = [p for p in net.wire.log if p.src == ip(A) and p.meta is not None and p.meta.gso_size]
    assert big and max(len(p.data) for p in big) > 20_000
    assert all(p.meta.gso_size == cli.tcb.snd_mss for p in big)


# ----------------------------------------------------------------- ICMP errors (RFC 1122
# 4.2.3.9, BSD tcp_ctlinput/tcp_notify): a router on the wire answers with ICMP errors

DEAD = "10.0.0.77"  # no host has this address: everything sent to it vanishes


def _router(net: Net, frm: str, to: str, icmp_type: int, code: int,
            limit: int | None = None) -> list[float]:
    """Answer each TCP segment ``frm`` sends to ``to`` (at most ``limit`` of them) with
    ICMP ``icmp_type``/``code`` quoting it; returns the times of the segments seen."""
    seen: list[float] = []

    def tap(p: Sent) -> None:
        if p.src == ip(frm) and p.dst == ip(to) and p.proto == 6:
            seen.append(p.time)
            if limit is None or len(seen) <= limit:
                net.wire.icmp_error(ip(to), ip(frm), icmp_type, code, 6, p.data[:8])

    net.wire.taps.append(tap)
    return seen


def _quote(tcb, seq: int | None = None) -> bytes:  # noqa: ANN001
    """The first 8 bytes of a segment ``tcb`` sent: its ports and ``seq`` (default: the
    first sequence number in flight)."""
    seq = tcb.snd_una if seq is None else seq
    return (tcb.lport.to_bytes(2, "big") + tcb.rport.to_bytes(2, "big")
            + (seq & 0xFFFFFFFF).to_bytes(4, "big"))


async def test_icmp_soft_errors_end_connect_after_retransmissions(
        autojump_clock: object, net: Net) -> None:
    seen = _router(net, A, DEAD, 3, 1)  # host unreachable for every SYN
    s = net.a.tcp.socket()
    t0 = trio.current_time()
    with pytest.raises(OSError) as ei:
        await s.connect((DEAD, 80))
    assert ei.value.errno == errno.EHOSTUNREACH
    # the SYN and 4 retransmissions: the error about the 4th (t_rxtshift > 3, a soft error
    # already remembered) ends the connect long before the 6 retries would time out
    assert [round(t - t0, 3) for t in seen] == [0, 1, 3, 7, 15]
    c = net.a.tcp.counters
    assert c["icmp_soft_error"] == 4 and c["conn_dropped_soft_error"] == 1
    assert c["conn_timeouts"] == 0 and c["timeout_soft_error"] == 0
    assert c["drop_EHOSTUNREACH"] == 1 and c["icmp_hard_error"] == 0
    assert not net.a.tcp.conns and s.tcb.state == State.CLOSED


async def test_icmp_soft_error_reported_by_connect_timeout(autojump_clock: object,
                                                          net: Net) -> None:
    net.a.sysctl.set("net.inet.tcp.syn_retries", 2)
    seen = _router(net, A, DEAD, 3, 0, limit=1)  # net unreachable, for the first SYN only
    s = net.a.tcp.socket()
    with pytest.raises(BlockingIOError):
        s.connect_nowait((DEAD, 80))
    await trio.sleep(0.5)
    # remembered, not reported: still connecting, no POLLERR, SO_ERROR clear
    assert s.tcb.state == State.SYN_SENT and s.tcb.softerror == errno.ENETUNREACH
    assert not s.poll_mask() & select.POLLERR
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    while s.tcb.state != State.CLOSED:
        await trio.sleep(0.5)
    # the SYN and 2 retransmissions, then the timeout reports the ICMP error, not ETIMEDOUT
    assert len(seen) == 3
    assert s.poll_mask() & (select.POLLERR | select.POLLOUT) == select.POLLERR | select.POLLOUT
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ENETUNREACH
    c = net.a.tcp.counters
    assert c["icmp_soft_error"] == 1 and c["conn_timeouts"] == 1
    assert c["timeout_soft_error"] == 1 and c["drop_ENETUNREACH"] == 1
    assert c["drop_ETIMEDOUT"] == 0 and c["conn_dropped_soft_error"] == 0
    # connecting again starts afresh: no ICMP this time, so a plain ETIMEDOUT
    with pytest.raises(TimeoutError):
        await s.connect((DEAD, 81))
    assert c["drop_ETIMEDOUT"] == 1 and c["timeout_soft_error"] == 1


@pytest.mark.parametrize("code,err", [(3, errno.ECONNREFUSED), (2, errno.ENOPROTOOPT)],
                         ids=["port", "protocol"])
async def test_icmp_hard_error_refuses_connect(autojump_clock: object, net: Net,
                                               code: int, err: int) -> None:
    seen = _router(net, A, DEAD, 3, code)
    s = net.a.tcp.socket()
    with pytest.raises(OSError) as ei:
        await s.connect((DEAD, 80))
    assert ei.value.errno == err
    assert len(seen) == 1  # at once: no retransmission
    c = net.a.tcp.counters
    assert c["icmp_hard_error"] == 1 and c["icmp_soft_error"] == 0
    assert not net.a.tcp.conns


async def test_icmp_errors_on_established_connection(autojump_clock: object, net: Net) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.retries", 3)
    lst, cli, srv = await _pair(net)
    t = cli.tcb
    c = net.a.tcp.counters
    # port unreachable after SYN_SENT is soft; redirect and source quench are ignored;
    # an error quoting a sequence number not in flight is not believed (RFC 5927)
    net.wire.icmp_error(ip(B), ip(A), 3, 3, 6, _quote(t))
    net.wire.icmp_error(ip(B), ip(A), 5, 1, 6, _quote(t))
    net.wire.icmp_error(ip(B), ip(A), 4, 0, 6, _quote(t))
    net.wire.icmp_error(ip(B), ip(A), 3, 1, 6, _quote(t, t.snd_una + 100_000))
    await trio.sleep(0.1)
    assert t.state == State.ESTABLISHED and t.error == 0
    assert t.softerror == errno.ECONNREFUSED
    assert c["icmp_soft_error"] == 1 and c["icmp_ignored"] == 2 and c["icmp_bad_seq"] == 1
    # host unreachable on an established connection: only remembered
    net.wire.icmp_error(ip(B), ip(A), 3, 1, 6, _quote(t))
    await trio.sleep(0.1)
    assert t.state == State.ESTABLISHED and t.softerror == errno.EHOSTUNREACH
    assert c["icmp_soft_error_established"] == 1
    assert not cli.poll_mask() & select.POLLERR
    # the path works: an RTT sample forgets the soft error
    await cli.send(b"hello")
    assert await _recv_exactly(srv, 5) == b"hello"
    await trio.sleep(0.5)
    assert t.softerror == 0
    # a black hole with an error about the data in flight: the retransmission timeout
    # reports EHOSTUNREACH instead of ETIMEDOUT
    net.wire.faults.drop = lambda s, d, p, data: s == ip(A)
    await cli.send(b"lost")
    net.wire.icmp_error(ip(B), ip(A), 3, 1, 6, _quote(t))
    with pytest.raises(OSError) as ei:
        await cli.recv(10)
    assert ei.value.errno == errno.EHOSTUNREACH
    assert c["icmp_soft_error_established"] == 2 and c["conn_timeouts"] == 1
    assert c["timeout_soft_error"] == 1 and c["drop_EHOSTUNREACH"] == 1
    assert t.state == State.CLOSED


async def test_icmp_soft_errors_drop_embryonic_passive_connection(
        autojump_clock: object, net: Net) -> None:
    lst = net.b.tcp.socket()
    lst.bind((B, 5000))
    lst.listen(4)
    seen = _router(net, B, DEAD, 3, 1)  # every SYN-ACK to the (spoofed) client bounces
    net.wire.send(_craft(DEAD, B, 40000, 5000, 1000, 0, wtcp.SYN))
    await trio.sleep(0.1)
    t = lst.tcb
    assert len(t.syn_queue) == 1
    while t.syn_queue:
        await trio.sleep(0.5)
    # the SYN-ACK and 4 retransmissions (of the 5 allowed): dropped at the 5th error
    assert len(seen) == 5
    c = net.b.tcp.counters
    assert c["icmp_soft_error"] == 4 and c["conn_dropped_soft_error"] == 1
    assert c["conn_timeouts"] == 0
    assert list(net.b.tcp.conns) == [] and not t.accept_queue


async def test_syn_cookie_ack_carrying_data_is_accepted(autojump_clock: object, net: Net) -> None:
    """The cookie SYN-ACK offered a window: data on the ACK that completes the cookie
    handshake lies inside it and must be taken whole (it was trimmed as beyond the
    window when the new connection's right edge started at rcv_nxt)."""
    net.b.sysctl.set("net.inet.tcp.syncache.limit", 1)
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(128)
    for i in range(4):  # fill the SYN queue so the next SYN gets a cookie
        net.wire.send(_craft("10.0.9.9", B, 1024 + i, 80, i * 7919, 0, wtcp.SYN))
    await trio.sleep(0.01)
    sent = net.b.tcp.counters["syncookies_sent"]
    net.wire.send(_craft(A, B, 4000, 80, 1000, 0, wtcp.SYN))
    await trio.sleep(0.01)
    assert net.b.tcp.counters["syncookies_sent"] == sent + 1
    synack = [p.tcp() for p in net.wire.log if p.src == ip(B) and p.tcp().dport == 4000][-1]
    assert synack.flags == wtcp.SYN | wtcp.ACK and synack.wnd > 1000
    data = bytes(range(256)) * 4  # 1,024 bytes, inside the offered window
    net.wire.send(_craft(A, B, 4000, 80, 1001, synack.seq + 1, wtcp.ACK | wtcp.PSH, data))
    await trio.sleep(0.01)
    c = net.b.tcp.counters
    assert c["syncookies_accepted"] == 1
    assert c["beyond_window_trimmed"] == 0 and c["drop_beyond_window"] == 0
    srv, _ = lst.accept_nowait()
    assert await _recv_exactly(srv, len(data)) == data
