"""SLAAC on an in-memory link with trio's mock clock (hours pass in no time): an RA's
autonomous prefix forms prefix + EUI-64 with its lifetimes, RFC 8981 temporary
addresses when asked (and preferred as sources), deprecation at the preferred lifetime,
removal at the valid lifetime, RFC 4862 §5.5.3(e)'s two-hour rule against an RA that
tries to cut the valid lifetime short, and an RA's router lifetime as a default route
that expires."""

from __future__ import annotations

import trio

from stack.addr import Addr, Prefix, parse_addr
from stack.core import Stack
from stack.inet6.ifaddr import ALL_NODES, eui64
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import pack_header
from stack.l2.iface import IFF_UP
from tests.conftest import running_stack
from tests.inet.conftest import FakeIface

MAC = bytes.fromhex("020000000a01")
ROUTER_MAC = bytes.fromhex("02000000c601")
ROUTER = parse_addr("fe80::1")
NET = parse_addr("2001:db8:5::")


def ra_frame(prefix: int, valid: int, preferred: int, lifetime: int = 1800) -> bytes:
    opts = [w6.opt_lla(w6.OPT_SLLA, ROUTER_MAC),
            w6.opt_prefix(prefix, 64, w6.PI_ONLINK | w6.PI_AUTO, valid, preferred)]
    msg = w6.ra(ROUTER, ALL_NODES, 64, 0, lifetime, 0, 0, opts)
    ip = pack_header(0, 0, len(msg), 58, 255, ROUTER, ALL_NODES)
    return b"\x33\x33\x00\x00\x00\x01" + ROUTER_MAC + b"\x86\xdd" + ip + msg


async def link_up(st: Stack) -> FakeIface:
    f = FakeIface("fake0", MAC)
    st.attach_interface(f)
    f.set_flags(IFF_UP)
    ll = Addr(parse_addr("fe80::") | eui64(MAC))
    await st.inet6.manage.wait_usable("fake0", ll)
    return f


def autoconf(st: Stack) -> dict[str, object]:
    return {("temp" if ia.temporary else "eui64"): ia
            for ia in st.inet6.manage.addresses("fake0") if ia.autoconf}


async def test_slaac_lifetimes_and_temporary_addresses(autojump_clock: object) -> None:
    async with running_stack(inet6=True) as st:
        st.sysctl.set("net.inet6.ip6.use_tempaddr", 1)
        f = await link_up(st)
        f.inject(ra_frame(NET, valid=7200 * 3, preferred=3600))
        await trio.sleep(2)  # DAD of both
        ac = autoconf(st)
        stable, temp = ac["eui64"], ac["temp"]
        assert stable.addr == NET | eui64(MAC) and stable.state == "preferred"  # type: ignore[attr-defined]
        assert temp.addr >> 64 == NET >> 64 and temp.addr != stable.addr  # type: ignore[attr-defined]
        assert temp.state == "preferred" and st.inet6.counters["tempaddr_added"] == 1  # type: ignore[attr-defined]
        # RFC 6724 rule 7 with use_tempaddr: the temporary address is the source
        dst = parse_addr("2001:db8:99::1")
        st.inet6.manage.route_add(Prefix.parse("::/0"), ifname="fake0")
        assert st.inet6.source_for(dst) == temp.addr  # type: ignore[attr-defined]
        # the default router from the RA
        assert [r["router"] for r in st.inet6.manage.router_list()] == ["fe80::1"]
        # preferred lifetime over: deprecated, not chosen for new traffic... both are
        await trio.sleep(3600)
        assert stable.state == "deprecated" and temp.state == "deprecated"  # type: ignore[attr-defined]
        # ... the router's lifetime (1800 s) ran out before that
        assert st.inet6.manage.router_list() == []
        # RFC 4862 §5.5.3(e): an RA cutting the valid lifetime to 60 s is held to 2 h
        # (the stable address; the temporary one is never extended past its own)
        f.inject(ra_frame(NET, valid=60, preferred=0))
        await trio.sleep(1)
        left = stable.valid_until - trio.current_time()  # type: ignore[attr-defined]
        assert 7190 < left <= 7200, left
        await trio.sleep(7200)
        assert not autoconf(st) and st.inet6.counters["addr_expired"] >= 2
        assert dst not in st.inet6.local and stable.addr not in st.inet6.local  # type: ignore[attr-defined]


async def test_prefix_refused_when_not_64_or_preferred_over_valid(autojump_clock: object) -> None:
    async with running_stack(inet6=True) as st:
        f = await link_up(st)
        f.inject(ra_frame(NET, valid=100, preferred=200))  # preferred > valid: ignored
        await trio.sleep(2)
        assert not autoconf(st) and st.inet6.counters["slaac_ignored"] == 1
        f.inject(ra_frame(NET, valid=0, preferred=0))  # valid 0 for an unknown prefix
        await trio.sleep(2)
        assert not autoconf(st)
