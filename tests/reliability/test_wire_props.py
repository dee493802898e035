"""Parsers that cannot be crashed: property tests for every wire format.

Each parser gets (a) a round trip ``parse(emit(x)) == x`` where an emitter exists and
(b) arbitrary bytes - alone, and behind a plausible start - raising nothing but the
parser's own error. tests/inet/test_wire.py already has the plain IPv4/ICMP/ARP round
trips and golden frames against scapy; this file adds IPv4 with real options, the
transport formats (UDP, TCP with options), the TCP option TLVs, and the checksum helpers.
Ethernet and 802.1Q have no standalone parser (layer 2 decodes in place): their
properties are in test_rx_path.py, through ``Layer2.input``.
"""

from __future__ import annotations

import struct
import sys

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import stack.transport.wire.checksum  # noqa: F401 (for sys.modules below)
from stack.inet import wire as iwire
from stack.inet.wire import ParseError as InetParseError
from stack.inet.wire import arp as warp
from stack.inet.wire import icmp as wicmp
from stack.inet.wire import ipv4 as wip
from stack.transport.wire import tcp as wtcp
from stack.transport.wire import udp as wudp
from stack.transport.wire.checksum import ParseError as TransportParseError

tcsum = sys.modules["stack.transport.wire.checksum"]  # the package re-exports a function of that name
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
mac = st.binary(min_size=6, max_size=6)


def ref_sum(data: bytes) -> int:
    """RFC 1071 reference: end-around-carry sum of 16-bit words (odd tail padded)."""
    if len(data) & 1:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_checksum(data: bytes, initial: int = 0) -> int:
    s = ref_sum(data) + initial
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


# ----------------------------------------------------------------------------- IPv4
# Option TLVs as a hostile sender would write them: any type, any length byte, any body.
option_bytes = st.binary(max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4))


@given(src=u32, dst=u32, proto=st.integers(0, 255), ttl=st.integers(0, 255),
       ident=u16, opts=option_bytes, plen=st.integers(0, 1400))
@SETTINGS
def test_ipv4_round_trip_with_any_options(src: int, dst: int, proto: int, ttl: int,
                                          ident: int, opts: bytes, plen: int) -> None:
    raw = wip.build(src, dst, proto, plen, ttl=ttl, ident=ident, options=opts) + bytes(plen)
    h = wip.parse(raw)
    assert (h.src, h.dst, h.proto, h.ttl, h.ident, h.options) == (src, dst, proto, ttl, ident, opts)
    assert h.total_length == 20 + len(opts) + plen


@given(st.integers(0, 15), st.binary(max_size=80))
@SETTINGS
def test_ipv4_any_ihl_garbage_only_parse_error(ihl: int, rest: bytes) -> None:
    data = bytes([0x40 | ihl]) + rest
    try:
        wip.parse(data)
        wip.parse(data, verify=False)
    except InetParseError as e:
        assert e.reason.startswith("drop_")


@given(st.binary(max_size=44))
@SETTINGS
def test_ipv4_copied_options_never_raise(opts: bytes) -> None:
    """The fragmenter's RFC 791 'copied' filter on a forwarded packet's options."""
    from stack.inet.wire.ipv4 import copied_options

    out = copied_options(opts)
    assert len(out) % 4 == 0 and len(out) <= len(opts) + 3


# ----------------------------------------------------------------------------- ICMP / ARP
@given(st.binary(max_size=120))
@SETTINGS
def test_icmp_garbage_and_unverified(data: bytes) -> None:
    for verify in (True, False):
        try:
            h = wicmp.parse(data, verify=verify)
            assert len(data) >= 8 and 0 <= h.type < 256
        except InetParseError:
            pass


@given(st.binary(min_size=28, max_size=60), st.integers(0, 27), st.integers(0, 255))
@SETTINGS
def test_arp_valid_start_with_a_byte_flipped(tail: bytes, at: int, val: int) -> None:
    good = bytearray(warp.build(1, b"\x02" * 6, 1, b"\0" * 6, 2) + tail)
    good[at] = val
    try:
        a = warp.parse(good)
        assert a.op in (1, 2)
    except InetParseError as e:
        assert e.reason.startswith("drop_")


# ----------------------------------------------------------------------------- checksums
@given(st.binary(max_size=200), st.integers(0, 0x3FFFF))
@SETTINGS
def test_transport_checksum_matches_rfc1071(data: bytes, initial: int) -> None:
    assert tcsum.checksum([data], initial) == ref_checksum(data, initial) or \
        (ref_checksum(data, initial) == 0xFFFF and tcsum.checksum([data], initial) == 0)


@given(st.lists(st.binary(max_size=30), max_size=6), st.integers(0, 0x3FFFF))
@SETTINGS
def test_transport_checksum_pieces_equal_joined(parts: list[bytes], initial: int) -> None:
    assert tcsum.checksum(parts, initial) == tcsum.checksum([b"".join(parts)], initial)


@given(st.binary(min_size=1, max_size=64).filter(lambda b: len(b) % 2 == 1),
       st.integers(1, 0x3FFFF))
@settings(max_examples=50, deadline=None)
def test_inet_checksum_with_initial_odd_length(data: bytes, initial: int) -> None:
    assert iwire.checksum([data], initial) == tcsum.checksum([data], initial)


@given(st.binary(max_size=64).filter(lambda b: len(b) % 2 == 0), st.integers(0, 0x3FFFF))
@SETTINGS
def test_inet_and_transport_checksums_agree_on_even_lengths(data: bytes, initial: int) -> None:
    a, b = iwire.checksum([data], initial), tcsum.checksum([data], initial)
    assert a == b or {a, b} == {0, 0xFFFF}


# ----------------------------------------------------------------------------- UDP
@given(u16, u16, st.binary(max_size=300), u16, st.binary(max_size=8))
@SETTINGS
def test_udp_round_trip(sport: int, dport: int, payload: bytes, csum: int, pad: bytes) -> None:
    raw = bytes(wudp.emit_header(sport, dport, len(payload), csum)) + payload + pad
    d = wudp.parse(memoryview(raw))
    assert (d.sport, d.dport, d.length, d.csum, bytes(d.payload)) == \
        (sport, dport, 8 + len(payload), csum, payload)


@given(st.binary(max_size=64))
@SETTINGS
def test_udp_garbage_only_parse_error(data: bytes) -> None:
    try:
        d = wudp.parse(memoryview(data))
        assert 8 <= d.length <= len(data) and len(d.payload) == d.length - 8
    except TransportParseError:
        pass


# ----------------------------------------------------------------------------- TCP
sack_blocks = st.lists(st.tuples(u32, u32), max_size=4)
tcp_options = st.builds(
    wtcp.TCPOptions, mss=st.none() | u16, wscale=st.none() | st.integers(0, 14),
    sack_perm=st.booleans(), sack=sack_blocks, ts=st.none() | st.tuples(u32, u32))


@given(tcp_options)
@SETTINGS
def test_tcp_options_round_trip(o: wtcp.TCPOptions) -> None:
    try:
        raw = o.emit()
    except ValueError:  # more than 40 bytes: the emitter refuses, as it should
        assume(False)
        return
    assert len(raw) % 4 == 0 and len(raw) <= 40
    assert wtcp.parse_options(raw) == o


@given(u16, u16, u32, u32, st.integers(0, 255), u16, tcp_options, st.binary(max_size=200))
@SETTINGS
def test_tcp_segment_round_trip(sport: int, dport: int, seq: int, ack: int, flags: int,
                                wnd: int, o: wtcp.TCPOptions, payload: bytes) -> None:
    try:
        opts = o.emit()
    except ValueError:
        assume(False)
        return
    raw = bytes(wtcp.emit_header(sport, dport, seq, ack, flags, wnd, opts)) + payload
    s = wtcp.parse(memoryview(raw))
    assert (s.sport, s.dport, s.seq, s.ack, s.flags, s.wnd, bytes(s.payload)) == \
        (sport, dport, seq, ack, flags, wnd, payload)
    assert s.hlen == 20 + len(opts)
    assert (s.opts or wtcp.TCPOptions()) == o
    assert s.seg_len == len(payload) + bool(flags & wtcp.SYN) + bool(flags & wtcp.FIN)


@given(st.binary(max_size=40))
@SETTINGS
def test_tcp_option_tlvs_garbage_only_parse_error(data: bytes) -> None:
    for buf in (data, memoryview(data), memoryview(bytearray(data))):
        try:
            o = wtcp.parse_options(buf)
            assert o.wscale is None or 0 <= o.wscale <= wtcp.MAX_WSCALE
        except TransportParseError:
            pass


@given(st.integers(0, 15), st.integers(0, 255), st.binary(max_size=80))
@SETTINGS
def test_tcp_any_data_offset_garbage_only_parse_error(off: int, flags: int, rest: bytes) -> None:
    hdr = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, off << 4, flags, 5, 0, 0)
    data = hdr + rest
    for cut in (len(data), 20, min(len(data), 20 + len(rest) // 2)):
        try:
            s = wtcp.parse(memoryview(data[:cut]))
            assert 20 <= s.hlen <= cut
        except TransportParseError:
            pass


@given(st.binary(max_size=80))
@SETTINGS
def test_tcp_garbage_only_parse_error(data: bytes) -> None:
    try:
        wtcp.parse(memoryview(data))
    except TransportParseError:
        pass
