"""Hostile IPv6 input against a running io-pkt with devnp-tap (issue 16): frames built
with scapy, written raw from inside the test's namespace (nsattack6.py, an AF_PACKET
socket on the kernel side of the TAP), each dropped and counted in the stack's
statistics files - and answered with the ICMPv6 error RFC 8200/4443/7112 ask for, read
back on the wire - while the kernel's ping6 of the stack's link-local address goes on.
Then the floods: fragments never completed (memory bounded by maxfragmem), neighbor
solicitations from thousands of spoofed sources (the ND cache bounded by
nd6_maxentries), datagrams drawing ICMPv6 errors (the rate limit holds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from tests.reliability.helpers import TapStack, delta, needs_tap_stack, settled, wait_for

pytestmark = [needs_tap_stack]

NSATTACK6 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsattack6.py")
SPOOF_MAC = "02:00:00:5e:e0:67"


class Six:
    """The stack (io-pkt, its link-local address on tap0) and the kernel's side."""

    def __init__(self, ts: TapStack) -> None:
        self.ts = ts
        self.ns = ts.ns
        self.smac = ts.mac()
        self.kmac = self.ns.run("cat", "/sys/class/net/tap0/address").stdout.strip()
        text = ts.read("config/interfaces").split("tap0:", 1)[1]
        self.s_ll = text.split("inet6 ", 1)[1].split("%", 1)[0]
        r = self.ns.run("ip", "-6", "-o", "addr", "show", "dev", "tap0", "scope", "link")
        self.k_ll = r.stdout.split("inet6 ", 1)[1].split("/", 1)[0]

    @classmethod
    def start(cls, stack_process: Any, netns6: Any) -> Six:
        ts = TapStack.start(stack_process, netns6)
        six = cls(ts)
        # both sides past DAD: the kernel's ping6 of our link-local address answered
        assert wait_for(lambda: six.ping6(1), 15, 0.3), "no ping6 answer"
        return six

    def ping6(self, count: int = 3, interval: float = 0.2) -> bool:
        r = self.ns.run("ping", "-6", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
                        f"{self.s_ll}%tap0", check=False, timeout=count * interval + 15)
        return r.returncode == 0

    def pinger(self, count: int = 60) -> subprocess.Popen[bytes]:
        return self.ns.popen("ping", "-6", "-n", "-c", str(count), "-i", "0.1", "-W", "1",
                             f"{self.s_ll}%tap0", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)

    def attack(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        r = self.ns.run(sys.executable, NSATTACK6, *args, timeout=timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def exchange(self, frames: list[bytes], seconds: float = 0.6) -> list[bytes]:
        """Send the frames; the IPv6 frames that came back within ``seconds``."""
        with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as f:
            f.write("\n".join(fr.hex() for fr in frames))
            path = f.name
        try:
            out = self.attack("exchange", path, str(seconds))
        finally:
            os.unlink(path)
        return [bytes.fromhex(h) for h in out["received"]]


def icmp6_errors(frames: list[bytes]) -> list[tuple[int, int, int]]:
    """(type, code, pointer/mtu field) of the ICMPv6 errors among ``frames``."""
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    out = []
    for fr in frames:
        p = Ether(fr)
        if IPv6 in p and p[IPv6].nh == 58:
            icmp = bytes(p[IPv6].payload)
            if icmp and icmp[0] < 128:
                out.append((icmp[0], icmp[1], int.from_bytes(icmp[4:8], "big")))
    return out


def corpus(six: Six) -> list[tuple[str, list[Any], tuple[str, ...], Any]]:
    """(name, packets, counters each of which must move, the ICMPv6 answer wanted: a
    (type, code, pointer) error, "echo-reply", or None for silence)."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import (
        HBHOptUnknown,
        ICMPv6EchoRequest,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6ND_RA,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptPrefixInfo,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrRouting,
    )
    from scapy.packet import Raw

    def ip(**kw: Any) -> IPv6:
        kw.setdefault("src", six.k_ll)
        kw.setdefault("dst", six.s_ll)
        return IPv6(**kw)

    def chain(n: int) -> Any:
        # n destination-options headers (8 bytes each, a PadN), then an echo request
        hdrs = b"".join(bytes([60 if i < n - 1 else 58, 0, 1, 4, 0, 0, 0, 0])
                        for i in range(n))
        return ip(nh=60) / Raw(hdrs + bytes(ICMPv6EchoRequest(id=1)))

    # an echo request with its checksum (the pseudo header of these addresses)
    echo = bytes(ip() / ICMPv6EchoRequest(id=0x5151, seq=1) / (b"A" * 48))[40:]
    na_ck = bytes(ip(hlim=255) / ICMPv6ND_NA(tgt=six.k_ll, R=0, S=0, O=1)
                  / ICMPv6NDOptDstLLAddr(lladdr=SPOOF_MAC))[40:]  # with its checksum
    tcp8 = bytes(TCP(sport=41000, dport=5001, flags="S"))[:8]
    return [
        ("chain_too_long", [chain(170), chain(17)], ("ip6.drop_chain_too_long",), None),
        ("unknown_option_discard_and_report",
         [ip() / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9E, optdata=b"\0" * 4)])
          / ICMPv6EchoRequest(id=2)],
         ("ip6.drop_unknown_option", "icmp6.out_error_4_2"), (4, 2, 42)),
        # action 10 reports even to a multicast destination (RFC 8200 §4.2) ...
        ("unknown_option_10_to_multicast",
         [ip(dst="ff02::1") / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9E,
                                                                         optdata=b"\0" * 4)])
          / ICMPv6EchoRequest(id=5)],
         ("ip6.drop_unknown_option", "icmp6.out_error_4_2"), (4, 2, 42)),
        # ... action 11 only to a unicast one
        ("unknown_option_11_to_multicast",
         [ip(dst="ff02::1") / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0xDE,
                                                                         optdata=b"\0" * 4)])
          / ICMPv6EchoRequest(id=6)],
         ("ip6.drop_unknown_option",), None),
        ("unknown_option_discard_silently",
         [ip() / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x5E, optdata=b"\0" * 4)])
          / ICMPv6EchoRequest(id=3)],
         ("ip6.drop_unknown_option",), None),
        ("routing_header_type0",
         [ip() / IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8::9"])
          / ICMPv6EchoRequest(id=4)],
         ("ip6.drop_routing_type0", "icmp6.out_error_4_0"), (4, 0, 42)),
        ("overlapping_fragments",
         [ip() / IPv6ExtHdrFragment(nh=58, id=0x701, offset=0, m=1) / Raw(echo[:32]),
          ip() / IPv6ExtHdrFragment(nh=58, id=0x701, offset=2, m=0) / Raw(echo[16:])],
         ("reass6.frag_overlap",), None),
        ("tiny_first_fragment",
         [ip() / IPv6ExtHdrFragment(nh=6, id=0x702, offset=0, m=1) / Raw(tcp8)],
         ("ip6.drop_incomplete_first_fragment", "icmp6.out_error_4_3"), (4, 3, 0)),
        ("first_fragment_chain_cut",
         [ip() / IPv6ExtHdrFragment(nh=60, id=0x703, offset=0, m=1)
          / Raw(bytes([6, 1]) + bytes(6))],
         ("ip6.drop_truncated_chain", "icmp6.out_error_4_3"), (4, 3, 0)),
        # RFC 8200 §4.5: a length not a multiple of 8 with M set, and a fragment past
        # 65,535 bytes: Parameter Problem at the payload length / fragment offset field
        ("fragment_length_not_multiple_of_8",
         [ip() / IPv6ExtHdrFragment(nh=58, id=0x707, offset=1, m=1) / Raw(b"B" * 12)],
         ("reass6.drop_bad_fragment", "icmp6.out_error_4_0"), (4, 0, 4)),
        ("fragment_beyond_64k",
         [ip() / IPv6ExtHdrFragment(nh=58, id=0x708, offset=8190, m=0) / Raw(b"C" * 16)],
         ("reass6.drop_too_long", "icmp6.out_error_4_0"), (4, 0, 42)),
        ("atomic_fragment_processed",
         [ip() / IPv6ExtHdrFragment(nh=58, id=0x704, offset=0, m=0) / Raw(echo)],
         ("ip6.atomic_fragments",), "echo-reply"),
        ("nd_hop_limit_below_255",
         [ip(hlim=64) / ICMPv6ND_NA(tgt=six.k_ll, R=0, S=1, O=1)
          / ICMPv6NDOptDstLLAddr(lladdr=SPOOF_MAC),
          ip(hlim=254) / ICMPv6ND_NS(tgt=six.s_ll) / ICMPv6NDOptSrcLLAddr(lladdr=SPOOF_MAC)],
         ("nd6.drop_bad_hlim",), None),
        ("nd_in_fragments",
         [ip(hlim=255) / IPv6ExtHdrFragment(nh=58, id=0x705, offset=0, m=0)
          / ICMPv6ND_NS(tgt=six.s_ll) / ICMPv6NDOptSrcLLAddr(lladdr=SPOOF_MAC),
          ip(hlim=255) / IPv6ExtHdrFragment(nh=58, id=0x706, offset=0, m=1) / Raw(na_ck[:16]),
          ip(hlim=255) / IPv6ExtHdrFragment(nh=58, id=0x706, offset=2, m=0) / Raw(na_ck[16:])],
         ("ip6.drop_nd_fragment",), None),
        ("ra_from_global_source",
         [ip(src="2001:db8:66::1", dst="ff02::1", hlim=255)
          / ICMPv6ND_RA(routerlifetime=1800)
          / ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64, L=1, A=1)],
         ("nd6.drop_ra_not_linklocal",), None),
    ]


def frame(six: Six, p: Any) -> bytes:
    from scapy.layers.l2 import Ether

    dst = six.smac
    if p.dst.startswith("ff02::"):
        dst = "33:33:" + ":".join(f"{b:02x}" for b in bytes.fromhex(
            p.dst.replace("ff02::", "").zfill(8))[-4:])
    return bytes(Ether(dst=dst, src=six.kmac) / p)


def test_hostile6_corpus_dropped_counted_and_answered(netns6: Any, stack_process: Any) -> None:
    six = Six.start(stack_process, netns6)
    ts = six.ts
    cases = corpus(six)
    pinger = six.pinger(60)
    start = ts.all_stats()
    answers: dict[str, list[bytes]] = {}
    try:
        for name, pkts, want, reply in cases:
            before = ts.all_stats()
            got_frames = six.exchange([frame(six, p) for p in pkts])
            answers[name] = got_frames
            assert wait_for(lambda b=before, w=want: all(x in delta(b, ts.all_stats()) for x in w),
                            3), \
                f"{name}: not all of {want} moved: {delta(before, ts.all_stats())}"
            errs = icmp6_errors(got_frames)
            if isinstance(reply, tuple):
                assert reply in errs, (name, errs)
            elif reply == "echo-reply":
                assert any(fr[54:56] == b"\x81\x00" and b"A" * 48 in fr for fr in got_frames), \
                    name
                assert not errs, (name, errs)
            else:
                assert not errs, (name, errs)
            assert ts.alive()
        out, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.communicate()
    text = out.decode()
    received = int(text.split(" received")[0].rsplit(",", 1)[-1].strip())
    assert received >= 54, text[-300:]  # >= 90% of 60 while under attack
    d = delta(start, ts.all_stats())
    # every frame of the multi-frame cases counted
    assert d["ip6.drop_chain_too_long"] == 2, d
    assert d["nd6.drop_bad_hlim"] == 2, d
    assert d["ip6.drop_nd_fragment"] == 2, d
    # the spoofed NA/NS changed nothing: the kernel's entry (if any) keeps its MAC, the
    # spoofed MAC is nowhere; the RA from a global source made no address nor router
    ndp = ts.read("config/ndp")
    assert SPOOF_MAC not in ndp, ndp
    assert "2001:db8:66:" not in ts.read("config/interfaces")
    assert "2001:db8:66::1" not in ts.read("config/ndp_routers")
    assert six.ping6(2)


def test_icmp6_error_rate_limit_holds(netns6: Any, stack_process: Any) -> None:
    """3,000 datagrams with an unknown next header in one burst: every one counted, at
    most the burst (50) plus 100/s of Parameter Problems answer them."""
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    six = Six.start(stack_process, netns6)
    ts = six.ts
    six.ns.run("ip", "link", "set", "tap0", "txqueuelen", "10000")  # the burst reaches us
    before = ts.all_stats()
    one = frame(six, IPv6(src=six.k_ll, dst=six.s_ll, nh=253) / Raw(b"x" * 16))
    t0 = time.monotonic()
    six.exchange([one] * 3000, seconds=0.2)
    n = settled(lambda: ts.stats("ip6").get("drop_unknown_protocol", 0), quiet=0.5)
    elapsed = time.monotonic() - t0
    d = delta(before, ts.all_stats())
    sent = d.get("icmp6.out_error_4_1", 0)
    print(f"rate limit: {d.get('ip6.drop_unknown_protocol')} dropped, {sent} errors sent, "
          f"{d.get('icmp6.error_ratelimited')} rate limited in {elapsed:.1f} s")
    n -= before.get("ip6.drop_unknown_protocol", 0)
    assert n == 3000, d
    assert 1 <= sent <= 50 + 100 * elapsed + 10, (sent, elapsed, d)
    assert d["icmp6.error_ratelimited"] + sent == n, d
    assert six.ping6(2)


MAXFRAGMEM = 1 << 20
RSS_BOUND_KB = 20_000
FLOOD_SECONDS = 6


def test_fragment_flood6_memory_bounded(netns6: Any, stack_process: Any) -> None:
    six = Six.start(stack_process, netns6)
    ts = six.ts
    ts.sp.tool("sysctl", "-w", f"net.inet6.ip6.maxfragmem={MAXFRAGMEM}")
    six.ns.run("ip", "link", "set", "tap0", "txqueuelen", "10000")
    rss0 = ts.rss_kb()
    before = ts.stats("reass6")
    flood = six.ns.popen(sys.executable, NSATTACK6, "fragflood", str(FLOOD_SECONDS), six.smac,
                         six.k_ll, six.s_ll, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = rss0
    try:
        while flood.poll() is None:
            peak = max(peak, ts.rss_kb())
            time.sleep(0.2)
        out, err = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.communicate()
    assert flood.returncode == 0, err.decode()[-1000:]
    settled(lambda: ts.stats("reass6").get("frag_in", 0), quiet=1.0, timeout=60, step=0.2)
    after = ts.rss_kb()
    peak = max(peak, after)
    reass = ts.stats("reass6")
    d = delta(before, reass)
    print(f"IPv6 fragment flood: {out.decode().strip()}, reass6 {d}, RSS {rss0} -> peak "
          f"{peak}, after {after} kB")
    assert d.get("frag_in", 0) >= 50_000, d
    assert peak - rss0 < RSS_BOUND_KB, (rss0, peak, after, d)
    assert after - rss0 < RSS_BOUND_KB, (rss0, peak, after, d)
    assert 0 < reass.get("mem_peak", 0) <= MAXFRAGMEM, reass
    assert reass.get("mem", 0) <= MAXFRAGMEM, reass
    assert d.get("frag_evicted", 0) >= d["frag_in"] - 1024, d
    assert six.ping6(2)


def test_nd_cache_flood_bounded(netns6: Any, stack_process: Any) -> None:
    """Neighbor solicitations for our address from 5,000 spoofed link-local sources,
    each with its own link-layer address: the cache stays within nd6_maxentries."""
    six = Six.start(stack_process, netns6)
    ts = six.ts
    ts.sp.tool("sysctl", "-w", "net.inet6.ip6.nd6_maxentries=256")
    six.ns.run("ip", "link", "set", "tap0", "txqueuelen", "10000")
    before = ts.all_stats()
    pinger = six.pinger(40)
    try:
        res = six.attack("ndflood", "5000", six.smac, "fe80::", six.s_ll)
        settled(lambda: ts.stats("nd6").get("in_ns", 0), quiet=0.5)
        rows = [ln for ln in ts.read("config/ndp").splitlines()[1:] if ln.strip()]
        out, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.communicate()
    d = delta(before, ts.all_stats())
    print(f"ND flood: {res}, nd6 {({k: v for k, v in d.items() if k.startswith('nd6.')})}, "
          f"{len(rows)} entries")
    assert d.get("nd6.in_ns", 0) >= 4000, d
    assert len(rows) <= 256, len(rows)
    assert d.get("nd6.evicted", 0) + d.get("nd6.cache_full", 0) > 0, d
    text = out.decode()
    received = int(text.split(" received")[0].rsplit(",", 1)[-1].strip())
    assert received >= 36, text[-300:]
    assert six.ping6(2)
