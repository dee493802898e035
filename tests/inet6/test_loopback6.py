"""::1 on lo0: ping6, TCP (64 KB both ways, a large MTU on lo0 and no fragmentation)
and UDP (a 30 KB datagram) to ::1 inside one stack, with no interface but lo0."""

from __future__ import annotations

import trio

from stack.addr import LOOPBACK6
from stack.core import Stack
from tests.conftest import running_stack

AF_INET6 = 24


async def tcp_echo(st: Stack, port: int, size: int) -> bytes:
    ls = st.tcp.socket(AF_INET6)
    ls.bind(("::1", port))
    ls.listen(4)
    got = bytearray()

    async def serve() -> None:
        conn, peer = await ls.accept()
        assert peer[0] == LOOPBACK6
        while True:
            d = await conn.recv(65536)
            if not d:
                break
            await conn.send(d)
        conn.close()

    async with trio.open_nursery() as n:
        n.start_soon(serve)
        c = st.tcp.socket(AF_INET6)
        await c.connect(("::1", port))
        data = bytes(range(256)) * (size // 256)
        await c.send(data)
        c.shutdown(1)
        while True:
            d = await c.recv(65536)
            if not d:
                break
            got += d
        c.close()
    ls.close()
    return bytes(got)


async def test_loopback6_ping_tcp_udp() -> None:
    async with running_stack(inet6=True) as st:
        assert LOOPBACK6 in [ia.addr for ia in st.inet6.manage.addresses("lo0")]
        rtt = await st.inet6.manage.ping(LOOPBACK6, size=1000, timeout=2)
        assert 0 < rtt < 1
        with trio.fail_after(10):
            data = await tcp_echo(st, 7007, 64 * 1024)
        assert data == bytes(range(256)) * 256
        assert st.inet6.counters["out_fragmented"] == 0
        u1, u2 = st.udp.socket(AF_INET6), st.udp.socket(AF_INET6)
        u1.bind(("::1", 7008))
        u2.bind(("::", 0))
        big = b"\x5a" * 30000
        await u2.sendto(big, ("::1", 7008))
        with trio.fail_after(5):
            d, src = await u1.recvfrom(65536)
        assert d == big and src[0] == LOOPBACK6
        u1.close()
        u2.close()
