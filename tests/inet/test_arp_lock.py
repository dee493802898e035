"""ARP spoofing: net.link.ether.inet.locktime keeps a just-confirmed MAC, a change after
it is accepted as a move (counted, logged once), and unsolicited or gratuitous ARP for
unknown addresses creates nothing."""

from __future__ import annotations

import logging

import pytest
import trio
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether

from stack.inet.wire.ipv4 import ip_to_int
from tests.inet.conftest import FakeIface

M0 = "02:00:00:00:0a:01"  # fake0
P0 = "02:00:00:00:aa:02"  # the real neighbour 10.0.0.2
EVIL = "02:00:00:00:ee:66"
BCAST = "ff:ff:ff:ff:ff:ff"


def reply(ip: str, mac: str, *, to: str = "10.0.0.1", to_mac: str = M0,
          eth_dst: str | None = None) -> bytes:
    return bytes(Ether(src=mac, dst=eth_dst or to_mac) /
                 ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac, pdst=to))


def request(ip: str, mac: str, target: str = "10.0.0.1") -> bytes:
    return bytes(Ether(src=mac, dst=BCAST) / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target))


def macs(st: object) -> dict[str, str]:
    return {e["address"]: e["mac"] for e in st.inet.arp_list()}  # type: ignore[attr-defined]


async def resolve(st: object, f0: FakeIface, ip: str = "10.0.0.2", mac: str = P0) -> None:
    """The stack asks for ``ip`` (an IPv4 packet waits) and ``mac`` answers."""
    assert st.inet.output(None, ip_to_int(ip), 17, [b"q" * 8]) == 0  # type: ignore[attr-defined]
    f0.inject(reply(ip, mac))
    f0.take()
    assert macs(st)[ip] == mac


def sent_to(st: object, f0: FakeIface, ip: str = "10.0.0.2") -> str:
    """The Ethernet destination the stack uses for an IPv4 packet to ``ip`` now."""
    f0.take()
    assert st.inet.output(None, ip_to_int(ip), 17, [b"x" * 8]) == 0  # type: ignore[attr-defined]
    frames = [Ether(b) for b in f0.take()]
    ips = [f for f in frames if f.haslayer(IP)]
    assert len(ips) == 1, frames
    return str(ips[0].dst)


async def test_locktime_default_is_one_second(two_if_stack) -> None:
    st, _, _ = two_if_stack
    assert st.sysctl.get("net.link.ether.inet.locktime") == 1


@pytest.mark.parametrize("kind", ["reply", "request", "gratuitous_reply", "gratuitous_request"])
async def test_spoof_within_locktime_dropped(two_if_stack, autojump_clock, kind: str) -> None:
    """Right after 10.0.0.2 was resolved to P0, any ARP packet claiming 10.0.0.2 for
    another MAC is dropped whole: counted, the entry unchanged, no ARP reply to the
    spoofer, traffic still goes to P0."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    await trio.sleep(0.5)
    spoof = {
        "reply": reply("10.0.0.2", EVIL),
        "request": request("10.0.0.2", EVIL),
        "gratuitous_reply": reply("10.0.0.2", EVIL, to="10.0.0.2", to_mac=BCAST),
        "gratuitous_request": request("10.0.0.2", EVIL, target="10.0.0.2"),
    }[kind]
    f0.inject(spoof)
    assert arp.counters["drop_mac_locked"] == 1
    assert arp.counters["moved"] == 0
    assert f0.take() == []  # not even a reply to the spoofing request
    assert macs(st) == {"10.0.0.2": P0}
    assert sent_to(st, f0) == P0
    # the real neighbour is still heard: same MAC, confirmed
    before = arp.counters["updated"]
    f0.inject(reply("10.0.0.2", P0))
    assert arp.counters["updated"] == before + 1


async def test_change_after_locktime_is_a_move(two_if_stack, autojump_clock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    await trio.sleep(1.2)
    with caplog.at_level(logging.INFO, logger="io-pkt.arp"):
        f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["moved"] == 1 and arp.counters["drop_mac_locked"] == 0
    assert macs(st) == {"10.0.0.2": EVIL}
    assert sent_to(st, f0) == EVIL
    assert [r.getMessage() for r in caplog.records] == [
        f"arp: 10.0.0.2 moved from {P0} to {EVIL} on fake0"]
    # the new MAC is locked in turn: the old one coming straight back is refused
    f0.inject(reply("10.0.0.2", P0))
    assert arp.counters["drop_mac_locked"] == 1 and macs(st) == {"10.0.0.2": EVIL}


async def test_confirmation_restarts_the_lock(two_if_stack, autojump_clock) -> None:
    """The lock runs from the last ARP packet that set or confirmed the MAC, not from
    when the entry was made; an entry learnt from a request is locked too."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    f0.inject(request("10.0.0.2", P0))  # the neighbour asks for us: a stale entry
    f0.take()
    assert st.inet.arp_list()[0]["state"] == "stale"
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["drop_mac_locked"] == 1
    await trio.sleep(0.8)
    f0.inject(reply("10.0.0.2", P0))  # confirmed at 0.8 s
    await trio.sleep(0.8)  # 1.6 s after the entry was made, 0.8 s after confirmation
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["drop_mac_locked"] == 2
    assert macs(st) == {"10.0.0.2": P0}
    await trio.sleep(0.3)
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["moved"] == 1 and macs(st) == {"10.0.0.2": EVIL}


async def test_locktime_sysctl(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    st.sysctl.set("net.link.ether.inet.locktime", "0")  # no lock: Linux with locktime 0
    await resolve(st, f0)
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["moved"] == 1 and macs(st) == {"10.0.0.2": EVIL}
    st.sysctl.set("net.link.ether.inet.locktime", "30")
    await trio.sleep(29)
    f0.inject(reply("10.0.0.2", P0))
    assert arp.counters["drop_mac_locked"] == 1 and macs(st) == {"10.0.0.2": EVIL}
    await trio.sleep(1.5)
    f0.inject(reply("10.0.0.2", P0))
    assert arp.counters["moved"] == 2 and macs(st) == {"10.0.0.2": P0}
    with pytest.raises(OSError):
        st.sysctl.set("net.link.ether.inet.locktime", "-1")


async def test_moves_logged_at_most_once_a_second(two_if_stack, autojump_clock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Many neighbours changing MAC at once are all counted, but logged one line a
    second; the next line says how many were not logged."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    for i in range(2, 12):
        await resolve(st, f0, f"10.0.0.{i}", P0)
    await trio.sleep(2)
    with caplog.at_level(logging.INFO, logger="io-pkt.arp"):
        for i in range(2, 12):
            f0.inject(reply(f"10.0.0.{i}", EVIL))
        await trio.sleep(1.5)
        f0.inject(request("10.0.0.2", P0, target="10.0.0.1"))  # after 1.5 s: a move back
    assert arp.counters["moved"] == 11
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"arp: 10.0.0.2 moved from {P0} to {EVIL} on fake0",
                     f"arp: 10.0.0.2 moved from {EVIL} to {P0} on fake0 (9 more not logged)"]


async def test_unsolicited_and_gratuitous_for_unknown_create_nothing(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    frames = [
        reply("10.0.0.50", EVIL),  # unicast reply nobody asked for
        reply("10.0.0.51", EVIL, to="10.0.0.51", to_mac=BCAST),  # gratuitous reply
        reply("10.0.0.52", EVIL, eth_dst=BCAST, to="10.0.0.9"),  # a reply for someone else
        request("10.0.0.53", EVIL, target="10.0.0.53"),  # gratuitous request
        request("10.0.0.54", EVIL, target="10.0.0.9"),  # a request for someone else
    ]
    for fr in frames:
        f0.inject(fr)
    assert st.inet.arp_list() == []
    assert arp.counters["drop_unsolicited"] == 3
    assert arp.counters["request_not_for_us"] == 2
    assert arp.counters["entries_created"] == 0
    assert f0.take() == []


async def test_static_entry_never_changes(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    st.inet.arp_set("10.0.0.7", P0)
    await trio.sleep(5)
    f0.inject(reply("10.0.0.7", EVIL))
    assert st.inet.arp.counters["static_change_refused"] == 1
    assert st.inet.arp.counters["moved"] == 0
    assert macs(st) == {"10.0.0.7": P0}
    assert sent_to(st, f0, "10.0.0.7") == P0
