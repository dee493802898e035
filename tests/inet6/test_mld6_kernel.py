"""MLD with Linux: the stack's MLDv2 reports for its solicited-node groups on the wire
(decoded by tshark with no malformed packet or expert warning), and a Linux bridge with
multicast snooping and a querier between the stack and a kernel namespace: the queries
are answered, the bridge's group database lists our groups on our port, and ND (so
ping6) works through it with flooding of unregistered multicast turned off on our port —
only because our reports registered the groups."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest
import trio

from stack.addr import Prefix, parse_addr
from stack.inet6.ifaddr import solicited_node
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import (
    add6,
    kping6,
    link_up,
    nsout,
    process,
    run,
    stack_ll_usable,
    stop,
    until,
    until_async,
    veth,
)

pytestmark = [needs_tun, pytest.mark.root]


def sn(addr: str) -> str:
    import ipaddress
    return str(ipaddress.IPv6Address(int(solicited_node(parse_addr(addr)))))


async def test_mldv2_reports_on_the_wire_decode_cleanly(netns6: NetNS) -> None:
    ns = netns6
    d = tempfile.mkdtemp(prefix="iopkt-mld-")
    pcap = os.path.join(d, "mld.pcap")
    try:
        async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")],
                                 inet6=True) as st:
            await run("ip", "-n", ns.name, "link", "set", "tap0", "up")
            async with process(ns, "tcpdump", "-n", "-U", "-i", "tap0", "-w", pcap,
                               "icmp6 or (ip6 and ip6[6] == 0)") as td:
                await until(lambda: os.path.exists(pcap), 5, "tcpdump started")
                await trio.sleep(0.5)
                await link_up(st, ns, "tap0")
                ll = await stack_ll_usable(st, "tap0")
                await add6(st, "tap0", "2001:db8:40::2/64")
                c = st.inet6.mld.counters
                await until(lambda: c["out_report"] >= 4, 5, "our reports")
                await trio.sleep(1.2)  # the robustness retransmissions
                stop(td)
            mac = st.interfaces["tap0"].mac.hex(":")
        r = await run("tshark", "-n", "-r", pcap, "-Y", f"eth.src == {mac} && icmpv6.type == 143",
                      "-T", "fields", "-E", "separator=|", "-e", "ipv6.src", "-e", "ipv6.dst",
                      "-e", "ipv6.hlim", "-e", "ipv6.opt.type",
                      "-e", "icmpv6.mldr.mar.record_type",
                      "-e", "icmpv6.mldr.mar.multicast_address")
        rows = [ln.split("|") for ln in r.stdout.decode().splitlines() if ln]
        assert rows, r.stderr.decode()
        groups: dict[str, set[str]] = {}
        for src, dst, hlim, opt, rtype, group in rows:
            assert dst == "ff02::16" and hlim == "1", rows
            assert "0x05" in opt.split(","), rows  # router alert (and a PadN)
            assert src in ("::", ll), rows
            for t, g in zip(rtype.split(","), group.split(","), strict=True):
                groups.setdefault(g, set()).add(t)
        # CHANGE_TO_EXCLUDE {} (4) for both solicited-node groups; never ff02::1
        assert "4" in groups.get(sn(ll), set()), groups
        assert "4" in groups.get(sn("2001:db8:40::2"), set()), groups
        assert "ff02::1" not in groups
        # nothing of ours malformed or warned about
        r = await run("tshark", "-n", "-r", pcap, "-Y",
                      f"eth.src == {mac} && (_ws.malformed || _ws.expert.severity >= warning)")
        assert r.stdout.decode().strip() == "", r.stdout.decode()
        r = await run("tshark", "-n", "-r", pcap, "-Y", f"eth.src == {mac}")
        assert "MLDv2" in r.stdout.decode() or "Multicast Listener Report" in r.stdout.decode()
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


@pytest.mark.parametrize("version", [2, 1])
async def test_snooping_bridge_with_querier(netns6: NetNS, netns_factory: Any,
                                            version: int) -> None:
    sw = netns6
    host = netns_factory("h6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={sw}")], inet6=True) as st:
        await veth(sw, "vh", host, "eth0")
        # queries every 2 s, answers within 1 s (centiseconds)
        await run("ip", "-n", sw.name, "link", "add", "br0", "type", "bridge",
                  "mcast_snooping", "1", "mcast_querier", "1", "mcast_mld_version", str(version),
                  "mcast_query_interval", "200", "mcast_startup_query_interval", "100",
                  "mcast_query_response_interval", "100")
        for port in ("tap0", "vh"):
            await run("ip", "-n", sw.name, "link", "set", port, "master", "br0")
        # our port gets only the multicast it registered for
        await run("ip", "-n", sw.name, "link", "set", "tap0", "type", "bridge_slave",
                  "mcast_flood", "off")
        await run("ip", "-n", sw.name, "link", "set", "br0", "up")
        await run("ip", "-n", host.name, "addr", "add", "2001:db8:41::1/64", "dev", "eth0",
                  "nodad")
        await link_up(st, sw, "tap0")
        ll = await stack_ll_usable(st, "tap0")
        await add6(st, "tap0", "2001:db8:41::2/64")
        c = st.inet6.mld.counters
        reports = c["out_report"] + c["out_done"]
        await until(lambda: c["query_general"] >= 1, 10, "a general query from the bridge")
        await until(lambda: c["out_report"] > reports, 5, "our answer")
        if version == 1:
            assert st.inet6.mld.v1_until.get("tap0", 0) > 0

        async def registered() -> str | None:
            out = await nsout(sw, "bridge", "mdb", "show", "dev", "br0")
            ok = all(f"port tap0 grp {g}" in out for g in (sn(ll), sn("2001:db8:41::2")))
            return out if ok else None
        await until_async(registered, 10, "our groups in the bridge's mdb")
        # ND through the snooping bridge, global and link-local (Linux's bridge starts
        # forwarding by its group database some seconds after its querier starts:
        # until then it floods, but not to our port)
        async def pings() -> str | None:
            out = await kping6(host, "2001:db8:41::2", count=1)
            return out if " 0% packet loss" in out else None
        await until_async(pings, 25, "ping6 through the snooping bridge", step=0.5)
        out = await kping6(host, "2001:db8:41::2")
        assert " 0% packet loss" in out, out
        out = await kping6(host, f"{ll}%eth0")
        assert " 0% packet loss" in out, out
        # an address we hold but never reported is unreachable through this bridge:
        # what made the difference was our report
        st.inet6.mld._send = lambda *a, **k: None  # type: ignore[method-assign]
        st.inet6.manage.add_address("tap0", Prefix.parse("2001:db8:41::77/64"), dad=False)
        out = await kping6(host, "2001:db8:41::77", count=2)
        assert "100% packet loss" in out, out
