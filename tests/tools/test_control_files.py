"""The config/ files in-process (no FUSE): formats, errno + message replies, root-only
writes, the route monitor stream and the ping door."""

from __future__ import annotations

import errno

import trio

from rmgr.nodes import IoRequest, OpenRequest, open_node
from stack.tools.cfgparse import keyvalues, stanzas, table
from tests.conftest import running_stack
from tests.tools.helpers import ROOT, USER, node_at, read, write


async def test_interfaces_stanzas_and_commands() -> None:
    async with running_stack() as st:
        assert await write(st, "config/interfaces", "lo0 addr 10.1.1.1/24") == (0, "ok\n")
        [lo] = stanzas(await read(st, "config/interfaces"))
        assert lo.name == "lo0" and lo.get("mtu") == "33184"
        assert lo.get("flags").split()[1] == "UP,LOOPBACK,RUNNING,MULTICAST"
        assert "10.1.1.1/24" in lo.all("inet")  # loopback: no broadcast address
        assert set(lo.counters()) >= {"ipackets", "opackets", "ierrors", "oqdrops"}
        code, reply = await write(st, "config/interfaces", "tap9 up")
        assert (code, reply) == (errno.ENXIO, "error: ENXIO: no such interface: tap9\n")
        code, reply = await write(st, "config/interfaces", "lo0 addr 10.1.1.1/24")
        assert code == errno.EEXIST
        code, reply = await write(st, "config/interfaces", "lo0 mtu 20")
        assert code == errno.EINVAL and "mtu 20 out of range" in reply
        code, reply = await write(st, "config/interfaces", "lo0 frob")
        assert code == errno.EINVAL and "unknown ifconfig verb: frob" in reply
        code, reply = await write(st, "config/interfaces", "lo0 down", USER)
        assert code == errno.EPERM and "needs root" in reply
        code, _ = await write(st, "config/interfaces", "create null0")
        assert code == errno.ENXIO  # no devnp-null driver
        # set replaces the first address and puts it back when the new one is refused
        code, _ = await write(st, "config/interfaces", "lo0 set 224.0.0.1/24")
        assert code == errno.EINVAL
        assert "10.1.1.1/24" in (await read(st, "config/interfaces"))
        nic = keyvalues(await read(st, "config/nicinfo/lo0"))
        assert nic["driver"] == "lo" and nic["link"] == "up"


async def test_routes_arp_tables() -> None:
    async with running_stack() as st:
        await write(st, "config/interfaces", "lo0 addr 10.1.1.1/24")
        assert (await write(st, "config/routes", "add 10.9.0.0/16 10.1.1.2 metric 5"))[0] == 0
        rows = table(await read(st, "config/routes"))
        assert {"destination": "10.9.0.0/16", "gateway": "10.1.1.2", "flags": "UGS",
                "metric": "5", "mtu": "", "use": "0", "interface": "lo0",
                "family": "inet"} in rows
        code, reply = await write(st, "config/routes", "get 10.9.3.3")
        info = keyvalues(reply)
        assert code == 0 and info["route"] == "10.9.0.0/16" and info["gateway"] == "10.1.1.2"
        code, reply = await write(st, "config/routes", "get 10.200.0.1")
        assert code == errno.ESRCH
        code, reply = await write(st, "config/routes", "add 10.8.0.0/16 10.1.1.2", USER)
        assert code == errno.EPERM
        code, reply = await write(st, "config/routes", "get 10.9.3.3", USER)
        assert code == 0  # reading a route is not configuration
        code, reply = await write(st, "config/routes", "teleport 1.2.3.4")
        assert code == errno.EINVAL and "unknown route command" in reply
        assert (await write(st, "config/arp", "set 10.1.1.5 02:00:00:00:00:05"))[0] == 0
        [entry] = table(await read(st, "config/arp"))
        assert entry["mac"] == "02:00:00:00:00:05" and entry["state"] == "permanent"
        assert (await write(st, "config/arp", "flush")) == (0, "flushed 1\n")


async def test_stats_sockets_bridges_files() -> None:
    async with running_stack() as st:
        stats_dir = node_at(st, "config/stats")
        names = set(stats_dir.children())  # type: ignore[attr-defined]
        assert names >= {"ip", "icmp", "arp", "udp", "tcp", "ether", "stack"}
        await write(st, "config/interfaces", "lo0 addr 10.1.1.1/24")
        assert "addr_added" in await read(st, "config/stats/ip")
        assert (await read(st, "config/sockets")).split() == \
            ["proto", "recvq", "sendq", "local", "foreign", "state"]
        assert (await write(st, "config/interfaces", "create bridge0"))[0] == 0
        [br] = stanzas(await read(st, "config/bridges"))
        assert br.name == "bridge0" and br.get("timeout") == "1200" and br.get("maxaddr") == "100"
        code, reply = await write(st, "config/bridges", "bridge0 timeout 30 maxaddr 5")
        assert code == 0
        [br] = stanzas(await read(st, "config/bridges"))
        assert br.get("timeout") == "30" and br.get("maxaddr") == "5"
        code, reply = await write(st, "config/bridges", "lo0 add lo0")
        assert code == errno.EINVAL and "not a bridge" in reply


async def test_route_monitor_stream() -> None:
    async with running_stack() as st:
        h = await open_node(node_at(st, "config/route_monitor"), OpenRequest(ROOT, 0))  # type: ignore[arg-type]
        with trio.move_on_after(0.05) as scope:  # nothing yet: the read blocks
            await h.read(4096, IoRequest(ROOT, False))
        assert scope.cancelled_caught
        try:
            await h.read(4096, IoRequest(ROOT, True))
            raise AssertionError("non-blocking read of an empty monitor must fail")
        except OSError as exc:
            assert exc.errno == errno.EAGAIN
        await write(st, "config/interfaces", "lo0 addr 10.1.1.1/24")
        await write(st, "config/routes", "add 10.9.0.0/16 10.1.1.2")
        await write(st, "config/routes", "change 10.9.0.0/16 metric 3")
        await write(st, "config/interfaces", "lo0 mtu 1500")
        text = b""
        with trio.fail_after(2):
            while text.count(b"\n") < 5:
                text += bytes(await h.read(4096, IoRequest(ROOT, False)))
        lines = text.decode().splitlines()
        assert lines[0] == "RTM_NEWADDR: address 10.1.1.1/24 if lo0"
        assert lines[1] == "RTM_ADD: dst 10.1.1.0/24 gateway link if lo0 metric 0 flags UC"
        assert lines[2] == "RTM_ADD: dst 10.9.0.0/16 gateway 10.1.1.2 if lo0 metric 0 flags UGS"
        assert lines[3] == "RTM_CHANGE: dst 10.9.0.0/16 gateway 10.1.1.2 if lo0 metric 3 flags UGS"
        assert lines[4].startswith("RTM_IFINFO: if lo0 flags 0x8049") and lines[4].endswith("mtu 1500")
        h.release()


async def test_ping_door() -> None:
    async with running_stack() as st:
        h = await open_node(node_at(st, "config/ping"), OpenRequest(USER, 2))  # type: ignore[arg-type]
        req = IoRequest(USER, False)
        await h.write(memoryview(b"127.0.0.1 size 100 seq 7"), req)
        with trio.fail_after(2):
            line = bytes(await h.read(4096, req)).decode()
        w = line.split()
        assert w[:5] == ["reply", "seq", "7", "from", "127.0.0.1"] and w[6] == "108", line
        await h.write(memoryview(b"10.200.0.1"), req)  # no route
        with trio.fail_after(2):
            line = bytes(await h.read(4096, req)).decode()
        assert line.startswith("error seq 8 ENETUNREACH"), line
        for bad in (b"", b"10.0.0.300", b"127.0.0.1 size -1", b"127.0.0.1 color red"):
            try:
                await h.write(memoryview(bad), req)
                raise AssertionError(bad)
            except OSError as exc:
                assert exc.errno == errno.EINVAL
        h.release()


async def test_address_and_route_text_round_trips() -> None:
    """The files parse text into stack.addr values and the IPv4 layer's management API
    takes those: the forms BSD's tools write keep working, replies read as before."""
    async with running_stack() as st:
        w = write
        assert await w(st, "config/interfaces", "lo0 addr 10.2.0.1 netmask 0xffff0000") == \
            (0, "ok\n")
        assert await w(st, "config/interfaces", "lo0 alias 172.16.5.1") == (0, "ok\n")
        assert await w(st, "config/interfaces", "lo0 addr 192.0.2.9 netmask 255.255.255.0"
                       " broadcast 192.0.2.250") == (0, "ok\n")
        [lo] = stanzas(await read(st, "config/interfaces"))
        assert {"127.0.0.1/8", "10.2.0.1/16", "172.16.5.1/16", "192.0.2.9/24"} <= \
            set(lo.all("inet"))  # no length: classful (172.16/16)
        code, reply = await w(st, "config/interfaces", "lo0 addr 10.2.0.7 broadcast nope")
        assert code == errno.EINVAL and "bad broadcast address: nope" in reply
        # an IPv6 address through the same verb goes to the IPv6 layer
        assert await w(st, "config/interfaces", "lo0 addr 2001:db8::1/64") == (0, "ok\n")
        [lo] = stanzas(await read(st, "config/interfaces"))
        assert any(a.split()[0] == "2001:db8::1/64" for a in lo.all("inet6"))
        code, reply = await w(st, "config/interfaces", "lo0 delete 10.9.9.9")
        assert code == errno.EADDRNOTAVAIL and "10.9.9.9 is not an address of lo0" in reply
        assert await w(st, "config/interfaces", "lo0 -alias 172.16.5.1") == (0, "ok\n")
        assert "172.16.5.1/16" not in await read(st, "config/interfaces")
        # routes: replies name what was done, in the table's own form
        assert await w(st, "config/routes", "add default 10.2.0.2") == \
            (0, "add net default gateway 10.2.0.2\n")
        assert await w(st, "config/routes", "add -net 10.9.1.7 10.2.0.3 netmask 255.255.0.0") \
            == (0, "add net 10.9.0.0/16 gateway 10.2.0.3\n")
        assert await w(st, "config/routes", "add 10.7.0.0/16 -reject") == \
            (0, "add net 10.7.0.0/16\n")
        assert await w(st, "config/routes", "change 10.9.0.0/16 metric 4") == \
            (0, "change net 10.9.0.0/16\n")
        rows = {r["destination"]: r for r in table(await read(st, "config/routes"))}
        assert rows["10.9.0.0/16"]["metric"] == "4" and rows["10.7.0.0/16"]["flags"] == "USR"
        assert rows["default"]["gateway"] == "10.2.0.2"
        info = keyvalues((await w(st, "config/routes", "get 8.8.8.8"))[1])
        assert info["gateway"] == "10.2.0.2" and info["source"] == "10.2.0.1"
        code, reply = await w(st, "config/routes", "delete 10.5.0.0/16")
        assert code == errno.ESRCH and "no route to 10.5.0.0/16" in reply
        assert await w(st, "config/routes", "delete 10.9.0.0/16 10.2.0.3") == \
            (0, "delete net 10.9.0.0/16 gateway 10.2.0.3\n")
        assert await w(st, "config/routes", "flush") == (0, "flushed 2\n")
        code, reply = await w(st, "config/routes", "add 10.8.0.0/16 10.77.0.1")
        assert code == errno.ENETUNREACH and "not on a connected network" in reply
        code, reply = await w(st, "config/arp", "delete 10.2.0.50")
        assert code == errno.ENOENT and "10.2.0.50: no ARP entry" in reply


async def test_stats_walk_finds_counters_by_what_they_are() -> None:
    """Counter groups are found through the registered services' attributes, whatever
    the attributes are called (no list of names to keep in step)."""
    from stack.counters import Counters
    from stack.registry import ServiceKey

    class Part:
        def __init__(self) -> None:
            self.tally = Counters("dummy_part")

    class Service:
        def __init__(self) -> None:
            self.some_name = Counters("dummy")
            self.inner = Part()

    async with running_stack() as st:
        svc = Service()
        svc.some_name["hits"] += 2
        svc.inner.tally["seen"] += 1
        reg = st.services.register(ServiceKey[Service]("dummy"), svc)
        groups = st.control.stats.collect()
        assert groups["dummy"] == {"hits": 2} and groups["dummy_part"] == {"seen": 1}
        # the IPv4 layer's parts, found through the ipv4 service
        assert {"ip", "icmp", "arp", "reass", "route", "udp", "tcp", "raw"} <= set(groups)
        assert "dummy" in set(node_at(st, "config/stats").children())  # type: ignore[attr-defined]
        reg.remove()
        assert "dummy" not in st.control.stats.collect()
