"""ESP against an independent implementation: scapy's SecurityAssociation
(scapy.layers.ipsec) encrypts ICMP echo requests to the stack and decrypts its replies,
for AES-GCM-16 (RFC 4106) and AES-CBC + HMAC-SHA-256-128 (RFC 4868), transport and
tunnel mode, with and without the offload engine; then every drop reason."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether

from rmgr.nodes import Caller
from stack.core import Stack
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, PEER0, FakeIface
from tests.ipsec.scapy_sa import CBC_KEY, GCM_KEY, SUITES, ScapyEspPeer

ME, PEER, BEHIND = "10.0.0.1", "10.0.0.2", "10.9.9.9"
class Peer(ScapyEspPeer):
    def __init__(self, st: Stack, f0: FakeIface, suite: str, mode: str) -> None:
        super().__init__(st, f0, suite, mode, me=ME, peer=PEER, behind=BEHIND, ip=IP, plen=32)

    def frame(self, payload: bytes = b"hello", seq: int = 1, ident: int = 7) -> bytes:
        pkt = IP(src=self.inner_src, dst=ME) / ICMP(id=ident, seq=seq) / payload
        return bytes(Ether(dst=MAC0, src=PEER0) / self.to_stack.encrypt(pkt))

    async def replies(self, n: int = 1) -> list[Any]:
        with trio.fail_after(5):
            while len(self.f0.sent) < n:
                await trio.sleep(0.002)
        out = []
        for raw in self.f0.take():
            e = Ether(raw)
            assert e[IP].proto == 50 and e[IP].src == ME and e[IP].dst == PEER
            out.append(self.from_stack.decrypt(e[IP]))
        return out


@pytest.fixture(params=["sw", "cryptosim"])
async def stack_f0(request: Any) -> AsyncIterator[tuple[Stack, FakeIface]]:
    drivers = [("cryptosim", "latency=1,jitter=0.9,reorder")] if request.param != "sw" else []
    async with running_stack(drivers=drivers) as st:
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        f0.set_flags(IFF_UP)
        st.inet.add_address("fake0", f"{ME}/24")
        st.inet.arp_set(PEER, PEER0.hex(":"))
        st.inet.route_add("10.9.9.0/24", PEER)
        f0.take()
        yield st, f0


@pytest.mark.parametrize("suite", ["gcm", "cbc"])
@pytest.mark.parametrize("mode", ["transport", "tunnel"])
async def test_scapy_peer_echo(stack_f0: tuple[Stack, FakeIface], suite: str,
                               mode: str) -> None:
    st, f0 = stack_f0
    peer = Peer(st, f0, suite, mode)
    for i in range(1, 21):
        data = os.urandom(i * 50)
        peer.inject(peer.frame(data, seq=i))
        (rep,) = await peer.replies()
        assert rep.src == ME and rep.dst == peer.inner_src
        assert rep[ICMP].type == 0 and rep[ICMP].seq == i and bytes(rep[ICMP].payload) == data
    c = peer.ipsec.counters
    assert c["in_packets"] == 20 and c["out_packets"] == 20
    assert "enc0" in st.interfaces and st.interfaces["enc0"].counters["ipackets"] == 20
    dump = peer.setkey("dump;")
    assert f"mode={mode} spi=4097(0x00001001)" in dump
    assert GCM_KEY.hex() not in dump and CBC_KEY.hex() not in dump  # keys never in full
    assert GCM_KEY[:4].hex() + "..." in dump or CBC_KEY[:4].hex() + "..." in dump
    spd = peer.setkey("spddump;")
    assert "in ipsec" in spd and f"esp/{mode}/" in spd
    if st.crypto.provider("cryptosim0") is not None:
        assert c["out_async"] == 20 and c["in_async"] == 20


async def test_drops_are_counted(stack_f0: tuple[Stack, FakeIface]) -> None:
    st, f0 = stack_f0
    peer = Peer(st, f0, "gcm", "transport")
    c = peer.ipsec.counters

    async def quiet() -> None:
        await trio.sleep(0.05)
        assert f0.take() == []

    good = peer.frame(b"one", seq=1)
    peer.inject(good)
    assert len(await peer.replies()) == 1
    peer.inject(good)  # replayed
    await quiet()
    assert c["in_drop_replay"] == 1
    # tampered ICV
    bad = bytearray(peer.frame(b"two", seq=2))
    bad[-1] ^= 0x40
    peer.inject(bytes(bad))
    await quiet()
    assert c["in_drop_auth_failed"] == 1
    # the window moves on: sequence numbers 3..80, then 5 is out of the 64-packet window
    for s in range(3, 81):
        peer.inject(peer.frame(b"x", seq=s))
    assert len(await peer.replies(78)) == 78
    old = SecurityAssociation(ESP, spi=0x1001, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                              auth_algo="NULL", seq_num=4)
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) /
                      old.encrypt(IP(src=PEER, dst=ME) / ICMP(id=7, seq=5))))
    await quiet()
    assert c["in_drop_out_of_window"] == 1
    # unknown SPI, garbage ESP, a plain packet a "require" policy refuses
    other = SecurityAssociation(ESP, spi=0x7777, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                auth_algo="NULL")
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) /
                      other.encrypt(IP(src=PEER, dst=ME) / ICMP())))
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) / IP(src=PEER, dst=ME, proto=50) /
                      (b"\x00\x00\x10\x01" + os.urandom(60))))
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) / IP(src=PEER, dst=ME, proto=50) / b"abc"))
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) / IP(src=PEER, dst=ME) / ICMP()))
    await quiet()
    assert c["in_drop_bad_spi"] == 1
    assert c["in_drop_auth_failed"] == 2  # random bytes under the right SPI
    assert c["in_drop_truncated"] == 1
    assert c["in_drop_policy_mismatch"] == 1
    # the stack keeps serving
    peer.inject(peer.frame(b"still", seq=200))
    (rep,) = await peer.replies()
    assert bytes(rep[ICMP].payload) == b"still"
    stats = st.config_dir.entries["ipsec"].render()  # type: ignore[attr-defined]
    assert "counter in_drop_replay 1" in stats


async def test_lifetimes_and_sequence_overflow(stack_f0: tuple[Stack, FakeIface]) -> None:
    st, f0 = stack_f0
    peer = Peer(st, f0, "gcm", "transport")
    c = peer.ipsec.counters
    out_sa = peer.ipsec.sa(0x0A000002, 0x1002)
    assert out_sa is not None
    out_sa.seq = 0xFFFFFFFF  # the next would wrap: never sent (RFC 4303 3.3.3)
    peer.inject(peer.frame(b"a", seq=1))
    await trio.sleep(0.05)
    assert f0.take() == [] and c["out_drop_seq_overflow"] == 1 and out_sa.state == "dying"
    # a hard byte lifetime on the inbound SA: it dies, packets are dropped
    in_sa = peer.ipsec.sa(0x0A000001, 0x1001)
    assert in_sa is not None
    in_sa.hard_bytes = in_sa.bytes + 1
    in_sa.soft_bytes = in_sa.bytes
    peer.inject(peer.frame(b"b", seq=2))  # accepted: crosses the limit
    await trio.sleep(0.05)  # (counted when it completes, on an engine later)
    peer.inject(peer.frame(b"c", seq=3))
    await trio.sleep(0.05)
    assert c["sa_soft_expired"] == 1 and c["sa_hard_expired"] == 1
    assert c["in_drop_sa_expired"] == 1 and in_sa.state == "dead"
    assert "state=dead" in peer.setkey("dump;")
    peer.setkey(f"delete {PEER} {ME} esp 0x1001;")
    assert peer.ipsec.sa(0x0A000001, 0x1001) is None


async def test_esn_and_nat_traversal(stack_f0: tuple[Stack, FakeIface]) -> None:
    """ESN (the high half in the AAD / the MAC, never on the wire) across the 2^32
    boundary, and UDP 4500 encapsulation both ways (RFC 3948), against scapy."""
    from scapy.layers.inet import UDP

    st, f0 = stack_f0
    ipsec = st.services.get(IPSEC)
    assert ipsec is not None
    for suite, spi in (("gcm", 0x3001), ("cbc", 0x3011)):
        alg, kw = SUITES[suite]
        ipsec.command("flush; spdflush;"
                      f"add {PEER}[4500] {ME}[4500] esp-udp {spi:#x} -m transport -esn {alg};"
                      f"add {ME}[4500] {PEER}[4500] esp-udp {spi + 1:#x} -m transport -esn {alg};"
                      f"spdadd {PEER} {ME} icmp -P in ipsec esp/transport//require;"
                      f"spdadd {ME} {PEER} icmp -P out ipsec esp/transport//require;", Caller())
        natt = UDP(sport=4500, dport=4500)
        hi = 1  # the peer's counter already went past 2^32
        to_stack = SecurityAssociation(ESP, spi=spi, **kw, esn_en=True, esn=hi,
                                       seq_num=0xFFFFFFF0, nat_t_header=natt)
        from_stack = SecurityAssociation(ESP, spi=spi + 1, **kw, esn_en=True, esn=0,
                                         nat_t_header=natt)
        in_sa = ipsec.sa(0x0A000001, spi)
        assert in_sa is not None
        in_sa.top = (hi << 32) | 0xFFFFFFE0  # what the SA has seen so far
        for i in range(40):  # wraps the low half: the stack infers hi+1
            pkt = IP(src=PEER, dst=ME) / ICMP(id=9, seq=i) / b"esn"
            full = (hi << 32) + 0xFFFFFFF0 + i
            if not full & 0xFFFFFFFF:
                continue  # scapy takes seq_num=0 for "its own counter"
            f0.inject(bytes(Ether(dst=MAC0, src=PEER0) /
                            to_stack.encrypt(pkt, seq_num=full & 0xFFFFFFFF, esn=full >> 32)))
            with trio.fail_after(5):
                while not f0.sent:
                    await trio.sleep(0.002)
            e = Ether(f0.take()[0])
            assert e[IP].proto == 17 and e[UDP].dport == 4500
            rep = from_stack.decrypt(e[IP])
            assert rep[ICMP].type == 0 and rep[ICMP].seq == i
        assert in_sa.top >> 32 == hi + 1
        # a keepalive is dropped and counted; a wrong high half fails the ICV
        f0.inject(bytes(Ether(dst=MAC0, src=PEER0) / IP(src=PEER, dst=ME) / natt / b"\xff"))
        stale = SecurityAssociation(ESP, spi=spi, **kw, esn_en=True, esn=hi + 5,
                                    seq_num=0x100, nat_t_header=natt)
        f0.inject(bytes(Ether(dst=MAC0, src=PEER0) /
                        stale.encrypt(IP(src=PEER, dst=ME) / ICMP(id=9))))
        await trio.sleep(0.05)
        assert f0.take() == []
    c = ipsec.counters
    assert c["in_natt"] >= 78 and c["out_natt"] == 78 and c["in_natt_keepalive"] == 2
    assert c["in_drop_auth_failed"] == 2


async def test_path_mtu_through_the_tunnel() -> None:
    """A gateway: a DF datagram from a LAN host that, encrypted, would not fit the path
    to the tunnel's far end is dropped and the host told the MTU it may use (1446 in a
    GCM tunnel over 1500); one of that size goes, as an ESP packet of exactly 1500."""
    from scapy.layers.inet import UDP

    from tests.inet.conftest import MAC1, PEER1

    lan = "10.1.0.5"
    async with running_stack(tcpip="forward") as st:
        f0, f1 = FakeIface("fake0", MAC0), FakeIface("fake1", MAC1)
        for f in (f0, f1):
            st.attach_interface(f)
            f.set_flags(IFF_UP)
        st.inet.add_address("fake0", f"{ME}/24")
        st.inet.add_address("fake1", "10.1.0.1/24")
        st.inet.arp_set(PEER, PEER0.hex(":"))
        st.inet.arp_set(lan, PEER1.hex(":"))
        st.inet.route_add("10.9.9.0/24", PEER)
        ipsec = st.services.get(IPSEC)
        assert ipsec is not None
        ipsec.command(f"add {ME} {PEER} esp 0x1002 -m tunnel {SUITES['gcm'][0]};"
                      f"spdadd 10.1.0.0/24 10.9.9.0/24 any -P out ipsec "
                      f"esp/tunnel/{ME}-{PEER}/require;", Caller())
        f0.take(), f1.take()

        def send(size: int) -> None:
            pkt = IP(src=lan, dst=BEHIND, flags="DF", ttl=9) / UDP(sport=5, dport=9)
            f1.inject(bytes(Ether(dst=MAC1, src=PEER1) / pkt / bytes(size - 28)))

        send(1447)
        with trio.fail_after(5):
            while not f1.sent:
                await trio.sleep(0.002)
        err = Ether(f1.take()[0])
        assert err[IP].dst == lan and err[ICMP].type == 3 and err[ICMP].code == 4
        assert err[ICMP].nexthopmtu == 1446
        assert ipsec.counters["out_drop_too_big"] == 1 and f0.take() == []
        send(1446)
        with trio.fail_after(5):
            while not f0.sent:
                await trio.sleep(0.002)
        (frame,) = f0.take()
        outer = Ether(frame)[IP]
        assert outer.proto == 50 and len(outer) == 1500 and outer.flags == 0
        back = SecurityAssociation(ESP, spi=0x1002, **SUITES["gcm"][1],
                                   tunnel_header=IP(src=ME, dst=PEER))
        inner = back.decrypt(outer)
        assert inner[IP].src == lan and inner[IP].dst == BEHIND and len(inner) == 1446
