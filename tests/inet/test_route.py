"""The routing table alone: longest-prefix match, metrics, insertion order, changes; one
table for both families (stack/addr.py: IPv4 mapped into the 128-bit space)."""

from __future__ import annotations

import errno

import pytest

from stack.addr import Addr, Prefix, parse_addr, v4_bits
from stack.inet.route import Route, RouteTable


def A(text: str) -> Addr:
    return parse_addr(text)


def P(text: str) -> Prefix:
    return Prefix.parse(text)


DEFAULT4 = P("0.0.0.0/0")


def table(down: set[str] | None = None) -> RouteTable:
    down = down or set()
    return RouteTable(lambda r: r.ifname not in down)


def test_longest_prefix_match() -> None:
    t = table()
    t.add(Route(DEFAULT4, A("10.0.0.1"), "a"))
    t.add(Route(P("10.1.0.0/16"), None, "b"))
    t.add(Route(P("10.1.2.0/24"), None, "c"))
    t.add(Route(P("10.1.2.3/32"), A("10.0.0.9"), "a"))
    assert t.lookup(A("10.1.2.3")).plen == 32
    assert t.lookup(A("10.1.2.4")).ifname == "c"
    assert t.lookup(A("10.1.9.9")).ifname == "b"
    assert t.lookup(A("8.8.8.8")).plen == 0
    assert t.lookup(A("8.8.8.8")).flags == "UGS"
    assert t.lookup(A("10.1.2.3")).flags == "UGHS"
    # the IPv4 data path's entry (32-bit values, a memo of its own) agrees
    for a in ("10.1.2.3", "10.1.2.4", "10.1.9.9", "8.8.8.8"):
        assert t.lookup_v4(v4_bits(A(a))) is t.lookup(A(a))


def test_no_default_no_route() -> None:
    t = table()
    t.add(Route(P("10.1.0.0/16"), None, "b"))
    assert t.lookup(A("11.0.0.1")) is None
    assert t.lookup_v4(v4_bits(A("11.0.0.1"))) is None


def test_same_destination_insertion_order_and_fallback() -> None:
    down: set[str] = set()
    t = RouteTable(lambda r: r.ifname not in down)
    r1 = t.add(Route(P("10.5.0.0/16"), A("10.0.0.2"), "a"))
    r2 = t.add(Route(P("10.5.0.0/16"), A("10.1.0.2"), "b"))
    assert t.lookup(A("10.5.1.1")) is r1  # first inserted wins
    down.add("a")
    t.changed()
    assert t.lookup(A("10.5.1.1")) is r2  # the next one is tried
    assert t.lookup_v4(v4_bits(A("10.5.1.1"))) is r2
    down.clear()
    t.changed()
    t.remove(r1)
    assert t.lookup(A("10.5.1.1")) is r2


def test_metric_orders_before_insertion() -> None:
    t = table()
    t.add(Route(DEFAULT4, A("10.0.0.2"), "a", metric=10))
    r2 = t.add(Route(DEFAULT4, A("10.0.0.3"), "a", metric=1))
    t.add(Route(DEFAULT4, A("10.0.0.4"), "a", metric=1))
    assert t.lookup(A("1.2.3.4")) is r2


def test_duplicate_delete_change_and_generation() -> None:
    t = table()
    seen: list[int] = []
    t.listeners.append(lambda: seen.append(t.generation))
    t.add(Route(P("10.5.0.0/16"), A("10.0.0.2"), "a"))
    with pytest.raises(OSError) as e:
        t.add(Route(P("10.5.0.0/16"), A("10.0.0.2"), "a"))
    assert e.value.errno == errno.EEXIST
    g = t.generation
    assert t.lookup(A("10.5.0.1")).gateway == A("10.0.0.2")
    assert t.lookup_v4(v4_bits(A("10.5.0.1"))).gateway == A("10.0.0.2")
    t.change(P("10.5.0.0/16"), gateway=A("10.0.0.7"))
    assert t.generation == g + 1  # the memos are invalidated at once
    assert t.lookup(A("10.5.0.1")).gateway == A("10.0.0.7")
    assert t.lookup_v4(v4_bits(A("10.5.0.1"))).gateway == A("10.0.0.7")
    t.delete(P("10.5.0.0/16"))
    assert t.lookup(A("10.5.0.1")) is None
    assert t.lookup_v4(v4_bits(A("10.5.0.1"))) is None
    with pytest.raises(OSError) as e:
        t.delete(P("10.5.0.0/16"))
    assert e.value.errno == errno.ESRCH
    assert seen == sorted(seen) and len(seen) == 3
    assert "Destination" in t.render()


def test_host_bits_are_cleared_and_rows_read_as_before() -> None:
    t = table()
    r = t.add(Route(P("10.9.1.7/16"), A("10.0.0.1"), "a", metric=5))
    assert r.prefix == P("10.9.0.0/16") and r.dst == A("10.9.0.0") and r.plen == 16
    t.add(Route(DEFAULT4, A("10.0.0.254"), "a"))
    t.add(Route(P("10.0.0.0/24"), None, "a", src=A("10.0.0.1"), kind="connected"))
    assert [d["destination"] for d in (x.describe() for x in t)] == [
        "10.0.0.0/24", "10.9.0.0/16", "default"]
    assert next(iter(t)).describe() == {
        "destination": "10.0.0.0/24", "gateway": "link", "flags": "UC", "metric": "0",
        "mtu": "-", "interface": "a", "use": "0"}
    assert t.exact(P("10.9.0.0/16")) == [r] and t.exact(P("10.9.0.0/17")) == []


def test_one_table_for_both_families() -> None:
    """IPv6 prefixes live in the same table; an IPv6 default never catches IPv4 (IPv4 is
    only matched by prefixes inside ::ffff:0:0/96), an IPv4 default never catches IPv6."""
    t = table()
    r6 = t.add(Route(P("::/0"), A("2001:db8::1"), "v6"))
    r6n = t.add(Route(P("2001:db8:1::/48"), None, "v6"))
    assert t.lookup(A("10.1.2.3")) is None
    assert t.lookup_v4(v4_bits(A("10.1.2.3"))) is None
    r4 = t.add(Route(DEFAULT4, A("10.0.0.1"), "a"))
    assert t.lookup(A("10.1.2.3")) is r4
    assert t.lookup(A("2001:db8:1::9")) is r6n
    assert t.lookup(A("2001:db9::9")) is r6
    assert r6.destination == "default" and r6n.destination == "2001:db8:1::/48"
    assert r6n.flags == "US"
    assert r6.describe()["gateway"] == "2001:db8::1"
    t.delete(P("::/0"))
    assert t.lookup(A("2001:db9::9")) is None and t.lookup(A("10.1.2.3")) is r4
