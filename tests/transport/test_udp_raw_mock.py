"""UDP and raw IP sockets over the in-memory wire on MockClock (issue 6): binding and
ephemeral ports, connect, ECONNREFUSED from ICMP port unreachable, bounded receive
queues with drop counters, SO_BROADCAST; raw sockets getting copies of a protocol's
packets and sending with the stack building the IP header."""

from __future__ import annotations

import errno
import socket as _s

import pytest
import trio

from stack.addr import addr_bytes
from stack.transport.wire import udp as wudp
from tests.transport.shim import Net, ep, ip

A, B = "10.0.0.1", "10.0.0.2"


async def test_bind_ephemeral_and_addrinuse(autojump_clock: object, net: Net) -> None:
    udp = net.a.udp
    udp.cfg.port_first, udp.cfg.port_last = 50000, 50003
    socks = [udp.socket() for _ in range(4)]
    for s in socks:
        await s.sendto(b"x", (B, 9))  # an unbound socket gets an ephemeral port
    ports = sorted(s.getsockname()[1] for s in socks)
    assert ports == [50000, 50001, 50002, 50003]
    with pytest.raises(OSError) as ei:
        udp.socket().bind((A, 0))
    assert ei.value.errno == errno.EADDRNOTAVAIL  # the range is used up
    freed = socks[0].getsockname()[1]
    socks[0].close()
    s5 = udp.socket()
    s5.bind((A, 0))
    assert s5.getsockname() == ep(A, freed)  # a closed socket's port is free again
    fixed = udp.socket()
    fixed.bind(("0.0.0.0", 7000))
    with pytest.raises(OSError) as ei:
        udp.socket().bind((A, 7000))
    assert ei.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as ei:
        udp.socket().bind(("10.0.0.99", 0))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    r1, r2 = udp.socket(), udp.socket()
    for s in (r1, r2):
        s.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
        s.bind((A, 7001))  # both may share with SO_REUSEADDR


async def test_echo_connect_and_filtering(autojump_clock: object, net: Net) -> None:
    srv = net.b.udp.socket()
    srv.bind((B, 7))
    cli = net.a.udp.socket()
    cli.connect((B, 7))
    me = cli.getsockname()
    assert cli.getpeername() == ep(B, 7)
    assert cli.getsockname()[0] == ip(A) and cli.getsockname()[1] != 0
    await cli.send(b"ping")
    data, addr = await srv.recvfrom(100)
    assert data == b"ping" and addr == cli.getsockname()
    await srv.sendto(b"pong", addr)
    assert await cli.recv(100) == b"pong"
    # a connected socket only takes datagrams from its peer
    other = net.b.udp.socket()
    await other.sendto(b"stranger", cli.getsockname())
    await trio.sleep(0.1)
    with pytest.raises(BlockingIOError):
        cli.recv_nowait()
    with pytest.raises(OSError) as ei:
        await cli.sendto(b"x", (B, 8))
    assert ei.value.errno == errno.EISCONN
    cli.connect(None)  # disconnect
    with pytest.raises(OSError) as ei:
        await cli.send(b"x")
    assert ei.value.errno == errno.EDESTADDRREQ
    # truncation: one recv = one datagram, the rest of it is discarded
    await srv.sendto(b"abcdef" * 10, me)
    await trio.sleep(0.1)
    assert cli.bytes_readable() == 60
    assert cli.recv_nowait(4) == b"abcd"
    with pytest.raises(BlockingIOError):
        cli.recv_nowait()


async def test_connected_socket_gets_econnrefused(autojump_clock: object, net: Net) -> None:
    cli = net.a.udp.socket()
    cli.connect((B, 4444))  # nobody listens on B:4444
    await cli.send(b"hello?")
    await trio.sleep(0.1)  # B answers with ICMP port unreachable
    assert net.b.udp.counters["no_port"] == 1
    assert net.b.udp.counters["icmp_port_unreach_sent"] == 1
    assert net.a.udp.counters["icmp_error_ECONNREFUSED"] == 1
    with pytest.raises(ConnectionRefusedError):
        cli.recv_nowait()
    await cli.send(b"again")  # reported once, then the socket works on
    # an unconnected socket is not told (BSD): its sendto keeps working
    un = net.a.udp.socket()
    await un.sendto(b"x", (B, 4444))
    await trio.sleep(0.1)
    await un.sendto(b"y", (B, 4444))
    with pytest.raises(BlockingIOError):
        un.recvfrom_nowait()


async def test_bounded_receive_queue_counts_drops(autojump_clock: object, net: Net) -> None:
    srv = net.b.udp.socket()
    srv.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 2048)  # doubled: 4096 bytes of datagrams
    srv.bind((B, 9000))
    cli = net.a.udp.socket()
    for i in range(10):
        await cli.sendto(bytes([i]) * 1000, (B, 9000))
    await trio.sleep(0.1)
    c = net.b.udp.counters
    assert c["delivered"] == 4 and c["rcv_queue_full"] == 6 and srv.drops == 6
    got = []
    while True:
        try:
            got.append(srv.recv_nowait()[0])
        except BlockingIOError:
            break
    assert got == [0, 1, 2, 3]  # the queue kept the first ones, in order
    await cli.sendto(b"after", (B, 9000))  # room again
    assert await srv.recv(100) == b"after"


async def test_broadcast_needs_so_broadcast(autojump_clock: object, net: Net) -> None:
    rx = net.b.udp.socket()
    rx.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
    rx.bind(("0.0.0.0", 6000))
    unicast = net.b.udp.socket()  # bound to B's own address: no broadcasts (BSD, Linux)
    unicast.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
    unicast.bind((B, 6000))
    bcast = net.b.udp.socket()  # bound to the broadcast address itself: gets them
    bcast.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
    bcast.bind(("10.0.0.255", 6000))
    tx = net.a.udp.socket()
    for dst in ("255.255.255.255", "10.0.0.255"):
        with pytest.raises(PermissionError):
            await tx.sendto(b"x", (dst, 6000))
    with pytest.raises(PermissionError):
        tx.connect(("255.255.255.255", 6000))
    assert net.a.udp.counters["send_broadcast_denied"] == 2
    tx.setsockopt(_s.SOL_SOCKET, _s.SO_BROADCAST, 1)
    assert tx.getsockopt(_s.SOL_SOCKET, _s.SO_BROADCAST) == 1
    await tx.sendto(b"to all", ("10.0.0.255", 6000))
    data, addr = await rx.recvfrom(100)
    assert data == b"to all" and addr[0] == ip(A)
    assert (await bcast.recvfrom(100))[0] == b"to all"
    with pytest.raises(BlockingIOError):
        unicast.recvfrom_nowait()
    # no port unreachable for a broadcast nobody wants
    await tx.sendto(b"nobody", ("255.255.255.255", 6001))
    await trio.sleep(0.1)
    assert net.b.udp.counters["icmp_port_unreach_sent"] == 0


async def test_zero_checksum_accepted_bad_checksum_dropped(autojump_clock: object, net: Net) -> None:
    srv = net.b.udp.socket()
    srv.bind((B, 5353))
    hdr = wudp.emit_header(1234, 5353, 4)  # checksum field 0: "none" (RFC 768)
    net.a.inet.output(ip(A), ip(B), 17, [hdr, b"data"])
    assert await srv.recv(100) == b"data"
    assert net.b.udp.counters["no_checksum"] == 1
    hdr = wudp.emit_header(1234, 5353, 4)
    hdr[6:8] = b"\x12\x34"  # wrong
    net.a.inet.output(ip(A), ip(B), 17, [hdr, b"data"])
    await trio.sleep(0.1)
    assert net.b.udp.counters["drop_bad_checksum"] == 1
    with pytest.raises(BlockingIOError):
        srv.recv_nowait()


async def test_raw_socket_copies_and_sends(autojump_clock: object, net: Net) -> None:
    raw = net.b.raw.socket(253)  # an experimental protocol number (RFC 3692)
    icmp = net.b.raw.socket(_s.IPPROTO_ICMP)
    # the stack builds the IP header: A sends protocol 253 from a raw socket
    tx = net.a.raw.socket(253)
    assert await tx.sendto(b"experiment", (B, 0)) == 10
    sent = [p for p in net.wire.log if p.proto == 253]
    assert len(sent) == 1 and (sent[0].src, sent[0].dst) == (ip(A), ip(B))
    data, addr = await raw.recvfrom(100)
    assert data[20:] == b"experiment" and addr == ep(A, 0)  # IP header first, as BSD/Linux
    assert data[0] == 0x45 and data[9] == 253 and data[12:20] == addr_bytes(ip(A)) + \
        addr_bytes(ip(B))
    with pytest.raises(BlockingIOError):
        icmp.recvfrom_nowait()  # another protocol's socket got nothing
    # a raw socket gets a copy of UDP too, while UDP still delivers it
    udp_raw = net.b.raw.socket(17)
    srv = net.b.udp.socket()
    srv.bind((B, 7777))
    cli = net.a.udp.socket()
    await cli.sendto(b"both", (B, 7777))
    assert await srv.recv(100) == b"both"
    copy, _ = await udp_raw.recvfrom(100)
    assert copy[28:] == b"both" and int.from_bytes(copy[22:24], "big") == 7777  # UDP header kept
    # connect filters by source; broadcast needs SO_BROADCAST; counters
    raw.connect(("10.0.0.9", 0))
    await tx.sendto(b"filtered", (B, 0))
    await trio.sleep(0.1)
    with pytest.raises(BlockingIOError):
        raw.recvfrom_nowait()
    with pytest.raises(PermissionError):
        await tx.sendto(b"x", ("255.255.255.255", 0))
    assert net.a.raw.counters["packets_out"] == 2
    assert net.b.raw.counters["delivered"] == 2
    raw.close()
    assert raw not in net.b.raw.sockets


async def test_raw_receive_queue_bounded(autojump_clock: object, net: Net) -> None:
    raw = net.b.raw.socket(253)
    raw.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 1024)  # 2048 bytes
    tx = net.a.raw.socket(253)
    for _ in range(5):
        await tx.sendto(b"z" * 1000, (B, 0))
    await trio.sleep(0.1)
    assert net.b.raw.counters["delivered"] == 2 and net.b.raw.counters["rcv_queue_full"] == 3


async def test_ip_mtu_discover_sends_with_df(autojump_clock: object, net: Net) -> None:
    """IP_MTU_DISCOVER (ping -D): DO sets DF, and a datagram over the MTU is refused with
    EMSGSIZE instead of fragmented; DONT goes back to fragmenting."""
    mtu_discover = getattr(_s, "IP_MTU_DISCOVER", 10)
    rx = net.b.raw.socket(253)
    tx = net.a.raw.socket(253)
    assert tx.getsockopt(_s.IPPROTO_IP, mtu_discover) == 0
    with pytest.raises(OSError) as e:
        tx.setsockopt(_s.IPPROTO_IP, mtu_discover, 9)
    assert e.value.errno == errno.EINVAL
    tx.setsockopt(_s.IPPROTO_IP, mtu_discover, 2)  # IP_PMTUDISC_DO
    assert tx.getsockopt(_s.IPPROTO_IP, mtu_discover) == 2
    await tx.sendto(b"small", (B, 0))
    data, _ = await rx.recvfrom(100)
    assert data[20:] == b"small"  # (the shim's wire has no IP flags: DF on a real wire
    # is checked by tests/tools' ping -D against the kernel)
    with pytest.raises(OSError) as e:
        await tx.sendto(b"x" * 3000, (B, 0))
    assert e.value.errno == errno.EMSGSIZE
    tx.setsockopt(_s.IPPROTO_IP, mtu_discover, 0)  # IP_PMTUDISC_DONT: fragments again
    await tx.sendto(b"y" * 3000, (B, 0))
    data, _ = await rx.recvfrom(4000)
    assert data[20:] == b"y" * 3000
    u = net.a.udp.socket()
    u.setsockopt(_s.IPPROTO_IP, mtu_discover, 2)
    with pytest.raises(OSError) as e:
        await u.sendto(b"z" * 3000, (B, 9))
    assert e.value.errno == errno.EMSGSIZE
