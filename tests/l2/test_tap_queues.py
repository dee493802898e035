"""devnp-tap's queues (queues=N, IFF_MULTI_QUEUE): a flow's frames come back on the queue
the stack sends it on, so a bulk flow's frames are read from a queue of their own and a
request/response flow's answers never wait behind them (stack/packet.py
QUEUE_SPARSE/QUEUE_BULK)."""

from __future__ import annotations

import pytest
import trio

from stack.packet import QUEUE_BULK, QUEUE_SPARSE
from tests.conftest import NetNS, needs_tun, running_stack
from tests.transport.test_kernel import KERNEL, ME, kpy, setup

pytestmark = [needs_tun, pytest.mark.root]

#: the kernel: a bulk sender to the stack's port 7100, and an echo server on 7200
BULK = """
import socket, sys
s = socket.create_connection((sys.argv[1], 7100))
s.sendall(b"b" * (8 << 20))
s.close()
"""
ECHO = """
import socket
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", 7200)); ls.listen(1)
c, _ = ls.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (d := c.recv(100)):
    c.sendall(d)
"""


async def test_a_bulk_flow_and_an_echo_flow_use_their_own_queues(netns: NetNS) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns},queues=2")]) as st:
        await setup(st, netns)
        tap = st.interfaces["tap0"]
        assert tap.describe()["queues"] == "2" and len(tap.extra_fds) == 1
        ls = st.tcp.socket()
        ls.bind((ME, 7100))
        ls.listen(1)
        got = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kpy, netns, BULK, ME)
            nursery.start_soon(kpy, netns, ECHO)
            bulk, _ = await ls.accept()
            echo = st.tcp.socket()
            await trio.sleep(0.2)  # the echo server listens
            await echo.connect((KERNEL, 7200))
            rounds = 0
            while True:
                await echo.send(b"x")
                assert await echo.recv(10) == b"x"
                rounds += 1
                chunk = await bulk.recv(1 << 20)
                got += len(chunk)
                if not chunk:
                    break
            echo.close()
            bulk.close()
        ls.close()
        assert got == 8 << 20 and rounds > 10
        assert bulk.tcb.queue == QUEUE_BULK and echo.tcb.queue == QUEUE_SPARSE
        # the echo's answers came in on the first queue, the bulk's 8 MB on the second
        c = tap.counters
        first = c["ipackets"] - c["rx_other_queues"]
        assert rounds <= first < rounds * 3 + 10, dict(c)
        assert c["rx_other_queues"] >= (8 << 20) // (64 << 10), dict(c)


async def test_one_queue_by_default_reads_everything_from_it(netns: NetNS) -> None:
    """One queue unless asked: frames of different flows stay in the kernel's order."""
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
        await setup(st, netns)
        tap = st.interfaces["tap0"]
        assert tap.describe()["queues"] == "1" and tap.extra_fds == []
        r = await trio.run_process(["ip", "netns", "exec", netns.name, "ping", "-c", "3",
                                    "-i", "0.05", "-W", "2", ME], capture_stdout=True)
        assert b"3 received" in r.stdout
        assert tap.counters["rx_other_queues"] == 0


@pytest.mark.parametrize(("bad", "why"), [("queues=0", "queues=0"), ("queues=9", "queues=9"),
                                          ("queues=x", "not an integer")])
async def test_bad_queue_counts_are_refused(netns: NetNS, bad: str, why: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns},{bad}")]) as st:
        assert "tap0" not in st.interfaces
    (msg,) = [r.getMessage() for r in caplog.records if "Unable to load/init" in r.getMessage()]
    assert msg.startswith("Unable to load/init devnp-tap: ") and why in msg
