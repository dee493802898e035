"""Link media (stack/l2/medium.py, issue 15 §3): IPv4 over a point-to-point link with no
link header and no MAC — two stacks joined by it, a route over it, ping, UDP and
forwarding through it with no ARP anywhere on it — beside the Ethernet path, which is
unchanged (ARP, the fast-forward cache); Ethernet's broadcast/multicast mappings for
both families; software segmentation out of a link without a header."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
import trio
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from stack.addr import BROADCAST4, format_addr, parse_addr
from stack.core import Stack
from stack.inet.wire.ipv4 import ip_to_int
from stack.l2.iface import IFF_MULTICAST, IFF_POINTOPOINT, IFF_UP, Interface
from stack.l2.medium import EthernetMedium, PointToPointMedium
from stack.packet import GSO_TCPV4, Buffer, Packet, TxMeta
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, PEER0, FakeIface

P0 = "02:00:00:00:aa:02"  # a host on A's Ethernet
M0 = "02:00:00:00:0a:01"  # A's fake0


class PtpIface(Interface):
    """One end of a point-to-point link: no MAC, no link header; what it sends is
    delivered (from a task, never inside the sender's call) at the other end."""

    kind = "ptp"
    medium_type = PointToPointMedium

    def __init__(self, name: str, mtu: int = 1400) -> None:
        super().__init__(name, mac=b"", mtu=mtu, driver="ptp",
                         flags=IFF_POINTOPOINT | IFF_MULTICAST)
        self.peer: PtpIface | None = None
        self.sent: list[bytes] = []  # every frame, as it went on the link
        self.inbox: deque[bytes] = deque()
        self.wake = trio.Event()

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        frame = b"".join(bytes(b) for b in bufs)
        self.sent.append(frame)
        if self.peer is not None:
            self.peer.inbox.append(frame)
            self.peer.wake.set()
        return True

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.inbox:
                self.deliver(Packet(memoryview(bytearray(self.inbox.popleft())), self))


@dataclass
class Pair:
    a: Stack
    b: Stack
    pa: PtpIface  # A's end (10.9.0.1)
    pb: PtpIface  # B's end (10.9.0.2)
    f0: FakeIface  # A's Ethernet (10.0.0.1/24, a host 10.0.0.2 behind it)


@pytest.fixture
async def pair(autojump_clock: object) -> AsyncIterator[Pair]:
    """A (fake0 Ethernet 10.0.0.1/24, ptp0 10.9.0.1/30) and B (ptp0 10.9.0.2/30, lo0
    alias 10.60.0.1): A routes 10.60.0.0/16 over ptp0, B routes 10.0.0.0/24 over it."""
    async with running_stack() as a, running_stack() as b:
        pa, pb = PtpIface("ptp0"), PtpIface("ptp0")
        pa.peer, pb.peer = pb, pa
        f0 = FakeIface("fake0", MAC0)
        for st, ifs in ((a, (pa, f0)), (b, (pb,))):
            for i in ifs:
                st.attach_interface(i)
                i.set_flags(IFF_UP)
        async with trio.open_nursery() as n:
            n.start_soon(pa.run)
            n.start_soon(pb.run)
            a.inet.add_address("fake0", "10.0.0.1/24")
            a.inet.add_address("ptp0", "10.9.0.1/30")
            b.inet.add_address("ptp0", "10.9.0.2/30")
            b.inet.add_address("lo0", "10.60.0.1/16")
            a.inet.route_add("10.60.0.0/16", ifname="ptp0")
            b.inet.route_add("10.0.0.0/24", ifname="ptp0")
            f0.take()
            yield Pair(a, b, pa, pb, f0)
            n.cancel_scope.cancel()


def host(a: object) -> str:
    """A socket address's host as text (text or an ``Addr``, whichever the sockets give)."""
    return a if isinstance(a, str) else format_addr(a)  # type: ignore[arg-type]


def no_arp_on_link(p: Pair) -> None:
    for st in (p.a, p.b):
        assert not [e for e in st.inet.arp_list() if e["interface"] == "ptp0"]
    assert p.b.inet.arp.counters["out_request"] == 0
    assert p.b.inet.arp.counters["out_gratuitous"] == 0  # none for ptp0's address


async def test_ping_over_a_point_to_point_route(pair: Pair) -> None:
    p = pair
    assert isinstance(p.pa.medium, PointToPointMedium)
    assert p.a.inet.route_get("10.60.0.1")["interface"] == "ptp0"
    rtt = await p.a.inet.ping("10.60.0.1", timeout=2)
    assert rtt >= 0
    # what crossed the link: bare IPv4 datagrams, no link header, no ARP
    for frame in p.pa.sent + p.pb.sent:
        ip = IP(frame)
        assert ip.version == 4 and ip.len == len(frame)
    assert [IP(f)[ICMP].type for f in p.pa.sent] == [8]
    assert [IP(f)[ICMP].type for f in p.pb.sent] == [0]
    assert IP(p.pa.sent[0]).src == "10.9.0.1" and IP(p.pb.sent[0]).dst == "10.9.0.1"
    no_arp_on_link(p)
    assert p.a.inet.arp.counters["out_request"] == 0
    assert p.a.inet.arp.counters["out_gratuitous"] == 1  # fake0's address, Ethernet only
    assert p.f0.take() == []


async def test_udp_over_a_point_to_point_route(pair: Pair) -> None:
    p = pair
    srv = p.b.udp.socket()
    srv.bind(("10.60.0.1", 7))
    cli = p.a.udp.socket()
    await cli.sendto(b"hello over ptp0", ("10.60.0.1", 7))
    with trio.fail_after(2):
        data, src = await srv.recvfrom(100)
    assert data == b"hello over ptp0" and host(src[0]) == "10.9.0.1"
    await srv.sendto(data.upper(), src)
    with trio.fail_after(2):
        back, frm = await cli.recvfrom(100)
    assert back == b"HELLO OVER PTP0" and host(frm[0]) == "10.60.0.1"
    assert [IP(f).proto for f in p.pa.sent + p.pb.sent] == [17, 17]
    no_arp_on_link(p)


async def test_forwarding_between_ethernet_and_point_to_point(pair: Pair) -> None:
    """A host on A's Ethernet pings B through A: A forwards onto ptp0 (no ARP, no
    fast-forward flow: the link has no addresses) and the reply back onto fake0 (ARP
    and the flow cache as before)."""
    p = pair
    p.a.sysctl.set("net.inet.ip.forwarding", "1")
    ff = p.a.l2.fastfwd

    def echo(seq: int) -> bytes:
        return bytes(Ether(src=P0, dst=M0) / IP(src="10.0.0.2", dst="10.60.0.1", ttl=9) /
                     ICMP(id=5, seq=seq) / (b"x" * 32))

    p.f0.inject(echo(1))
    await trio.sleep(0.1)
    assert len(p.pa.sent) == 1 and IP(p.pa.sent[0]).ttl == 8  # forwarded, bare datagram
    # the reply came back over ptp0 and waits for ARP on fake0 (the Ethernet path)
    out = [Ether(f) for f in p.f0.take()]
    assert len(out) == 1 and out[0].haslayer(ARP) and out[0][ARP].pdst == "10.0.0.2"
    p.f0.inject(bytes(Ether(src=P0, dst=M0) /
                      ARP(op=2, hwsrc=P0, psrc="10.0.0.2", hwdst=M0, pdst="10.0.0.1")))
    out = [Ether(f) for f in p.f0.take()]
    assert len(out) == 1 and out[0].dst == P0 and out[0][ICMP].type == 0
    assert out[0][IP].src == "10.60.0.1" and out[0][IP].ttl == 63
    assert ff.lookup(ip_to_int("10.60.0.1")) is None  # no link address on ptp0
    # the next reply is forwarded by the slow path too, which now learns the Ethernet flow
    p.f0.inject(echo(2))
    await trio.sleep(0.1)
    assert [Ether(f)[ICMP].seq for f in p.f0.take()] == [2]
    flow = ff.lookup(ip_to_int("10.0.0.2"))
    assert flow is not None and flow.out is p.f0 and flow.mac == PEER0
    assert ff.lookup(ip_to_int("10.60.0.1")) is None
    no_arp_on_link(p)


async def test_received_frame_protocol_from_the_ip_version(pair: Pair) -> None:
    p = pair
    before = p.a.inet.counters["in_receive"]
    p.pa.deliver(Packet(memoryview(bytearray(b"\x70" + bytes(39))), p.pa))  # version 7
    p.pa.deliver(Packet(memoryview(bytearray()), p.pa))
    assert p.pa.counters["drop_unknown_protocol"] == 1 and p.pa.counters["ierrors"] == 1
    assert p.a.inet.counters["in_receive"] == before
    p.pa.deliver(Packet(memoryview(bytearray(bytes(IP(src="10.9.0.2", dst="10.9.0.1") /
                                                  UDP(sport=1, dport=9)))), p.pa))
    assert p.a.inet.counters["in_receive"] == before + 1


async def test_software_segmentation_out_of_a_headerless_link(pair: Pair) -> None:
    """A TSO super-segment forwarded onto ptp0 (no offloads): cut in software, the
    medium saying there is no link header to copy onto each segment."""
    p = pair
    p.a.sysctl.set("net.inet.ip.forwarding", "1")
    data = bytes(range(256)) * 12  # 3072 bytes
    seg = IP(src="10.0.0.2", dst="10.60.0.1", ttl=9) / TCP(sport=1000, dport=80, seq=7,
                                                          flags="PA") / data
    frame = bytearray(bytes(Ether(src=P0, dst=M0) / seg))
    pkt = Packet(memoryview(frame), p.f0)
    pkt.gso_type, pkt.gso_size = GSO_TCPV4, 1448
    p.f0.deliver(pkt)
    await trio.sleep(0.1)
    segs = [IP(f) for f in p.pa.sent]
    assert p.pa.counters["gso_frames"] == 1
    assert len(segs) == 3 and all(len(f) <= p.pa.mtu for f in p.pa.sent)
    assert b"".join(bytes(s[TCP].payload) for s in segs) == data
    for s in segs:  # checksums as a receiver computes them
        fresh = IP(bytes(s))
        del fresh.chksum, fresh[TCP].chksum
        assert IP(bytes(fresh)).chksum == s.chksum and IP(bytes(fresh))[TCP].chksum == s[TCP].chksum


# -- Ethernet's mappings ------------------------------------------------------------------
@pytest.fixture
async def ether_stack() -> AsyncIterator[tuple[Stack, FakeIface]]:
    async with running_stack() as st:
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        f0.set_flags(IFF_UP)
        yield st, f0


async def test_ethernet_maps_broadcast_and_multicast(ether_stack: tuple[Stack, FakeIface]) -> None:
    st, f0 = ether_stack
    m = f0.medium
    assert isinstance(m, EthernetMedium) and m.hdr_len == 14 and m.resolves
    cases = [
        (BROADCAST4, 0x0800, "ff:ff:ff:ff:ff:ff"),
        (parse_addr("224.0.0.251"), 0x0800, "01:00:5e:00:00:fb"),
        (parse_addr("239.129.2.3"), 0x0800, "01:00:5e:01:02:03"),  # low 23 bits
        (parse_addr("ff02::1:ff00:1"), 0x86DD, "33:33:ff:00:00:01"),
        (parse_addr("ff02::1"), 0x86DD, "33:33:00:00:00:01"),
    ]
    for nh, proto, mac in cases:
        assert m.output([b"payload"], nh, proto) == 0
        (frame,) = f0.take()
        e = Ether(frame)
        assert (e.dst, e.src, e.type) == (mac, M0, proto)
        assert frame[14:] == b"payload"
    assert st.inet.arp.counters["out_request"] == 0
    # IPv6 unicast: ND's table holds it while resolving (fake0 has no IPv6 address to
    # solicit from yet, so nothing goes out)
    assert m.output([b"x"], parse_addr("2001:db8::1"), 0x86DD) == 0
    assert [e["address"] for e in st.inet6.nd.table.list()] == ["2001:db8::1"]
    assert st.inet6.nd.table.list()[0]["state"] == "incomplete" and f0.take() == []
    # without a table for the family (ND unregistered) the medium refuses
    st.inet6.nd.registration.remove()
    assert m.output([b"x"], parse_addr("2001:db8::2"), 0x86DD) == 113  # EHOSTUNREACH
    assert f0.counters["drop_no_neighbour_table"] == 1 and f0.take() == []
