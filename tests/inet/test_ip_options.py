"""IPv4 options are validated on input (RFC 791 TLVs, RFC 1122 3.2.2.5): a malformed
option list drops the datagram (``ip.drop_bad_options``) with a rate-limited ICMP
parameter problem pointing at the bad octet; well-formed options still pass."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from scapy.layers.inet import ICMP, IP, IPerror, IPOption_RR, IPOption_Timestamp
from scapy.layers.l2 import ARP, Ether

from stack.inet.wire.ipv4 import options_error
from tests.inet.conftest import FakeIface

M0 = "02:00:00:00:0a:01"
P0 = "02:00:00:00:aa:02"

#: name -> (options bytes, offset within the options of the octet the pointer names)
BAD = {
    "length_past_header": (b"\x07\x28\x04\x00", 1),  # RR claiming 40 bytes in 4
    "length_zero": (b"\x44\x00\x05\x00", 1),
    "length_one": (b"\x83\x01\x00\x00", 1),
    "no_room_for_length": (b"\x01\x01\x01\x07", 3),
    "after_nops_runs_past": (b"\x01\x01\x94\x04\x00\x00\x01\x01\x82\x0b\x00\x00", 9),
    "rr_pointer_below_4": (b"\x07\x07\x02\x00\x00\x00\x00\x00", 2),
    "rr_too_short_for_pointer": (b"\x07\x02\x01\x00", 1),
    "ts_too_short": (b"\x44\x03\x05\x00", 1),
    "ts_pointer_below_5": (b"\x44\x0c\x04\x00" + b"\0" * 8, 2),
    "lsrr_pointer_zero": (b"\x83\x07\x00\x0a\x00\x00\x02\x00", 2),
    "rr_pointer_at_partial_slot": (b"\x07\x09\x08" + b"\0" * 6 + b"\x00\x00\x00", 2),
    "second_option_bad": (b"\x07\x07\x04\x00\x00\x00\x00\x44\x02\x00\x00\x00", 8),
}

GOOD = {
    "nop_eol": b"\x01\x01\x01\x00",
    "padding_after_eol_ignored": b"\x00\xff\xff\xff",
    "rr": bytes(IPOption_RR(routers=["0.0.0.0"] * 3)) + b"\x00",
    "rr_full": b"\x07\x07\x08\x0a\x00\x00\x02\x00",  # pointer past the end: full, fine
    "ts": bytes(IPOption_Timestamp(flg=0, timestamp=[0, 0])),
    "unknown_option_sane_length": b"\x9e\x04\xab\xcd",  # skipped as an unknown option
    "router_alert": b"\x94\x04\x00\x00",
    "max_40_bytes": b"\x07\x27\x04" + b"\0" * 36 + b"\x00",
}


def test_options_error_vectors() -> None:
    for name, (opts, at) in BAD.items():
        assert options_error(opts) == at, name
    for name, opts in GOOD.items():
        assert len(opts) % 4 == 0 and len(opts) <= 40, name
        assert options_error(opts) == -1, name
    assert options_error(b"") == -1


@settings(max_examples=500, deadline=None)
@given(st_.binary(max_size=40))
def test_options_error_total_and_in_range(opts: bytes) -> None:
    """Any bytes: never raises, and a reported offset lies inside the options."""
    at = options_error(opts)
    assert at == -1 or 0 <= at < len(opts)
    if at == -1 and opts and opts[0] not in (0, 1):
        assert len(opts) >= 2 and 2 <= opts[1] <= len(opts)


def eth(pkt: object) -> bytes:
    return bytes(Ether(src=P0, dst=M0, type=0x0800) / pkt)  # type: ignore[operator]


def frames_of(f: FakeIface) -> list[Ether]:
    return [Ether(b) for b in f.take()]


def echo(opts: bytes, dst: str = "10.0.0.1", seq: int = 1) -> IP:
    return IP(src="10.0.0.2", dst=dst, options=opts) / ICMP(id=7, seq=seq) / b"opt"


async def learn_peer(f0: FakeIface) -> None:
    f0.inject(bytes(Ether(src=P0, dst="ff:ff:ff:ff:ff:ff") /
                    ARP(op=1, hwsrc=P0, psrc="10.0.0.2", pdst="10.0.0.1")))
    f0.inject(bytes(Ether(src=P0, dst=M0) /
                    ARP(op=2, hwsrc=P0, psrc="10.0.0.2", hwdst=M0, pdst="10.0.0.1")))
    f0.take()


@pytest.mark.parametrize("name", sorted(BAD))
async def test_bad_options_dropped_with_parameter_problem(two_if_stack, name: str) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    opts, at = BAD[name]
    sent = echo(opts)
    f0.inject(eth(sent))
    assert st.inet.counters["drop_bad_options"] == 1
    assert st.inet.counters["in_delivered"] == 0 and st.inet.icmp.counters["in_echo"] == 0
    out = frames_of(f0)
    assert len(out) == 1, out
    err = out[0]
    assert err[IP].src == "10.0.0.1" and err[IP].dst == "10.0.0.2"
    assert err[ICMP].type == 12 and err[ICMP].code == 0
    assert err[ICMP].ptr == 20 + at  # the offending octet, counted from the IP header
    assert bytes(err[IPerror])[:20 + len(opts)] == bytes(sent)[:20 + len(opts)]
    assert st.inet.icmp.counters["out_error_12_0"] == 1


@pytest.mark.parametrize("name", sorted(GOOD))
async def test_good_options_still_pass(two_if_stack, name: str) -> None:
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    f0.inject(eth(echo(GOOD[name])) + b"\0" * 18)  # with Ethernet padding after it
    out = frames_of(f0)
    assert len(out) == 1 and out[0][ICMP].type == 0 and bytes(out[0][ICMP].payload) == b"opt"
    assert st.inet.counters["drop_bad_options"] == 0
    assert st.inet.counters["in_options_skipped"] == 1


async def test_parameter_problems_rate_limited(two_if_stack) -> None:
    """A flood of bad options: every datagram dropped and counted, the answers bounded
    by the ICMP error bucket (net.inet.icmp.errburst, clock frozen)."""
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    now = time.monotonic()
    st.inet.icmp.limit.clock = lambda: now  # time stands still while the 200 arrive
    burst = int(st.sysctl["net.inet.icmp.errburst"])
    for i in range(200):
        f0.inject(eth(echo(BAD["length_past_header"][0], seq=i)))
    assert st.inet.counters["drop_bad_options"] == 200
    out = frames_of(f0)
    assert len(out) == burst and all(o[ICMP].type == 12 for o in out)
    assert st.inet.icmp.counters["error_ratelimited"] == 200 - burst


async def test_no_parameter_problem_when_not_ours_or_broadcast(two_if_stack) -> None:
    """Dropped and counted, but not answered: a broadcast, or a datagram for another
    host while forwarding is off."""
    st, f0, _ = two_if_stack
    await learn_peer(f0)
    bad = BAD["length_zero"][0]
    f0.inject(eth(echo(bad, dst="10.0.0.255")))
    f0.inject(eth(echo(bad, dst="10.0.0.77")))
    f0.inject(eth(echo(bad, dst="255.255.255.255")))
    assert st.inet.counters["drop_bad_options"] == 3
    assert st.inet.counters["drop_not_for_us"] == 0  # refused before routing
    assert frames_of(f0) == []


async def test_bad_options_not_forwarded(two_if_stack) -> None:
    """A router validates too (RFC 1812 5.2.5): not forwarded; parameter problem back
    from the address facing the sender."""
    st, f0, f1 = two_if_stack
    await learn_peer(f0)
    st.sysctl.set("net.inet.ip.forwarding", "1")
    f0.inject(eth(echo(BAD["rr_pointer_below_4"][0], dst="10.1.0.9")))
    assert st.inet.counters["drop_bad_options"] == 1
    assert f1.take() == []
    out = frames_of(f0)
    assert len(out) == 1 and out[0][ICMP].type == 12 and out[0][ICMP].ptr == 22
    assert out[0][IP].src == "10.0.0.1"


async def test_random_option_bytes_never_raise(two_if_stack) -> None:
    """Random option bytes of every legal length: dropped (counted) or answered."""
    import random

    st, f0, _ = two_if_stack
    await learn_peer(f0)
    rng = random.Random(os.environ.get("IOPKT_SEED", "7"))
    for i in range(400):
        opts = bytes(rng.randrange(256) for _ in range(4 * rng.randrange(1, 11)))
        f0.inject(eth(echo(opts, seq=i)))
    c = st.inet.counters
    assert c["drop_bad_options"] + c["in_options_skipped"] == 400
    assert c["drop_bad_options"] > 0 and c["in_options_skipped"] > 0
