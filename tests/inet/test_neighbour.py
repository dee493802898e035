"""The neighbour layer is family-neutral (stack/neighbour.py, issue 15 §3): a table for
IPv6 with a stand-in for Neighbour Discovery as its resolver runs the same state machine
ARP's does — solicit to resolve, hold packets, send them when the answer comes, probe a
stale entry unicast, refuse a claim for another link address and probe the old one,
fail and report — reached through the Ethernet medium like IPv4's; and ARP's own table is
the one the stack lists as its IPv4 neighbours."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

import pytest
import trio
from scapy.layers.l2 import Ether

from stack.addr import AF_INET, AF_INET6, Addr, parse_addr
from stack.counters import Counters
from stack.inet.wire.ipv4 import ip_to_int
from stack.l2.iface import Interface
from stack.neighbour import (
    NEIGHBOUR_COUNTERS,
    OVERHEARD,
    SOLICITATION,
    SOLICITED,
    UNSOLICITED,
    NeighbourParams,
    Neighbours,
    NeighbourTable,
)

M0 = "02:00:00:00:0a:01"
R1 = bytes.fromhex("02000000c601")  # the IPv6 router's MAC
EVIL = bytes.fromhex("02000000ee66")
ROUTER = parse_addr("fe80::1")


@dataclass
class K:
    value: int


class FakeND:
    """What ND will do on the wire, recorded: (interface, address, unicast-to or None)."""

    def __init__(self) -> None:
        self.solicits: list[tuple[str, Addr, bytes | None]] = []

    def solicit(self, iface: Interface, addr: Addr, lladdr: bytes | None) -> None:
        self.solicits.append((iface.name, addr, lladdr))


def nd_table(st: object, nd: FakeND) -> NeighbourTable:
    params = NeighbourParams(maxentries=K(8), queue=K(3), retries=K(3), rexmit_ms=K(1000),
                             reachable=K(30), stale_gc=K(60), down=K(20), locktime=K(1))
    return NeighbourTable(family=AF_INET6, name="nd6", resolver=nd,
                          interfaces=st.interfaces, timers=st.inet.timers,  # type: ignore[attr-defined]
                          params=params, counters=Counters("nd6", NEIGHBOUR_COUNTERS),
                          log=logging.getLogger("io-pkt.nd6"))


def v6_frames(f0: object) -> list[Ether]:
    return [e for e in (Ether(b) for b in f0.take()) if e.type == 0x86DD]  # type: ignore[attr-defined]


async def test_arp_is_the_ipv4_table(two_if_stack) -> None:
    st, _, _ = two_if_stack
    n = Neighbours.of(st.services)
    assert n.v4 is st.inet.arp.table and n.table(AF_INET) is n.v4
    assert n.v6 is st.inet6.nd.table  # IPv6's ND registers the other family's
    assert n.v4.counters is st.inet.arp.counters  # one counter group: arp
    st.inet.arp_set("10.0.0.9", "02:00:00:00:00:09")
    assert n.v4.lookup("fake0", parse_addr("10.0.0.9")) == bytes.fromhex("020000000009")
    assert st.inet.arp.lookup("fake0", ip_to_int("10.0.0.9")) == bytes.fromhex("020000000009")


async def test_an_ipv6_table_resolves_through_the_same_machine(two_if_stack, autojump_clock,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    st, f0, _ = two_if_stack
    nd = FakeND()
    table = nd_table(st, nd)
    st.inet6.nd.registration.remove()  # the stack's own ND table makes way for the fake
    reg = Neighbours.of(st.services).register(table)
    m = f0.medium
    # unresolved: held, and the resolver is asked (to everyone)
    assert m.output([b"first"], ROUTER, 0x86DD) == 0
    assert m.output([b"second"], ROUTER, 0x86DD) == 0
    assert nd.solicits == [("fake0", ROUTER, None)] and v6_frames(f0) == []
    assert table.list()[0]["address"] == "fe80::1" and table.list()[0]["state"] == "incomplete"
    # a claim that is not an answer to us does not fill it
    table.input(f0, ROUTER, EVIL, UNSOLICITED)
    assert table.counters["update_refused_unsolicited"] == 1
    # the answer: the held packets go, with the family's EtherType
    table.input(f0, ROUTER, R1, SOLICITED)
    out = v6_frames(f0)
    assert [(e.dst, bytes(e.payload)) for e in out] == [("02:00:00:00:c6:01", b"first"),
                                                        ("02:00:00:00:c6:01", b"second")]
    assert table.list()[0]["state"] == "reachable" and table.counters["queue_sent"] == 2
    assert m.output([b"third"], ROUTER, 0x86DD) == 0
    assert [bytes(e.payload) for e in v6_frames(f0)] == [b"third"]
    # stale after 30 s: used at once and probed unicast
    await trio.sleep(31)
    assert table.list()[0]["state"] == "stale"
    nd.solicits.clear()
    assert m.output([b"fourth"], ROUTER, 0x86DD) == 0
    assert nd.solicits == [("fake0", ROUTER, R1)] and len(v6_frames(f0)) == 1
    table.input(f0, ROUTER, R1, SOLICITED)
    assert table.list()[0]["state"] == "reachable"
    # a claim for another link address: refused, the old one probed; silent, so asked
    # afresh, and the answer taken: a move, logged under the table's name
    await trio.sleep(2)
    nd.solicits.clear()
    table.input(f0, ROUTER, EVIL, UNSOLICITED)
    assert table.counters["update_refused_reachable"] == 1
    await trio.sleep(3.5)
    assert nd.solicits == [("fake0", ROUTER, R1)] * 3 + [("fake0", ROUTER, None)]
    with caplog.at_level(logging.INFO, logger="io-pkt.nd6"):
        table.input(f0, ROUTER, EVIL, SOLICITED)
    assert table.counters["moved"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "nd6: fe80::1 moved from 02:00:00:00:c6:01 to 02:00:00:00:ee:66 on fake0"]
    # IPv4's neighbours are apart: nothing of this is ARP's
    assert st.inet.arp_list() == [] and st.inet.arp.counters["moved"] == 0
    reg.remove()
    assert m.output([b"x"], ROUTER, 0x86DD) == errno.EHOSTUNREACH


async def test_an_ipv6_resolution_failure_is_reported(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    nd = FakeND()
    table = nd_table(st, nd)
    st.inet6.nd.registration.remove()
    Neighbours.of(st.services).register(table)
    failed: list[tuple[int, str]] = []
    for i in range(5):  # a queue of 3: the two oldest are dropped at once
        assert f0.medium.output([b"p%d" % i], ROUTER, 0x86DD,
                                fail=(lambda err, i: failed.append((err, i)), (f"p{i}",))) == 0
    assert failed == [(errno.ENOBUFS, "p0"), (errno.ENOBUFS, "p1")]
    await trio.sleep(3.5)
    assert len(nd.solicits) == 3 and table.list()[0]["state"] == "failed"
    assert failed[2:] == [(errno.EHOSTUNREACH, f"p{i}") for i in (2, 3, 4)]
    assert f0.medium.output([b"x"], ROUTER, 0x86DD) == errno.EHOSTUNREACH
    # a solicitation from it for one of our addresses makes it usable again (stale)
    table.input(f0, ROUTER, R1, SOLICITATION)
    assert table.list()[0]["state"] == "stale"
    assert table.lookup("fake0", ROUTER) == R1


async def test_only_an_answer_to_us_confirms_a_neighbour(two_if_stack, autojump_clock) -> None:
    """RFC 4861 §7.2.3/§7.2.5: the neighbour's own link address in a solicitation or an
    unsolicited advertisement leaves a stale entry stale (probed at its next use); only
    a solicited answer makes it reachable."""
    st, f0, _ = two_if_stack
    nd = FakeND()
    table = nd_table(st, nd)
    st.inet6.nd.registration.remove()
    Neighbours.of(st.services).register(table)
    assert f0.medium.output([b"x"], ROUTER, 0x86DD) == 0
    table.input(f0, ROUTER, R1, SOLICITED)
    assert table.list()[0]["state"] == "reachable"
    await trio.sleep(31)
    assert table.list()[0]["state"] == "stale"
    updated = table.counters["updated"]
    for kind in (SOLICITATION, UNSOLICITED, OVERHEARD):
        table.input(f0, ROUTER, R1, kind)
        assert table.list()[0]["state"] == "stale", kind
    assert table.counters["updated"] == updated
    table.input(f0, ROUTER, R1, SOLICITED)
    assert table.list()[0]["state"] == "reachable"
