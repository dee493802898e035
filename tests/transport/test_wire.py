"""Wire formats: golden bytes (checked against scapy), hypothesis round trips, and
ParseError on malformed input; sequence arithmetic and the SACK structures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.transport.tcp import seq as sq
from stack.transport.tcp.buffers import SendBuffer
from stack.transport.tcp.sack import ReassemblyQueue, Scoreboard
from stack.transport.wire import tcp as wtcp
from stack.transport.wire import udp as wudp
from stack.transport.wire.checksum import ParseError, checksum, pseudo_header_sum, verify

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


@st.composite
def options(draw: st.DrawFn) -> wtcp.TCPOptions:
    o = wtcp.TCPOptions(
        mss=draw(st.none() | u16), wscale=draw(st.none() | st.integers(0, 14)),
        sack_perm=draw(st.booleans()), ts=draw(st.none() | st.tuples(u32, u32)))
    room = 40 - len(o.emit())
    nblocks = draw(st.integers(0, max(0, (room - 4) // 8)))
    o.sack = draw(st.lists(st.tuples(u32, u32), min_size=nblocks, max_size=nblocks))
    return o


@given(options())
def test_tcp_options_round_trip(o: wtcp.TCPOptions) -> None:
    raw = o.emit()
    assert len(raw) % 4 == 0 and len(raw) <= 40
    assert wtcp.parse_options(raw) == o


@given(u16, u16, u32, u32, st.integers(0, 255), u16, options(), st.binary(max_size=200))
def test_tcp_segment_round_trip(sport: int, dport: int, seq: int, ack: int, flags: int,
                                wnd: int, o: wtcp.TCPOptions, payload: bytes) -> None:
    hdr = wtcp.emit_header(sport, dport, seq, ack, flags, wnd, o.emit())
    seg = wtcp.parse(memoryview(bytes(hdr) + payload))
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.wnd) == (sport, dport, seq, ack, flags, wnd)
    assert bytes(seg.payload) == payload
    assert (seg.opts or wtcp.TCPOptions()) == o


@given(u16, u16, st.binary(max_size=300))
def test_udp_round_trip(sport: int, dport: int, payload: bytes) -> None:
    hdr = wudp.emit_header(sport, dport, len(payload))
    d = wudp.parse(memoryview(bytes(hdr) + payload + b"\0\0pad"))
    assert (d.sport, d.dport, bytes(d.payload)) == (sport, dport, payload)


@pytest.mark.parametrize("raw", [
    b"\0" * 19,                                    # short
    bytes(12) + b"\x40" + bytes(7),                # data offset 16 < 20
    bytes(12) + b"\xf0" + bytes(7),                # data offset beyond the segment
    bytes(12) + b"\x60" + bytes(7) + b"\x02\x05\0\0",   # MSS length 5
    bytes(12) + b"\x60" + bytes(7) + b"\x08\x0a\0\0",   # timestamp cut short
    bytes(12) + b"\x60" + bytes(7) + b"\x05\x03\0\0",   # SACK length not 2+8n
    bytes(12) + b"\x60" + bytes(7) + b"\x01\x01\x01\x03",  # option without length
])
def test_tcp_parse_errors(raw: bytes) -> None:
    with pytest.raises(ParseError):
        wtcp.parse(memoryview(raw))


def test_udp_parse_errors() -> None:
    with pytest.raises(ParseError):
        wudp.parse(memoryview(b"\0" * 7))
    with pytest.raises(ParseError):
        wudp.parse(memoryview(b"\0\1\0\2\0\x40\0\0"))  # length beyond the data


def test_checksum_matches_scapy() -> None:
    scapy = pytest.importorskip("scapy.all")
    pkt = scapy.IP(src="10.0.0.1", dst="10.0.0.2") / scapy.TCP(
        sport=1234, dport=80, seq=1, ack=2, flags="PA", window=1000,
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)]) / b"hello!!"
    raw = bytes(pkt)
    l4 = raw[20:]
    seg = wtcp.parse(memoryview(l4))
    assert seg.opts == wtcp.TCPOptions(mss=1460, sack_perm=True, ts=(1, 2), wscale=7)
    ps = pseudo_header_sum(0x0A000001, 0x0A000002, 6, len(l4))
    assert verify((l4,), ps)
    zeroed = l4[:16] + b"\0\0" + l4[18:]
    assert checksum((zeroed[:5], zeroed[5:]), ps) == int.from_bytes(l4[16:18], "big")
    u = bytes(scapy.IP(src="10.0.0.1", dst="10.0.0.2") / scapy.UDP(sport=5, dport=7) / b"abc")[20:]
    assert verify((u,), pseudo_header_sum(0x0A000001, 0x0A000002, 17, len(u)))


@given(u32, st.integers(-(2**31) + 1, 2**31 - 1))
def test_seq_arithmetic(a: int, d: int) -> None:
    b = sq.add(a, d)
    assert sq.sub(b, a) == d
    assert sq.lt(a, b) == (d > 0) and sq.gt(a, b) == (d < 0)
    assert sq.le(a, a) and sq.ge(a, a)


def test_seq_wraps() -> None:
    assert sq.lt(2**32 - 10, 5) and sq.gt(5, 2**32 - 10)
    assert sq.between(2**32 - 10, 3, 20)


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 600)), max_size=30), u32)
def test_reassembly_queue(segs: list[tuple[int, int]], base: int) -> None:
    stream = bytes(i % 251 for i in range(6000))
    q = ReassemblyQueue()
    for off, n in segs:
        if off == 0:
            continue
        q.insert(sq.add(base, off), stream[off:off + n], base)
    have = set()
    for start, data in q.blocks:
        o = sq.sub(start, base)
        assert stream[o:o + len(data)] == bytes(data)
        have.update(range(o, o + len(data)))
    assert q.bytes == len(have)
    for left, right in q.sack_blocks(4):
        assert sq.lt(left, right)


def test_scoreboard() -> None:
    sb = Scoreboard()
    una = 2**32 - 1000
    assert sb.update([(sq.add(una, 2000), sq.add(una, 3000)), (sq.add(una, 500), sq.add(una, 1000))],
                     una, sq.add(una, 5000)) == 1500
    assert sb.next_hole(una, sq.add(una, 5000)) == (una, sq.add(una, 500))
    assert sb.next_hole(sq.add(una, 500), sq.add(una, 5000)) == (sq.add(una, 1000), sq.add(una, 2000))
    assert sb.high(una) == sq.add(una, 3000)
    sb.ack(sq.add(una, 2500))
    assert sb.sacked == 500


def test_send_buffer_slices() -> None:
    b = SendBuffer()
    for chunk in (b"abc", b"defgh", b"i" * 5000, b"jk"):
        b.append(chunk)
    data = b"abcdefgh" + b"i" * 5000 + b"jk"
    assert b"".join(b.slice(2, 10)) == data[2:12]
    b.consume(4)
    assert b"".join(b.slice(0, len(b))) == data[4:]
    assert len(b) == len(data) - 4
