"""IPv6 parsers that cannot be crashed (issue 16), as test_wire_props.py for IPv4: the
extension-header walks (``walk_chain``, the layer's, and ``upper_layer``, pf's) and the
ND/MLD parsers of stack/inet6/wire raise nothing but their own errors on arbitrary
bytes, alone and behind a plausible start; what they return stays inside the datagram;
the two walks agree; ND options round trip."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.inet.wire import ParseError
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import (
    EXTENSION_HEADERS,
    HLEN,
    MAX_CHAIN,
    NH_FRAGMENT,
    Chain,
    ChainError,
    pack_header,
    upper_layer,
    walk_chain,
)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
next_header = st.one_of(st.sampled_from(sorted(EXTENSION_HEADERS)), st.integers(0, 255))


def check_chain(ch: Chain, total: int) -> None:
    assert HLEN <= ch.l4 <= total
    assert HLEN <= ch.unfragmentable_end <= total
    assert ch.frag_at < ch.l4
    assert 0 <= ch.proto <= 255
    assert 0 <= ch.nh_at < ch.l4


def walk_both(data: bytes, off: int, total: int, nh: int) -> None:
    """Both walks on the same bytes: only ChainError; when the layer's walk accepts the
    chain, pf's finds the same upper layer."""
    ch = None
    try:
        ch = walk_chain(data, off, total, nh)
        check_chain(ch, total)
    except ChainError as e:
        assert e.reason and e.code in (-2, -1, 0, 1, 2, 3)
        assert 0 <= e.pointer < max(total, 1)
    try:
        p, l4, frag = upper_layer(data, off, total, nh)
    except ChainError as e:
        assert ch is None, (e.reason, ch)
        return
    assert HLEN <= l4 <= total and frag in (-1, 0, 1)
    if ch is not None:
        assert (p, l4) == (ch.proto, ch.l4)
        assert (frag >= 0) == (ch.frag_at >= 0)


@SETTINGS
@given(st.binary(min_size=HLEN, max_size=600), next_header, st.integers(0, 64))
def test_walks_on_arbitrary_bytes(body: bytes, nh: int, pad: int) -> None:
    data = bytes(pad) + body
    walk_both(data, pad, len(body), nh)
    walk_both(memoryview(data), pad, len(body), nh)


#: one extension header as a sender would write it: its type, a length byte, a body
ext = st.tuples(st.sampled_from(sorted(EXTENSION_HEADERS)), st.integers(0, 3),
                st.binary(max_size=64))


def build(headers: list[tuple[int, int, bytes]], last: int, payload: bytes) -> tuple[bytes, int]:
    """A datagram whose chain is ``headers`` (types chained in order, each sized by its
    length byte, body bytes cycled in) then ``last``; returns it and its first type."""
    out = b""
    for i, (t, ln, body) in enumerate(headers):
        nxt = headers[i + 1][0] if i + 1 < len(headers) else last
        if t == NH_FRAGMENT:
            size = 8
        elif t == 51:  # AH: (len + 2) 32-bit words
            size = (ln + 2) * 4
        else:
            size = (ln + 1) * 8
        fill = (body or b"\0") * size
        out += bytes([nxt, ln]) + fill[:size - 2]
    first = headers[0][0] if headers else last
    return pack_header(0, 0, len(out) + len(payload), first, 64, 1, 2) + out + payload, first


@SETTINGS
@given(st.lists(ext, max_size=MAX_CHAIN + 3), st.integers(0, 255), st.binary(max_size=64),
       st.integers(0, 20), st.integers(0, 255))
def test_walks_on_plausible_chains_with_a_byte_changed(headers: list[tuple[int, int, bytes]],
                                                       last: int, payload: bytes, at: int,
                                                       xor: int) -> None:
    data, first = build(headers, last, payload)
    walk_both(data, 0, len(data), first)
    b = bytearray(data)
    i = HLEN + at * 3
    if i < len(b):
        b[i] ^= xor
    walk_both(bytes(b), 0, len(b), first)
    # cut anywhere: never past the bytes given
    walk_both(bytes(b), 0, max(HLEN, len(b) - at), first)


@SETTINGS
@given(st.binary(max_size=300))
def test_nd_parsers_on_arbitrary_bytes(data: bytes) -> None:
    mv = memoryview(data)
    for fn in (w6.parse_options, w6.parse_ns, w6.parse_na, w6.parse_ra, w6.parse_redirect,
               w6.parse_mld_query):
        try:
            fn(mv)  # type: ignore[operator]
        except ParseError as e:
            assert e.reason in ("drop_truncated", "drop_bad_option")


option = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda m: w6.opt_lla(w6.OPT_SLLA, m)),
    st.binary(min_size=6, max_size=6).map(lambda m: w6.opt_lla(w6.OPT_TLLA, m)),
    st.integers(0, 0xFFFFFFFF).map(w6.opt_mtu),
    st.tuples(st.integers(0, (1 << 128) - 1), st.integers(0, 128), st.integers(0, 255),
              st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
    .map(lambda t: w6.opt_prefix(*t)),
    st.tuples(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, (1 << 128) - 1),
                                                   min_size=1, max_size=4))
    .map(lambda t: w6.opt_rdnss(*t)),
    # an unknown option: skipped
    st.tuples(st.integers(200, 255), st.integers(1, 3))
    .map(lambda t: bytes([t[0], t[1]]) + bytes(t[1] * 8 - 2)),
)


@SETTINGS
@given(st.lists(option, max_size=6), st.integers(0, 300), st.integers(1, 255))
def test_nd_options_round_trip_and_any_byte_changed(opts: list[bytes], at: int,
                                                    xor: int) -> None:
    raw = b"".join(opts)
    o = w6.parse_options(raw)
    lla = [x for x in opts if x[0] in (w6.OPT_SLLA, w6.OPT_TLLA)]
    for x in lla:
        assert (o.slla if x[0] == w6.OPT_SLLA else o.tlla) is not None
    mtus = [x for x in opts if x[0] == w6.OPT_MTU]
    if mtus:
        assert o.mtu == struct.unpack("!I", mtus[-1][4:8])[0]
    assert len(o.prefixes) == sum(1 for x in opts if x[0] == w6.OPT_PREFIX)
    assert len(o.rdnss) == sum((len(x) - 8) // 16 for x in opts if x[0] == w6.OPT_RDNSS)
    if raw:
        b = bytearray(raw)
        b[at % len(b)] ^= xor
        try:
            w6.parse_options(bytes(b))
        except ParseError as e:
            assert e.reason == "drop_bad_option"
