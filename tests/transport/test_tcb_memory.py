"""What an idle connection holds (issue 21: 10,000 connections within 120 MB; the
figures in docs/performance.md, "Where the memory goes"): a TCB is one object of slots
with no instance dict, and an empty send buffer holds no deque of its own."""

from __future__ import annotations

import sys

import trio

from stack.transport.tcp.buffers import SendBuffer
from stack.transport.tcp.tcb import TCB
from tests.transport.shim import Net
from tests.transport.test_tcp_mock import _pair


async def test_an_established_tcb_has_no_dict(autojump_clock: object, net: Net) -> None:
    lst, cli, srv = await _pair(net)
    for s in (cli, srv):
        tcb = s.tcb
        assert isinstance(tcb, TCB) and not hasattr(tcb, "__dict__")
        assert sys.getsizeof(tcb) < 1200  # ~0.9 KB; with a dict it was ~4.2 KB
        assert tcb.sndbuf.chunks is SendBuffer().chunks  # nothing sent: the shared one
    await cli.send(b"x" * 3000)
    got = b""
    while len(got) < 3000:
        got += await srv.recv(65536)
    cli_tcb = cli.tcb
    while len(cli_tcb.sndbuf):  # until the peer acknowledged it all
        await trio.sleep(0.05)
    assert cli_tcb.sndbuf.chunks is SendBuffer().chunks  # given back once acknowledged
    for s in (cli, srv, lst):
        s.close()


def test_send_buffer_takes_its_own_deque_and_gives_it_back() -> None:
    a, b = SendBuffer(), SendBuffer()
    a.append(b"abc")
    assert a.chunks is not b.chunks and not b.chunks and len(a) == 3
    a.append(b"x" * 5000)
    a.consume(4)
    assert b"".join(a.slice(0, len(a))) == b"x" * 4999
    a.consume(4999)
    assert a.chunks is b.chunks and len(a) == 0 and a.head == 0
    b.append(b"q")
    assert a.chunks is not b.chunks and not a.chunks  # the shared one stayed empty
