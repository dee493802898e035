"""The one address model (stack/addr.py): both families in one 128-bit space."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack import addr as A
from stack.transport.wire.checksum import checksum, fold


@given(st.integers(0, 2**32 - 1))
def test_v4_round_trips(bits: int) -> None:
    a = A.v4(bits)
    assert A.is_v4(a) and A.family(a) == A.AF_INET and A.v4_bits(a) == bits
    text = str(ipaddress.IPv4Address(bits))
    assert A.format_addr(a) == text and A.parse_addr(text) == a
    assert A.addr_from_bytes(A.addr_bytes(a)) == a and len(A.addr_bytes(a)) == 4


@given(st.integers(0, 2**128 - 1))
def test_v6_round_trips(bits: int) -> None:
    a = A.v6(bits)
    ip = ipaddress.IPv6Address(bits)
    if ip.ipv4_mapped is not None:
        assert A.is_v4(a)  # ::ffff:a.b.c.d *is* the IPv4 address
        return
    assert A.family(a) == A.AF_INET6 and A.parse_addr(str(ip)) == a
    assert A.format_addr(a) == str(ip)
    assert A.addr_from_bytes(A.addr_bytes(a)) == a and len(A.addr_bytes(a)) == 16


def test_families_and_kinds() -> None:
    assert A.parse_addr("::ffff:10.0.0.1") == A.parse_addr("10.0.0.1")
    assert A.is_unspecified(A.ANY4) and A.is_unspecified(A.ANY6)
    assert A.is_multicast(A.parse_addr("224.0.0.1")) and A.is_multicast(A.parse_addr("ff02::1"))
    assert not A.is_multicast(A.parse_addr("10.0.0.1"))
    assert A.is_loopback(A.parse_addr("127.1.2.3")) and A.is_loopback(A.LOOPBACK6)
    assert A.family(A.ANY6) == A.AF_INET6 and A.family(A.ANY4) == A.AF_INET
    with pytest.raises(ValueError, match="bad address: 'fe80::1%eth0'"):
        A.parse_addr("fe80::1%eth0")
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        A.addr_from_bytes(b"\0" * 5)


def test_prefixes() -> None:
    p = A.Prefix.parse("10.1.2.3/8")
    assert p.plen == 8 and p.wide == 104 and p.network == A.parse_addr("10.0.0.0")
    assert p.contains(A.parse_addr("10.255.0.1")) and not p.contains(A.parse_addr("11.0.0.1"))
    # an IPv4 prefix never contains an IPv6 address, even the default route
    assert A.Prefix.parse("0.0.0.0/0").contains(A.parse_addr("1.2.3.4"))
    assert not A.Prefix.parse("0.0.0.0/0").contains(A.parse_addr("2001:db8::1"))
    assert A.Prefix.parse("::/0").contains(A.parse_addr("1.2.3.4"))  # ::/0 is every address
    q = A.Prefix.parse("2001:db8::/32")
    assert q.contains(A.parse_addr("2001:db8:ffff::1")) and not q.contains(A.parse_addr("2001:db9::"))
    assert str(q) == "2001:db8::/32" and A.Prefix.parse("10.0.0.1").is_host
    assert A.Prefix.parse("10.0.0.0/24").broadcast() == A.parse_addr("10.0.0.255")
    assert A.Prefix.parse("10.0.0.0/31").broadcast() is None and q.broadcast() is None
    assert A.Prefix.from_ip(ipaddress.ip_interface("10.0.0.5/24")) == A.Prefix.parse("10.0.0.5/24")
    for bad in ("10.0.0.0/33", "2001:db8::/129", "10.0.0.0/x", "10.0.0/8"):
        with pytest.raises(ValueError):
            A.Prefix.parse(bad)


def test_endpoints_are_hashable_and_print_like_the_tools() -> None:
    e4 = A.Endpoint(A.parse_addr("10.0.0.1"), 80)
    e6 = A.Endpoint(A.parse_addr("2001:db8::1"), 443)
    assert {e4: 1, e6: 2}[A.Endpoint(A.parse_addr("10.0.0.1"), 80)] == 1
    assert str(e4) == "10.0.0.1:80" and str(e6) == "[2001:db8::1]:443"
    assert e6.family == A.AF_INET6


def _ref_checksum(pseudo: bytes, seg: bytes) -> int:
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(min_size=8, max_size=64))
def test_pseudo_header_v4_matches_rfc768(s: int, d: int, seg: bytes) -> None:
    pseudo = struct.pack("!IIBBH", s, d, 0, 17, len(seg))
    got = checksum([seg], A.pseudo_header_sum(A.v4(s), A.v4(d), 17, len(seg)))
    assert got in (_ref_checksum(pseudo, seg), 0) or _ref_checksum(pseudo, seg) in (0, 0xFFFF)
    assert fold(A.pseudo_header_sum(A.v4(s), A.v4(d), 17, len(seg))) <= 0xFFFF


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1), st.binary(min_size=8, max_size=64))
def test_pseudo_header_v6_matches_rfc8200(s: int, d: int, seg: bytes) -> None:
    if A.is_v4(s):
        s ^= 1 << 127  # keep it an IPv6 address
    pseudo = s.to_bytes(16, "big") + d.to_bytes(16, "big") + struct.pack("!IxxxB", len(seg), 58)
    ref = _ref_checksum(pseudo, seg)
    got = checksum([seg], A.pseudo_header_sum(A.v6(s), A.v6(d), 58, len(seg)))
    # ones'-complement: 0x0000 and 0xFFFF are the same sum
    assert got == ref or {got, ref} <= {0, 0xFFFF}
