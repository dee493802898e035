"""Deterministic TCP tests: two in-stack endpoints over an in-memory wire on MockClock."""

from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest
import trio

from tests.transport.shim import Net, ep

A, B = "10.0.0.1", "10.0.0.2"


async def _pair(net: Net, port: int = 5000, *, server_opts=None, client_opts=None):
    lst = net.b.tcp.socket()
    if server_opts:
        server_opts(lst)
    lst.bind((B, port))
    lst.listen(16)
    cli = net.a.tcp.socket()
    if client_opts:
        client_opts(cli)
    async with trio.open_nursery() as n:
        n.start_soon(cli.connect, (B, port))
        srv, peer = await lst.accept()
    return lst, cli, srv


async def _recv_exactly(sock, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def _recv_all(sock) -> bytes:
    out = bytearray()
    while True:
        chunk = await sock.recv(1 << 20)
        if not chunk:
            return bytes(out)
        out += chunk


async def test_handshake_options_and_echo(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    assert cli.state == "ESTABLISHED" and srv.state == "ESTABLISHED"
    info = cli.info()
    assert info["timestamps"] and info["sack"] and info["wscale"] is not None
    assert info["snd_mss"] == 1500 - 40 - 12
    assert cli.getpeername() == ep(B, 5000)
    assert srv.getpeername() == cli.getsockname()
    await cli.send(b"hello")
    assert await srv.recv(100) == b"hello"
    await srv.send(b"world")
    assert await cli.recv(100) == b"world"


@pytest.mark.parametrize("knob", ["net.inet.tcp.sack.enable", "net.inet.tcp.timestamps",
                                  "net.inet.tcp.wscale"])
async def test_options_off_on_one_side(autojump_clock: object, net: Net, knob: str) -> None:
    net.b.sysctl.set(knob, "0")
    lst, cli, srv = await _pair(net)
    for s in (cli, srv):
        i = s.info()
        if knob.endswith("sack.enable"):
            assert not i["sack"] and i["timestamps"]
        elif knob.endswith("timestamps"):
            assert not i["timestamps"] and i["sack"]
            assert i["snd_mss"] == 1460
        else:
            assert i["wscale"] is None
    data = os.urandom(300_000)
    async with trio.open_nursery() as n:
        n.start_soon(cli.send, data)
        got = await _recv_exactly(srv, len(data))
    assert got == data


async def _bulk(net: Net, size: int, seed: int = 0) -> None:
    lst, cli, srv = await _pair(net)
    rnd = random.Random(seed)
    up = rnd.randbytes(size)
    down = rnd.randbytes(size // 2)
    res: dict[str, bytes] = {}

    async def client() -> None:
        await cli.send(up)
        cli.shutdown(1)
        res["down"] = await _recv_all(cli)

    async def server() -> None:
        async with trio.open_nursery() as n:
            async def rd() -> None:
                res["up"] = await _recv_all(srv)
            n.start_soon(rd)
            await srv.send(down)
        srv.close()

    with trio.fail_after(600):
        async with trio.open_nursery() as n:
            n.start_soon(client)
            n.start_soon(server)
    assert hashlib.sha256(res["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(res["down"]).digest() == hashlib.sha256(down).digest()


async def test_bulk_clean(autojump_clock: object, net: Net) -> None:
    await _bulk(net, 2_000_000)
    c = net.a.tcp.counters
    assert c["rexmt_segs"] == 0


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("sack", [0, 1])
@pytest.mark.parametrize("fault", ["loss", "reorder", "dup", "corrupt", "all"])
async def test_bulk_faults(autojump_clock: object, net: Net, cc: str, sack: int, fault: str) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.cc.algorithm", cc)
        h.sysctl.set("net.inet.tcp.sack.enable", sack)
    f = net.wire.faults
    if fault in ("loss", "all"):
        f.loss = 0.03
    if fault in ("reorder", "all"):
        f.reorder = 0.05
    if fault in ("dup", "all"):
        f.dup = 0.05
    if fault in ("corrupt", "all"):
        f.corrupt = 0.03
    await _bulk(net, 400_000, seed=hash((cc, sack, fault)) & 0xFFFF)
    c = net.a.tcp.counters
    if fault == "loss":
        assert c["rexmt_segs"] > 0
    if fault == "corrupt":
        assert net.a.tcp.counters["drop_bad_checksum"] + net.b.tcp.counters["drop_bad_checksum"] > 0


async def test_isn_wraparound(autojump_clock: object, net: Net) -> None:
    for h, base in ((net.a, 2**32 - 300_000), (net.b, 2**32 - 5)):
        h.tcp.isn.override = lambda base=base: base
    net.wire.faults.loss = 0.01
    lst, cli, srv = await _pair(net)
    assert cli.tcb.iss == 2**32 - 300_000
    data = os.urandom(1_000_000)
    async with trio.open_nursery() as n:
        n.start_soon(cli.send, data)
        n.start_soon(srv.send, data)
        got_s = await _recv_exactly(srv, len(data))
        got_c = await _recv_exactly(cli, len(data))
    assert got_s == data and got_c == data
    assert cli.tcb.snd_una < 2**20  # wrapped


async def test_simultaneous_open(autojump_clock: object, net: Net) -> None:
    a = net.a.tcp.socket()
    b = net.b.tcp.socket()
    a.bind((A, 7001))
    b.bind((B, 7002))
    async with trio.open_nursery() as n:
        n.start_soon(a.connect, (B, 7002))
        n.start_soon(b.connect, (A, 7001))
    assert a.state == b.state == "ESTABLISHED"
    assert net.a.tcp.counters["simultaneous_open"] == 1
    await a.send(b"x" * 10)
    assert await b.recv(10) == b"x" * 10


async def test_connect_refused_closed_port(autojump_clock: object, net: Net) -> None:
    s = net.a.tcp.socket()
    with pytest.raises(ConnectionRefusedError):
        await s.connect((B, 9))
    assert net.b.tcp.counters["rst_closed_port"] == 1
    # never an RST in reply to an RST
    assert net.a.tcp.counters["rst_out"] == 0


async def test_connect_nowait_einprogress(autojump_clock: object, net: Net) -> None:
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(4)
    s = net.a.tcp.socket()
    with pytest.raises(BlockingIOError) as ei:
        s.connect_nowait((B, 80))
    assert ei.value.errno == errno.EINPROGRESS
    with pytest.raises(OSError) as ei2:
        s.connect_nowait((B, 80))
    assert ei2.value.errno == errno.EALREADY
    import select
    assert s.poll_mask() & select.POLLOUT == 0
    await trio.sleep(0.1)
    assert s.poll_mask() & select.POLLOUT
    assert s.getsockopt(1, 4) == 0  # SO_ERROR
    assert lst.poll_mask() & select.POLLIN

