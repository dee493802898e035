"""Per-connection state is freed after close (the soak's "RSS +10 kB per connection").

1. In-stack, over the in-memory wire on MockClock: 2,000 connections opened, used and
   closed (both close orders), TIME_WAIT expiring (msl 50 ms): TCB / TCPSocket objects,
   the conns / ports / listeners tables and the timer heap return to their baseline.
2. Through the socket files (FUSE) with the kernel as the client, as bench/soak.py does:
   every accepted connection is opened by name (``tcp/N/data``); the kernel caches that
   path, and before the fix its cached ``data`` dentry pinned ``tcp/N`` so the session's
   inode table kept every accepted socket forever (about 10 kB each). Now the session
   invalidates vanished dynamic entries and the socket objects return to baseline.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest
import trio

from stack.transport.tcp.socket import TCPSocket
from stack.transport.tcp.tcb import TCB
from tests.transport.shim import Net

A, B = "10.0.0.1", "10.0.0.2"


def live(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def tables(net: Net) -> tuple[int, ...]:
    out: list[int] = []
    for h in (net.a, net.b):
        t = h.tcp
        out += [len(t.conns), sum(len(v) for v in t.ports.values()), len(t.listeners),
                len(t.timers)]
    return tuple(out)


async def test_closed_connections_leave_nothing_behind(autojump_clock: object, net: Net) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.msl", "50")
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(64)

    async def one(i: int) -> None:
        c = net.a.tcp.socket()
        async with trio.open_nursery() as n:
            n.start_soon(c.connect, (B, 80))
            s, _ = await lst.accept()
        await c.send(b"q" * 300)
        got = b""
        while len(got) < 300:
            got += await s.recv(1000)
        await s.send(b"r" * 200)
        got = b""
        while len(got) < 200:
            got += await c.recv(1000)
        first, second = (c, s) if i % 2 else (s, c)  # both sides take the active close
        first.close()
        assert await second.recv(10) == b""
        second.close()

    async def batch(k: int) -> None:
        for i in range(k):
            await one(i)
        await trio.sleep(1.0)  # > 2 x msl: every TIME_WAIT has expired

    await batch(20)
    base = (live(TCB), live(TCPSocket), tables(net))
    await batch(2000)
    after = (live(TCB), live(TCPSocket), tables(net))
    assert after == base
    assert net.a.tcp.counters["timewait_expired"] + net.b.tcp.counters["timewait_expired"] >= 2000
    assert net.b.tcp.counters["passive_opens"] == 2020


CLIENT = """
import socket, sys
d = bytes(range(256)) * 64
for i in range(int(sys.argv[2])):
    c = socket.create_connection((sys.argv[1], 5001), timeout=30)
    c.sendall(d); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
"""


@pytest.mark.root
async def test_socket_files_free_accepted_connections(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import HAVE_FUSE, HAVE_TUN, running_stack

    if not (HAVE_FUSE and HAVE_TUN and os.geteuid() == 0):
        pytest.skip("needs root, /dev/fuse, fusermount3 and /dev/net/tun")
    from rmgr import libsocket
    from rmgr.fuse.session import FuseSession
    from stack.l2.iface import IFF_UP
    from stack.sockets.conn import Conn

    me, kernel = "10.9.0.2", "10.9.0.1"
    prefix = str(tmp_path / "s")

    def server(n: int) -> None:
        libsocket.setsockprefix(prefix)
        try:
            ls = libsocket.socket()
            ls.bind(("0.0.0.0", 5001))
            ls.listen(8)
            ls.settimeout(30)
            for _ in range(n):
                c, _ = ls.accept()  # opens accepted/K, a slot reused accept after accept
                c.settimeout(30)
                while c.recv(65536):
                    pass
                c.close()
            ls.close()
        finally:
            libsocket.clearsockprefix()

    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")], prefix=prefix,
                             mount=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        st.inet.add_address("tap0", f"{me}/24")
        for cmd in (["addr", "add", f"{kernel}/24", "dev", "tap0"], ["link", "set", "tap0", "up"]):
            await trio.run_process(["ip", "-n", netns.name, *cmd])
        st.sysctl.set("net.inet.tcp.msl", "50")
        # the socket door's session (the stack also serves dev/crypto from one of its own)
        (session,) = [o for o in gc.get_objects()
                      if type(o) is FuseSession and o.root is st.tree]

        async def rounds(n: int) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, server, n)
                await trio.sleep(0.2)
                await trio.run_process(["ip", "netns", "exec", netns.name, sys.executable, "-c",
                                        CLIENT, me, str(n)])

        def counts() -> tuple[int, int, int, int]:
            return live(Conn), live(TCB), live(TCPSocket), len(session.known_inodes())

        async def settled(want: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
            with trio.move_on_after(5):
                while counts() != want:
                    await trio.sleep(0.2)
            return counts()

        with trio.fail_after(60):
            await rounds(5)
            await trio.sleep(1.5)  # the session's sweep (1 s) and TIME_WAIT (0.1 s)
            base = counts()
            await rounds(150)
            assert await settled(base) == base
        # the accepts went through handover slots (no per-connection name for the kernel
        # to cache and the stack to invalidate: the inode count above stayed put), and
        # every slot was given back
        assert session.counters["inval_entry"] < 150
        assert not st.sockets.handover
