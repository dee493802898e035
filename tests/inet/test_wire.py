"""Wire formats: golden frames against scapy, hypothesis round trips, garbage in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP

from stack.inet.wire import ParseError, checksum, checksum1, raw_sum, verify1
from stack.inet.wire import arp as warp
from stack.inet.wire import icmp as wicmp
from stack.inet.wire import ipv4 as wip

u32 = st.integers(0, 0xFFFFFFFF)
mac = st.binary(min_size=6, max_size=6)


def ref_checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@given(st.binary(max_size=300))
def test_checksum_matches_rfc1071(data: bytes) -> None:
    assert checksum1(data) == ref_checksum(data) or (data.strip(b"\0") == b"" and
                                                     checksum1(data) == 0xFFFF)


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_checksum_of_pieces_equals_joined(parts: list[bytes]) -> None:
    joined = b"".join(parts)
    assert raw_sum(parts) == raw_sum([joined])
    assert checksum(parts) == checksum([joined])


def test_ipv4_golden_against_scapy() -> None:
    ref = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=1, ttl=17, id=0x1234, flags="DF",
                   tos=0x10) / (b"x" * 12))
    hdr = wip.build(wip.ip_to_int("10.0.0.1"), wip.ip_to_int("10.0.0.2"), 1, 12, ttl=17,
                    ident=0x1234, df=True, tos=0x10)
    assert hdr == ref[:20]
    h = wip.parse(ref)
    assert (h.src, h.dst, h.ttl, h.df, h.mf, h.total_length) == (
        0x0A000001, 0x0A000002, 17, True, False, 32)


def test_ipv4_parse_errors() -> None:
    good = bytearray(wip.build(1, 2, 17, 8) + bytes(8))
    with pytest.raises(ParseError) as e:
        wip.parse(good[:19])
    assert e.value.reason == "drop_truncated"
    bad = bytearray(good)
    bad[0] = 0x65
    with pytest.raises(ParseError) as e:
        wip.parse(bad)
    assert e.value.reason == "drop_bad_version"
    bad = bytearray(good)
    bad[0] = 0x44
    with pytest.raises(ParseError) as e:
        wip.parse(bad)
    assert e.value.reason == "drop_bad_header_length"
    bad = bytearray(good)
    bad[11] ^= 1
    with pytest.raises(ParseError) as e:
        wip.parse(bad)
    assert e.value.reason == "drop_bad_checksum"
    bad = bytearray(wip.build(1, 2, 17, 100) + bytes(8))
    with pytest.raises(ParseError) as e:
        wip.parse(bad)
    assert e.value.reason == "drop_truncated"


headers = st.builds(
    wip.IPv4Header, src=u32, dst=u32, proto=st.integers(0, 255), ttl=st.integers(0, 255),
    tos=st.integers(0, 255), ident=st.integers(0, 0xFFFF), df=st.booleans(), mf=st.booleans(),
    frag_offset=st.integers(0, 0x1FFF).map(lambda x: x * 8 if x * 8 < 60000 else 0),
    options=st.integers(0, 10).map(lambda n: bytes([1]) * (4 * n)))


@given(headers, st.integers(0, 1400))
def test_ipv4_round_trip(h: wip.IPv4Header, plen: int) -> None:
    raw = h.emit(plen) + bytes(plen)
    assert verify1(raw[:h.ihl])
    assert wip.parse(raw) == h


@given(st.binary(max_size=80))
@settings(max_examples=300)
def test_ipv4_garbage_only_parse_error(data: bytes) -> None:
    try:
        wip.parse(data)
    except ParseError:
        pass


@given(st.binary(max_size=80))
@settings(max_examples=300)
def test_ipv4_garbage_after_valid_start(data: bytes) -> None:
    """Garbage behind a plausible first byte exercises the deeper checks."""
    try:
        wip.parse(b"\x45" + data)
    except ParseError:
        pass


def test_decrement_ttl_incremental_checksum() -> None:
    for ttl in (2, 64, 255):
        raw = bytearray(wip.build(0x0A000001, 0x0A000002, 6, 0, ttl=ttl, ident=7))
        wip.decrement_ttl(memoryview(raw))
        want = wip.build(0x0A000001, 0x0A000002, 6, 0, ttl=ttl - 1, ident=7)
        assert raw[8] == ttl - 1
        # every byte but the checksum is the freshly built header's; the checksum verifies
        # (an incremental update may give 0xFFFF where a full one gives 0x0000: same value)
        assert raw[:10] + raw[12:] == want[:10] + want[12:]
        assert verify1(raw)
        assert raw[10:12] == want[10:12] or {bytes(raw[10:12]), want[10:12]} == {b"\0\0", b"\xff\xff"}


@given(u32, u32, st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(2, 255))
def test_decrement_ttl_matches_full_checksum(src: int, dst: int, proto: int, ident: int,
                                             ttl: int) -> None:
    raw = bytearray(wip.build(src, dst, proto, 0, ttl=ttl, ident=ident))
    wip.decrement_ttl(memoryview(raw))
    assert raw[8] == ttl - 1
    assert verify1(raw)


def test_icmp_golden_against_scapy() -> None:
    ref = bytes(ICMP(type=8, code=0, id=0x77, seq=3) / (b"abc" * 10))
    h = wicmp.IcmpHeader(wicmp.ECHO_REQUEST, 0, 0x77 << 16 | 3)
    assert h.emit(b"abc" * 10) == ref
    p = wicmp.parse(ref)
    assert (p.type, p.code, p.ident, p.seq) == (8, 0, 0x77, 3)
    bad = bytearray(ref)
    bad[-1] ^= 0xFF
    with pytest.raises(ParseError) as e:
        wicmp.parse(bad)
    assert e.value.reason == "drop_bad_checksum"


@given(st.integers(0, 255), st.integers(0, 255), u32, st.binary(max_size=100))
def test_icmp_round_trip(t: int, code: int, rest: int, payload: bytes) -> None:
    h = wicmp.IcmpHeader(t, code, rest)
    raw = h.emit(payload)
    assert wicmp.parse(raw) == h


@given(st.binary(max_size=40))
def test_icmp_garbage(data: bytes) -> None:
    try:
        wicmp.parse(data)
    except ParseError:
        pass


def test_arp_golden_against_scapy() -> None:
    ref = bytes(ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1",
                    hwdst="00:00:00:00:00:00", pdst="10.0.0.2"))
    raw = warp.build(1, bytes.fromhex("020000000001"), 0x0A000001, bytes(6), 0x0A000002)
    assert raw == ref
    a = warp.parse(ref + bytes(18))  # Ethernet padding is fine
    assert (a.op, a.spa, a.tpa) == (1, 0x0A000001, 0x0A000002)


@given(st.sampled_from([1, 2]), mac, u32, mac, u32)
def test_arp_round_trip(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> None:
    a = warp.ArpPacket(op, sha, spa, tha, tpa)
    assert warp.parse(a.emit()) == a


@given(st.binary(max_size=60))
def test_arp_garbage(data: bytes) -> None:
    try:
        warp.parse(data)
    except ParseError:
        pass


def test_prefix_helpers() -> None:
    assert wip.prefix_mask(24) == 0xFFFFFF00
    assert wip.mask_to_prefix(0xFFFF0000) == 16
    with pytest.raises(ValueError):
        wip.mask_to_prefix(0xFF00FF00)
    with pytest.raises(ValueError):
        wip.ip_to_int("1.2.3")
    assert wip.int_to_ip(wip.ip_to_int("192.168.7.9")) == "192.168.7.9"
