"""An independent ESP peer in the kernel's namespace (issue 18): scapy's
SecurityAssociation runs in a namespace the test creates (tests/ipsec/esp_peer.py 4 under
``ip netns exec``), on the kernel side of the stack's devnp-tap. It encrypts ICMP echo
requests and UDP datagrams to the stack and decrypts the stack's replies, for AES-GCM-16
(RFC 4106) and AES-CBC + HMAC-SHA-256-128 (RFC 4868), in transport mode (kernel ↔
stack) and tunnel mode (a host behind the kernel ↔ an address behind the stack); the
stack's keys and policies are setkey(8) statements through config/setkey."""

from __future__ import annotations

import pytest
import trio

from rmgr.nodes import Caller
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack
from tests.ipsec.esp_setup import PEER_KEYS, assert_no_drops, echo_through_peer, setkey_text

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "10.9.0.2", "10.9.0.1"  # the stack / the kernel on the TAP
BEHIND_STACK, BEHIND_KERNEL = "10.8.0.1", "10.9.9.9"  # tunnel mode's inner hosts
COUNT = 8  # ICMP echoes and UDP datagrams each


@pytest.mark.parametrize("suite", ["gcm", "cbc"])
@pytest.mark.parametrize("mode", ["transport", "tunnel"])
async def test_scapy_in_the_kernel_namespace(netns: NetNS, suite: str, mode: str) -> None:
    tunnel = mode == "tunnel"
    with trio.fail_after(50):
        async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
            st.interfaces["tap0"].set_flags(IFF_UP)
            st.inet.add_address("tap0", f"{ME}/24")
            netns.run("ip", "addr", "add", f"{KERNEL}/24", "dev", "tap0")
            netns.run("ip", "link", "set", "tap0", "up")
            if tunnel:
                st.inet.add_address("lo0", f"{BEHIND_STACK}/32")
                st.inet.route_add(f"{BEHIND_KERNEL}/32", KERNEL)
            ipsec = st.services.get(IPSEC)
            assert ipsec is not None
            ipsec.command(setkey_text(suite, mode, me=ME, peer=KERNEL, inner_me="10.8.0.0/24",
                                      inner_peer=f"{BEHIND_KERNEL}/32"), Caller())
            cfg = {"suite": suite, "mode": mode, "me": KERNEL, "stack": ME,
                   "inner_me": BEHIND_KERNEL if tunnel else KERNEL,
                   "inner_stack": BEHIND_STACK if tunnel else ME,
                   "spi_in": 0x1001, "spi_out": 0x1002, "count": COUNT, "keys": PEER_KEYS}
            results = await echo_through_peer(st, netns.name, 4, cfg)
            for res in results:  # and as IPv4 has it
                if res["kind"] == "icmp":
                    assert res["proto"] == 1 and res["icmp_type"] == 0
                else:
                    assert res["proto"] == 17
            c = ipsec.counters
            assert c["in_packets"] == c["out_packets"] == 2 * COUNT
            assert_no_drops(c)
            enc0 = st.interfaces["enc0"].counters
            assert enc0["ipackets"] == 2 * COUNT  # the inner datagrams came in on enc0
            sa_in = ipsec.sa(0x0A090002, 0x1001)
            assert sa_in is not None and sa_in.top == 2 * COUNT  # scapy's seq 1..16
