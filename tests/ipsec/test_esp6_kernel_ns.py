"""ESP over IPv6 with the independent peer in the kernel's namespace: scapy's
SecurityAssociation runs in a namespace with IPv6 on (tests/ipsec/esp_peer6.py under
``ip netns exec``), on the kernel side of the stack's devnp-tap; it encrypts ICMPv6 echo
requests and UDP datagrams to the stack and decrypts the replies, for both suites, in
transport mode (kernel ↔ stack) and tunnel mode (a host behind the kernel ↔ an address
on the stack's lo0). Neighbor Discovery between the two passes beside the policies."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
import trio

from rmgr.nodes import Caller
from stack.addr import AF_INET6, Prefix, parse_addr
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "2001:db8:a::2", "2001:db8:a::1"  # the stack / the kernel on the TAP
BEHIND_STACK, BEHIND_KERNEL = "2001:db8:8::1", "2001:db8:9::9"  # tunnel's inner hosts
GCM_KEY = bytes(range(16)) + b"SALT"
CBC_KEY, HMAC_KEY = bytes(range(16, 32)), bytes(range(32, 64))
ALG = {"gcm": f"-E aes-gcm-16 0x{GCM_KEY.hex()}",
       "cbc": f"-E aes-cbc 0x{CBC_KEY.hex()} -A hmac-sha256 0x{HMAC_KEY.hex()}"}
PEER = os.path.join(os.path.dirname(__file__), "esp_peer6.py")
COUNT = 6  # ICMPv6 echoes and UDP datagrams each


def setkey_text(suite: str, mode: str) -> str:
    sas = (f"add {KERNEL} {ME} esp 0x1001 -m {mode} {ALG[suite]};\n"
           f"add {ME} {KERNEL} esp 0x1002 -m {mode} {ALG[suite]};\n")
    if mode == "tunnel":
        return sas + (
            f"spdadd {BEHIND_KERNEL}/128 2001:db8:8::/64 any -P in ipsec "
            f"esp/tunnel/{KERNEL}-{ME}/require;\n"
            f"spdadd 2001:db8:8::/64 {BEHIND_KERNEL}/128 any -P out ipsec "
            f"esp/tunnel/{ME}-{KERNEL}/require;\n")
    return sas + (f"spdadd {KERNEL} {ME} any -P in ipsec esp/transport//require;\n"
                  f"spdadd {ME} {KERNEL} any -P out ipsec esp/transport//require;\n")


async def udp_echo(st: Any, addr: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    s = st.udp.socket(AF_INET6)
    s.bind((addr, 7))
    task_status.started()
    try:
        while True:
            data, peer = await s.recvfrom(65535)
            await s.sendto(data, peer)
    finally:
        s.close()


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
            ipsec.command(setkey_text(suite, mode), Caller())
            cfg = {"suite": suite, "mode": mode, "me": KERNEL, "stack": ME, "ifname": "tap0",
                   "inner_me": BEHIND_KERNEL if tunnel else KERNEL,
                   "inner_stack": BEHIND_STACK if tunnel else ME,
                   "spi_in": 0x1001, "spi_out": 0x1002, "count": COUNT,
                   "keys": {"gcm": GCM_KEY.hex(), "cbc": CBC_KEY.hex(),
                            "hmac": HMAC_KEY.hex()}}
            async with trio.open_nursery() as n:
                await n.start(udp_echo, st, cfg["inner_stack"])
                r = await trio.run_process(
                    ["ip", "netns", "exec", netns.name, sys.executable, PEER, json.dumps(cfg)],
                    capture_stdout=True, capture_stderr=True, check=False)
                n.cancel_scope.cancel()
            assert r.returncode == 0, r.stderr.decode()[-2000:]
            results = [json.loads(line) for line in r.stdout.decode().splitlines()]
            assert len(results) == 2 * COUNT
            for res in results:
                assert "error" not in res, res
                assert res["src"] == cfg["inner_stack"] and res["dst"] == cfg["inner_me"]
                assert res["data"] == res["sent"]
                if res["kind"] == "icmp":
                    assert res["nh"] == 58 and res["kind_got"] == "echo-reply"
                else:
                    assert res["nh"] == 17 and res["sport"] == 7
                    assert res["dport"] == res["sport_sent"]
            assert [res["seq"] for res in results] == list(range(1, 2 * COUNT + 1))
            c = ipsec.counters
            assert c["in_packets"] == c["out_packets"] == 2 * COUNT
            for k in ("in_drop_auth_failed", "in_drop_bad_spi", "in_drop_policy_mismatch",
                      "in_drop_replay", "in_drop_bad_padding"):
                assert c[k] == 0, k
            assert st.interfaces["enc0"].counters["ipackets"] == 2 * COUNT
            sa_in = ipsec.sa(int(parse_addr(ME)), 0x1001)
            assert sa_in is not None and sa_in.family == 6 and sa_in.top == 2 * COUNT
