"""The IPv6 side of the config/ files in-process (no FUSE): interfaces' inet6 lines and
verbs, routes -inet6, ndp, ndp_prefixes/ndp_routers, rtadvd and ICMPv6 echo through the
ping door; every bad input answers its errno and a message saying what was wrong."""

from __future__ import annotations

import errno

import trio

from rmgr.nodes import IoRequest, OpenRequest, open_node
from stack.addr import format_addr
from stack.tools.cfgparse import keyvalues, stanzas, table
from tests.conftest import running_stack
from tests.tools.helpers import USER, node_at, read, write


async def test_interfaces_inet6_lines_and_verbs() -> None:
    async with running_stack(inet6=True) as st:
        w = write
        assert await w(st, "config/interfaces", "lo0 inet6 2001:db8::1/64") == (0, "ok\n")
        assert await w(st, "config/interfaces",
                       "lo0 inet6 2001:db8:1::2 prefixlen 80 pltime 100 vltime 200") == (0, "ok\n")
        assert await w(st, "config/interfaces", "lo0 alias 2001:db8:2::3") == (0, "ok\n")
        [lo] = stanzas(await read(st, "config/interfaces"))
        six = {a.split()[0]: a.split()[1:] for a in lo.all("inet6")}
        assert six["::1/128"] == ["pltime", "infty", "vltime", "infty"]
        assert six["2001:db8::1/64"] == ["pltime", "infty", "vltime", "infty"]
        assert six["2001:db8:2::3/64"]  # a bare address is a /64 (KAME)
        kv = six["2001:db8:1::2/80"]
        assert kv[0] == "pltime" and 98 <= int(kv[1]) <= 100 and 198 <= int(kv[3]) <= 200
        nd = lo.get("nd6").split()
        assert nd[nd.index("flags") + 1] == "accept_rtadv,auto_linklocal"
        assert await w(st, "config/interfaces", "lo0 -accept_rtadv") == (0, "ok\n")
        [lo] = stanzas(await read(st, "config/interfaces"))
        assert lo.get("nd6").endswith("flags auto_linklocal")
        assert await w(st, "config/interfaces", "lo0 delete 2001:db8:2::3") == (0, "ok\n")
        assert "2001:db8:2::3" not in await read(st, "config/interfaces")
        for cmd, code, msg in [
            ("lo0 inet6 10.0.0.1", errno.EAFNOSUPPORT, "10.0.0.1: not an IPv6 address"),
            ("lo0 inet6 2001:db8::9/129", errno.EINVAL, "bad prefix length: 129 (0..128)"),
            ("lo0 inet6 2001:db8::9 prefixlen x", errno.EINVAL, "bad prefix length: x"),
            ("lo0 inet6 2001:db8::9/64 prefixlen 64", errno.EINVAL, "not both"),
            ("lo0 inet6 2001:db8::zz", errno.EINVAL, "bad address: 2001:db8::zz"),
            ("lo0 inet6 fe80::1%tap0", errno.EINVAL, "scope %tap0 is not lo0"),
            ("lo0 inet6 fe80::1%", errno.EINVAL, "empty scope"),
            ("lo0 inet6 ff02::1", errno.EINVAL, "not a unicast address"),
            ("lo0 inet6 2001:db8::1/64", errno.EEXIST, "already on lo0"),
            ("lo0 inet6 2001:db8::9 pltime 9 vltime 5", errno.EINVAL, "pltime 9 exceeds vltime 5"),
            ("lo0 inet6", errno.EINVAL, "inet6 needs an argument"),
            ("lo0 delete 2001:db8::77", errno.EADDRNOTAVAIL, "2001:db8::77 is not an address"),
            ("tap9 inet6 2001:db8::9", errno.ENXIO, "no such interface: tap9"),
        ]:
            got, reply = await w(st, "config/interfaces", cmd)
            assert got == code and msg in reply, (cmd, got, reply)
        got, reply = await w(st, "config/interfaces", "lo0 inet6 2001:db8::9", USER)
        assert got == errno.EPERM


async def test_routes_inet6_commands_and_table() -> None:
    async with running_stack(inet6=True) as st:
        w = write
        await w(st, "config/interfaces", "lo0 inet6 2001:db8::1/64")
        assert await w(st, "config/routes", "add -inet6 default 2001:db8::5") == \
            (0, "add net default gateway 2001:db8::5\n")
        assert await w(st, "config/routes", "add 2001:db8:9::/48 fe80::1%lo0 metric 3") == \
            (0, "add net 2001:db8:9::/48 gateway fe80::1%lo0\n")
        assert await w(st, "config/routes", "add 2001:db8:8:: prefixlen 48 if lo0") == \
            (0, "add net 2001:db8:8::/48\n")
        assert await w(st, "config/routes", "add default 127.0.0.2") == \
            (0, "add net default gateway 127.0.0.2\n")
        rows = table(await read(st, "config/routes"))
        assert {"destination": "2001:db8:9::/48", "gateway": "fe80::1%lo0", "flags": "UGS",
                "metric": "3", "mtu": "", "use": "0", "interface": "lo0",
                "family": "inet6"} in rows
        defaults = {r["family"]: r["gateway"] for r in rows if r["destination"] == "default"}
        assert defaults == {"inet": "127.0.0.2", "inet6": "2001:db8::5"}
        info = keyvalues((await w(st, "config/routes", "get 2001:db8:9::1", USER))[1])
        assert info["route"] == "2001:db8:9::/48" and info["gateway"] == "fe80::1%lo0"
        assert info["source"] == "2001:db8::1" and info["interface"] == "lo0"
        info = keyvalues((await w(st, "config/routes", "get -inet6 2001:db8:7777::1"))[1])
        assert info["route"] == "default" and info["gateway"] == "2001:db8::5"
        for cmd, code, msg in [
            ("add 2001:db8:7::/48 fe80::1", errno.EINVAL, "is link-local: give its interface"),
            ("add 2001:db8:7::/48 fe80::1%tap9", errno.ENXIO, "no such interface: tap9"),
            ("add 2001:db8:7::/48 fe80::1%lo0 if tap0", errno.ENXIO, "no such interface: tap0"),
            ("add -inet6 2001:db8:7::/48 2001:db9::1", errno.ENETUNREACH,
             "not on a connected network"),
            ("add -inet6 2001:db8:7::/48 10.0.0.1", errno.EAFNOSUPPORT, "not an IPv6 address"),
            ("add 2001:db8:7::/200 2001:db8::5", errno.EINVAL, "bad prefix length: 200"),
            ("add 2001:db8:7::/48 2001:db8::5 netmask 255.0.0.0", errno.EINVAL,
             "netmask is for IPv4 routes"),
            ("add 2001:db8:7::/48", errno.EINVAL, "give a gateway or -interface IF"),
            ("delete -inet6 2001:db8:6::/48", errno.ESRCH, "no route to 2001:db8:6::/48"),
            ("get 2001:db8::zz", errno.EINVAL, "bad address"),
        ]:
            got, reply = await w(st, "config/routes", cmd)
            assert got == code and msg in reply, (cmd, got, reply)
        assert await w(st, "config/routes", "delete -inet6 default") == \
            (0, "delete net default\n")
        assert await w(st, "config/routes", "flush -inet6") == (0, "flushed 2\n")
        rows = table(await read(st, "config/routes"))
        assert [r["gateway"] for r in rows if r["destination"] == "default"] == ["127.0.0.2"]
        assert any(r["destination"] == "2001:db8::/64" and r["flags"] == "UC" for r in rows)


async def test_ndp_file() -> None:
    async with running_stack(inet6=True) as st:
        w = write
        await w(st, "config/interfaces", "lo0 inet6 2001:db8::1/64")
        assert await w(st, "config/ndp", "set 2001:db8::7 02:00:00:00:00:07") == (0, "ok\n")
        assert await w(st, "config/ndp", "set fe80::8%lo0 02:00:00:00:00:08 proxy") == \
            (0, "ok\n")
        rows = {r["address"]: r for r in table(await read(st, "config/ndp"))}
        assert rows["2001:db8::7"] == {"address": "2001:db8::7", "lladdr": "02:00:00:00:00:07",
                                       "interface": "lo0", "state": "permanent",
                                       "expires": "", "flags": ""}
        assert rows["fe80::8%lo0"]["flags"] == "proxy"
        for cmd, code, msg in [
            ("set fe80::7 02:00:00:00:00:07", errno.EINVAL, "is link-local: give its interface"),
            ("set 2001:db8::7 zz", errno.EINVAL, "bad MAC address: zz"),
            ("set 2001:db9::7 02:00:00:00:00:07", errno.ENETUNREACH,
             "not on a connected network"),
            ("set ff02::1 02:00:00:00:00:07 if lo0", errno.EINVAL, "not a unicast neighbour"),
            ("set 10.0.0.1 02:00:00:00:00:07", errno.EAFNOSUPPORT, "not an IPv6 address"),
            ("delete 2001:db8::99", errno.ENOENT, "2001:db8::99: no ND entry"),
            ("flush if tap9", errno.ENXIO, "no such interface: tap9"),
            ("frob", errno.EINVAL, "unknown ndp command: frob"),
        ]:
            got, reply = await w(st, "config/ndp", cmd)
            assert got == code and msg in reply, (cmd, got, reply)
        assert (await w(st, "config/ndp", "delete 2001:db8::7", USER))[0] == errno.EPERM
        assert await w(st, "config/ndp", "delete fe80::8%lo0") == (0, "ok\n")
        assert await w(st, "config/ndp", "flush") == (0, "flushed 0\n")  # permanent stay
        assert "2001:db8::7" in await read(st, "config/ndp")


async def test_ping_door_icmp6() -> None:
    async with running_stack(inet6=True) as st:
        await write(st, "config/interfaces", "lo0 inet6 2001:db8::1/64")
        h = await open_node(node_at(st, "config/ping"), OpenRequest(USER, 2))  # type: ignore[arg-type]

        async def ask(req: str) -> str:
            await h.write(memoryview(req.encode()), IoRequest(USER, False))
            return bytes(await h.read(4096, IoRequest(USER, False))).decode()

        line = await ask("::1 size 100 hlim 9")  # the reply's own hop limit is shown
        assert line.startswith("reply seq 0 from ::1 bytes 108 ttl 64 time_us "), line
        line = await ask("2001:db8::1 seq 7 tclass 32")
        assert line.startswith("reply seq 7 from 2001:db8::1 bytes 64 ttl "), line
        line = await ask("2001:db8:ff::1 timeout 0.3")
        assert line == "error seq 8 ENETUNREACH Network is unreachable\n", line
        for req, code, msg in [("fe80::1", errno.EINVAL, "is link-local"),
                               ("fe80::1%tap9", errno.ENXIO, "no such interface: tap9"),
                               ("fe80::1%lo0 if tap0", errno.EINVAL, "disagree"),
                               ("::1 size 70000", errno.EINVAL, "size 70000 out of range"),
                               ("10.0.0.1 if lo0", errno.EINVAL, "are for ICMPv6 echo")]:
            try:
                await h.write(memoryview(req.encode()), IoRequest(USER, False))
            except OSError as exc:
                assert exc.errno == code and msg in str(exc), (req, exc)
            else:
                raise AssertionError(f"{req} accepted")


async def test_rtadvd_file_and_ndp_prefixes_routers_between_two_stacks(tmp_path: object) -> None:
    """Stack A advertises on a vwire (config/rtadvd); stack B, a host, lists the router and
    the prefix in config/ndp_routers and config/ndp_prefixes and forms its address."""
    sock = f"{tmp_path}/wire.sock"
    async with running_stack(drivers=[("vwire", f"path={sock},name=vw0")], inet6=True) as a, \
            running_stack(drivers=[("vwire", f"peer={sock},name=vw0")], inet6=True) as b:
        w = write
        for s in (a, b):
            assert await w(s, "config/interfaces", "vw0 up") == (0, "ok\n")
        for cmd, code, msg in [
            ("enable vw0 mtu 100", errno.EINVAL, "between 1280 and vw0's MTU 1500"),
            ("enable vw0 interval 2", errno.EINVAL, "interval 2 out of range 4..1800"),
            ("enable vw0 lifetime 10 interval 60", errno.EINVAL, "below the interval"),
            ("enable vw0 prefix 2001:db8::", errno.EINVAL, "give its length"),
            ("enable vw0 prefix ff00::/8", errno.EINVAL, "not a global unicast prefix"),
            ("enable vw0 rdnss ff02::1", errno.EINVAL, "not a unicast address"),
            ("enable vw0 frob 1", errno.EINVAL, "unknown rtadvd option: frob"),
            ("enable vw9", errno.ENXIO, "no such interface: vw9"),
            ("disable vw0", errno.ENOENT, "not advertising on vw0"),
            ("start vw0", errno.EINVAL, "usage: enable IF"),
        ]:
            got, reply = await w(a, "config/rtadvd", cmd)
            assert got == code and msg in reply, (cmd, got, reply)
        assert (await w(a, "config/rtadvd", "enable vw0", USER))[0] == errno.EPERM
        assert await w(a, "config/rtadvd",
                       "enable vw0 prefix 2001:db8:ab::/64 rdnss 2001:db8:ab::53 interval 4 "
                       "lifetime 60 mtu 1400 other") == \
            (0, "enabled vw0 (advertisements start when net.inet6.ip6.forwarding=1)\n")
        [s] = stanzas(await read(a, "config/rtadvd"))
        assert s.name == "vw0" and s.get("state") == "waiting" and s.get("mtu") == "1400"
        assert s.all("prefix") == ["2001:db8:ab::/64"] and s.get("flags") == "other"
        assert (await w(a, "config/sysctl", "net.inet6.ip6.forwarding=1"))[0] == 0
        [s] = stanzas(await read(a, "config/rtadvd"))
        assert s.get("state") == "advertising"
        with trio.fail_after(15):
            while not table(await read(b, "config/ndp_routers")) or \
                    not table(await read(b, "config/ndp_prefixes")):
                await trio.sleep(0.1)
        [router] = table(await read(b, "config/ndp_routers"))
        a_ll = [ia.addr for ia in a.inet6.manage.addresses("vw0") if ia.addr >> 118 == 0x3FA]
        assert router["router"] == f"{format_addr(a_ll[0])}%vw0"
        assert router["interface"] == "vw0" and 50 <= int(router["expire"]) <= 60
        [prefix] = table(await read(b, "config/ndp_prefixes"))
        assert prefix["prefix"] == "2001:db8:ab::/64" and prefix["interface"] == "vw0"
        assert int(prefix["expire"]) > 2_000_000
        with trio.fail_after(5):
            while "2001:db8:ab:" not in await read(b, "config/interfaces"):
                await trio.sleep(0.1)
        [vw] = stanzas(await read(b, "config/interfaces"))[1:]
        slaac = [x for x in vw.all("inet6") if x.startswith("2001:db8:ab:")]
        assert slaac and "autoconf" in slaac[0].split(), slaac
        assert vw.get("nd6").split()[1] == "1400"  # linkmtu from the RA
        # stopping: a final RA with router lifetime 0, B drops the router at once
        assert await w(a, "config/rtadvd", "disable vw0") == (0, "disabled vw0\n")
        with trio.fail_after(5):
            while table(await read(b, "config/ndp_routers")):
                await trio.sleep(0.1)
        assert await read(a, "config/rtadvd") == ""


async def test_route_monitor_reports_inet6() -> None:
    async with running_stack(inet6=True) as st:
        h = await open_node(node_at(st, "config/route_monitor"), OpenRequest(USER, 0))  # type: ignore[arg-type]
        await write(st, "config/interfaces", "lo0 inet6 2001:db8::1/64")
        await write(st, "config/routes", "add 2001:db8:9::/48 fe80::1%lo0")
        await write(st, "config/interfaces", "lo0 delete 2001:db8::1")
        text = b""
        with trio.fail_after(2):
            while text.count(b"\n") < 5:
                text += bytes(await h.read(4096, IoRequest(USER, False)))
        lines = text.decode().splitlines()
        assert lines[:3] == [
            "RTM_NEWADDR: address 2001:db8::1/64 if lo0",
            "RTM_ADD: dst 2001:db8::/64 gateway link if lo0 metric 0 flags UC",
            "RTM_ADD: dst 2001:db8:9::/48 gateway fe80::1%lo0 if lo0 metric 0 flags UGS"]
        assert "RTM_DELADDR: address 2001:db8::1/64 if lo0" in lines[3:5], lines
        h.release()


async def test_sockets_file_names_ipv6_sockets() -> None:
    """config/sockets calls IPv6 sockets tcp6/udp6 (netstat -f inet6), endpoints in
    IPv6 text, beside the IPv4 ones."""
    from stack.addr import AF_INET, AF_INET6
    from stack.tools.netstat import bsd_endpoint

    async with running_stack(inet6=True) as st:
        await write(st, "config/interfaces", "lo0 inet6 2001:db8::1/64")
        t = st.transports
        u6 = t.udp.socket(AF_INET6)
        u6.bind(("::", 5353))
        u6b = t.udp.socket(AF_INET6)
        u6b.bind(("2001:db8::1", 6000))
        u4 = t.udp.socket(AF_INET)
        u4.bind(("0.0.0.0", 5354))
        l6 = t.tcp.socket(AF_INET6)
        l6.bind(("::1", 8080))
        l6.listen()
        rows = {(r["proto"], r["local"]): r for r in table(await read(st, "config/sockets"))}
        assert ("udp6", "*:5353") in rows and ("udp6", "2001:db8::1:6000") in rows, rows
        assert ("udp", "*:5354") in rows
        assert rows[("tcp6", "::1:8080")]["state"] == "LISTEN", rows
        assert bsd_endpoint("2001:db8::1:6000") == "2001:db8::1.6000"
        assert bsd_endpoint("::1:8080") == "::1.8080"
        for s in (u6, u6b, u4, l6):
            s.close()
