"""Software GSO (stack/l2/gso.py), golden checks with scapy as the reference: every frame
segment() makes parses, its IPv4 header and L4 checksums verify (scapy recomputes them
with the field deleted), lengths/ids/sequence numbers follow, the payloads put back
together are the original, TCP flags sit where Linux puts them (FIN/PSH on the last
segment only, CWR on the first only), and Interface.output uses it for a device that
lacks an offload (and only then)."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP, defragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket

from stack.l2.gso import (
    GsoError,
    clamp_gso_size,
    device_finishes,
    max_segment,
    segment,
)
from stack.l2.iface import IFF_UP
from stack.packet import GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, TxMeta
from tests.inet.conftest import FakeIface

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SRC, DST = "10.1.0.1", "10.2.0.1"
PAYLOAD = os.urandom(10_000)


def pseudo_partial(frame: bytes, l3: int) -> bytes:
    """``frame`` with its L4 checksum replaced by the pseudo-header sum, as a TAP with
    offloads hands it over (CHECKSUM_PARTIAL / NEEDS_CSUM)."""
    b = bytearray(frame)
    v = b[l3] >> 4
    if v == 4:
        ihl = (b[l3] & 15) * 4
        proto, addrs = b[l3 + 9], bytes(b[l3 + 12:l3 + 20])
        l4len = int.from_bytes(b[l3 + 2:l3 + 4], "big") - ihl
    else:
        ihl, proto, addrs = 40, b[l3 + 6], bytes(b[l3 + 8:l3 + 40])
        l4len = int.from_bytes(b[l3 + 4:l3 + 6], "big")
    words = addrs + proto.to_bytes(2, "big") + l4len.to_bytes(2, "big")
    s = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    at = l3 + ihl + (16 if proto == 6 else 6)
    b[at:at + 2] = s.to_bytes(2, "big")
    return bytes(b)


def frames_of(out: list[list]) -> list[Ether]:
    return [Ether(b"".join(bytes(x) for x in f)) for f in out]


def assert_checksums(f: ScapyPacket) -> None:
    """The IPv4 header and TCP/UDP checksums are what scapy computes from scratch."""
    if IP in f:
        ip = f[IP]
        want = ip.copy()
        del want.chksum
        assert ip.chksum == IP(bytes(want)).chksum
    for proto in (TCP, UDP):
        if proto in f and not (IP in f and (f[IP].frag or "MF" in f[IP].flags)):
            l4 = f[proto]
            redo = f.copy()
            del redo[proto].chksum
            assert l4.chksum == Ether(bytes(redo))[proto].chksum, proto.__name__


def tcp_frame(payload: bytes, *, flags: str = "PA", urgptr: int = 0, ident: int = 1000,
              options: list | None = None, vlan: int | None = None) -> bytes:
    l3 = ETH / Dot1Q(vlan=vlan) if vlan is not None else ETH
    pkt = l3 / IP(src=SRC, dst=DST, id=ident, flags="DF", ttl=63) / TCP(
        sport=5001, dport=40000, seq=0xFFFFF000, ack=77, flags=flags, window=500,
        urgptr=urgptr, options=options if options is not None else
        [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / payload
    return bytes(pkt)


def tcp_meta(frame: bytes, l3: int = 14, gso_size: int = 1448,
             gso_type: int = GSO_TCPV4) -> TxMeta:
    ihl = 20 if gso_type == GSO_TCPV4 else 40
    thl = (frame[l3 + ihl + 12] >> 4) * 4
    return TxMeta(csum_start=l3 + ihl, csum_offset=16, needs_csum=True, gso_type=gso_type,
                  gso_size=gso_size, hdr_len=l3 + ihl + thl)


# -- TCP -------------------------------------------------------------------------------

def test_tcp_super_segment_golden() -> None:
    """10,000 bytes, MSS 1448 (1500 MTU, 32-byte TCP header): 7 segments of at most
    1514-byte frames, everything right."""
    frame = pseudo_partial(tcp_frame(PAYLOAD, flags="FPAEC"), 14)
    out = segment([frame[:14], memoryview(frame)[14:]], tcp_meta(frame), 1500)
    got = frames_of(out)
    assert len(got) == 7  # ceil(10000 / 1448)
    seq = 0xFFFFF000
    for i, f in enumerate(got):
        assert_checksums(f)
        ip, tcp = f[IP], f[TCP]
        assert len(f) <= 1514 and ip.len == len(f) - 14
        assert ip.id == 1000 + i and ip.flags == "DF" and ip.ttl == 63
        assert tcp.seq == seq & 0xFFFFFFFF  # wraps past 2**32
        assert tcp.ack == 77 and tcp.window == 500
        assert tcp.options == [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
        seq += len(tcp.payload)
        last = i == len(got) - 1
        assert ("F" in tcp.flags) == last and ("P" in tcp.flags) == last
        assert ("C" in tcp.flags) == (i == 0)  # CWR only on the first
        assert "A" in tcp.flags and "E" in tcp.flags
        assert len(tcp.payload) == (1448 if not last else 10_000 - 6 * 1448)
    assert b"".join(bytes(f[TCP].payload) for f in got) == PAYLOAD


def test_tcp_segments_cut_to_the_mtu_when_gso_size_is_larger_or_missing() -> None:
    frame = pseudo_partial(tcp_frame(PAYLOAD), 14)
    for gso_size in (1448, 0):
        got = frames_of(segment([frame], tcp_meta(frame, gso_size=gso_size), 1000))
        assert [len(f[TCP].payload) for f in got[:-1]] == [1000 - 52] * (len(got) - 1)
        assert all(len(f) <= 1014 for f in got)
        assert b"".join(bytes(f[TCP].payload) for f in got) == PAYLOAD
        for f in got:
            assert_checksums(f)


def test_tcp_smaller_gso_size_is_kept() -> None:
    frame = pseudo_partial(tcp_frame(PAYLOAD[:3000]), 14)
    got = frames_of(segment([frame], tcp_meta(frame, gso_size=536), 1500))
    assert [len(f[TCP].payload) for f in got] == [536] * 5 + [3000 - 5 * 536]


def test_tcp_one_segment_and_no_payload() -> None:
    """A super-segment that fits (just the checksum to finish), and a bare FIN."""
    for payload in (PAYLOAD[:100], b""):
        frame = pseudo_partial(tcp_frame(payload, flags="FA"), 14)
        (f,) = frames_of(segment([frame], tcp_meta(frame), 1500))
        assert_checksums(f)
        assert f[TCP].flags == "FA" and bytes(f[TCP].payload) == payload


def test_tcp_urgent_pointer() -> None:
    """URG stays on the segments whose data the pointer still points past, made relative
    to each; later segments lose it."""
    frame = pseudo_partial(tcp_frame(PAYLOAD[:5000], flags="UA", urgptr=2000), 14)
    got = frames_of(segment([frame], tcp_meta(frame, gso_size=1000), 1500))
    assert [("U" in f[TCP].flags, f[TCP].urgptr) for f in got] == \
        [(True, 2000), (True, 1000), (False, 0), (False, 0), (False, 0)]
    for f in got:
        assert_checksums(f)


def test_tcp_behind_a_vlan_tag() -> None:
    frame = pseudo_partial(tcp_frame(PAYLOAD[:4000], vlan=7), 18)
    got = frames_of(segment([frame], tcp_meta(frame, 18), 1500))
    assert len(got) == 3 and all(f[Dot1Q].vlan == 7 for f in got)
    assert b"".join(bytes(f[TCP].payload) for f in got) == PAYLOAD[:4000]
    for f in got:
        assert_checksums(f)


def test_tcp_ipv6() -> None:
    pkt = ETH / IPv6(src="fd00::1", dst="fd00::2", hlim=63) / TCP(
        sport=1, dport=2, seq=5, flags="PA") / PAYLOAD
    frame = pseudo_partial(bytes(pkt), 14)
    got = frames_of(segment([frame], tcp_meta(frame, gso_type=GSO_TCPV6, gso_size=1440), 1500))
    assert len(got) == 7
    for i, f in enumerate(got):
        assert f[IPv6].plen == len(f) - 54 and len(f) <= 1514
        assert f[TCP].seq == 5 + 1440 * i
        redo = f.copy()
        del redo[TCP].chksum
        assert f[TCP].chksum == Ether(bytes(redo))[TCP].chksum
    assert b"".join(bytes(f[TCP].payload) for f in got) == PAYLOAD


# -- UDP -------------------------------------------------------------------------------

def test_udp_l4_datagrams() -> None:
    """USO: gso_size-byte datagrams, each with its own length, checksum and IP id."""
    pkt = ETH / IP(src=SRC, dst=DST, id=9) / UDP(sport=53, dport=4000) / PAYLOAD[:5000]
    frame = pseudo_partial(bytes(pkt), 14)
    meta = TxMeta(34, 6, True, GSO_UDP_L4, 1200, 42)
    got = frames_of(segment([frame], meta, 1500))
    assert [len(f[UDP].payload) for f in got] == [1200] * 4 + [200]
    for i, f in enumerate(got):
        assert_checksums(f)
        assert f[UDP].len == 8 + len(f[UDP].payload) and f[IP].id == 9 + i
    assert b"".join(bytes(f[UDP].payload) for f in got) == PAYLOAD[:5000]


def test_udp_ufo_is_fragmented() -> None:
    """UFO: one datagram, checksummed whole, then IP fragments (8-byte aligned, MF on all
    but the last) that reassemble to it."""
    pkt = ETH / IP(src=SRC, dst=DST, id=77, flags="DF") / UDP(sport=53, dport=4000) / \
        PAYLOAD[:4000]
    frame = pseudo_partial(bytes(pkt), 14)
    got = frames_of(segment([frame], TxMeta(34, 6, True, GSO_UDP, 0, 0), 1500))
    assert len(got) == 3
    for i, f in enumerate(got):
        assert_checksums(f)
        assert len(f) <= 1514 and f[IP].id == 77
        assert ("MF" in f[IP].flags) == (i < 2) and "DF" not in f[IP].flags
        if i < 2:
            assert (len(f[IP]) - 20) % 8 == 0
    (whole,) = defragment([f[IP] for f in got])
    whole = IP(bytes(whole))
    assert bytes(whole[UDP].payload) == PAYLOAD[:4000]
    assert whole[UDP].chksum == IP(bytes(pkt[IP]))[UDP].chksum


def test_partial_checksum_only() -> None:
    """No gso: the partial checksum is completed (TCP, UDP); a UDP checksum that comes
    out 0 is sent as 0xFFFF."""
    for l4 in (TCP(sport=1, dport=2, flags="A"), UDP(sport=1, dport=2)):
        pkt = ETH / IP(src=SRC, dst=DST) / l4 / PAYLOAD[:301]
        frame = pseudo_partial(bytes(pkt), 14)
        meta = TxMeta(34, 16 if isinstance(l4, TCP) else 6, True)
        (f,) = frames_of(segment([frame[:14], frame[14:40], frame[40:]], meta, 1500))
        assert bytes(f) == bytes(pkt)  # exactly what scapy computes
    # a payload word equal to the checksum with that word 0 makes the sum 0xFFFF, whose
    # complement 0 must go out as 0xFFFF (0 is "no checksum" in UDP)
    c0 = IP(bytes(IP(src=SRC, dst=DST) / UDP(sport=1, dport=2) / b"\0\0"))[UDP].chksum
    pkt = ETH / IP(src=SRC, dst=DST) / UDP(sport=1, dport=2) / c0.to_bytes(2, "big")
    (f,) = frames_of(segment([pseudo_partial(bytes(pkt), 14)], TxMeta(34, 6, True), 1500))
    assert f[UDP].chksum == 0xFFFF and bytes(f) == bytes(pkt)


# -- refusals, helpers -----------------------------------------------------------------

def test_refusals() -> None:
    udp = bytes(ETH / IP(src=SRC, dst=DST) / UDP(sport=1, dport=2) / PAYLOAD[:3000])
    tcp = tcp_frame(PAYLOAD[:3000])
    cases = [
        (udp, TxMeta(gso_type=GSO_TCPV4, gso_size=1000), 1500, "gso_type_mismatch"),
        (tcp, TxMeta(gso_type=GSO_TCPV4, gso_size=1000), 56, "mtu_too_small"),
        (tcp, TxMeta(gso_type=9, gso_size=1000), 1500, "gso_type_unknown"),
        (tcp[:30], TxMeta(gso_type=GSO_TCPV4), 1500, "runt"),
        (bytes(ETH) + b"\x60" + bytes(30), TxMeta(gso_type=GSO_TCPV4), 1500, "runt"),
        (tcp[:14] + b"\x15" + tcp[15:], TxMeta(gso_type=GSO_TCPV4), 1500, "not_ip"),
        (tcp, TxMeta(csum_start=5000, csum_offset=16, needs_csum=True), 1500,
         "bad_csum_offset"),
    ]
    for frame, meta, mtu, reason in cases:
        with pytest.raises(GsoError) as ei:
            segment([frame], meta, mtu)
        assert ei.value.reason == reason


def test_device_finishes_and_clamp() -> None:
    tso = TxMeta(needs_csum=True, gso_type=GSO_TCPV4, gso_size=1448)
    assert device_finishes(tso, {"csum", "tso4"})
    assert not device_finishes(tso, {"csum"}) and not device_finishes(tso, {"tso4"})
    assert device_finishes(TxMeta(needs_csum=True), {"csum"})
    assert not device_finishes(TxMeta(needs_csum=True), set())
    assert not device_finishes(TxMeta(gso_type=GSO_UDP_L4, gso_size=1200), {"csum", "tso4"})
    assert device_finishes(TxMeta(gso_type=GSO_UDP_L4, gso_size=1200), {"uso"})
    ip = tcp_frame(PAYLOAD[:3000])[14:]  # 20 + 32 bytes of headers
    assert max_segment(ip, GSO_TCPV4, 1500) == 1448
    assert max_segment(ip, GSO_TCPV4, 50) == 0
    meta = TxMeta(gso_type=GSO_TCPV4, gso_size=1448)
    assert clamp_gso_size(meta, ip, 1280) and meta.gso_size == 1228
    assert clamp_gso_size(meta, ip, 9000) and meta.gso_size == 1228  # never raised
    assert not clamp_gso_size(meta, ip, 40)
    odd = TxMeta(gso_type=9, gso_size=5)  # unknown: left to the device or segment()
    assert clamp_gso_size(odd, ip, 1500) and odd.gso_size == 5


# -- Interface.output ----------------------------------------------------------------

def test_interface_output_finishes_what_the_device_cannot() -> None:
    frame = pseudo_partial(tcp_frame(PAYLOAD), 14)
    dev = FakeIface("fake0", bytes(6))
    dev.set_flags(IFF_UP)
    seen: list[int] = []
    dev.taps.append(lambda ifp, d, bufs: seen.append(sum(len(b) for b in bufs)))
    assert dev.output([frame[:14], memoryview(frame)[14:]], tcp_meta(frame))
    got = [Ether(f) for f in dev.sent]
    assert len(got) == 7 and dev.metas == [None] * 7
    assert b"".join(bytes(f[TCP].payload) for f in got) == PAYLOAD
    for f in got:
        assert_checksums(f)
    c = dev.counters
    assert (c["gso_frames"], c["gso_segments"], c["opackets"]) == (1, 7, 7)
    assert seen == [len(f) for f in got]  # taps see the frames as they go on the wire
    # a device that can do it gets the super-segment and its TxMeta untouched
    dev.sent, dev.metas = [], []
    dev.offloads = {"csum", "tso4"}
    meta = tcp_meta(frame)
    assert dev.output([frame], meta)
    assert dev.sent == [frame] and dev.metas == [meta] and c["gso_frames"] == 1
    # what cannot be segmented is dropped and counted, never silently
    dev.offloads = set()
    assert not dev.output([frame[:40]], tcp_meta(frame))
    assert c["gso_errors"] == 1 and c["gso_error_bad_ip_header"] == 1 and c["oerrors"] == 1
