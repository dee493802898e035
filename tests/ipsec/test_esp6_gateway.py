"""The stack as an IPv6 IPsec gateway: datagrams it forwards meet the output hooks too
(``inet6_out_prefrag``), so a tunnel policy between a network behind the stack and a
host behind the ESP peer carries forwarded traffic. The peer is scapy's
SecurityAssociation in one namespace (tests/ipsec/esp_peer.py 6), the protected host a
kernel in another namespace routed through the stack; ICMPv6 echoes and UDP go
host-to-host through the tunnel both ways."""

from __future__ import annotations

import sys

import pytest
import trio

from rmgr.nodes import Caller
from stack.addr import Prefix, parse_addr
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import needs_tun, running_stack
from tests.ipsec.esp_setup import PEER_KEYS, peer_results, run_peer, setkey_text

pytestmark = [needs_tun, pytest.mark.root]

ME, PEER_GW = "2001:db8:a::2", "2001:db8:a::1"  # the stack / the ESP peer (tap0)
LAN, HOST = "2001:db8:8::254", "2001:db8:8::1"  # the stack / the protected host (tap1)
REMOTE = "2001:db8:9::9"  # the host behind the ESP peer (inside the tunnel)
UDP_ECHO = ("import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
            "s.bind(('::',7))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(d,a)\n")
COUNT = 4


async def test_forwarded_traffic_through_an_ipv6_esp_tunnel(netns_factory) -> None:
    a, b = netns_factory("g6a", ipv6=True), netns_factory("g6b", ipv6=True)
    with trio.fail_after(50):
        async with running_stack(drivers=[("tap", f"name=tap0,netns={a}"),
                                          ("tap", f"name=tap1,netns={b}")],
                                 tcpip="forward6", inet6=True) as st:
            st.sysctl.set("net.inet6.ip6.dad_count", 0)
            for dev, ns, mine, theirs in (("tap0", a, ME, PEER_GW), ("tap1", b, LAN, HOST)):
                st.interfaces[dev].set_flags(IFF_UP)
                st.inet6.manage.add_address(dev, Prefix.parse(f"{mine}/64"))
                ns.run("ip", "-6", "addr", "add", f"{theirs}/64", "dev", dev, "nodad")
                ns.run("ip", "link", "set", dev, "up")
            b.run("ip", "-6", "route", "add", "default", "via", LAN)
            st.inet6.manage.route_add(Prefix.parse(f"{REMOTE}/128"), parse_addr(PEER_GW))
            ipsec = st.services.get(IPSEC)
            assert ipsec is not None
            ipsec.command(setkey_text("gcm", "tunnel", me=ME, peer=PEER_GW,
                                      inner_me="2001:db8:8::/64", inner_peer=f"{REMOTE}/128",
                                      spi_in=0x2001, spi_out=0x2002), Caller())
            echo = await trio.lowlevel.open_process(
                ["ip", "netns", "exec", b.name, sys.executable, "-c", UDP_ECHO])
            try:
                await trio.sleep(0.3)
                cfg = {"suite": "gcm", "mode": "tunnel", "me": PEER_GW, "stack": ME,
                       "ifname": "tap0", "inner_me": REMOTE, "inner_stack": HOST,
                       "spi_in": 0x2001, "spi_out": 0x2002, "count": COUNT,
                       "keys": PEER_KEYS}
                r = await run_peer(a.name, 6, cfg)
            finally:
                echo.kill()
                await echo.wait()
            for res in peer_results(r, cfg):
                # the protected host answered, through the stack, inside the tunnel
                assert res["src"] == HOST and res["dst"] == REMOTE and res["data"] == res["sent"]
            c = ipsec.counters
            assert c["in_packets"] == c["out_packets"] == 2 * COUNT
            # both directions were forwarded: decrypted ones out of tap1, replies into enc0
            assert st.inet6.counters["forwarded"] >= 4 * COUNT
            assert st.inet6.counters["prefrag_rerouted"] >= 2 * COUNT
            assert st.interfaces["enc0"].counters["ipackets"] == 2 * COUNT
