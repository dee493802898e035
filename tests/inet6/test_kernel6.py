"""IPv6 with the Linux kernel as the peer: link-local addresses and DAD, ping6 both ways
(global and link-local with a scope), fragments both ways, ND entries, Parameter Problem
for routing header type 0. Every address lives in a namespace the test creates."""

from __future__ import annotations

import pytest
import trio

from stack.addr import Prefix, parse_addr
from stack.core import Stack
from stack.inet6.ifaddr import eui64
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import nsrun, run

pytestmark = [needs_tun, pytest.mark.root]


async def link6(st: Stack, ns: NetNS, ifname: str, stack_cidr: str, kernel_cidr: str) -> None:
    """Up on both sides, a global address each, both past DAD."""
    st.interfaces[ifname].set_flags(IFF_UP)
    await run("ip", "-n", ns.name, "link", "set", ifname, "up")
    await run("ip", "-n", ns.name, "addr", "add", kernel_cidr, "dev", ifname, "nodad")
    p = Prefix.parse(stack_cidr)
    st.inet6.manage.add_address(ifname, p)
    await st.inet6.manage.wait_usable(ifname, p.addr)


async def kping6(ns: NetNS, dst: str, *args: str) -> str:
    r = await nsrun(ns, "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", *args, dst,
                    check=False)
    return r.stdout.decode() + r.stderr.decode()


def stack_ll(st: Stack, ifname: str) -> str:
    return "fe80::" + ":".join(f"{(eui64(st.interfaces[ifname].mac) >> s) & 0xFFFF:x}"
                               for s in (48, 32, 16, 0))


async def test_ping6_both_ways_global_and_link_local(netns6: NetNS) -> None:
    netns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")], inet6=True) as st:
        await link6(st, netns, "tap0", "2001:db8:1::2/64", "2001:db8:1::1/64")
        ll = parse_addr(stack_ll(st, "tap0"))
        await st.inet6.manage.wait_usable("tap0", ll)
        assert st.inet6.counters["addr_dad_ok"] >= 2
        for size in ("56", "4000"):
            out = await kping6(netns, "2001:db8:1::2", "-s", size)
            assert " 0% packet loss" in out, out
        assert st.inet6.reass.counters["reassembled"] >= 3
        assert st.inet6.counters["out_fragmented"] >= 3
        out = await kping6(netns, f"{stack_ll(st, 'tap0')}%tap0")
        assert " 0% packet loss" in out, out
        for size in (56, 3000):
            rtt = await st.inet6.manage.ping(parse_addr("2001:db8:1::1"), size=size, timeout=2)
            assert 0 < rtt < 1
        # the kernel's link-local, by scope
        r = await run("ip", "-n", netns.name, "-6", "addr", "show", "dev", "tap0",
                      "scope", "link")
        kll = r.stdout.decode().split("inet6 ")[1].split("/")[0]
        rtt = await st.inet6.manage.ping(parse_addr(kll), timeout=2, ifname="tap0")
        assert 0 < rtt < 1
        nd = {e["address"]: e for e in st.inet6.manage.ndp_list()}
        assert "2001:db8:1::1" in nd and nd["2001:db8:1::1"]["state"] in (
            "reachable", "stale", "probe"), nd
        # and the kernel learned us by ND
        r = await run("ip", "-n", netns.name, "-6", "neigh", "show", "dev", "tap0")
        assert "2001:db8:1::2" in r.stdout.decode()


async def test_dad_detects_address_held_by_kernel(netns6: NetNS) -> None:
    netns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")], inet6=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        await run("ip", "-n", netns.name, "link", "set", "tap0", "up")
        await run("ip", "-n", netns.name, "addr", "add", "2001:db8:5::7/64", "dev", "tap0",
                  "nodad")
        await trio.sleep(0.3)
        st.inet6.manage.add_address("tap0", Prefix.parse("2001:db8:5::7/64"))
        with pytest.raises(OSError, match="duplicate"):
            await st.inet6.manage.wait_usable("tap0", parse_addr("2001:db8:5::7"))
        ia = [a for a in st.inet6.manage.addresses("tap0")
              if a.addr == parse_addr("2001:db8:5::7")][0]
        assert ia.state == "duplicated"
        assert st.inet6.counters["addr_duplicated"] == 1
        assert parse_addr("2001:db8:5::7") not in st.inet6.local
        # a different address on the same link passes
        st.inet6.manage.add_address("tap0", Prefix.parse("2001:db8:5::8/64"))
        await st.inet6.manage.wait_usable("tap0", parse_addr("2001:db8:5::8"))
