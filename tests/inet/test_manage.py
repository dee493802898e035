"""The IPv4 management API (stack/inet/manage.py) with typed values: Prefix and Addr in,
IfAddr and Route out, the data path's 32-bit indexes kept in step."""

from __future__ import annotations

import errno

import pytest

from stack.addr import Addr, Prefix, parse_addr, v4_bits
from stack.inet.ifaddr import IfAddr
from tests.inet.conftest import settle


def A(text: str) -> Addr:
    return parse_addr(text)


def P(text: str) -> Prefix:
    return Prefix.parse(text)


async def test_addresses_typed(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    mgr = st.inet.manage
    ia = mgr.add_address("fake0", P("10.0.7.1/24"))
    assert isinstance(ia, IfAddr) and ia.prefix == P("10.0.7.1/24")
    assert ia.broadcast == A("10.0.7.255") and str(ia) == "10.0.7.1/24"
    # the data path's views: 32-bit address and mask, 32-bit keyed indexes
    assert (ia.addr4, ia.mask4) == (v4_bits(A("10.0.7.1")), 0xFFFFFF00)
    assert st.inet.local[ia.addr4] is ia and st.inet.bcast[v4_bits(A("10.0.7.255"))] is ia
    assert st.inet.is_local(A("10.0.7.1"))
    # a bare address: its classful length (BSD ifconfig)
    assert mgr.add_address("fake0", A("172.20.0.1")).plen == 16
    # an explicit broadcast; /31 and /32 have none
    assert mgr.add_address("fake0", P("10.0.8.1/24"), broadcast=A("10.0.8.254")).broadcast \
        == A("10.0.8.254")
    assert mgr.add_address("fake0", P("10.0.9.0/31")).broadcast is None
    for bad, code in ((P("224.0.0.5/24"), errno.EINVAL), (P("2001:db8::1/64"), errno.EAFNOSUPPORT),
                      (P("10.0.7.1/24"), errno.EEXIST)):
        with pytest.raises(OSError) as e:
            mgr.add_address("fake0", bad)
        assert e.value.errno == code
    # the connected route carries the address as its source; removal takes it away
    [r] = st.inet.routes.exact(P("10.0.7.0/24"))
    assert r.kind == "connected" and r.src == A("10.0.7.1") and r.gateway is None
    assert mgr.remove_address("fake0", A("10.0.7.1")) is ia
    assert st.inet.routes.exact(P("10.0.7.0/24")) == [] and ia.addr4 not in st.inet.local
    with pytest.raises(OSError) as e:
        mgr.remove_address("fake0", A("10.0.7.1"))
    assert e.value.errno == errno.EADDRNOTAVAIL
    assert [str(a) for a in mgr.addresses("fake0")][0] == "10.0.0.1/24"
    await settle()


async def test_routes_typed(two_if_stack) -> None:
    st, _, _ = two_if_stack
    mgr = st.inet.manage
    r = mgr.route_add(P("0.0.0.0/0"), A("10.0.0.254"))
    assert r.ifname == "fake0" and r.flags == "UGS" and r.gateway == A("10.0.0.254")
    mgr.route_add(P("10.9.0.0/16"), A("10.1.0.254"), metric=5)
    assert mgr.route_get(A("10.9.1.1"))["source"] == "10.1.0.1"
    mgr.route_change(P("10.9.0.0/16"), A("10.0.0.253"))
    assert mgr.route_get(A("10.9.1.1"))["interface"] == "fake0"
    # the unspecified gateway means on-link, as "0.0.0.0" did in text
    with pytest.raises(OSError) as e:
        mgr.route_add(P("10.8.0.0/16"), A("0.0.0.0"))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        mgr.route_add(P("2001:db8::/32"), A("2001:db8::1"))
    assert e.value.errno == errno.EAFNOSUPPORT
    # the data path finds what the management API added
    assert st.inet.routes.lookup_v4(v4_bits(A("8.8.8.8"))) is r
    assert mgr.route_get(A("8.8.8.8"))["source"] == "10.0.0.1"
    assert len(mgr.route_flush()) == 2
    assert st.inet.routes.lookup(A("8.8.8.8")) is None
    mgr.arp_set(A("10.0.0.77"), bytes.fromhex("020000000077"))
    assert [e["address"] for e in mgr.arp_list()] == ["10.0.0.77"]
    assert mgr.arp_flush() == 1
    await settle()
