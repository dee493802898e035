"""The routing table alone: longest-prefix match, metrics, insertion order, changes."""

from __future__ import annotations

import errno

import pytest

from stack.inet.route import Route, RouteTable
from stack.inet.wire.ipv4 import ip_to_int as ip


def table(down: set[str] | None = None) -> RouteTable:
    down = down or set()
    return RouteTable(lambda r: r.ifname not in down)


def test_longest_prefix_match() -> None:
    t = table()
    t.add(Route(0, 0, ip("10.0.0.1"), "a"))
    t.add(Route(ip("10.1.0.0"), 16, 0, "b"))
    t.add(Route(ip("10.1.2.0"), 24, 0, "c"))
    t.add(Route(ip("10.1.2.3"), 32, ip("10.0.0.9"), "a"))
    assert t.lookup(ip("10.1.2.3")).plen == 32
    assert t.lookup(ip("10.1.2.4")).ifname == "c"
    assert t.lookup(ip("10.1.9.9")).ifname == "b"
    assert t.lookup(ip("8.8.8.8")).plen == 0
    assert t.lookup(ip("8.8.8.8")).flags == "UGS"


def test_no_default_no_route() -> None:
    t = table()
    t.add(Route(ip("10.1.0.0"), 16, 0, "b"))
    assert t.lookup(ip("11.0.0.1")) is None


def test_same_destination_insertion_order_and_fallback() -> None:
    down: set[str] = set()
    t = RouteTable(lambda r: r.ifname not in down)
    r1 = t.add(Route(ip("10.5.0.0"), 16, ip("10.0.0.2"), "a"))
    r2 = t.add(Route(ip("10.5.0.0"), 16, ip("10.1.0.2"), "b"))
    assert t.lookup(ip("10.5.1.1")) is r1  # first inserted wins
    down.add("a")
    t.changed()
    assert t.lookup(ip("10.5.1.1")) is r2  # the next one is tried
    down.clear()
    t.changed()
    t.remove(r1)
    assert t.lookup(ip("10.5.1.1")) is r2


def test_metric_orders_before_insertion() -> None:
    t = table()
    t.add(Route(0, 0, ip("10.0.0.2"), "a", metric=10))
    r2 = t.add(Route(0, 0, ip("10.0.0.3"), "a", metric=1))
    t.add(Route(0, 0, ip("10.0.0.4"), "a", metric=1))
    assert t.lookup(ip("1.2.3.4")) is r2


def test_duplicate_delete_change_and_generation() -> None:
    t = table()
    seen: list[int] = []
    t.listeners.append(lambda: seen.append(t.generation))
    t.add(Route(ip("10.5.0.0"), 16, ip("10.0.0.2"), "a"))
    with pytest.raises(OSError) as e:
        t.add(Route(ip("10.5.0.0"), 16, ip("10.0.0.2"), "a"))
    assert e.value.errno == errno.EEXIST
    g = t.generation
    assert t.lookup(ip("10.5.0.1")).gateway == ip("10.0.0.2")
    t.change(ip("10.5.0.0"), 16, gateway=ip("10.0.0.7"))
    assert t.generation == g + 1  # the memo is invalidated at once
    assert t.lookup(ip("10.5.0.1")).gateway == ip("10.0.0.7")
    t.delete(ip("10.5.0.0"), 16)
    assert t.lookup(ip("10.5.0.1")) is None
    with pytest.raises(OSError) as e:
        t.delete(ip("10.5.0.0"), 16)
    assert e.value.errno == errno.ESRCH
    assert seen == sorted(seen) and len(seen) == 3
    assert "Destination" in t.render()
