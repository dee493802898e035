"""The fast-forward flow cache inside a whole stack (IPv4 layer, ARP, routes) on in-memory
interfaces: what the fast path refuses to forward (it goes to the IP input path, which
drops and counts it), and that route, address and ARP changes made through the stack's
own APIs (and ARP from the wire) empty the cache, so forwarding follows the new state at
once. Every frame is handled synchronously inside ``inject``: no waiting, no timing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

from stack.core import Stack
from stack.l2.fastfwd import FastForward
from stack.l2.iface import IFF_UP
from stack.packet import Packet
from tests.conftest import running_stack
from tests.inet.conftest import FakeIface

M0, M1, M2 = "02:00:00:00:0a:01", "02:00:00:00:0b:01", "02:00:00:00:0c:01"
HOST = "02:00:00:00:aa:02"  # 10.0.0.2 on fake0, the sender of every test packet
GW_A = "02:00:00:00:bb:02"  # 10.1.0.2 on fake1
GW_B = "02:00:00:00:bb:03"  # 10.1.0.3 on fake1
GW_C = "02:00:00:00:cc:02"  # 10.2.0.2 on fake2
DST = "10.9.0.5"  # behind the routers: 10.9.0.0/16 via 10.1.0.2


class Wire(FakeIface):
    """tests/inet's list-backed interface (``transmit`` keeps frames and their TxMeta,
    ``inject`` receives), named by a MAC string."""

    def __init__(self, name: str, mac: str) -> None:
        super().__init__(name, bytes.fromhex(mac.replace(":", "")))
        self.mac_str = mac

    def take_ip(self) -> list[Ether]:
        """IPv4 frames sent since the last call (ARP left out)."""
        out = [Ether(b) for b in self.sent]
        self.sent = []
        return [f for f in out if f.type == 0x0800]


@dataclass
class Router:
    st: Stack
    f0: Wire
    f1: Wire
    f2: Wire

    @property
    def ff(self) -> FastForward:
        return self.st.l2.fastfwd

    @property
    def inet(self) -> Any:
        return self.st.inet  # type: ignore[attr-defined]

    def send(self, dst: str = DST, *, src: str = "10.0.0.2", raw: bytes | None = None) -> None:
        """A datagram from the host on fake0, to our MAC (so to be routed)."""
        pkt = raw if raw is not None else bytes(
            IP(src=src, dst=dst) / UDP(sport=5000, dport=9) / b"payload")
        self.f0.inject(bytes(Ether(src=HOST, dst=M0, type=0x0800)) + pkt)

    def counts(self) -> tuple[int, int]:
        """(forwarded by the IP layer, forwarded by the flow cache)."""
        return self.inet.counters["forwarded"], self.ff.counters["forwarded"]

    def out(self) -> dict[str, list[Ether]]:
        return {f.name: f.take_ip() for f in (self.f0, self.f1, self.f2)}

    def expect_forwarded(self, via: Wire, mac: str, dst: str = DST, *, fast: bool) -> None:
        """One packet to ``dst`` leaves ``via`` for ``mac`` (TTL 63, header checksum
        right), and nothing else is sent; by the cache (fast) or by the IP layer."""
        slow0, fast0 = self.counts()
        self.send(dst)
        got = self.out()
        assert {k: len(v) for k, v in got.items()} == {f.name: int(f is via) for f in
                                                       (self.f0, self.f1, self.f2)}, got
        frame = got[via.name][0]
        assert frame.dst == mac and frame.src == via.mac_str
        assert frame[IP].dst == dst and frame[IP].ttl == 63
        hdr = bytes(frame[IP])[:20]
        assert sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2)) % 0xFFFF == 0
        assert self.counts() == ((slow0, fast0 + 1) if fast else (slow0 + 1, fast0))

    def warm(self, via: Wire, mac: str, dst: str = DST) -> None:
        """The first packet of a flow takes the IP layer and fills the cache; the next
        one is forwarded from the cache."""
        assert self.ff.lookup(_int(dst)) is None
        self.expect_forwarded(via, mac, dst, fast=False)
        assert self.ff.lookup(_int(dst)) is not None and self.ff.active
        self.expect_forwarded(via, mac, dst, fast=True)


def _int(a: str) -> int:
    return int.from_bytes(bytes(int(x) for x in a.split(".")), "big")


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    """fake0 10.0.0.1/24 (the host 10.0.0.2), fake1 10.1.0.1/24 (routers .2 and .3),
    fake2 10.2.0.1/24 (router .2); static ARP for all of them; 10.9.0.0/16 via 10.1.0.2;
    forwarding on."""
    async with running_stack(tcpip="forward") as st:
        wires = [Wire("fake0", M0), Wire("fake1", M1), Wire("fake2", M2)]
        r = Router(st, *wires)
        for n, w in enumerate(wires):
            st.attach_interface(w)
            w.set_flags(IFF_UP)
            r.inet.add_address(w.name, f"10.{n}.0.1/24")
        r.inet.arp_set("10.0.0.2", HOST)
        r.inet.arp_set("10.1.0.2", GW_A)
        r.inet.arp_set("10.1.0.3", GW_B)
        r.inet.arp_set("10.2.0.2", GW_C)
        r.inet.route_add("10.9.0.0/16", "10.1.0.2")
        assert st.sysctl["net.inet.ip.fastforwarding"] == 1
        r.out()  # gratuitous ARPs
        yield r


# -- what the fast path must not forward ---------------------------------------------------

async def test_bad_header_checksum_is_not_fast_forwarded(router: Router) -> None:
    """A cached flow, then a frame whose IPv4 header checksum is wrong: the cache does not
    forward it (miss_bad_checksum), the IP layer drops and counts it; the flow stays and
    the next good frame is forwarded from the cache again."""
    r = router
    r.warm(r.f1, GW_A)
    good = bytes(IP(src="10.0.0.2", dst=DST) / UDP(sport=5000, dport=9) / b"payload")
    for bad in (good[:10] + bytes([good[10] ^ 0xFF]) + good[11:],  # the checksum field
                good[:4] + bytes([good[4] ^ 0x01]) + good[5:]):  # a header bit (the ID)
        r.send(raw=bad)
    assert r.out() == {"fake0": [], "fake1": [], "fake2": []}
    assert r.ff.counters["miss_bad_checksum"] == 2
    assert r.inet.counters["drop_bad_checksum"] == 2
    assert r.counts() == (1, 1)  # neither path forwarded them
    assert r.ff.lookup(_int(DST)) is not None
    r.expect_forwarded(r.f1, GW_A, fast=True)


async def test_what_ip_input_drops_is_not_fast_forwarded(router: Router) -> None:
    """Martian sources and a total length below the header, with a correct checksum, to
    a cached destination: the cache leaves them to the IP layer, which drops them."""
    r = router
    r.warm(r.f1, GW_A)
    r.send(src="127.0.0.1")
    r.send(src="224.0.0.9")
    r.send(raw=bytes(IP(src="10.0.0.2", dst=DST, len=12) / UDP(sport=5000, dport=9)))
    assert r.out() == {"fake0": [], "fake1": [], "fake2": []}
    assert r.ff.counters["miss_bad_source"] == 2 and r.ff.counters["miss_slowpath"] == 1
    c = r.inet.counters
    assert c["drop_martian_source"] == 1 and c["drop_bad_source"] == 1
    assert c["drop_bad_length"] == 1
    assert r.counts() == (1, 1)


# -- offloaded frames: a partial checksum, a TSO super-segment ---------------------------

def _partial(r: Router, payload: bytes, *, gso: int = 0) -> Packet:
    """A UDP datagram to DST as a TAP with offloads hands it over: L4 checksum left
    partial (the pseudo-header sum in the field), optionally marked as a super-segment."""
    words = bytes(IP(src="10.0.0.2", dst=DST))[12:20] + (17).to_bytes(2, "big") + \
        (8 + len(payload)).to_bytes(2, "big")
    s = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip_ = IP(src="10.0.0.2", dst=DST) / UDP(sport=5000, dport=9, chksum=s) / payload
    frame = bytes(Ether(src=HOST, dst=M0, type=0x0800)) + bytes(ip_)
    pkt = Packet(memoryview(bytearray(frame)), r.f0)
    pkt.csum_partial = pkt.csum_valid = True
    pkt.csum_start, pkt.csum_offset = 14 + 20, 6
    if gso:
        pkt.gso_type, pkt.gso_size, pkt.hdr_len = gso, 1400, 14 + 20 + 8
    return pkt


async def test_partial_checksum_forwarded_with_its_metadata(router: Router) -> None:
    """Out interface with checksum offload: the cache forwards the frame as it came, with
    the TxMeta that asks the device to finish the checksum (offsets for the new frame)."""
    r = router
    r.f1.offloads = {"csum", "tso4", "ufo"}
    r.warm(r.f1, GW_A)
    r.f1.metas.clear()
    fast0 = r.ff.counters["forwarded"]
    r.f0.deliver(_partial(r, b"x" * 100))
    assert r.ff.counters["forwarded"] == fast0 + 1
    (frame,) = r.f1.take_ip()
    pseudo = _partial(r, b"x" * 100).data[40:42].tobytes()
    assert frame[IP].ttl == 63 and bytes(frame[UDP])[6:8] == pseudo  # left for the device
    (meta,) = r.f1.metas
    assert meta is not None and meta.needs_csum and (meta.csum_start, meta.csum_offset) == (34, 6)
    # a super-segment larger than the MTU goes through the cache too, still marked
    r.f1.metas.clear()
    r.f0.deliver(_partial(r, b"y" * 3000, gso=3))
    assert r.ff.counters["forwarded"] == fast0 + 2
    (meta,) = r.f1.metas
    assert meta is not None and meta.gso_type == 3 and meta.gso_size == 1400
    assert meta.hdr_len == 42


@pytest.mark.parametrize("fastfwd", [1, 0], ids=["fastpath", "slowpath"])
async def test_offloads_finished_in_software_without_device_offload(router: Router,
                                                                    fastfwd: int) -> None:
    """Out interface without offloads: the frame is forwarded all the same (by the cache
    or by the IP layer) and the out interface finishes it in software: the partial
    checksum completed (csum_completed), the UDP super-segment (UFO) cut into fragments
    that fit its MTU (gso_frames/gso_segments). Nothing is dropped."""
    r = router
    r.st.sysctl.set("net.inet.ip.fastforwarding", str(fastfwd))
    if fastfwd:
        r.warm(r.f1, GW_A)
    else:
        r.expect_forwarded(r.f1, GW_A, fast=False)
    slow0, fast0 = r.counts()
    r.f1.metas.clear()
    r.f0.deliver(_partial(r, b"x" * 100))
    assert r.counts() == ((slow0, fast0 + 1) if fastfwd else (slow0 + 1, fast0))
    assert (r.ff.counters["offload_sw"], r.inet.counters["fwd_offload_sw"]) == \
        ((1, 0) if fastfwd else (0, 1))
    (frame,) = r.f1.take_ip()
    right = IP(bytes(IP(src="10.0.0.2", dst=DST, ttl=63) / UDP(sport=5000, dport=9) /
                     (b"x" * 100)))[UDP].chksum
    assert frame[UDP].chksum == right  # completed in software, and right
    assert r.f1.counters["csum_completed"] == 1 and r.f1.metas == [None]
    r.f1.metas.clear()
    r.f0.deliver(_partial(r, b"y" * 3000, gso=3))
    frags = r.f1.take_ip()
    assert r.f1.counters["gso_frames"] == 1 and r.f1.counters["gso_segments"] == len(frags) == 3
    assert all(len(f) <= 1514 and f[IP].ttl == 63 for f in frags)
    from scapy.layers.inet import defragment

    (whole,) = defragment([f[IP] for f in frags])
    whole = IP(bytes(whole))
    assert bytes(whole[UDP].payload) == b"y" * 3000
    assert whole[UDP].chksum == IP(bytes(IP(src="10.0.0.2", dst=DST) / UDP(sport=5000, dport=9)
                                         / (b"y" * 3000)))[UDP].chksum
    assert "drop_fwd_gso_unsupported" not in r.inet.counters


# -- invalidation through the stack's own APIs -------------------------------------------

async def test_route_changes_empty_the_cache(router: Router) -> None:
    r = router
    r.warm(r.f1, GW_A)
    flushes = r.ff.counters["flushes"]
    # a more specific route added: the cached flow must not keep the old next hop
    r.inet.route_add("10.9.0.0/24", "10.1.0.3")
    assert r.ff.lookup(_int(DST)) is None and r.ff.counters["flushes"] > flushes
    r.warm(r.f1, GW_B)
    # that route changed to another interface (route change ... 10.2.0.2)
    r.inet.route_change("10.9.0.0/24", "10.2.0.2")
    assert r.ff.lookup(_int(DST)) is None
    r.warm(r.f2, GW_C)
    # deleted: back to the /16 ...
    r.inet.route_delete("10.9.0.0/24")
    r.warm(r.f1, GW_A)
    # ... and without any route: net unreachable to the sender, nothing forwarded
    r.inet.route_delete("10.9.0.0/16")
    assert r.ff.lookup(_int(DST)) is None
    before = r.counts()
    r.send()
    got = r.out()
    assert got["fake1"] == [] and got["fake2"] == []
    assert len(got["fake0"]) == 1 and got["fake0"][0][ICMP].type == 3
    assert got["fake0"][0][ICMP].code == 0 and r.counts() == before


async def test_address_changes_empty_the_cache(router: Router) -> None:
    """The destination of a cached flow becomes one of our addresses (an alias on lo0):
    it is answered by the stack, not forwarded to the old next hop; removed again, it is
    forwarded again."""
    r = router
    r.warm(r.f1, GW_A)
    r.inet.add_address("lo0", f"{DST}/32")
    assert r.ff.lookup(_int(DST)) is None
    before = r.counts()
    r.f0.inject(bytes(Ether(src=HOST, dst=M0) / IP(src="10.0.0.2", dst=DST)
                      / ICMP(id=7, seq=1) / b"ping"))
    got = r.out()
    assert got["fake1"] == [] and got["fake2"] == []
    assert len(got["fake0"]) == 1
    reply = got["fake0"][0]
    assert reply[IP].src == DST and reply[ICMP].type == 0 and reply[ICMP].id == 7
    assert r.counts() == before
    r.inet.remove_address("lo0", DST)
    r.warm(r.f1, GW_A)
    # an address change elsewhere (a new network on fake2) also flushes: any route may
    # have moved
    r.inet.add_address("fake2", "10.22.0.1/24")
    assert r.ff.lookup(_int(DST)) is None
    r.warm(r.f1, GW_A)


async def test_arp_changes_empty_the_cache(router: Router) -> None:
    r = router
    r.warm(r.f1, GW_A)
    # arp -s with another MAC for the next hop: the cache must not keep the old one
    new_a = "02:00:00:00:bb:22"
    r.inet.arp_set("10.1.0.2", new_a)
    assert r.ff.lookup(_int(DST)) is None
    r.warm(r.f1, new_a)
    # arp -d of the next hop: nothing is sent to any cached MAC; an ARP request goes out
    # and the packet waits for the answer
    r.inet.arp_delete("10.1.0.2")
    assert r.ff.lookup(_int(DST)) is None
    before = r.counts()
    r.send()
    asked = [Ether(b) for b in r.f1.sent]
    assert r.out() == {"fake0": [], "fake1": [], "fake2": []}
    assert [a[ARP].pdst for a in asked if a.haslayer(ARP)] == ["10.1.0.2"]
    assert r.ff.counters["forwarded"] == before[1]
    # the answer comes from a third MAC: the waiting packet goes there, then the flow
    # is learnt with it
    third = "02:00:00:00:bb:33"
    r.f1.inject(bytes(Ether(src=third, dst=M1) / ARP(op=2, hwsrc=third, psrc="10.1.0.2",
                                                     hwdst=M1, pdst="10.1.0.1")))
    queued = r.f1.take_ip()
    assert len(queued) == 1 and queued[0].dst == third
    r.warm(r.f1, third)


async def test_arp_from_the_wire_empties_the_cache(router: Router, autojump_clock) -> None:
    """A dynamic neighbour (learnt from its own ARP request) moves to a new MAC. An
    unasked reply from the new MAC alone does not move a reachable entry (ARP spoofing
    defence): the old MAC is probed first, and only when it stays silent is the address
    resolved afresh, when the new MAC's answer empties the fast-forward cache."""
    r = router
    r.inet.route_add("10.8.0.0/16", "10.1.0.4")
    old, new = "02:00:00:00:bb:04", "02:00:00:00:bb:44"

    def arp_from(mac: str, op: int) -> None:
        r.f1.inject(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff" if op == 1 else M1)
                          / ARP(op=op, hwsrc=mac, psrc="10.1.0.4", pdst="10.1.0.1")))
        r.f1.sent.clear()  # our ARP replies and probes

    arp_from(old, 1)  # "who has 10.1.0.1? tell 10.1.0.4": we learn 10.1.0.4 = old
    r.warm(r.f1, old, "10.8.0.5")
    arp_from(old, 2)  # it answers our probe: reachable, same MAC, the flow stays
    assert r.ff.lookup(_int("10.8.0.5")) is not None
    await trio.sleep(5)  # past any ARP lock time (net.link.ether.inet.locktime)
    r.expect_forwarded(r.f1, old, "10.8.0.5", fast=True)
    arp_from(new, 2)  # a claim: refused, the old MAC is probed (unicast)
    r.expect_forwarded(r.f1, old, "10.8.0.5", fast=True)  # still there meanwhile
    await trio.sleep(3.5)  # the old MAC stays silent: the address is asked for afresh
    assert r.ff.lookup(_int("10.8.0.5")) is None
    arp_from(new, 2)  # the new MAC answers our request: moved
    r.warm(r.f1, new, "10.8.0.5")
