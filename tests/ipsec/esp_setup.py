"""What the ESP tests of both families share on the stack's side: the suites' keys, the
stack's SAs and policies as setkey(8) statements, and running the kernel-namespace peer
(tests/ipsec/esp_peer.py) and reading what it saw."""

from __future__ import annotations

import json
import os
import sys
from subprocess import CompletedProcess
from typing import Any

import trio

from stack.addr import AF_INET, AF_INET6

GCM_KEY = bytes(range(16)) + b"SALT"
CBC_KEY, HMAC_KEY = bytes(range(16, 32)), bytes(range(32, 64))
#: setkey's algorithm part of an SA, by suite: AES-GCM-16 (RFC 4106), AES-CBC with
#: HMAC-SHA-256-128 (RFC 4868)
ALG = {"gcm": f"-E aes-gcm-16 0x{GCM_KEY.hex()}",
       "cbc": f"-E aes-cbc 0x{CBC_KEY.hex()} -A hmac-sha256 0x{HMAC_KEY.hex()}"}
#: the keys as the peer's JSON configuration carries them
PEER_KEYS = {"gcm": GCM_KEY.hex(), "cbc": CBC_KEY.hex(), "hmac": HMAC_KEY.hex()}
PEER = os.path.join(os.path.dirname(__file__), "esp_peer.py")


def setkey_text(suite: str, mode: str, *, me: str, peer: str, inner_me: str = "",
                inner_peer: str = "", spi_in: int = 0x1001, spi_out: int = 0x1002) -> str:
    """The stack's SAs, ``peer`` → ``me`` under ``spi_in`` and back under ``spi_out``, in
    ``mode``, and the policies that require them, as setkey(8) statements: in transport
    mode for the traffic between the two ends, in tunnel mode for that between the
    selectors ``inner_peer`` and ``inner_me`` (address/prefix length). The addresses
    say the family."""
    sas = (f"add {peer} {me} esp {spi_in:#x} -m {mode} {ALG[suite]};\n"
           f"add {me} {peer} esp {spi_out:#x} -m {mode} {ALG[suite]};\n")
    if mode == "tunnel":
        return sas + (
            f"spdadd {inner_peer} {inner_me} any -P in ipsec "
            f"esp/tunnel/{peer}-{me}/require;\n"
            f"spdadd {inner_me} {inner_peer} any -P out ipsec "
            f"esp/tunnel/{me}-{peer}/require;\n")
    return sas + (f"spdadd {peer} {me} any -P in ipsec esp/transport//require;\n"
                  f"spdadd {me} {peer} any -P out ipsec esp/transport//require;\n")


async def udp_echo(st: Any, family: int, addr: str,
                   task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The stack's UDP echo for the peer's datagrams, bound to the address the peer
    talks to, so the replies come from it (an unbound socket's replies would take the
    TAP's address, which no policy covers)."""
    s = st.udp.socket(family)
    s.bind((addr, 7))
    task_status.started()
    try:
        while True:
            data, peer = await s.recvfrom(65535)
            await s.sendto(data, peer)
    finally:
        s.close()


async def run_peer(ns: str, family: int, cfg: dict[str, Any]) -> CompletedProcess[bytes]:
    """Run esp_peer.py in namespace ``ns`` for ``family`` (4 or 6) with ``cfg``."""
    return await trio.run_process(
        ["ip", "netns", "exec", ns, sys.executable, PEER, str(family), json.dumps(cfg)],
        capture_stdout=True, capture_stderr=True, check=False)


def peer_results(r: CompletedProcess[bytes], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The peer's ``2 * cfg["count"]`` exchanges (an echo, then a UDP datagram, each
    time), every one answered: none says why nothing came back, or came back wrong."""
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    results = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(results) == 2 * cfg["count"]
    for res in results:
        assert "error" not in res, res
    return results


async def echo_through_peer(st: Any, ns: str, family: int,
                            cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the peer in ``ns`` with the stack's UDP echo on ``cfg["inner_stack"]``; its
    exchanges, every reply checked as both families have it: from the stack's (inner)
    address to the peer's, with the data sent, a UDP one from the echo port to the
    port it came from, all numbered 1, 2, 3... on the stack's outbound SA."""
    async with trio.open_nursery() as n:
        await n.start(udp_echo, st, AF_INET6 if family == 6 else AF_INET, cfg["inner_stack"])
        r = await run_peer(ns, family, cfg)
        n.cancel_scope.cancel()
    results = peer_results(r, cfg)
    for res in results:
        # the reply, decrypted by scapy: from the stack's (inner) address to ours
        assert res["src"] == cfg["inner_stack"] and res["dst"] == cfg["inner_me"]
        assert res["data"] == res["sent"]
        if res["kind"] != "icmp":
            assert res["sport"] == 7 and res["dport"] == res["sport_sent"]
    # the stack numbered its replies 1, 2, 3... on its outbound SA
    assert [res["seq"] for res in results] == list(range(1, 2 * cfg["count"] + 1))
    return results


def assert_no_drops(counters: Any) -> None:
    """The stack's IPsec counters show no inbound packet dropped."""
    for k in ("in_drop_auth_failed", "in_drop_bad_spi", "in_drop_policy_mismatch",
              "in_drop_replay", "in_drop_bad_padding"):
        assert counters[k] == 0, k
