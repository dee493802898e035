"""ESP over IPv6 against an independent implementation: scapy's SecurityAssociation
encrypts ICMPv6 echo requests to the stack and decrypts its replies, for AES-GCM-16 and
AES-CBC + HMAC-SHA-256-128, transport and tunnel mode, frames through an in-memory
interface; replay, tampered ICV, an unknown SPI and a clear datagram against a
``require`` policy dropped and counted; setkey's IPv6 statements and dumps."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether

from rmgr.nodes import Caller
from stack.addr import Prefix, parse_addr
from stack.core import Stack
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, PEER0, FakeIface
from tests.ipsec.scapy_sa import CBC_KEY, GCM_KEY, ScapyEspPeer

ME, PEER, BEHIND = "2001:db8::1", "2001:db8::2", "2001:db8:9::9"
class Peer6(ScapyEspPeer):
    def __init__(self, st: Stack, f0: FakeIface, suite: str, mode: str) -> None:
        super().__init__(st, f0, suite, mode, me=ME, peer=PEER, behind=BEHIND, ip=IPv6,
                         plen=128)

    def frame(self, payload: bytes = b"hello", seq: int = 1, ident: int = 7) -> bytes:
        pkt = IPv6(src=self.inner_src, dst=ME) / ICMPv6EchoRequest(id=ident, seq=seq,
                                                                   data=payload)
        return bytes(Ether(dst=MAC0, src=PEER0) / self.to_stack.encrypt(pkt))

    def esp_frames(self) -> list[Any]:
        out = []
        for raw in self.f0.take():
            e = Ether(raw)
            if IPv6 in e and e[IPv6].nh == 50:
                out.append(e)
        return out

    async def replies(self, n: int = 1) -> list[Any]:
        got: list[Any] = []
        with trio.fail_after(5):
            while len(got) < n:
                got += self.esp_frames()
                await trio.sleep(0.002)
        out = []
        for e in got:
            assert e[IPv6].src == ME and e[IPv6].dst == PEER
            out.append(self.from_stack.decrypt(e[IPv6]))
        return out


@pytest.fixture(params=["sw", "cryptosim"])
async def stack_f0(request: Any) -> AsyncIterator[tuple[Stack, FakeIface]]:
    drivers = [("cryptosim", "latency=1,jitter=0.9,reorder")] if request.param != "sw" else []
    async with running_stack(drivers=drivers) as st:
        st.sysctl.set("net.inet6.ip6.dad_count", 0)
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        f0.set_flags(IFF_UP)
        st.inet6.manage.add_address("fake0", Prefix.parse(f"{ME}/64"))
        st.inet6.manage.ndp_set(parse_addr(PEER), PEER0, ifname="fake0")
        st.inet6.manage.route_add(Prefix.parse("2001:db8:9::/64"), parse_addr(PEER))
        await trio.sleep(0.05)
        f0.take()
        yield st, f0


@pytest.mark.parametrize("suite", ["gcm", "cbc"])
@pytest.mark.parametrize("mode", ["transport", "tunnel"])
async def test_scapy_peer_echo6(stack_f0: tuple[Stack, FakeIface], suite: str,
                                mode: str) -> None:
    st, f0 = stack_f0
    peer = Peer6(st, f0, suite, mode)
    for i in range(1, 21):
        data = os.urandom(i * 50)
        peer.inject(peer.frame(data, seq=i))
        (rep,) = await peer.replies()
        assert rep[IPv6].src == ME and rep[IPv6].dst == peer.inner_src
        assert ICMPv6EchoReply in rep
        assert rep[ICMPv6EchoReply].seq == i and rep[ICMPv6EchoReply].data == data
    c = peer.ipsec.counters
    assert c["in_packets"] == 20 and c["out_packets"] == 20
    assert st.interfaces["enc0"].counters["ipackets"] == 20
    assert st.inet6.counters["prefrag_rerouted"] == 20
    dump = peer.setkey("dump;")
    assert f"{PEER} {ME} \n\tesp mode={mode} spi=4097(0x00001001)" in dump
    assert GCM_KEY.hex() not in dump and CBC_KEY.hex() not in dump  # keys never in full
    spd = peer.setkey("spddump;")
    if mode == "tunnel":
        assert f"{BEHIND}/128[any] {ME}/128[any] any\n\tin ipsec\n" \
               f"\tesp/tunnel/{PEER}-{ME}/require" in spd
    else:
        assert f"{ME}/128[any] {PEER}/128[any] any\n\tout ipsec\n" \
               f"\tesp/transport//require" in spd
    sa = peer.ipsec.sa(int(parse_addr(PEER)), 0x1002)
    assert sa is not None and sa.seq == 20 and sa.family == 6
    if st.crypto.provider("cryptosim0") is not None:
        assert c["out_async"] == 20 and c["in_async"] == 20


async def test_drops_are_counted6(stack_f0: tuple[Stack, FakeIface]) -> None:
    st, f0 = stack_f0
    peer = Peer6(st, f0, "cbc", "transport")
    c = peer.ipsec.counters

    async def quiet() -> None:
        await trio.sleep(0.05)
        assert peer.esp_frames() == []

    good = peer.frame(b"one", seq=1)
    peer.inject(good)
    assert len(await peer.replies()) == 1
    peer.inject(good)  # replayed
    await quiet()
    assert c["in_drop_replay"] == 1
    bad = bytearray(peer.frame(b"two", seq=2))
    bad[-1] ^= 0x40  # tampered ICV
    peer.inject(bytes(bad))
    await quiet()
    assert c["in_drop_auth_failed"] == 1
    other = SecurityAssociation(ESP, spi=0x7777, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                auth_algo="NULL")
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) /
                      other.encrypt(IPv6(src=PEER, dst=ME) / ICMPv6EchoRequest())))
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) / IPv6(src=PEER, dst=ME, nh=50) / b"abc"))
    # in clear, but a "require" policy covers it
    peer.inject(bytes(Ether(dst=MAC0, src=PEER0) / IPv6(src=PEER, dst=ME) /
                      ICMPv6EchoRequest()))
    await quiet()
    assert f0.take() == []  # and no clear echo reply either
    assert c["in_drop_bad_spi"] == 1
    assert c["in_drop_truncated"] == 1
    assert c["in_drop_policy_mismatch"] == 1
    # the stack keeps serving; the tampered packet's number was never taken
    peer.inject(peer.frame(b"still", seq=2))
    (rep,) = await peer.replies()
    assert rep[ICMPv6EchoReply].data == b"still"
    stats = st.config_dir.entries["ipsec"].render()  # type: ignore[attr-defined]
    assert "counter in_drop_replay 1" in stats and "counter in_drop_auth_failed 1" in stats


async def test_setkey_ipv6_statements() -> None:
    async with running_stack() as st:
        ipsec = st.services.get(IPSEC)
        assert ipsec is not None

        def sk(text: str) -> str:
            return ipsec.command(text, Caller())

        sk(f"add -6 {PEER} {ME} esp 0x2001 -m tunnel -E aes-gcm-16 0x{GCM_KEY.hex()};\n"
           "spdadd 2001:db8:1::/48[80] ::/0 tcp -P out ipsec "
           "esp/tunnel/2001:db8::1-2001:db8::2/require;\n"
           "spdadd ::/0 2001:db8:1::/48 icmp6 -P in discard;\n")
        assert "2001:db8:1::/48[80] ::/0[any] tcp\n\tout ipsec\n" \
               "\tesp/tunnel/2001:db8::1-2001:db8::2/require" in sk("spddump;")
        assert "::/0[any] 2001:db8:1::/48[any] icmp6\n\tin discard" in sk("spddump;")
        assert f"{PEER} {ME} \n\tesp mode=tunnel spi=8193" in sk(f"get {PEER} {ME} esp 0x2001;")
        for bad in (f"add {PEER} 10.0.0.1 esp 0x2002 -E aes-gcm-16 0x{GCM_KEY.hex()};",
                    f"add {PEER}[4500] {ME}[4500] esp-udp 0x2003 "
                    f"-E aes-gcm-16 0x{GCM_KEY.hex()};",
                    f"add ::10.0.0.1 {ME} esp 0x2004 -E aes-gcm-16 0x{GCM_KEY.hex()};",
                    "spdadd 2001:db8::1 10.0.0.1 any -P out none;",
                    "spdadd ::/0 ::/0 any -P out ipsec esp/tunnel/2001:db8::1-10.0.0.1/require;",
                    "spdadd ::/129 ::/0 any -P out none;"):
            with pytest.raises(OSError):
                sk(bad)
        sk(f"delete {PEER} {ME} esp 0x2001;\nspddelete ::/0 2001:db8:1::/48 icmp6 -P in;")
        assert sk("dump;") == "No SAD entries.\n"
        assert "icmp6" not in sk("spddump;").split("tcp")[1]
