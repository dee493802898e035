"""An independent ESP peer in the kernel's namespace (issue 18): scapy's
SecurityAssociation runs in a namespace the test creates (tests/ipsec/esp_peer.py under
``ip netns exec``), on the kernel side of the stack's devnp-tap. It encrypts ICMP echo
requests and UDP datagrams to the stack and decrypts the stack's replies, for AES-GCM-16
(RFC 4106) and AES-CBC + HMAC-SHA-256-128 (RFC 4868), in transport mode (kernel ↔
stack) and tunnel mode (a host behind the kernel ↔ an address behind the stack); the
stack's keys and policies are setkey(8) statements through config/setkey."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
import trio

from rmgr.nodes import Caller
from stack.ipsec import IPSEC
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "10.9.0.2", "10.9.0.1"  # the stack / the kernel on the TAP
BEHIND_STACK, BEHIND_KERNEL = "10.8.0.1", "10.9.9.9"  # tunnel mode's inner hosts
GCM_KEY = bytes(range(16)) + b"SALT"
CBC_KEY, HMAC_KEY = bytes(range(16, 32)), bytes(range(32, 64))
ALG = {"gcm": f"-E aes-gcm-16 0x{GCM_KEY.hex()}",
       "cbc": f"-E aes-cbc 0x{CBC_KEY.hex()} -A hmac-sha256 0x{HMAC_KEY.hex()}"}
PEER = os.path.join(os.path.dirname(__file__), "esp_peer.py")
COUNT = 8  # ICMP echoes and UDP datagrams each


def setkey_text(suite: str, mode: str) -> str:
    sas = (f"add {KERNEL} {ME} esp 0x1001 -m {mode} {ALG[suite]};\n"
           f"add {ME} {KERNEL} esp 0x1002 -m {mode} {ALG[suite]};\n")
    if mode == "tunnel":
        return sas + (
            f"spdadd {BEHIND_KERNEL}/32 10.8.0.0/24 any -P in ipsec "
            f"esp/tunnel/{KERNEL}-{ME}/require;\n"
            f"spdadd 10.8.0.0/24 {BEHIND_KERNEL}/32 any -P out ipsec "
            f"esp/tunnel/{ME}-{KERNEL}/require;\n")
    return sas + (f"spdadd {KERNEL} {ME} any -P in ipsec esp/transport//require;\n"
                  f"spdadd {ME} {KERNEL} any -P out ipsec esp/transport//require;\n")


async def udp_echo(st: Any, addr: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Bound to the address the peer talks to, so the replies come from it (an unbound
    socket's replies would take tap0's address, which no policy covers)."""
    s = st.udp.socket()
    s.bind((addr, 7))
    task_status.started()
    try:
        while True:
            data, addr = await s.recvfrom(65535)
            await s.sendto(data, addr)
    finally:
        s.close()


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
            ipsec.command(setkey_text(suite, mode), Caller())
            cfg = {"suite": suite, "mode": mode, "me": KERNEL, "stack": ME,
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
                # the reply, decrypted by scapy: from the stack's (inner) address to ours
                assert res["src"] == cfg["inner_stack"] and res["dst"] == cfg["inner_me"]
                assert res["data"] == res["sent"]
                if res["kind"] == "icmp":
                    assert res["proto"] == 1 and res["icmp_type"] == 0
                else:
                    assert res["proto"] == 17 and res["sport"] == 7
                    assert res["dport"] == res["sport_sent"]
            # the stack numbered its replies 1, 2, 3... on its outbound SA
            assert [res["seq"] for res in results] == list(range(1, 2 * COUNT + 1))
            c = ipsec.counters
            assert c["in_packets"] == c["out_packets"] == 2 * COUNT
            for k in ("in_drop_auth_failed", "in_drop_bad_spi", "in_drop_policy_mismatch",
                      "in_drop_replay", "in_drop_bad_padding"):
                assert c[k] == 0, k
            enc0 = st.interfaces["enc0"].counters
            assert enc0["ipackets"] == 2 * COUNT  # the inner datagrams came in on enc0
            sa_in = ipsec.sa(0x0A090002, 0x1001)
            assert sa_in is not None and sa_in.top == 2 * COUNT  # scapy's seq 1..16
