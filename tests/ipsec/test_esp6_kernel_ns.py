"""ESP over IPv6 with the independent peer in the kernel's namespace: scapy's
SecurityAssociation runs in a namespace with IPv6 on (tests/ipsec/esp_peer.py 6 under
``ip netns exec``), on the kernel side of the stack's devnp-tap; it encrypts ICMPv6 echo
requests and UDP datagrams to the stack and decrypts the replies, for both suites, in
transport mode (kernel ↔ stack) and tunnel mode (a host behind the kernel ↔ an address
on the stack's lo0). Neighbor Discovery between the two passes beside the policies."""

from __future__ import annotations

import pytest
import trio

from rmgr.nodes import Caller
from stack.addr import Prefix, parse_addr
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack
from tests.ipsec.esp_setup import PEER_KEYS, assert_no_drops, echo_through_peer, setkey_text

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "2001:db8:a::2", "2001:db8:a::1"  # the stack / the kernel on the TAP
BEHIND_STACK, BEHIND_KERNEL = "2001:db8:8::1", "2001:db8:9::9"  # tunnel's inner hosts
COUNT = 6  # ICMPv6 echoes and UDP datagrams each


@pytest.mark.parametrize(("suite", "mode"), [("gcm", "transport"), ("cbc", "tunnel")])
async def test_scapy6_in_the_kernel_namespace(netns6: NetNS, suite: str, mode: str) -> None:
    netns = netns6
    tunnel = mode == "tunnel"
    with trio.fail_after(50):
        async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")],
                                 inet6=True) as st:
            st.sysctl.set("net.inet6.ip6.dad_count", 0)
            st.interfaces["tap0"].set_flags(IFF_UP)
            st.inet6.manage.add_address("tap0", Prefix.parse(f"{ME}/64"))
            netns.run("ip", "-6", "addr", "add", f"{KERNEL}/64", "dev", "tap0", "nodad")
            netns.run("ip", "link", "set", "tap0", "up")
            if tunnel:
                st.inet6.manage.add_address("lo0", Prefix.parse(f"{BEHIND_STACK}/128"),
                                            dad=False)
                st.inet6.manage.route_add(Prefix.parse(f"{BEHIND_KERNEL}/128"),
                                          parse_addr(KERNEL))
                netns.run("ip", "-6", "route", "add", "2001:db8:8::/64", "via", ME)
            ipsec = st.services.get(IPSEC)
            assert ipsec is not None
            ipsec.command(setkey_text(suite, mode, me=ME, peer=KERNEL,
                                      inner_me="2001:db8:8::/64",
                                      inner_peer=f"{BEHIND_KERNEL}/128"), Caller())
            cfg = {"suite": suite, "mode": mode, "me": KERNEL, "stack": ME, "ifname": "tap0",
                   "inner_me": BEHIND_KERNEL if tunnel else KERNEL,
                   "inner_stack": BEHIND_STACK if tunnel else ME,
                   "spi_in": 0x1001, "spi_out": 0x1002, "count": COUNT, "keys": PEER_KEYS}
            results = await echo_through_peer(st, netns.name, 6, cfg)
            for res in results:  # and as IPv6 has it
                if res["kind"] == "icmp":
                    assert res["nh"] == 58 and res["kind_got"] == "echo-reply"
                else:
                    assert res["nh"] == 17
            c = ipsec.counters
            assert c["in_packets"] == c["out_packets"] == 2 * COUNT
            assert_no_drops(c)
            assert st.interfaces["enc0"].counters["ipackets"] == 2 * COUNT
            sa_in = ipsec.sa(int(parse_addr(ME)), 0x1001)
            assert sa_in is not None and sa_in.family == 6 and sa_in.top == 2 * COUNT
