"""TCP's features over IPv6, tested rather than assumed: the deterministic in-memory wire
of tests/transport/shim.py (MockClock) with hosts whose transports run over a
``DualNetwork`` of an IPv4 and an IPv6 fake layer, as the stack's do. The MSS from the
40-byte header, options, bulk transfers under loss/reorder/duplication/corruption (the
IPv6 pseudo-header checksum catching the corruption), SYN cookies under a flood of
spoofed IPv6 SYNs, RSTs for closed ports, TIME_WAIT, path MTU from a Packet Too Big,
TSO6 super-segments (GSO_TCPV6), and a dual-stack listener taking an IPv4 client."""

from __future__ import annotations

import errno
import hashlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio

from stack.addr import AF_INET, AF_INET6, Addr, Endpoint, parse_addr
from stack.network import DualNetwork, IPInfo
from stack.packet import GSO_TCPV6, Buffer, TxMeta
from stack.registry import Registries, TransportProtocol
from stack.sysctl import Sysctl
from stack.transport import Transports
from stack.transport.tcp.timewait import TimeWait
from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum, pseudo_header_sum
from tests.transport.shim import FakeInet, Sent, Wire

A, B = "2001:db8::a", "2001:db8::b"
A4, B4 = "10.0.0.1", "10.0.0.2"


class FakeInet6(FakeInet):
    """The shim's fake layer for an IPv6 address: the AF_INET6 transports, a 40-byte
    header's worth of MTU, the payload as the 'original packet' (IPv6 raw sockets)."""

    def attach(self, registries: Registries) -> None:
        def changed(key: tuple[int, int], proto: TransportProtocol | None) -> None:
            if key[0] != AF_INET6:
                return
            if proto is None:
                self.handlers.pop(key[1], None)
                self.err_handlers.pop(key[1], None)
            else:
                self.handlers[key[1]] = proto.input
                self.err_handlers[key[1]] = proto.icmp_error
        registries.transports.watchers.append(changed)
        for key, proto in registries.transports.items():
            changed(key, proto)

    def output(self, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer], *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Any = None) -> int:
        if meta is not None and meta.gso_type:
            self.gso.append(meta.gso_type)
        return super().output(src, dst, proto, payload, ttl=ttl, tos=tos, df=df, meta=meta,
                              ifname=ifname, on_error=on_error)

    def is_broadcast(self, addr: Addr) -> bool:
        return addr >> 120 == 0xFF

    def original_packet(self, info: IPInfo) -> memoryview:
        return memoryview(bytes(info.payload))


class Host6:
    def __init__(self, addr6: str, addr4: str, wire: Wire) -> None:
        self.inet4 = FakeInet(parse_addr(addr4), wire)
        self.inet6 = FakeInet6(parse_addr(addr6), wire)
        self.inet6.gso = []  # type: ignore[attr-defined]
        self.sysctl = Sysctl()
        self.t = Transports(DualNetwork(self.inet4, self.inet6), self.sysctl)
        self.registries = Registries()
        self.inet4.attach(self.registries)
        self.inet6.attach(self.registries)
        self.t.register(self.registries)
        self.tcp, self.udp, self.raw = self.t.tcp, self.t.udp, self.t.raw


class Net6:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.wire = Wire()
        self.a = Host6(A, A4, self.wire)
        self.b = Host6(B, B4, self.wire)
        nursery.start_soon(self.wire.run)
        nursery.start_soon(self.a.tcp.run)
        nursery.start_soon(self.b.tcp.run)


@pytest.fixture
async def net(autojump_clock: object) -> AsyncIterator[Net6]:
    async with trio.open_nursery() as nursery:
        yield Net6(nursery)
        nursery.cancel_scope.cancel()


async def pair(net: Net6, port: int = 5000) -> tuple[Any, Any, Any]:
    lst = net.b.tcp.socket(AF_INET6)
    lst.bind((B, port))
    lst.listen(16)
    cli = net.a.tcp.socket(AF_INET6)
    async with trio.open_nursery() as n:
        n.start_soon(cli.connect, (B, port))
        srv, _peer = await lst.accept()
    return lst, cli, srv


async def recv_all(sock: Any) -> bytes:
    out = bytearray()
    while True:
        chunk = await sock.recv(1 << 20)
        if not chunk:
            return bytes(out)
        out += chunk


def craft(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
          payload: bytes = b"") -> Sent:
    hdr = wtcp.emit_header(sport, dport, seq, ack, flags, 65535, b"")
    c = checksum((hdr, payload), pseudo_header_sum(parse_addr(src), parse_addr(dst), 6,
                                                   len(hdr) + len(payload)))
    hdr[16:18] = c.to_bytes(2, "big")
    return Sent(trio.current_time(), parse_addr(src), parse_addr(dst), 6, bytes(hdr) + payload)


async def test_handshake_mss_and_names(autojump_clock: object, net: Net6) -> None:
    lst, cli, srv = await pair(net)
    info = cli.info()
    assert info["timestamps"] and info["sack"] and info["wscale"] is not None
    assert info["snd_mss"] == 1500 - 40 - 20 - 12  # IPv6's header, TCP's, timestamps
    assert cli.getpeername() == Endpoint(parse_addr(B), 5000)
    assert srv.getpeername() == cli.getsockname()
    await cli.send(b"hello6")
    assert await srv.recv(10) == b"hello6"


@pytest.mark.parametrize("sack", [0, 1])
async def test_bulk_under_faults(autojump_clock: object, net: Net6, sack: int) -> None:
    for h in (net.a, net.b):
        h.sysctl.set("net.inet.tcp.sack.enable", sack)
    f = net.wire.faults
    f.loss, f.reorder, f.dup, f.corrupt = 0.03, 0.05, 0.05, 0.02
    lst, cli, srv = await pair(net)
    rnd = random.Random(sack)
    up, down = rnd.randbytes(400_000), rnd.randbytes(200_000)
    res: dict[str, bytes] = {}

    async def client() -> None:
        await cli.send(up)
        cli.shutdown(1)
        res["down"] = await recv_all(cli)

    async def server() -> None:
        async with trio.open_nursery() as n:
            async def rd() -> None:
                res["up"] = await recv_all(srv)
            n.start_soon(rd)
            await srv.send(down)
        srv.close()

    with trio.fail_after(600):
        async with trio.open_nursery() as n:
            n.start_soon(client)
            n.start_soon(server)
    assert hashlib.sha256(res["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(res["down"]).digest() == hashlib.sha256(down).digest()
    assert net.a.tcp.counters["rexmt_segs"] > 0
    bad = net.a.tcp.counters["drop_bad_checksum"] + net.b.tcp.counters["drop_bad_checksum"]
    assert bad > 0  # the IPv6 pseudo-header checksum caught the corrupted ones


async def test_syn_flood_cookies(autojump_clock: object, net: Net6) -> None:
    net.b.sysctl.set("net.inet.tcp.syncache.limit", 64)
    lst = net.b.tcp.socket(AF_INET6)
    lst.bind(("::", 80))
    lst.listen(128)
    for i in range(1000):  # spoofed SYNs that never complete
        net.wire.send(craft("2001:db8:9::9", B, 1024 + i, 80, i * 7919, 0, wtcp.SYN))
    await trio.sleep(0.02)
    c = net.b.tcp.counters
    assert len(lst.tcb.syn_queue) <= 64 and c["syncookies_sent"] > 500
    cli = net.a.tcp.socket(AF_INET6)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(cli.connect, (B, 80))
            srv, peer = await lst.accept()
    assert peer.addr == parse_addr(A)
    await cli.send(b"hi")
    assert await srv.recv(2) == b"hi"
    assert c["syncookies_accepted"] == 1 and srv.info()["sack"]


async def test_refused_time_wait_and_pmtu(autojump_clock: object, net: Net6) -> None:
    s = net.a.tcp.socket(AF_INET6)
    with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
        await s.connect((B, 4444))
    assert net.b.tcp.counters["rst_closed_port"] == 1
    lst, cli, srv = await pair(net, 5001)
    # a Packet Too Big (the IPv6 layer maps it to "need frag", extra = the MTU)
    tcb = cli.tcb
    await cli.send(b"x" * 10_000)
    net.a.tcp.icmp_error(3, 4, tcb.laddr, tcb.raddr,
                         memoryview(wtcp.emit_header(tcb.lport, tcb.rport, tcb.snd_una, 0,
                                                     wtcp.ACK, 0, b"")), 1280)
    assert tcb.snd_mss == 1280 - 40 - 20 - 12
    assert net.a.tcp.counters["pmtu_reduced"] == 1
    got = b""
    with trio.fail_after(10):
        while len(got) < 10_000:
            got += await srv.recv(20_000)
    cli.close()
    with trio.fail_after(5):
        assert await srv.recv(10) == b""
    srv.close()
    await trio.sleep(0.1)
    tw = [c for c in net.a.tcp.conns.values() if isinstance(c, TimeWait)]
    assert len(tw) == 1 and tw[0].laddr == parse_addr(A) and tw[0].raddr == parse_addr(B)


async def test_tso6_super_segments(autojump_clock: object, net: Net6) -> None:
    for h in (net.a, net.b):
        h.inet6.offloads = {"csum", "tso6"}
    lst, cli, srv = await pair(net, 5002)
    assert cli.tcb.gso_type == GSO_TCPV6 and cli.tcb.tso_max > cli.tcb.snd_mss
    data = random.Random(6).randbytes(300_000)
    async with trio.open_nursery() as n:
        async def rd(out: list[bytes]) -> None:
            b = b""
            while len(b) < len(data):
                b += await srv.recv(1 << 20)
            out.append(b)
        got: list[bytes] = []
        n.start_soon(rd, got)
        await cli.send(data)
    assert got[0] == data
    assert GSO_TCPV6 in net.a.inet6.gso  # type: ignore[attr-defined]


async def test_dual_stack_listener_and_v6only(autojump_clock: object, net: Net6) -> None:
    lst = net.b.tcp.socket(AF_INET6)
    lst.bind(("::", 5003))
    lst.listen(4)
    cli4 = net.a.tcp.socket(AF_INET)
    async with trio.open_nursery() as n:
        n.start_soon(cli4.connect, (B4, 5003))
        srv, peer = await lst.accept()
    assert peer.addr == parse_addr(A4)  # an IPv4 peer (IPv4-mapped in the address model)
    assert srv.getsockname().addr == parse_addr(B4)
    assert srv.family == AF_INET6  # an accepted socket is of its listener's family
    lst.close()
    only = net.b.tcp.socket(AF_INET6)
    only.setsockopt(41, 26, 1)
    only.bind(("::", 5004))
    only.listen(4)
    cli4 = net.a.tcp.socket(AF_INET)
    with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
        await cli4.connect((B4, 5004))
    with pytest.raises(OSError) as exc:
        only.setsockopt(41, 26, 0)  # after bind: EINVAL, as Linux
    assert exc.value.errno == errno.EINVAL
