"""The stack as an IPv6 router (net.inet6.ip6.forwarding=1) with Linux hosts: its router
advertisements autoconfigure a kernel with accept_ra=2 (address from the prefix, default
route via our link-local), rdisc6 prints what it advertises, the final advertisement
(lifetime 0) makes Linux drop the default route — when advertising stops and when the
stack shuts down —, and it forwards between two namespaces: hop limit decremented,
Time Exceeded for hop limit 1 (ping -t 1, traceroute6), Packet Too Big toward a smaller
link MTU and never a fragment in transit."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from stack.addr import Prefix, parse_addr
from stack.core import Stack
from stack.inet6.rtadv import AdvertConfig
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import (
    eui64_addr,
    kernel_mac,
    kping6,
    link_up,
    nsout,
    nsrun,
    run,
    stack_ll_usable,
    until_async,
    veth,
)

pytestmark = [needs_tun, pytest.mark.root]


async def host_ns(ns: NetNS, ifname: str) -> None:
    """A Linux host taking RAs on ``ifname`` (accept_ra=2: even were it forwarding)."""
    await nsrun(ns, "sysctl", "-qw", f"net.ipv6.conf.{ifname}.accept_ra=2",
                f"net.ipv6.conf.{ifname}.autoconf=1")


def router_mode(st: Stack) -> None:
    st.sysctl.set("net.inet6.ip6.forwarding", 1)


async def kernel_slaac(ns: NetNS, ifname: str, prefix: str) -> str:
    """Wait for the kernel's address from ``prefix`` on ``ifname`` (DAD passed)."""
    want = eui64_addr(prefix, bytes.fromhex((await kernel_mac(ns, ifname)).replace(":", "")))

    async def get() -> str | None:
        out = await nsout(ns, "ip", "-6", "addr", "show", "dev", ifname)
        for line in out.splitlines():
            if f"inet6 {want}/64" in line and "tentative" not in line:
                return want
        return None
    return await until_async(get, 20, f"the kernel's SLAAC address {want}")


async def kernel_default(ns: NetNS) -> str:
    return await nsout(ns, "ip", "-6", "route", "show", "default")


async def test_our_ras_autoconfigure_linux_and_rdisc6(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        await host_ns(ns, "tap0")
        router_mode(st)
        await link_up(st, ns, "tap0")
        ll = await stack_ll_usable(st, "tap0")
        st.inet6.manage.add_address("tap0", Prefix.parse("2001:db8:20::1/64"))
        await st.inet6.manage.wait_usable("tap0", parse_addr("2001:db8:20::1"))
        st.inet6.rtadv.enable("tap0", AdvertConfig(mtu=1480, rdnss=[parse_addr("2001:db8:20::53")],
                                                   interval=30))
        kaddr = await kernel_slaac(ns, "tap0", "2001:db8:20::")
        out = await kernel_default(ns)
        assert f"default via {ll} dev tap0 proto ra" in out, out
        out = await nsout(ns, "ip", "-6", "route", "show", "2001:db8:20::/64")
        assert "dev tap0 proto ra" in out or "dev tap0 proto kernel" in out, out
        out = await nsout(ns, "cat", "/proc/sys/net/ipv6/conf/tap0/mtu")
        assert out.strip() == "1480"
        # the kernel pings us on the advertised prefix, and we it
        out = await kping6(ns, "2001:db8:20::1")
        assert " 0% packet loss" in out, out
        rtt = await st.inet6.manage.ping(parse_addr(kaddr), timeout=2)
        assert 0 < rtt < 1
        # rdisc6 solicits; the answer carries what we advertise
        out = await nsout(ns, "rdisc6", "-1", "-w", "2000", "tap0")
        assert re.search(r"Prefix\s+:\s+2001:db8:20::/64", out), out
        assert re.search(r"MTU\s+:\s+1480", out), out
        assert re.search(r"Recursive DNS server\s+:\s+2001:db8:20::53", out), out
        assert re.search(rf"from {re.escape(ll)}", out), out
        assert re.search(r"Router lifetime\s+:\s+1800", out), out
        assert st.inet6.nd.counters["in_rs"] >= 1
        # the NA for our address carries the router flag; ndisc6 shows our MAC
        mac = st.interfaces["tap0"].mac.hex(":").upper()
        out = await nsout(ns, "ndisc6", "-1", "-w", "2000", "2001:db8:20::1", "tap0")
        assert mac in out.upper(), out
        # advertising off: the final RA (lifetime 0) removes us as Linux's default router
        st.inet6.rtadv.disable("tap0")

        async def gone() -> bool:
            return "default" not in await kernel_default(ns)
        await until_async(gone, 5, "Linux dropping the default route")


async def test_final_ra_at_shutdown(netns6: NetNS, netns_factory: Any) -> None:
    """tap0 sits on a bridge in ``sw``; the host is behind a veth, so its default route
    outlives our TAP: only the final RA at shutdown can remove it."""
    sw = netns6
    host = netns_factory("h6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={sw}")], inet6=True) as st:
        await veth(sw, "vh", host, "eth0")
        await host_ns(host, "eth0")
        await run("ip", "-n", sw.name, "link", "add", "br0", "type", "bridge")
        await run("ip", "-n", sw.name, "link", "set", "tap0", "master", "br0")
        await run("ip", "-n", sw.name, "link", "set", "vh", "master", "br0")
        await run("ip", "-n", sw.name, "link", "set", "br0", "up")
        router_mode(st)
        await link_up(st, sw, "tap0")
        ll = await stack_ll_usable(st, "tap0")
        st.inet6.manage.add_address("tap0", Prefix.parse("2001:db8:21::1/64"))
        await st.inet6.manage.wait_usable("tap0", parse_addr("2001:db8:21::1"))
        st.inet6.rtadv.enable("tap0", AdvertConfig(interval=30))

        async def via_us() -> bool:
            return f"default via {ll} dev eth0" in await kernel_default(host)
        await until_async(via_us, 20, "the host's default route via the stack")
        await kernel_slaac(host, "eth0", "2001:db8:21::")
        out = await kping6(host, "2001:db8:21::1")
        assert " 0% packet loss" in out, out
        with trio.move_on_after(10):
            await st.shutdown()

    async def gone() -> bool:
        return "default" not in await kernel_default(host)
    await until_async(gone, 5, "the host dropping the default route after our shutdown")


async def test_forwarding_between_two_namespaces(netns6: NetNS, netns_factory: Any) -> None:
    a = netns6
    b = netns_factory("b6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={a}"),
                                      ("tap", f"name=tap1,netns={b}")], inet6=True) as st:
        await host_ns(a, "tap0")
        await host_ns(b, "tap1")
        router_mode(st)
        # tap1 is a 1280-byte link on both sides
        st.interfaces["tap1"].set_mtu(1280)
        await run("ip", "-n", b.name, "link", "set", "tap1", "mtu", "1280")
        await link_up(st, a, "tap0")
        await link_up(st, b, "tap1")
        m = st.inet6.manage
        for ifname, cidr in (("tap0", "2001:db8:a::1/64"), ("tap1", "2001:db8:b::1/64")):
            m.add_address(ifname, Prefix.parse(cidr))
            await m.wait_usable(ifname, Prefix.parse(cidr).addr)
            st.inet6.rtadv.enable(ifname, AdvertConfig(interval=30))
        a_addr = await kernel_slaac(a, "tap0", "2001:db8:a::")
        b_addr = await kernel_slaac(b, "tap1", "2001:db8:b::")
        def forwarded() -> int:  # by the IP layer or layer 2's flow cache
            return int(st.inet6.counters["forwarded"] + st.l2.fastfwd.counters["forwarded6"])
        fwd = forwarded()
        frags = st.inet6.counters["out_fragments"]
        out = await kping6(a, b_addr)
        assert " 0% packet loss" in out, out
        # B answers with hop limit 64; one router on the way
        assert "ttl=63" in out, out
        out = await kping6(b, a_addr)
        assert " 0% packet loss" in out and "ttl=63" in out, out
        assert forwarded() >= fwd + 12
        # hop limit 1: Time Exceeded from our address on A's link
        out = await kping6(a, b_addr, "-t", "1", count=1)
        assert "Time exceeded: Hop limit" in out and "From 2001:db8:a::1" in out, out
        assert st.inet6.icmp.counters["out_error_3_0"] >= 1
        out = await nsout(a, "traceroute6", "-n", "-q", "1", "-w", "2", b_addr)
        lines = [ln.split() for ln in out.splitlines()[1:]]
        assert lines[0][1] == "2001:db8:a::1" and lines[1][1] == b_addr, out
        # 1400 bytes toward the 1280 link: Packet Too Big (MTU 1280) to A, never a
        # fragment made here
        ptb = st.inet6.counters["drop_fwd_too_big"]
        out = await kping6(a, b_addr, "-M", "do", "-s", "1400", count=1)
        assert st.inet6.counters["drop_fwd_too_big"] == ptb + 1
        assert st.inet6.icmp.counters["out_error_2_0"] >= 1
        out = await nsout(a, "ip", "-6", "route", "get", b_addr)
        assert "mtu 1280" in out, out
        # A now fragments at the source; we forward the fragments as they are
        out = await kping6(a, b_addr, "-s", "1400")
        assert " 0% packet loss" in out, out
        assert st.inet6.counters["out_fragments"] == frags
        assert st.inet6.counters["drop_fwd_too_big"] == ptb + 1
