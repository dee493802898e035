"""The IPv4 layer against in-memory interfaces (scapy builds and reads frames): ARP
states, queues and bounds, reassembly rules, the malformed-header corpus, ICMP errors in
and out, forwarding, loopback, fragmentation. Deterministic (autojump clock)."""

from __future__ import annotations

import errno
import time

import pytest
import trio
from scapy.layers.inet import ICMP, IP, UDP, UDPerror, fragment
from scapy.layers.l2 import ARP, Ether

from stack.addr import parse_addr
from stack.inet.wire.ipv4 import ip_to_int
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, MAC1, PEER0, PEER1, FakeIface, settle

M0 = "02:00:00:00:0a:01"
P0 = "02:00:00:00:aa:02"
P1 = "02:00:00:00:bb:02"


def eth(pkt: object, src: str = P0, dst: str = M0) -> bytes:
    return bytes(Ether(src=src, dst=dst, type=0x0800) / pkt)  # type: ignore[operator]


def arp_reply(ip: str, mac: str = P0, to: str = "10.0.0.1", to_mac: str = M0) -> bytes:
    return bytes(Ether(src=mac, dst=to_mac) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac,
                                                  pdst=to))


def frames_of(f: FakeIface) -> list[Ether]:
    return [Ether(b) for b in f.take()]


async def test_arp_resolves_queues_and_ages(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    inet = st.inet
    assert inet.output(None, ip_to_int("10.0.0.5"), 17, [b"x" * 8]) == 0
    assert inet.output(None, ip_to_int("10.0.0.5"), 17, [b"y" * 8]) == 0
    out = frames_of(f0)
    assert len(out) == 1 and out[0].haslayer(ARP) and out[0][ARP].pdst == "10.0.0.5"
    assert out[0].dst == "ff:ff:ff:ff:ff:ff"
    assert inet.arp.counters["queued"] == 2
    f0.inject(arp_reply("10.0.0.5"))
    out = frames_of(f0)
    assert [o[IP].dst for o in out] == ["10.0.0.5", "10.0.0.5"]
    assert all(o.dst == P0 for o in out)
    assert inet.arp_list()[0]["state"] == "reachable"
    await trio.sleep(31)
    assert inet.arp_list()[0]["state"] == "stale"
    # a stale entry is used at once and confirmed with a unicast probe
    assert inet.output(None, ip_to_int("10.0.0.5"), 17, [b"z" * 8]) == 0
    out = frames_of(f0)
    kinds = sorted("arp" if o.haslayer(ARP) else "ip" for o in out)
    assert kinds == ["arp", "ip"]
    probe = next(o for o in out if o.haslayer(ARP))
    assert probe.dst == P0
    f0.inject(arp_reply("10.0.0.5"))
    assert inet.arp_list()[0]["state"] == "reachable"
    # unused entries go away: reachable 30 s, stale 60 s
    await trio.sleep(100)
    assert inet.arp_list() == []


async def test_arp_failure_reports_ehostunreach(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    inet = st.inet
    errs: list[tuple] = []
    inet.register_error_handler(17, lambda *a: errs.append(a))
    cb: list[int] = []
    assert inet.output(None, ip_to_int("10.0.0.9"), 17, [b"\x00\x07\x00\x35abcd"],
                       on_error=cb.append) == 0
    with pytest.raises(OSError) as e:
        await inet.ping("10.0.0.9", timeout=10)
    assert e.value.errno == errno.EHOSTUNREACH
    assert cb == [errno.EHOSTUNREACH]
    assert errs and errs[0][:4] == (3, 1, parse_addr("10.0.0.1"), parse_addr("10.0.0.9"))
    assert bytes(errs[0][4]) == b"\x00\x07\x00\x35abcd"
    assert inet.arp.counters["resolve_failed"] == 1
    assert inet.arp.counters["drop_unresolved"] == 2
    requests = [o for o in frames_of(f0) if o.haslayer(ARP)]
    assert len(requests) == 3  # net.inet.arp.retries
    # while the entry is failed, sends fail at once
    assert inet.output(None, ip_to_int("10.0.0.9"), 17, [b"x"]) == errno.EHOSTUNREACH
    await trio.sleep(21)
    assert inet.output(None, ip_to_int("10.0.0.9"), 17, [b"x"]) == 0  # resolving again


async def test_arp_queue_is_bounded(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    inet = st.inet
    for i in range(20):
        inet.output(None, ip_to_int("10.0.0.6"), 17, [bytes([i]) * 8])
    assert inet.arp.counters["drop_queue_full"] == 4
    f0.take()
    f0.inject(arp_reply("10.0.0.6"))
    sent = frames_of(f0)
    assert len(sent) == 16 and bytes(sent[0][IP].payload)[0] == 4  # the oldest were dropped


async def test_arp_flood_cannot_grow_the_cache(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    st.sysctl.set("net.inet.arp.maxentries", "64")
    st.inet.arp_set("10.0.0.200", "02:00:00:00:00:c8")
    for i in range(600):
        mac = f"02:00:00:01:{i >> 8:02x}:{i & 255:02x}"
        src = f"10.5.{i >> 8}.{i & 255}"
        f0.inject(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") /
                        ARP(op=1, hwsrc=mac, psrc=src, pdst="10.0.0.1")))
    assert len(st.inet.arp.entries) <= 64
    assert st.inet.arp.counters["evicted"] > 500
    assert st.inet.arp.counters["out_reply"] == 600
    # the static entry survives the flood
    assert any(e["address"] == "10.0.0.200" and e["state"] == "permanent"
               for e in st.inet.arp_list())


async def test_arp_static_entries_and_replies_for_every_address(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    inet = st.inet
    inet.arp_set("10.0.0.77", "02:00:00:00:00:77")
    assert inet.output(None, ip_to_int("10.0.0.77"), 17, [b"hello"]) == 0
    out = frames_of(f0)
    assert len(out) == 1 and out[0].dst == "02:00:00:00:00:77"
    assert inet.arp.counters["out_request"] == 0
    # an ARP reply cannot overwrite a static entry
    f0.inject(arp_reply("10.0.0.77", mac="02:00:00:00:00:99"))
    assert [e["mac"] for e in inet.arp_list()] == ["02:00:00:00:00:77"]
    assert "permanent" in inet.render_arp()
    inet.arp_delete("10.0.0.77")
    assert inet.arp_list() == []
    # a second address on fake0: the stack answers for both, and announces it
    inet.add_address("fake0", "10.0.5.1/24")
    grat = frames_of(f0)
    assert len(grat) == 1 and grat[0][ARP].psrc == grat[0][ARP].pdst == "10.0.5.1"
    for target in ("10.0.0.1", "10.0.5.1", "10.1.0.1"):
        f0.inject(bytes(Ether(src=P0, dst="ff:ff:ff:ff:ff:ff") /
                        ARP(op=1, hwsrc=P0, psrc="10.0.0.2", pdst=target)))
    replies = frames_of(f0)
    # fake1's address is not answered on fake0 (NetBSD/Linux arp_ignore=1 behaviour)
    assert [r[ARP].psrc for r in replies] == ["10.0.0.1", "10.0.5.1"]
    assert all(r[ARP].op == 2 and r[ARP].hwsrc == M0 and r.dst == P0 for r in replies)


def echo(dst: str, payload: bytes, ident: int = 1, seq: int = 1, src: str = "10.0.0.2",
         **ipkw: object) -> IP:
    return IP(src=src, dst=dst, **ipkw) / ICMP(type=8, id=ident, seq=seq) / payload


async def learn_peer(f0: FakeIface, ip: str = "10.0.0.2", mac: str = P0,
                     ours: str = "10.0.0.1", our_mac: str = M0) -> None:
    """The peer asks for us (a stale entry), then answers our probe (reachable)."""
    f0.inject(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") /
                    ARP(op=1, hwsrc=mac, psrc=ip, pdst=ours)))
    f0.inject(arp_reply(ip, mac=mac, to=ours, to_mac=our_mac))
    f0.take()


async def test_reassembly_out_of_order_and_duplicate(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    frags = fragment(echo("10.0.0.1", bytes(range(256)) * 12, id=77), fragsize=1000)
    assert len(frags) == 4
    for fr in [frags[2], frags[0], frags[3], frags[0], frags[1]]:
        f0.inject(eth(fr))
    rc = st.inet.reass.counters
    assert rc["frag_duplicate"] == 1 and rc["reassembled"] == 1
    replies = [IP(bytes(o[IP])) for o in frames_of(f0)]
    whole = b"".join(bytes(r.payload) for r in replies if r.frag == 0 and r.flags.MF) or b""
    assert len(replies) == 3  # 3072 + 8 bytes of ICMP over a 1500 MTU
    assert whole  # the first fragment of the reply
    assert st.inet.icmp.counters["out_echo_reply"] == 1


async def test_reassembly_overlap_drops_datagram(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    frags = fragment(echo("10.0.0.1", b"A" * 2000, id=78), fragsize=800)
    f0.inject(eth(frags[0]))
    # a fragment overlapping the first one's tail (RFC 5722: drop the whole datagram)
    bad = IP(bytes(frags[1]))
    bad.frag = bad.frag - 8  # 64 bytes earlier
    del bad.chksum
    f0.inject(eth(bad))
    for fr in frags[1:]:
        f0.inject(eth(fr))
    rc = st.inet.reass.counters
    assert rc["frag_overlap"] == 1
    assert rc["reassembled"] == 0
    assert rc["drop_dead_datagram"] == len(frags) - 1
    assert frames_of(f0) == []
    # a later, clean datagram with another ident still works
    for fr in fragment(echo("10.0.0.1", b"B" * 2000, id=79), fragsize=800):
        f0.inject(eth(fr))
    assert rc["reassembled"] == 1


async def test_fragment_beyond_65535_dropped_on_arrival(two_if_stack, autojump_clock) -> None:
    """A fragment ending past 65,535 (header included) is dropped as it arrives, with the
    fragments already held for its datagram, not kept until completion or timeout."""
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    reass = st.inet.reass
    rc = reass.counters
    first = fragment(echo("10.0.0.1", b"A" * 2000, id=81), fragsize=800)[0]
    f0.inject(eth(first))
    assert len(reass.queues) == 1 and reass.mem > 0
    # ends at 20 + 65,512 + 24 = 65,556: the whole datagram can never be valid
    tail = IP(src="10.0.0.2", dst="10.0.0.1", proto=1, id=81, frag=65512 // 8) / (b"Z" * 24)
    f0.inject(eth(tail))
    assert rc["drop_too_long"] == 1
    assert reass.mem == 0  # the held fragment went with it
    for fr in fragment(echo("10.0.0.1", b"A" * 2000, id=81), fragsize=800)[1:]:
        f0.inject(eth(fr))  # the rest of that datagram: poisoned, never reassembled
    assert rc["reassembled"] == 0 and rc["drop_dead_datagram"] == 2
    # a lone one (no queue yet) creates nothing
    tail.id = 82
    f0.inject(eth(tail))
    assert rc["drop_too_long"] == 2 and 82 not in {k[3] for k in reass.queues}
    assert frames_of(f0) == []
    await trio.sleep(31)  # the poisoned key's timer runs out quietly
    assert not reass.queues and rc["frag_timeout"] == 0


async def test_reassembly_timeout_and_memory_bound(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    st.sysctl.set("net.inet.ip.fragttl", "2")
    frags = fragment(echo("10.0.0.1", b"C" * 3000, id=80), fragsize=1000)
    f0.inject(eth(frags[0]))
    f0.inject(eth(frags[2]))
    await trio.sleep(3)
    rc = st.inet.reass.counters
    assert rc["frag_timeout"] == 1 and not st.inet.reass.queues and st.inet.reass.mem == 0
    out = frames_of(f0)
    assert len(out) == 1 and out[0][ICMP].type == 11 and out[0][ICMP].code == 1
    # memory bound: many never-completed datagrams cannot exceed maxfragmem
    st.sysctl.set("net.inet.ip.maxfragmem", str(65536))
    for i in range(200):
        f0.inject(eth(fragment(echo("10.0.0.1", b"D" * 3000, id=1000 + i), fragsize=1000)[0]))
    assert st.inet.reass.mem <= 65536
    assert rc["frag_evicted"] > 100


CORPUS = {
    "drop_bad_checksum": lambda: bytes(IP(src="10.0.0.2", dst="10.0.0.1", chksum=0x1234) / ICMP()),
    "drop_bad_version": lambda: b"\x65" + bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP())[1:],
    "drop_bad_header_length": lambda: b"\x43" + bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP())[1:],
    "drop_bad_length": lambda: bytes(IP(src="10.0.0.2", dst="10.0.0.1", len=12) / ICMP()),
    "drop_truncated": lambda: bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP())[:15],
    "drop_bad_source": lambda: bytes(IP(src="224.0.0.5", dst="10.0.0.1") / ICMP()),
}


@pytest.mark.parametrize("reason", sorted(CORPUS))
async def test_malformed_headers_dropped_and_counted(two_if_stack, reason: str) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    f0.inject(eth(CORPUS[reason]()))
    assert st.inet.counters[reason] == 1
    assert frames_of(f0) == []
    f0.inject(eth(echo("10.0.0.1", b"ok")))  # and the stack still answers
    assert len(frames_of(f0)) == 1


async def test_too_long_total_length_is_truncated(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    f0.inject(eth(IP(src="10.0.0.2", dst="10.0.0.1", len=900) / ICMP()))
    assert st.inet.counters["drop_truncated"] == 1


async def test_options_skipped_and_padding_ignored(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    pkt = IP(src="10.0.0.2", dst="10.0.0.1", options=b"\x01\x01\x01\x00") / ICMP(id=5) / b"hi"
    f0.inject(eth(pkt) + b"\0" * 20)  # with trailing Ethernet padding
    out = frames_of(f0)
    assert len(out) == 1 and out[0][ICMP].type == 0 and bytes(out[0][ICMP].payload) == b"hi"
    assert st.inet.counters["in_options_skipped"] == 1


async def test_protocol_unreachable_and_rate_limit(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    # whole seconds ahead of the limiter's own clock, and steps that are exact in binary
    # floating point (0.125 s), so refills are exact token counts
    now = [float(int(time.monotonic())) + 1.0]
    st.inet.icmp.limit.clock = lambda: now[0]  # time stands still while the 200 arrive
    frame = eth(IP(src="10.0.0.2", dst="10.0.0.1", proto=99) / b"abcdefgh")
    for _ in range(200):
        f0.inject(frame)
    out = frames_of(f0)
    burst = int(st.sysctl["net.inet.icmp.errburst"])
    rate = int(st.sysctl["net.inet.icmp.errppslimit"])
    assert len(out) == burst
    assert all(o[ICMP].type == 3 and o[ICMP].code == 2 for o in out)
    assert st.inet.icmp.counters["error_ratelimited"] == 200 - burst
    now[0] += 0.125  # an eighth of a second refills rate/8 tokens
    for _ in range(200):
        f0.inject(frame)
    assert len(frames_of(f0)) == rate // 8
    assert st.inet.icmp.counters["error_ratelimited"] == 400 - burst - rate // 8
    # no error about a broadcast
    st.sysctl.set("net.inet.icmp.errppslimit", "0")
    f0.inject(eth(IP(src="10.0.0.2", dst="10.0.0.255", proto=99) / b"x",
                  dst="ff:ff:ff:ff:ff:ff"))
    assert frames_of(f0) == []


async def test_transport_api_send_unreachable(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    got = []

    def udp_in(info) -> None:
        got.append(info)
        st.inet.icmp.send_unreachable(info, 3)

    st.inet.register_protocol(17, udp_in)
    f0.inject(eth(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=5, dport=9) / b"data"))
    assert got and got[0].src == parse_addr("10.0.0.2") and bytes(got[0].payload)[8:] == b"data"
    out = frames_of(f0)
    assert len(out) == 1 and out[0][ICMP].type == 3 and out[0][ICMP].code == 3
    assert out[0][IP].src == "10.0.0.1" and out[0][IP].dst == "10.0.0.2"
    quoted = out[0][ICMP].payload
    assert quoted[UDPerror].dport == 9


async def test_icmp_errors_reach_the_protocol_handler(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    seen = []
    st.inet.register_error_handler(17, lambda *a: seen.append(a))
    inner = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4000, dport=53) / b"q"
    f0.inject(eth(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3) / bytes(inner)))
    f0.inject(eth(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=4, nexthopmtu=1200)
                  / bytes(inner)))
    assert [(s[0], s[1], s[5]) for s in seen] == [(3, 3, 0), (3, 4, 1200)]
    assert seen[0][2] == parse_addr("10.0.0.1") and seen[0][3] == parse_addr("10.0.0.2")
    assert bytes(seen[0][4])[:4] == bytes(UDP(sport=4000, dport=53))[:4]
    assert st.inet.route_mtu("10.0.0.2") == 1200  # learned path MTU


async def test_fragmentation_on_output_and_df(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    inet = st.inet
    payload = [b"a" * 1000, memoryview(b"b" * 2000), b"c" * 1001]
    assert inet.output(None, ip_to_int("10.0.0.2"), 253, payload, ident=4242) == 0
    frags = [IP(bytes(o[IP])) for o in frames_of(f0)]
    assert [f.frag * 8 for f in frags] == [0, 1480, 2960]
    assert [bool(f.flags.MF) for f in frags] == [True, True, False]
    assert all(f.id == 4242 and len(bytes(f)) <= 1500 for f in frags)
    assert b"".join(bytes(f.payload) for f in frags) == b"a" * 1000 + b"b" * 2000 + b"c" * 1001
    assert inet.output(None, ip_to_int("10.0.0.2"), 253, payload, df=True) == errno.EMSGSIZE
    assert inet.output(None, ip_to_int("99.0.0.1"), 253, [b"x"]) == errno.ENETUNREACH


async def test_loopback_ping_local_addresses(two_if_stack) -> None:
    st, _, _ = two_if_stack
    for dst in ("127.0.0.1", "10.0.0.1", "10.1.0.1"):
        rtt = await st.inet.ping(dst, size=56, timeout=2)
        assert rtt >= 0
    rtt = await st.inet.ping("10.0.0.1", size=40000, timeout=2)  # fragmented on lo0
    assert st.inet.reass.counters["reassembled"] == 2  # the request and the reply
    assert rtt >= 0
    # every answer came from the stack's own echo responder, over lo0
    ic = st.inet.icmp.counters
    assert ic["out_echo"] == 4 and ic["out_echo_reply"] == 4, dict(ic)


async def test_forwarding_ttl_and_no_route(autojump_clock) -> None:
    async with running_stack(tcpip="forward") as st:
        assert st.sysctl["net.inet.ip.forwarding"] == 1
        f0, f1 = FakeIface("fake0", MAC0), FakeIface("fake1", MAC1)
        for f in (f0, f1):
            st.attach_interface(f)
            f.set_flags(1)
        st.inet.add_address("fake0", "10.0.0.1/24")
        st.inet.add_address("fake1", "10.1.0.1/24")
        await learn_peer(f0)
        await learn_peer(f1, "10.1.0.2", P1, "10.1.0.1", "02:00:00:00:0b:01")
        f0.inject(eth(IP(src="10.0.0.2", dst="10.1.0.2", ttl=5) / ICMP() / b"fwd"))
        out = frames_of(f1)
        assert len(out) == 1 and out[0][IP].ttl == 4 and out[0].dst == P1
        hdr = bytes(out[0][IP])[:20]  # the header checksum was updated with the TTL
        assert sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2)) % 0xFFFF == 0
        assert st.inet.counters["forwarded"] == 1
        f0.inject(eth(IP(src="10.0.0.2", dst="10.1.0.2", ttl=1) / ICMP() / b"ttl"))
        err = frames_of(f0)
        assert len(err) == 1 and err[0][ICMP].type == 11 and err[0][ICMP].code == 0
        assert err[0][IP].src == "10.0.0.1"
        f0.inject(eth(IP(src="10.0.0.2", dst="10.7.0.2") / ICMP()))
        err = frames_of(f0)
        assert err[0][ICMP].type == 3 and err[0][ICMP].code == 0
        # DF and too big for fake1 (mtu 1000): frag needed with the MTU
        f1.set_mtu(1000)
        st.interface_changed(f1)  # what ifconfig does: the flow cache forgets fake1
        f0.inject(eth(IP(src="10.0.0.2", dst="10.1.0.2", flags="DF") / ICMP() / (b"z" * 1200)))
        err = frames_of(f0)
        assert err[0][ICMP].type == 3 and err[0][ICMP].code == 4 and err[0][ICMP].nexthopmtu == 1000
        f0.inject(eth(IP(src="10.0.0.2", dst="10.1.0.2") / ICMP() / (b"z" * 1200)))
        assert len(frames_of(f1)) == 2  # fragmented on the way through
        # off: not forwarded
        st.sysctl.set("net.inet.ip.forwarding", "0")
        f0.inject(eth(IP(src="10.0.0.2", dst="10.1.0.2") / ICMP()))
        assert frames_of(f1) == [] and st.inet.counters["drop_not_for_us"] == 1
        await settle()


async def test_management_api(two_if_stack) -> None:
    st, f0, f1 = two_if_stack
    inet = st.inet
    r = inet.route_add("default", "10.0.0.254")
    assert r.ifname == "fake0" and r.flags == "UGS"
    inet.route_add("10.9.0.0/16", "10.1.0.254", metric=5)
    assert inet.route_get("10.9.1.1")["gateway"] == "10.1.0.254"
    assert inet.route_get("10.9.1.1")["source"] == "10.1.0.1"
    assert inet.route_get("8.8.8.8")["interface"] == "fake0"
    inet.route_change("10.9.0.0/16", "10.0.0.253")
    assert inet.route_get("10.9.1.1")["interface"] == "fake0"
    with pytest.raises(OSError) as e:
        inet.route_add("10.8.0.0/16", "192.0.2.1")
    assert e.value.errno == errno.ENETUNREACH
    text = inet.render_routes()
    assert "default" in text and "10.9.0.0/16" in text and "10.0.0.0/24" in text
    inet.route_delete("10.9.0.0/16")
    assert "10.9.0.0/16" not in inet.render_routes()
    # addresses: remove takes the connected route away
    inet.add_address("fake1", "10.1.0.9/24")
    inet.remove_address("fake1", "10.1.0.1")
    assert inet.route_get("10.1.0.7")["source"] == "10.1.0.9"
    stats_before = inet.render_stats()
    inet.remove_address("fake1", "10.1.0.9")
    # the connected 10.1.0.0/24 is gone: only the default route (via fake0) matches now
    r = inet.routes.lookup_v4(ip_to_int("10.1.0.7"))
    assert r is not None and r.plen == 0 and r.ifname == "fake0"
    assert inet.route_get("10.1.0.7")["interface"] == "fake0"
    assert "fake0 10.0.0.1/24 broadcast 10.0.0.255" in inet.render_addresses()
    assert "ip addr_removed 1\n" in stats_before
    assert "ip addr_removed 2\n" in inet.render_stats()
    # detaching an interface takes its addresses and routes with it
    st.detach_interface("fake1")
    assert all(r["interface"] != "fake1" for r in inet.route_list())
    assert not inet.is_local("10.1.0.1")
    _ = PEER0, PEER1


async def test_mutated_frames_never_raise(two_if_stack, autojump_clock) -> None:
    """Random bit flips, truncations and extensions of valid IPv4/ICMP/ARP frames: every
    one is handled (dropped and counted, or answered) and the stack keeps working."""
    import random

    st, f0, _ = two_if_stack
    await learn_peer(f0)
    rng = random.Random(5)
    seeds = [eth(echo("10.0.0.1", b"p" * 40)),
             *[eth(f) for f in fragment(echo("10.0.0.1", b"f" * 1800, id=9), fragsize=600)],
             eth(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3) /
                 bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))),
             arp_reply("10.0.0.2")]
    for _ in range(3000):
        fr = bytearray(rng.choice(seeds))
        op = rng.randrange(3)
        if op == 0:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(14, len(fr))
                fr[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del fr[rng.randrange(14, len(fr)):]
        else:
            fr += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        f0.inject(bytes(fr))
    await trio.sleep(60)  # let reassembly and ARP timers run out
    f0.take()
    f0.inject(eth(echo("10.0.0.1", b"still alive", seq=99)))
    await learn_peer(f0)  # the peer's entry may have been disturbed by the mutants
    f0.inject(eth(echo("10.0.0.1", b"still alive", seq=100)))
    replies = [o for o in frames_of(f0) if o.haslayer(ICMP) and o[ICMP].type == 0]
    assert replies and bytes(replies[-1][ICMP].payload) == b"still alive"
    assert st.inet.timers.errors == 0
