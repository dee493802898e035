"""Neighbor Discovery with the Linux kernel: DAD both ways (the kernel finding the
stack's address a duplicate because the stack answers its DAD probe; both probing one
address at once), ndisc6 answered with our MAC, the NUD state machine (reachable →
stale → probe → reachable, and a vanished neighbour failing), and redirects from a Linux
router honoured, with RFC 4861 §8.1's checks on forged ones (scapy)."""

from __future__ import annotations

import errno
import sys
from typing import Any

import pytest
import trio

from stack.addr import Prefix, parse_addr
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import (
    add6,
    kernel_ll,
    kernel_mac,
    kping6,
    link_up,
    nsout,
    nsrun,
    run,
    stack_ll_usable,
    until,
    until_async,
    veth,
)

pytestmark = [needs_tun, pytest.mark.root]


async def inject(ns: NetNS, ifname: str, frame: bytes) -> None:
    """Send one Ethernet frame out of ``ifname`` in ``ns`` (AF_PACKET)."""
    code = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
            f"s.bind(({ifname!r}, 0)); s.send(bytes.fromhex(sys.argv[1]))")
    await nsrun(ns, sys.executable, "-c", code, frame.hex())


async def kernel_addr_state(ns: NetNS, ifname: str, addr: str) -> str:
    out = await nsout(ns, "ip", "-6", "addr", "show", "dev", ifname)
    for line in out.splitlines():
        if f"inet6 {addr}/" in line:
            return line
    return ""


# -- DAD -----------------------------------------------------------------------------
async def test_kernel_dad_finds_stack_address_duplicate(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        await link_up(st, ns, "tap0")
        ll = await stack_ll_usable(st, "tap0")
        await add6(st, "tap0", "2001:db8:6::5/64")
        na = st.inet6.nd.counters["out_na"]
        # the kernel probes for our global and our link-local address: both duplicates
        await run("ip", "-n", ns.name, "addr", "add", "2001:db8:6::5/64", "dev", "tap0")
        await run("ip", "-n", ns.name, "addr", "add", f"{ll}/64", "dev", "tap0")

        async def failed() -> bool:
            for a in ("2001:db8:6::5", ll):
                if "dadfailed" not in await kernel_addr_state(ns, "tap0", a):
                    return False
            return True
        await until_async(failed, 10, "the kernel's DAD failing on our addresses")
        assert st.inet6.nd.counters["out_na"] >= na + 2
        # ours stay ours, and work
        assert parse_addr("2001:db8:6::5") in st.inet6.local
        for a in ("2001:db8:6::5/64", f"{ll}/64"):
            await run("ip", "-n", ns.name, "addr", "del", a, "dev", "tap0")
        await run("ip", "-n", ns.name, "addr", "add", "2001:db8:6::1/64", "dev", "tap0",
                  "nodad")
        out = await kping6(ns, "2001:db8:6::5")
        assert " 0% packet loss" in out, out


async def test_dad_probe_for_our_tentative_address(netns6: NetNS) -> None:
    """RFC 4862 §5.4.3: another node's DAD probe for the address we are probing means a
    duplicate. (Linux, probing the same address, gives up at our first probe and stops
    probing, so the other node's probe is sent with scapy, as the kernel would.)"""
    from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
    from scapy.layers.l2 import Ether

    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        await link_up(st, ns, "tap0")
        await stack_ll_usable(st, "tap0")
        st.sysctl.set("net.inet6.ip6.dad_count", 5)  # tentative for 5 s
        kmac = await kernel_mac(ns, "tap0")
        target = "2001:db8:6::9"
        probe = bytes(Ether(src=kmac, dst="33:33:ff:00:00:09") /
                      IPv6(src="::", dst="ff02::1:ff00:9", hlim=255) / ICMPv6ND_NS(tgt=target))
        c = st.inet6.nd.counters
        # a probe with the wrong hop limit is no probe
        bad = bytes(Ether(src=kmac, dst="33:33:ff:00:00:09") /
                    IPv6(src="::", dst="ff02::1:ff00:9", hlim=64) / ICMPv6ND_NS(tgt=target))
        st.inet6.manage.add_address("tap0", Prefix.parse(f"{target}/64"))
        await inject(ns, "tap0", bad)
        await until(lambda: c["drop_bad_hlim"] == 1, 3, "the bad probe")
        await inject(ns, "tap0", probe)
        with pytest.raises(OSError, match="duplicate"):
            await st.inet6.manage.wait_usable("tap0", parse_addr(target), timeout=5)
        assert c["dad_conflict_ns"] == 1
        assert st.inet6.counters["addr_duplicated"] == 1
        assert parse_addr(target) not in st.inet6.local
        # a duplicated address is never answered for
        na = c["out_na"]
        out = await nsout(ns, "ndisc6", "-1", "-r", "1", "-w", "500", target, "tap0")
        assert "Target link-layer address" not in out, out
        assert c["out_na"] == na


# -- ndisc6 --------------------------------------------------------------------------
async def test_ndisc6_gets_our_mac(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        await link_up(st, ns, "tap0")
        ll = await stack_ll_usable(st, "tap0")
        await add6(st, "tap0", "2001:db8:6::5/64")
        await run("ip", "-n", ns.name, "addr", "add", "2001:db8:6::1/64", "dev", "tap0",
                  "nodad")
        mac = st.interfaces["tap0"].mac.hex(":").upper()
        for target in ("2001:db8:6::5", ll):
            out = await nsout(ns, "ndisc6", "-1", "-r", "3", "-w", "1000", target, "tap0")
            assert f"Target link-layer address: {mac}".upper() in out.upper(), out
        # an address we do not hold: no answer
        out = await nsout(ns, "ndisc6", "-1", "-r", "1", "-w", "500", "2001:db8:6::77",
                          "tap0")
        assert "Target link-layer address" not in out, out
        # rdisc6 against a host: routers stay silent
        out = await nsout(ns, "rdisc6", "-1", "-r", "1", "-w", "500", "tap0")
        assert "Prefix" not in out, out


# -- NUD -----------------------------------------------------------------------------
async def test_nud_reachable_stale_probe_reachable_and_failed(netns6: NetNS) -> None:
    ns = netns6
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        st.sysctl.set("net.inet6.ip6.nd6_reachable", 2)
        st.sysctl.set("net.inet6.ip6.nd6_retrans_ms", 300)
        await link_up(st, ns, "tap0")
        await run("ip", "-n", ns.name, "addr", "add", "2001:db8:7::1/64", "dev", "tap0",
                  "nodad")
        await add6(st, "tap0", "2001:db8:7::2/64")
        kmac = bytes.fromhex((await kernel_mac(ns, "tap0")).replace(":", ""))
        peer = parse_addr("2001:db8:7::1")
        table = st.inet6.nd.table
        seen: list[str] = []
        probes: list[bytes | None] = []
        set_state = table._set_state
        solicit = st.inet6.nd.solicit

        def spy_state(e: Any, state: str) -> None:
            if e.addr == peer and (not seen or seen[-1] != state):
                seen.append(state)
            set_state(e, state)

        def spy_solicit(iface: Any, addr: Any, lladdr: bytes | None) -> None:
            if addr == peer:
                probes.append(lladdr)
            solicit(iface, addr, lladdr)

        table._set_state = spy_state  # type: ignore[method-assign]
        st.inet6.nd.solicit = spy_solicit  # type: ignore[method-assign]
        m = st.inet6.manage
        await m.ping(peer, timeout=2)
        assert seen[:1] == ["reachable"], seen  # (made incomplete, then answered)
        assert probes[0] is None  # multicast to the solicited-node group

        def state() -> str:
            e = table.entries.get(("tap0", peer))
            return e.state if e is not None else "-"
        await until(lambda: state() == "stale", 5, "reachable → stale")
        await m.ping(peer, timeout=2)
        await until(lambda: state() == "reachable", 3, "probe → reachable")
        assert seen[:4] == ["reachable", "stale", "probe", "reachable"], seen
        assert probes[1] == kmac  # NUD's probe is unicast to the cached address
        assert table.entries[("tap0", peer)].lladdr == kmac
        # the neighbour vanishes (its address removed): the probes go unanswered, the
        # entry goes, and resolving it afresh fails
        await run("ip", "-n", ns.name, "addr", "del", "2001:db8:7::1/64", "dev", "tap0")
        await until(lambda: state() == "stale", 5, "reachable → stale again")
        seen.clear()
        with pytest.raises(TimeoutError):
            await m.ping(peer, timeout=0.5)
        await until(lambda: state() in ("-", "failed"), 5, "the probe failing")
        assert seen[:1] == ["probe"], seen
        assert st.inet6.nd.counters["probe_failed"] >= 1
        with pytest.raises(OSError) as ei:
            await m.ping(peer, timeout=3)
        await until(lambda: state() == "failed", 3, "resolution failing")
        assert st.inet6.nd.counters["resolve_failed"] >= 1
        with pytest.raises(OSError) as ei:
            await m.ping(peer, timeout=1)
        assert ei.value.errno == errno.EHOSTUNREACH


# -- redirects -----------------------------------------------------------------------
async def test_redirect_from_linux_router(netns6: NetNS, netns_factory: Any) -> None:
    """The stack (2001:db8:30::2) and host D (2001:db8:31::5) share a bridged link
    with router R (2001:db8:30::1 and 2001:db8:31::1 on br0). The stack's default route
    is R; R forwards our first packet to D back out of br0 and redirects us to D on-link."""
    from scapy.layers.inet6 import (
        ICMPv6ND_Redirect,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptRedirectedHdr,
        IPv6,
    )
    from scapy.layers.l2 import Ether

    r = netns6
    d = netns_factory("d6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={r}")], inet6=True) as st:
        await veth(r, "vd", d, "eth0")
        await run("ip", "-n", r.name, "link", "add", "br0", "type", "bridge")
        for port in ("tap0", "vd"):
            await run("ip", "-n", r.name, "link", "set", port, "master", "br0")
        await run("ip", "-n", r.name, "link", "set", "br0", "up")
        await nsrun(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for a in ("2001:db8:30::1/64", "2001:db8:31::1/64"):
            await run("ip", "-n", r.name, "addr", "add", a, "dev", "br0", "nodad")
        await run("ip", "-n", d.name, "addr", "add", "2001:db8:31::5/64", "dev", "eth0",
                  "nodad")
        await run("ip", "-n", d.name, "-6", "route", "add", "default", "via",
                  "2001:db8:31::1")
        await link_up(st, r, "tap0")
        rll = await kernel_ll(r, "br0")
        m = st.inet6.manage
        m.set_iface_flag("tap0", "accept_rtadv", False)
        await add6(st, "tap0", "2001:db8:30::2/64")
        m.route_add(Prefix.parse("::/0"), parse_addr(rll), ifname="tap0")
        dst = parse_addr("2001:db8:31::5")
        assert m.route_get(dst)["gateway"] == rll
        # a forged redirect first: right form, but not from our first-hop router
        smac = bytes.fromhex((await kernel_mac(r, "br0")).replace(":", ""))
        ours = st.interfaces["tap0"].mac
        sll = await stack_ll_usable(st, "tap0")

        def redirect(src: str, hlim: int, target: str) -> bytes:
            return bytes(Ether(src=smac, dst=ours) /
                         IPv6(src=src, dst=sll, hlim=hlim) /
                         ICMPv6ND_Redirect(tgt=target, dst="2001:db8:31::5") /
                         ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:99") /
                         ICMPv6NDOptRedirectedHdr())
        c = st.inet6.nd.counters
        await inject(r, "br0", redirect("fe80::bad", 255, "fe80::99"))
        await until(lambda: c["drop_redirect_not_router"] == 1, 3, "the forged redirect")
        await inject(r, "br0", redirect(rll, 64, "fe80::99"))  # hop limit not 255
        await until(lambda: c["drop_bad_hlim"] >= 1, 3, "the off-link redirect")
        await inject(r, "br0", redirect("2001:db8:30::1", 255, "fe80::99"))  # not link-local
        await until(lambda: c["drop_redirect_bad"] == 1, 3, "the global-source redirect")
        await inject(r, "br0", redirect(rll, 255, "2001:db8:31::77"))  # target global, != dst
        await until(lambda: c["drop_redirect_bad"] == 2, 3, "the bad-target redirect")
        assert c["redirect_installed"] == 0
        assert m.route_get(dst)["gateway"] == rll
        # the real one
        rtt = await m.ping(dst, timeout=2)
        assert rtt > 0
        await until(lambda: c["redirect_installed"] == 1, 3, "R's redirect")
        got = m.route_get(dst)
        assert got["gateway"] == "link" and got["route"] == "2001:db8:31::5/128", got
        # and the next echo goes to D's own MAC
        dmac = bytes.fromhex((await kernel_mac(d, "eth0")).replace(":", ""))
        await m.ping(dst, timeout=2)
        e = st.inet6.nd.table.entries.get(("tap0", dst))
        assert e is not None and e.lladdr == dmac, e
        with trio.fail_after(5):
            out = await kping6(d, "2001:db8:30::2")
        assert " 0% packet loss" in out, out
