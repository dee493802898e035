"""The IPv4 output hook before fragmentation (pfil head "inet_out_prefrag", issue 15 §4):
run after routing on the whole datagram, ours or forwarded; a hook may pass, drop,
replace the datagram or re-route it (another interface — a point-to-point tunnel link —
and/or another next hop); fragmentation follows for the interface it leaves by; a hook
that raises is counted, its packet dropped, and the stack keeps going. Offloads are
finished before the hooks (a partial checksum completed, a TSO super-segment cut), and
the fast-forward path stays off while hooks are present."""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Sequence

import pytest
import trio
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from stack.addr import parse_addr, pseudo_header_sum
from stack.inet.wire.ipv4 import ip_to_int
from stack.l2.iface import IFF_POINTOPOINT, IFF_UP, Interface
from stack.l2.medium import PointToPointMedium
from stack.packet import GSO_TCPV4, Buffer, TxMeta
from stack.pfil import INET_OUT_PREFRAG, PFIL_OUT, Reroute

M0 = "02:00:00:00:0a:01"
M1 = "02:00:00:00:0b:01"
P0 = "02:00:00:00:aa:02"
GW1 = "02:00:00:00:bb:02"


class PtpIface(Interface):
    """A point-to-point link (no MAC, no link header) whose wire is a list."""

    kind = "ptp"
    medium_type = PointToPointMedium

    def __init__(self, name: str, mtu: int = 1400) -> None:
        super().__init__(name, mac=b"", mtu=mtu, driver="ptp", flags=IFF_POINTOPOINT)
        self.sent: list[bytes] = []

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        self.sent.append(b"".join(bytes(b) for b in bufs))
        return True


@pytest.fixture
async def net(two_if_stack):
    st, f0, f1 = two_if_stack
    ptp = PtpIface("ptp0")
    st.attach_interface(ptp)
    ptp.set_flags(IFF_UP)
    st.inet.add_address("ptp0", "10.9.0.1/30")
    st.inet.arp_set("10.0.0.5", P0)  # a resolved neighbour on fake0
    return st, f0, f1, ptp


def joined(bufs: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(b) for b in bufs)


def udp(n: int, dport: int = 9) -> bytes:
    return struct.pack("!HHHH", 5000, dport, 8 + n, 0) + bytes(range(256)) * (n // 256) \
        + bytes(n % 256)


async def test_hook_sees_the_whole_datagram_before_fragmentation(net) -> None:
    st, f0, _, _ = net
    seen: list[tuple[str, bytes]] = []

    def hook(bufs: list[Buffer], iface: Interface, direction: str) -> None:
        seen.append((iface.name, joined(bufs)))

    st.pfil.add_hook(hook, INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(4000)]) == 0
    assert len(seen) == 1 and seen[0][0] == "fake0"
    d = IP(seen[0][1])
    assert d.len == 4028 and d.flags == 0 and d.frag == 0 and d.dst == "10.0.0.5"
    frags = [Ether(f)[IP] for f in f0.take()]
    assert [(f.frag * 8, f.flags.MF) for f in frags] == [(0, 1), (1480, 1), (2960, 0)]
    assert all(f.id == d.id for f in frags)
    assert st.inet.counters["out_fragmented"] == 1


async def test_hook_drops(net) -> None:
    st, f0, _, _ = net
    hook = st.pfil.add_hook(lambda b, i, d: False, INET_OUT_PREFRAG, PFIL_OUT, name="nope")
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(16)]) == errno.EPERM
    assert f0.take() == []
    assert st.inet.counters["drop_pfil_prefrag"] == 1 and hook.drops == 1
    assert st.pfil.counters["inet_out_prefrag_out_dropped"] == 1
    with pytest.raises(OSError) as e:  # ping too: the send fails at once
        await st.inet.ping("10.0.0.5", timeout=1)
    assert e.value.errno == errno.EPERM


async def test_hook_that_raises_is_counted_and_the_stack_goes_on(
        net, autojump_clock, caplog: pytest.LogCaptureFixture) -> None:
    st, f0, _, _ = net

    def broken(bufs: list[Buffer], iface: Interface, direction: str) -> None:
        raise RuntimeError("bug in a hook")

    with caplog.at_level(logging.ERROR, logger="io-pkt.pfil"):
        hook = st.pfil.add_hook(broken, INET_OUT_PREFRAG, PFIL_OUT)
        for _ in range(3):
            assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(16)]) == errno.EPERM
    assert hook.errors == 3 and st.pfil.counters["hook_errors"] == 3
    assert st.inet.counters["drop_pfil_prefrag"] == 3
    assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 1  # logged once
    assert f0.take() == []
    st.pfil.remove_hook(hook)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(16)]) == 0
    assert len(f0.take()) == 1
    # and the stack's own traffic flows: a ping answered on fake0
    f0.inject(bytes(Ether(src=P0, dst=M0) / IP(src="10.0.0.5", dst="10.0.0.1") /
                    ICMP(id=1, seq=1)))
    await trio.sleep(0.1)
    assert [Ether(f)[ICMP].type for f in f0.take()] == [0]


async def test_reroute_to_a_point_to_point_link(net) -> None:
    """Datagrams to 10.0.0.0/24 (routed out fake0) go by ptp0 instead: no ARP, bare
    datagrams on the link, fragmented for ptp0's MTU (1400), not fake0's."""
    st, f0, _, ptp = net

    def tunnel(bufs: list[Buffer], iface: Interface, direction: str) -> Reroute | None:
        if IP(joined(bufs)[:20]).dst == "10.0.0.7":
            return Reroute(ptp)
        return None

    st.pfil.add_hook(tunnel, INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.7"), 17, [udp(100)]) == 0
    assert st.inet.output(None, ip_to_int("10.0.0.7"), 17, [udp(1450)]) == 0
    assert f0.take() == [] and st.inet.arp.counters["out_request"] == 0
    out = [IP(f) for f in ptp.sent]
    assert [(o.dst, o.len, o.frag * 8, o.flags.MF) for o in out] == [
        ("10.0.0.7", 128, 0, 0), ("10.0.0.7", 1396, 0, 1), ("10.0.0.7", 102, 1376, 0)]
    assert st.inet.counters["prefrag_rerouted"] == 2
    # others still go the routed way
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(10)]) == 0
    assert [Ether(f).dst for f in f0.take()] == [P0]


async def test_encapsulate_and_reroute(net) -> None:
    """An IPsec-like hook: the datagram wrapped in an outer IP header (IP-in-IP, from
    10.9.0.1 to 10.9.0.2) and sent by ptp0; the outer datagram is what gets fragmented,
    for ptp0's MTU."""
    st, f0, _, ptp = net

    def encap(bufs: list[Buffer], iface: Interface, direction: str) -> Reroute | None:
        inner = joined(bufs)
        if IP(inner[:20]).proto == 4:
            return None
        outer = IP(src="10.9.0.1", dst="10.9.0.2", proto=4, id=77) / inner
        return Reroute(ptp, parse_addr("10.9.0.2"), [bytes(outer)])

    st.pfil.add_hook(encap, INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(1400)]) == 0
    assert f0.take() == []
    out = [IP(f) for f in ptp.sent]
    assert [(o.src, o.dst, o.proto, o.id, o.frag * 8, o.flags.MF) for o in out] == [
        ("10.9.0.1", "10.9.0.2", 4, 77, 0, 1), ("10.9.0.1", "10.9.0.2", 4, 77, 1376, 0)]
    inner = IP(b"".join(bytes(o.payload) for o in out))
    assert inner.src == "10.0.0.1" and inner.dst == "10.0.0.5" and inner.len == 1428
    assert st.inet.counters["prefrag_rerouted"] == 1


async def test_reroute_to_another_next_hop(net) -> None:
    """Policy routing: out fake1 by the gateway 10.1.0.2, resolved by ARP there."""
    st, f0, f1, _ = net

    def policy(bufs: list[Buffer], iface: Interface, direction: str) -> Reroute:
        return Reroute(f1, parse_addr("10.1.0.2"))

    st.pfil.add_hook(policy, INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(10)]) == 0
    req = [Ether(f) for f in f1.take()]
    assert len(req) == 1 and req[0][ARP].pdst == "10.1.0.2" and f0.take() == []
    f1.inject(bytes(Ether(src=GW1, dst=M1) /
                    ARP(op=2, hwsrc=GW1, psrc="10.1.0.2", hwdst=M1, pdst="10.1.0.1")))
    sent = [Ether(f) for f in f1.take()]
    assert len(sent) == 1 and sent[0].dst == GW1 and sent[0][IP].dst == "10.0.0.5"


async def test_bad_replacement_and_reroute_to_a_down_interface(net) -> None:
    st, f0, _, ptp = net
    hook = st.pfil.add_hook(lambda b, i, d: [b"\x45" + bytes(30)], INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(10)]) == errno.EINVAL
    assert st.inet.counters["drop_prefrag_bad_replacement"] == 1
    st.pfil.remove_hook(hook)
    ptp.set_flags(clear_bits=IFF_UP)
    st.pfil.add_hook(lambda b, i, d: Reroute(ptp), INET_OUT_PREFRAG, PFIL_OUT)
    assert st.inet.output(None, ip_to_int("10.0.0.5"), 17, [udp(10)]) == errno.ENETUNREACH
    assert st.inet.counters["drop_prefrag_reroute_down"] == 1
    assert f0.take() == [] and ptp.sent == []


async def test_offloads_are_finished_before_the_hooks(net) -> None:
    """A partial checksum is completed and a TSO super-segment cut before the hooks, so
    each hook call sees one finished datagram (and the wire gets them as they are)."""
    st, f0, _, _ = net
    f0.offloads = {"csum", "tso4"}
    seen: list[bytes] = []
    st.pfil.add_hook(lambda b, i, d: seen.append(joined(b)), INET_OUT_PREFRAG, PFIL_OUT)
    src, dst = parse_addr("10.0.0.1"), parse_addr("10.0.0.5")
    data = bytes(range(256)) * 12  # 3072 bytes
    seg = bytearray(bytes(TCP(sport=1000, dport=80, seq=1, flags="PA", chksum=0)) + data)
    seg[16:18] = (pseudo_header_sum(src, dst, 6, len(seg)) % 0xFFFF).to_bytes(2, "big")
    meta = TxMeta(0, 16, True, GSO_TCPV4, 1000, 20)
    assert st.inet.output(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.5"), 6, [bytes(seg)],
                          meta=meta) == 0
    assert len(seen) == 4 and st.inet.counters["prefrag_offload_sw"] == 1  # 3 x 1000 + 72
    assert b"".join(bytes(IP(s)[TCP].payload) for s in seen) == data
    for s in seen:
        fresh = IP(s)
        del fresh[TCP].chksum
        assert IP(bytes(fresh))[TCP].chksum == IP(s)[TCP].chksum  # complete and valid
    assert f0.metas == [None] * 4  # nothing left for the device to do
    assert [f[14:] for f in f0.take()] == seen
    # a partial checksum alone (UDP)
    seen.clear()
    u = bytearray(udp(40))
    u[6:8] = (pseudo_header_sum(src, dst, 17, len(u)) % 0xFFFF).to_bytes(2, "big")
    assert st.inet.output(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.5"), 17, [bytes(u)],
                          meta=TxMeta(0, 6, True)) == 0
    fresh = IP(seen[0])
    del fresh[UDP].chksum
    assert IP(bytes(fresh))[UDP].chksum == IP(seen[0])[UDP].chksum


async def test_forwarded_datagrams_pass_the_hook_and_bypass_no_filter(net, autojump_clock) -> None:
    """Forwarding: the hook sees forwarded datagrams (TTL lowered) and may re-route them;
    while it is there the fast-forward cache is off, and DF + too big for the new link
    draws "fragmentation needed" with that link's MTU."""
    st, f0, f1, ptp = net
    st.sysctl.set("net.inet.ip.forwarding", "1")
    st.inet.arp_set("10.1.0.2", GW1)
    ff = st.l2.fastfwd

    def fwd(ttl: int = 9, df: bool = False, n: int = 32) -> bytes:
        return bytes(Ether(src=P0, dst=M0) / IP(src="10.0.0.5", dst="10.1.0.2", ttl=ttl,
                                                flags="DF" if df else 0) /
                     UDP(sport=1, dport=2) / bytes(n))

    f0.inject(fwd())  # no hook: forwarded, and the flow learnt
    assert [Ether(f)[IP].ttl for f in f1.take()] == [8]
    assert ff.lookup(ip_to_int("10.1.0.2")) is not None and ff.active
    seen: list[int] = []

    def hook(bufs: list[Buffer], iface: Interface, direction: str) -> Reroute | None:
        d = IP(joined(bufs))
        if d.dst != "10.1.0.2":
            return None  # our ICMP error below passes here too
        seen.append(d.ttl)
        return Reroute(ptp)

    h = st.pfil.add_hook(hook, INET_OUT_PREFRAG, PFIL_OUT)
    assert not ff.active and st.pfil.inet_filtered()
    f0.inject(fwd())
    assert seen == [8] and f1.take() == [] and [IP(f).ttl for f in ptp.sent] == [8]
    f0.inject(fwd(df=True, n=1400))  # fits fake1 (1500), not ptp0 (1400)
    errs = [Ether(f) for f in f0.take()]
    assert seen == [8, 8] and len(errs) == 1
    assert errs[0][ICMP].type == 3 and errs[0][ICMP].code == 4
    assert errs[0][ICMP].nexthopmtu == 1400
    assert st.inet.counters["drop_frag_needed"] == 1
    st.pfil.remove_hook(h)
    assert not st.pfil.inet_filtered()
