"""ARP spoofing (issue 14, item 4): an ARP packet never re-points a resolved neighbour by
saying so. A conflicting claim (reply, request or gratuitous, whatever its MAC) is
refused and counted, and makes the stack re-probe the *old* MAC; only if that stays
silent through the probe is the address resolved afresh, and the MAC answering our own
request taken. Within net.link.ether.inet.locktime of a confirmation, claims are refused
without a probe. Unresolved entries take only an answer to us; static entries never
change; unsolicited or gratuitous ARP for unknown addresses creates nothing."""

from __future__ import annotations

import logging
import random

import pytest
import trio
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether

from stack.inet.wire.ipv4 import ip_to_int
from tests.inet.conftest import FakeIface

M0 = "02:00:00:00:0a:01"  # fake0
P0 = "02:00:00:00:aa:02"  # the real neighbour 10.0.0.2
EVIL = "02:00:00:00:ee:66"
NEW = "02:00:00:00:aa:99"  # the neighbour's new NIC
BCAST = "ff:ff:ff:ff:ff:ff"
KINDS = ["reply", "request", "gratuitous_reply", "gratuitous_request"]


def reply(ip: str, mac: str, *, to: str = "10.0.0.1", to_mac: str = M0,
          eth_dst: str | None = None) -> bytes:
    return bytes(Ether(src=mac, dst=eth_dst or to_mac) /
                 ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac, pdst=to))


def request(ip: str, mac: str, target: str = "10.0.0.1") -> bytes:
    return bytes(Ether(src=mac, dst=BCAST) / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target))


def claim(kind: str, mac: str, ip: str = "10.0.0.2") -> bytes:
    """``ip`` is at ``mac``, said in one of the four ways."""
    return {
        "reply": lambda: reply(ip, mac),
        "request": lambda: request(ip, mac),
        "gratuitous_reply": lambda: reply(ip, mac, to=ip, to_mac=BCAST),
        "gratuitous_request": lambda: request(ip, mac, target=ip),
    }[kind]()


def macs(st: object) -> dict[str, str]:
    return {e["address"]: e["mac"] for e in st.inet.arp_list()}  # type: ignore[attr-defined]


def state(st: object, ip: str = "10.0.0.2") -> str:
    return next(e["state"] for e in st.inet.arp_list() if e["address"] == ip)  # type: ignore[attr-defined]


def arps(f0: FakeIface) -> list[Ether]:
    return [f for f in (Ether(b) for b in f0.take()) if f.haslayer(ARP)]


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


def is_probe(f: Ether, mac: str, ip: str = "10.0.0.2") -> bool:
    return f[ARP].op == 1 and f.dst == mac and f[ARP].pdst == ip


async def test_locktime_default_is_one_second(two_if_stack) -> None:
    st, _, _ = two_if_stack
    assert st.sysctl.get("net.link.ether.inet.locktime") == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_claim_never_overrides_a_reachable_entry(two_if_stack, autojump_clock,
                                                       kind: str) -> None:
    """Within the lock a claim for another MAC is refused (``locked``) and nothing else
    happens; after it the claim is refused too and the old MAC is probed (unicast); the
    neighbour answers and keeps its entry. Traffic goes to P0 throughout."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    await trio.sleep(0.5)
    f0.inject(claim(kind, EVIL))
    c = arp.counters
    assert c["update_refused_locked"] == 1 and c["update_refused"] == 1
    out = arps(f0)
    if kind == "request":
        # a request for us is answered (our own MAC, to the requester) but learns nothing
        assert len(out) == 1 and out[0][ARP].op == 2 and out[0].dst == EVIL
        assert out[0][ARP].hwsrc == M0
    else:
        assert out == []
    assert macs(st) == {"10.0.0.2": P0} and state(st) == "reachable"
    assert sent_to(st, f0) == P0
    await trio.sleep(1.0)  # past the lock
    f0.inject(claim(kind, EVIL))
    assert c["update_refused_reachable"] == 1 and c["update_refused"] == 2
    probes = [f for f in arps(f0) if is_probe(f, P0)]
    assert len(probes) == 1  # "is 10.0.0.2 still at P0?"
    assert macs(st) == {"10.0.0.2": P0} and state(st) == "probe"
    assert sent_to(st, f0) == P0
    f0.inject(claim(kind, EVIL))  # more of it while probing: refused, no second probe
    assert c["update_refused_probing"] == 1
    assert not [f for f in arps(f0) if is_probe(f, P0)]
    f0.inject(reply("10.0.0.2", P0))  # the neighbour answers the probe
    assert macs(st) == {"10.0.0.2": P0} and state(st) == "reachable"
    await trio.sleep(5)  # no further probes, no move
    assert [f for f in arps(f0) if f[ARP].op == 1] == []
    assert c["moved"] == 0 and c["reresolve"] == 0
    assert sent_to(st, f0) == P0


async def test_reply_from_another_mac_while_probing_refused(two_if_stack,
                                                            autojump_clock) -> None:
    """A stale entry in use is probed at P0; a reply from another MAC meanwhile is not
    the answer we asked for: refused; P0's answer makes it reachable."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    await trio.sleep(31)
    assert state(st) == "stale"
    assert sent_to(st, f0) == P0  # the probe went with it (taken by sent_to)
    assert state(st) == "probe"
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_probing"] == 1
    assert macs(st) == {"10.0.0.2": P0}
    f0.inject(reply("10.0.0.2", P0))
    assert state(st) == "reachable" and macs(st) == {"10.0.0.2": P0}


async def test_real_move_converges(two_if_stack, autojump_clock,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """The neighbour really changed its NIC: its new MAC announces itself (gratuitous
    ARP), the old one is silent. The claim is refused, P0 is probed three times, then the
    address is asked for afresh (broadcast) and the answer is taken: a move, logged."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    await trio.sleep(2)
    f0.inject(claim("gratuitous_request", NEW))
    assert macs(st) == {"10.0.0.2": P0}
    await trio.sleep(2.5)
    assert len([f for f in arps(f0) if is_probe(f, P0)]) == 3  # at 0, 1, 2 s
    await trio.sleep(1.0)
    out = arps(f0)
    assert [f.dst for f in out if f[ARP].op == 1] == [BCAST]  # who has 10.0.0.2?
    assert state(st) == "incomplete" and arp.counters["reresolve"] == 1
    # packets wait for the answer
    assert st.inet.output(None, ip_to_int("10.0.0.2"), 17, [b"w" * 8]) == 0
    assert [Ether(b) for b in f0.take()] == []
    # a claim that is not an answer to us does not fill it
    f0.inject(claim("gratuitous_reply", EVIL))
    assert arp.counters["update_refused_unsolicited"] == 1 and state(st) == "incomplete"
    with caplog.at_level(logging.INFO, logger="io-pkt.arp"):
        f0.inject(reply("10.0.0.2", NEW))
    assert macs(st) == {"10.0.0.2": NEW} and state(st) == "reachable"
    waited = [Ether(b) for b in f0.take()]
    assert [f.dst for f in waited if f.haslayer(IP)] == [NEW]
    assert arp.counters["moved"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"arp: 10.0.0.2 moved from {P0} to {NEW} on fake0"]
    assert sent_to(st, f0) == NEW


async def test_real_move_of_an_idle_entry_converges(two_if_stack, autojump_clock) -> None:
    """Nobody is sending to the neighbour: the same probe, and the new MAC's answer
    to our request is taken (the entry was in use or not)."""
    st, f0, _ = two_if_stack
    f0.inject(request("10.0.0.2", P0))  # the neighbour asks for us: a stale entry
    f0.take()
    await trio.sleep(2)
    f0.inject(request("10.0.0.2", NEW))  # it asks again, from its new NIC
    assert macs(st) == {"10.0.0.2": P0}
    assert [f.dst for f in arps(f0)] == [P0, NEW]  # a probe of P0, our answer to it
    await trio.sleep(3.1)
    assert [f.dst for f in arps(f0) if f[ARP].op == 1] == [P0, P0, BCAST]
    f0.inject(reply("10.0.0.2", NEW))
    assert macs(st) == {"10.0.0.2": NEW}


async def test_continuous_spoof_never_wins(two_if_stack, autojump_clock) -> None:
    """20 s of forged claims from random MACs, 4 kinds, every 2 ms, while the real
    neighbour answers every probe sent to it: the entry never leaves P0, traffic never
    goes elsewhere, every claim is counted as refused, probes stay about one per lock
    time, and the timer heap does not grow with the churn."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    await resolve(st, f0)
    rnd = random.Random(3)
    sent = probes = 0
    for i in range(10_000):
        mac = "02:66:" + ":".join(f"{rnd.randrange(256):02x}" for _ in range(4))
        f0.inject(claim(KINDS[i % 4], mac))
        sent += 1
        for f in (Ether(b) for b in f0.take()):
            if f.haslayer(ARP) and is_probe(f, P0):
                probes += 1
                f0.inject(reply("10.0.0.2", P0))  # the live host answers at once
            elif f.haslayer(IP):
                raise AssertionError(f"unexpected IP frame {f!r}")
        if i % 50 == 0:
            assert sent_to(st, f0) == P0
            assert macs(st) == {"10.0.0.2": P0}
        await trio.sleep(0.002)
    c = arp.counters
    assert c["update_refused"] == sent
    assert c["moved"] == 0 and c["reresolve"] == 0
    assert 10 <= probes <= 25, probes
    assert macs(st) == {"10.0.0.2": P0}
    assert len(st.inet.timers._heap) < 200


async def test_poisoned_resolution_heals(two_if_stack, autojump_clock) -> None:
    """A forged reply that beats the real one while we resolve wins the entry (as on
    every ARP stack); the real reply right behind it is a conflicting claim, so the
    forged MAC is probed, stays silent, and the address is asked for again."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    assert st.inet.output(None, ip_to_int("10.0.0.2"), 17, [b"q" * 8]) == 0
    f0.take()
    f0.inject(reply("10.0.0.2", EVIL))
    f0.inject(reply("10.0.0.2", P0))
    assert macs(st) == {"10.0.0.2": EVIL}
    assert arp.counters["update_refused_locked"] == 1
    f0.take()
    await trio.sleep(1.2)
    f0.inject(claim("gratuitous_request", P0))  # P0 speaks again (or anyone does)
    await trio.sleep(3.1)
    assert [f.dst for f in arps(f0) if f[ARP].op == 1] == [EVIL, EVIL, EVIL, BCAST]
    f0.inject(reply("10.0.0.2", P0))
    assert macs(st) == {"10.0.0.2": P0} and arp.counters["moved"] == 1


async def test_unresolved_entry_takes_only_an_answer(two_if_stack, autojump_clock) -> None:
    """While resolving, gratuitous ARP and requests (even for us) do not fill the entry;
    the reply to us does. A failed entry is filled by a request for us, as a new one."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    assert st.inet.output(None, ip_to_int("10.0.0.3"), 17, [b"q" * 8]) == 0
    f0.take()
    for kind in ("gratuitous_request", "gratuitous_reply", "request"):
        f0.inject(claim(kind, EVIL, "10.0.0.3"))
    assert arp.counters["update_refused_unsolicited"] == 3
    assert state(st, "10.0.0.3") == "incomplete"
    f0.take()
    f0.inject(reply("10.0.0.3", P0))
    assert macs(st) == {"10.0.0.3": P0} and state(st, "10.0.0.3") == "reachable"
    assert [Ether(b).dst for b in f0.take()] == [P0]  # the waiting packet
    # failed: 10.0.0.4 never answers
    assert st.inet.output(None, ip_to_int("10.0.0.4"), 17, [b"q" * 8]) == 0
    await trio.sleep(3.5)
    assert state(st, "10.0.0.4") == "failed"
    f0.inject(claim("gratuitous_request", EVIL, "10.0.0.4"))
    assert state(st, "10.0.0.4") == "failed"
    f0.inject(request("10.0.0.4", P0))
    assert state(st, "10.0.0.4") == "stale" and macs(st)["10.0.0.4"] == P0


async def test_confirmation_restarts_the_lock(two_if_stack, autojump_clock) -> None:
    """The lock runs from the last ARP packet that set or confirmed the MAC; an entry
    learnt from a request is locked too."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    f0.inject(request("10.0.0.2", P0))  # the neighbour asks for us: a stale entry
    f0.take()
    assert state(st) == "stale"
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_locked"] == 1
    await trio.sleep(0.8)
    f0.inject(reply("10.0.0.2", P0))  # confirmed at 0.8 s
    await trio.sleep(0.8)  # 1.6 s after the entry was made, 0.8 s after confirmation
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_locked"] == 2
    assert not [f for f in arps(f0) if is_probe(f, P0)]
    await trio.sleep(0.3)
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_reachable"] == 1
    assert [f for f in arps(f0) if is_probe(f, P0)]
    assert macs(st) == {"10.0.0.2": P0}


async def test_locktime_sysctl(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    st.sysctl.set("net.link.ether.inet.locktime", "0")  # no lock: probe at once
    await resolve(st, f0)
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_reachable"] == 1
    assert [f for f in arps(f0) if is_probe(f, P0)]
    f0.inject(reply("10.0.0.2", P0))
    st.sysctl.set("net.link.ether.inet.locktime", "30")
    await trio.sleep(29)
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_locked"] == 1
    await trio.sleep(1.5)  # past the lock, and the entry (30 s reachable) is stale now
    f0.inject(reply("10.0.0.2", EVIL))
    assert arp.counters["update_refused_stale"] == 1
    assert macs(st) == {"10.0.0.2": P0}
    with pytest.raises(OSError):
        st.sysctl.set("net.link.ether.inet.locktime", "-1")


async def test_moves_logged_at_most_once_a_second(two_if_stack, autojump_clock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Many neighbours really moving at once are all counted, but logged one line a
    second; the next line says how many were not logged."""
    st, f0, _ = two_if_stack
    arp = st.inet.arp
    hosts = [f"10.0.0.{i}" for i in range(2, 12)]
    for ip in hosts:
        await resolve(st, f0, ip, P0)
    await trio.sleep(2)
    for ip in hosts:
        f0.inject(claim("gratuitous_request", NEW, ip))
    await trio.sleep(3.5)  # P0 silent: each address asked for afresh
    f0.take()
    with caplog.at_level(logging.INFO, logger="io-pkt.arp"):
        for ip in hosts:
            f0.inject(reply(ip, NEW))
        await trio.sleep(2)
        f0.inject(claim("gratuitous_request", P0))  # 10.0.0.2 moves back
        await trio.sleep(3.5)
        f0.take()
        f0.inject(reply("10.0.0.2", P0))
    assert arp.counters["moved"] == 11
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"arp: 10.0.0.2 moved from {P0} to {NEW} on fake0",
                     f"arp: 10.0.0.2 moved from {NEW} to {P0} on fake0 (9 more not logged)"]


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


async def test_gratuitous_arp_for_our_address_is_a_conflict(two_if_stack) -> None:
    """Someone claiming our own address is detected (counted), never learnt."""
    st, f0, _ = two_if_stack
    f0.inject(claim("gratuitous_request", EVIL, "10.0.0.1"))
    f0.inject(claim("gratuitous_reply", EVIL, "10.0.0.1"))
    assert st.inet.arp.counters["dup_address"] == 2
    assert st.inet.arp_list() == []


async def test_static_entry_never_changes(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    st.inet.arp_set("10.0.0.7", P0)
    await trio.sleep(5)
    f0.inject(reply("10.0.0.7", EVIL))
    assert st.inet.arp.counters["update_refused_static"] == 1
    assert st.inet.arp.counters["moved"] == 0
    assert macs(st) == {"10.0.0.7": P0}
    assert sent_to(st, f0, "10.0.0.7") == P0
