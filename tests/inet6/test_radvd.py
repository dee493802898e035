"""SLAAC from Debian's radvd in the kernel's namespace: the stack forms prefix + EUI-64,
installs the default router (::/0 via the router's link-local on tap0), takes the MTU
option, reports RDNSS/DNSSL to the resolver (config/resolv.conf, source ``ra:tap0``),
is reachable on its SLAAC address and reaches an address behind the router; lifetimes
run out when the router goes silent, and radvd's final advertisement (router lifetime
0, RDNSS flushed) removes the router at once."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio

from stack.addr import Prefix, parse_addr
from stack.core import Stack
from stack.services import RESOLVER
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import (
    eui64_addr,
    kernel_ll,
    kping6,
    link_up,
    radvd,
    run,
    stop,
    until,
    veth,
)

pytestmark = [needs_tun, pytest.mark.root]

PREFIX = "2001:db8:10::"
BEHIND = "2001:db8:99::1"


def conf(*, rdnss_life: int = 6, router_life: int = 8, valid: int = 14,
         preferred: int = 10) -> str:
    return f"""
interface tap0 {{
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime {router_life};
    AdvLinkMTU 1400;
    AdvCurHopLimit 61;
    prefix {PREFIX}/64 {{
        AdvOnLink on;
        AdvAutonomous on;
        AdvValidLifetime {valid};
        AdvPreferredLifetime {preferred};
    }};
    RDNSS 2001:db8:10::53 2001:db8:10::54 {{
        AdvRDNSSLifetime {rdnss_life};
    }};
    DNSSL example.lan corp.example {{
        AdvDNSSLLifetime {rdnss_life};
    }};
}};
"""


async def router_ns(st: Stack, ns: NetNS, far: NetNS | None = None) -> str:
    """The kernel's side: tap0 up with 2001:db8:10::1 and, given ``far``, a host behind
    it (2001:db8:99::1 over a veth, its default route via the router); returns the
    router's link-local address."""
    await link_up(st, ns, "tap0")
    await run("ip", "-n", ns.name, "addr", "add", f"{PREFIX}1/64", "dev", "tap0", "nodad")
    if far is not None:
        await veth(ns, "veth0", far, "veth0")
        await run("ip", "-n", ns.name, "addr", "add", "2001:db8:99::2/64", "dev", "veth0",
                  "nodad")
        await run("ip", "-n", far.name, "addr", "add", f"{BEHIND}/64", "dev", "veth0",
                  "nodad")
        await run("ip", "-n", far.name, "-6", "route", "add", "default", "via",
                  "2001:db8:99::2")
    return await kernel_ll(ns, "tap0")


def default_routes(st: Stack) -> list[tuple[str, str]]:
    return [(r["gateway"], r["interface"]) for r in st.inet6.manage.route_list()
            if r["destination"] == "default"]


def slaac(st: Stack) -> str:
    return eui64_addr(PREFIX, st.interfaces["tap0"].mac)


async def test_radvd_slaac_router_mtu_rdnss_and_lifetimes(netns6: NetNS,
                                                         netns_factory: Any) -> None:
    ns = netns6
    far = netns_factory("far", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        rll = await router_ns(st, ns, far)
        m = st.inet6.manage
        addr = slaac(st)
        async with radvd(ns, conf()) as rad:
            ia = await until(lambda: next((a for a in m.addresses("tap0")
                                           if a.addr == parse_addr(addr)), None),
                             15, f"SLAAC address {addr}")
            await m.wait_usable("tap0", parse_addr(addr), timeout=5)
            assert ia.autoconf and not ia.temporary and ia.plen == 64
            now = trio.current_time()
            assert 10 <= ia.valid_until - now <= 14.5, ia.valid_until - now
            assert 6 <= ia.preferred_until - now <= 10.5
            # the default router: ::/0 via the router's link-local on tap0
            assert default_routes(st) == [(rll, "tap0")], m.route_list()
            assert [r["router"] for r in m.router_list()] == [rll]
            assert any(p["prefix"] == f"{PREFIX}/64" for p in m.prefix_list())
            # the MTU option and the hop limit
            flags = m.iface_flags("tap0")
            assert flags["linkmtu"] == 1400 and flags["curhlim"] == 61, flags
            assert st.inet6.route_mtu(parse_addr(BEHIND)) == 1400
            # RDNSS/DNSSL reach the resolver as source ra:tap0
            res = st.services.get(RESOLVER)
            assert res is not None
            await until(lambda: "ra:tap0" in res.sources, 5, "the ra:tap0 resolver source")
            src = res.sources["ra:tap0"]
            assert src.nameservers == ["2001:db8:10::53", "2001:db8:10::54"]
            assert src.search == ["example.lan", "corp.example"]
            text = res.render()
            assert "nameserver 2001:db8:10::53  # ra:tap0" in text, text
            # reachable on the SLAAC address; and the stack reaches behind the router,
            # a large echo fragmented at the advertised MTU
            out = await kping6(ns, addr)
            assert " 0% packet loss" in out, out
            d = await m.ping_detail(parse_addr(BEHIND), timeout=2)
            assert str(d.source) == BEHIND
            # 1448 bytes: fragmented here at the advertised 1400; the far host's first
            # reply meets radvd's 1400 on the router's tap0 too (a Packet Too Big to it),
            # its next ones come fragmented
            frags = st.inet6.counters["out_fragmented"]
            for _ in range(3):
                try:
                    d = await m.ping_detail(parse_addr(BEHIND), size=1400, timeout=1)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("no answer to a 1400-byte echo behind the router")
            assert st.inet6.reass.counters["reassembled"] >= 1
            assert st.inet6.counters["out_fragmented"] >= frags + 1
            r = m.route_get(parse_addr(BEHIND))
            assert r["gateway"] == rll and r["source"] == addr, r
            # the router goes silent (no final RA): each lifetime runs out in turn
            stop(rad, signal.SIGKILL)
            t0 = trio.current_time()
            await until(lambda: "ra:tap0" not in res.sources, 8, "RDNSS expiry")
            assert "ra:tap0" not in res.render()
            await until(lambda: not default_routes(st), 10, "the router's lifetime")
            assert st.inet6.nd.counters["ra_router_expired"] == 1
            await until(lambda: ia.state == "deprecated", 12, "deprecation")
            assert trio.current_time() - t0 > 5
            # deprecated: still receives, no longer chosen where another would do
            out = await kping6(ns, addr, count=1)
            assert " 0% packet loss" in out, out
            await until(lambda: ia not in m.addresses("tap0"), 8, "the valid lifetime")
            assert st.inet6.counters["addr_expired"] >= 1
            assert parse_addr(addr) not in st.inet6.local
            assert not m.prefix_list()


async def test_radvd_final_advertisement_removes_router_and_rdnss(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        await router_ns(st, ns)
        m = st.inet6.manage
        res = st.services.get(RESOLVER)
        assert res is not None
        async with radvd(ns, conf(rdnss_life=600, router_life=1800, valid=3600,
                                  preferred=1800)) as rad:
            await until(lambda: default_routes(st) and "ra:tap0" in res.sources, 15,
                        "router and RDNSS from radvd")
            await m.wait_usable("tap0", parse_addr(slaac(st)), timeout=5)
            stop(rad)  # SIGTERM: radvd's last RA, router lifetime 0, RDNSS lifetime 0
            await until(lambda: not default_routes(st), 3, "the final RA")
            await until(lambda: "ra:tap0" not in res.sources, 3, "RDNSS flushed")
            # the prefix and the address keep their lifetimes (radvd does not deprecate)
            assert parse_addr(slaac(st)) in st.inet6.local
            assert st.inet6.nd.counters["ra_router_expired"] == 0


async def test_ra_ignored_without_accept_rtadv(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        m = st.inet6.manage
        m.set_iface_flag("tap0", "accept_rtadv", False)
        await router_ns(st, ns)
        async with radvd(ns, conf()):
            await until(lambda: st.inet6.nd.counters["drop_ra_ignored"] >= 1, 15,
                        "an RA (ignored)")
            assert not default_routes(st)
            assert not [a for a in m.addresses("tap0") if a.autoconf]
            assert Prefix.parse(f"{PREFIX}/64") not in [p for (_, p) in st.inet6.nd.prefixes]
