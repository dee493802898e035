"""IPv6 fast forwarding (stack/l2/fastfwd.py ``forward6``): after the IP layer forwards
the first datagrams to a destination, layer 2's flow cache forwards the rest, with the
hop limit decremented; the flows go when a route changes, and datagrams the cache must
not take (hop limit 1, too big, hop-by-hop options) still get the IP layer's answer."""

from __future__ import annotations

import pytest

from stack.addr import Prefix, parse_addr
from stack.core import Stack
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import run

pytestmark = [needs_tun, pytest.mark.root]


async def side(st: Stack, ns: NetNS, ifname: str, net: str) -> None:
    st.interfaces[ifname].set_flags(IFF_UP)
    await run("ip", "-n", ns.name, "link", "set", ifname, "up")
    await run("ip", "-n", ns.name, "addr", "add", f"{net}::1/64", "dev", ifname, "nodad")
    await run("ip", "-n", ns.name, "-6", "route", "add", "default", "via", f"{net}::254")
    st.inet6.manage.add_address(ifname, Prefix.parse(f"{net}::254/64"), dad=False)


async def ping6(ns: NetNS, dst: str, *args: str) -> str:
    r = await run("ip", "netns", "exec", ns.name, "ping", "-6", "-n", "-c", "4", "-i", "0.1",
                  "-W", "2", *args, dst, check=False)
    return r.stdout.decode() + r.stderr.decode()


async def test_fast_forward6_between_two_namespaces(netns_factory) -> None:
    a, b = netns_factory("fa", ipv6=True), netns_factory("fb", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={a}"),
                                      ("tap", f"name=tap1,netns={b}")],
                             tcpip="forward6", inet6=True) as st:
        assert st.sysctl["net.inet6.ip6.forwarding"] == 1
        await side(st, a, "tap0", "2001:db8:a")
        await side(st, b, "tap1", "2001:db8:b")
        ff = st.l2.fastfwd
        out = await ping6(a, "2001:db8:b::1")
        assert " 0% packet loss" in out, out
        assert "ttl=63" in out, out  # the replies crossed the stack: hop limit 64 - 1
        # the IP layer forwarded the first of each direction and filled the cache
        assert int(parse_addr("2001:db8:b::1")) in ff.flows6
        assert int(parse_addr("2001:db8:a::1")) in ff.flows6
        assert ff.counters["forwarded6"] >= 4, dict(ff.counters)
        before_ip = st.inet6.counters["forwarded"]
        before_ff = ff.counters["forwarded6"]
        out = await ping6(a, "2001:db8:b::1", "-s", "1000")
        assert " 0% packet loss" in out, out
        assert ff.counters["forwarded6"] >= before_ff + 8  # both directions, every one
        assert st.inet6.counters["forwarded"] == before_ip  # none took the slow path
        # hop limit 1: not the cache's; the IP layer answers Time Exceeded
        out = await ping6(a, "2001:db8:b::1", "-t", "1")
        assert "Time exceeded" in out or "Hop limit" in out, out
        assert ff.counters["miss6_slowpath"] >= 1
        # too big for tap1's MTU: Packet Too Big from the IP layer, never fragmented
        st.interfaces["tap1"].set_mtu(1280)
        await run("ip", "-n", b.name, "link", "set", "tap1", "mtu", "1280")
        out = await ping6(a, "2001:db8:b::1")  # re-learns the flow with the new MTU
        assert " 0% packet loss" in out, out
        out = await ping6(a, "2001:db8:b::1", "-s", "1400", "-M", "do")
        assert "mtu=1280" in out.lower() or "too big" in out.lower() or \
            "message too long" in out.lower(), out
        assert st.inet6.counters["drop_fwd_too_big"] >= 1
        # a route change empties the cache
        st.inet6.manage.route_add(Prefix.parse("2001:db8:c::/64"), ifname="tap1")
        assert not ff.flows6
