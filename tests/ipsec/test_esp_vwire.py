"""20 MB of TCP through an ESP tunnel (AES-GCM-16, RFC 4106) between two stacks over
devnp-vwire (issue 18): each stack has an inner network behind it (an address on lo0),
the tunnel joins the two vw0 addresses, keys and policies go in as setkey statements.
On swcrypto; on ``-d cryptosim`` completing out of order with latency (requests
asynchronous both ways, the receiver's anti-replay window sees the reordering); and with
the engine failing requests, which the framework redoes in software (the fallback
counters move). The sha256 of what arrives equals what was sent every time. No root
needed: the wire is a UNIX datagram socket pair."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import trio

from rmgr.nodes import Caller
from stack.addr import parse_addr
from stack.ipsec import IPSEC, Ipsec
from stack.l2.iface import IFF_UP
from tests.conftest import running_stack

A, B = "10.66.0.1", "10.66.0.2"  # the tunnel's endpoints on vw0
NET_A, NET_B = "10.1.0", "10.2.0"  # the networks behind them (x.1 on lo0)
KEY_AB = "0x" + bytes(range(1, 21)).hex()  # 128-bit key ‖ 4-byte salt
KEY_BA = "0x" + bytes(range(101, 121)).hex()
SIZE = 20 * 1024 * 1024


def setkey_text(me: str, peer: str, mynet: str, peernet: str) -> str:
    """One side's SAs (both directions) and tunnel policies, as setkey(8) statements."""
    return (f"add {A} {B} esp 0x2001 -m tunnel -E aes-gcm-16 {KEY_AB};\n"
            f"add {B} {A} esp 0x2002 -m tunnel -E aes-gcm-16 {KEY_BA};\n"
            f"spdadd {mynet}.0/24 {peernet}.0/24 any -P out ipsec "
            f"esp/tunnel/{me}-{peer}/require;\n"
            f"spdadd {peernet}.0/24 {mynet}.0/24 any -P in ipsec "
            f"esp/tunnel/{peer}-{me}/require;\n")


def ipsec_of(st: Any) -> Ipsec:
    ipsec = st.services.get(IPSEC)
    assert ipsec is not None
    return ipsec  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def tunnel(tmp_path: Any, engine: str = "") -> AsyncIterator[tuple[Any, Any]]:
    sock = str(tmp_path / "wire.sock")
    extra = [("cryptosim", engine)] if engine else []
    async with running_stack(drivers=[("vwire", f"path={sock},name=vw0"), *extra]) as a, \
            running_stack(drivers=[("vwire", f"peer={sock},name=vw0"), *extra]) as b:
        for st, addr, net, peer, peernet in ((a, A, NET_A, B, NET_B), (b, B, NET_B, A, NET_A)):
            st.interfaces["vw0"].set_flags(IFF_UP)
            st.inet.add_address("vw0", f"{addr}/24")
            st.inet.add_address("lo0", f"{net}.1/32")
            st.inet.route_add(f"{peernet}.0/24", peer)
            ipsec_of(st).command(setkey_text(addr, peer, net, peernet), Caller())
        with trio.fail_after(2):  # the listener learns the peer from its hello
            while a.interfaces["vw0"].peer_addr is None:
                await trio.sleep(0.005)
        yield a, b


async def transfer(a: Any, b: Any, size: int) -> bytes:
    """``size`` bytes from a's inner network to b's; returns what b received."""
    data = random.randbytes(size)
    lst = b.tcp.socket()
    lst.bind((f"{NET_B}.1", 7100))
    lst.listen(4)
    got = bytearray()

    async def server() -> None:
        s, peer = await lst.accept()
        assert peer.addr == parse_addr(f"{NET_A}.1")
        while chunk := await s.recv(1 << 20):
            got.extend(chunk)
        s.close()

    async with trio.open_nursery() as n:
        n.start_soon(server)
        c = a.tcp.socket()
        c.bind((f"{NET_A}.1", 0))
        await c.connect((f"{NET_B}.1", 7100))
        await c.send(data)
        c.shutdown(1)
        c.close()
    lst.close()
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return bytes(got)


async def settle(*stacks: Any) -> None:
    """Until no request is in flight on any provider (the last ACKs' packets)."""
    with trio.fail_after(5):
        while any(p.stats.queue_depth for st in stacks for p in st.crypto.providers):
            await trio.sleep(0.01)


def check_tunnel_carried(a: Any, b: Any, size: int) -> None:
    ca, cb = ipsec_of(a).counters, ipsec_of(b).counters
    # every byte went through the SAs (inner datagrams: data plus TCP/IP headers)
    assert cb["in_bytes"] > size and ca["out_bytes"] > size
    assert cb["in_packets"] > size // 1500 and ca["out_packets"] > size // 1500
    for c in (ca, cb):
        for k in ("in_drop_policy_mismatch", "in_drop_auth_failed", "in_drop_bad_spi",
                  "in_drop_bad_padding", "in_drop_crypto", "out_drop_crypto", "out_drop_no_sa"):
            assert c[k] == 0, (k, c.snapshot())
    sa_in = ipsec_of(b).sa(0x0A420002, 0x2001)
    assert sa_in is not None and sa_in.packets == cb["in_packets"]


async def test_20mb_through_esp_tunnel(tmp_path: Any) -> None:
    with trio.fail_after(55):
        async with tunnel(tmp_path) as (a, b):
            await transfer(a, b, SIZE)
            await settle(a, b)
            check_tunnel_carried(a, b, SIZE)
            for st in (a, b):
                assert st.crypto.provider("swcrypto").stats.ops > 10_000
                assert ipsec_of(st).counters["in_async"] == 0
            # path MTU through the SA: the first full segment's ESP packet (1448 bytes of
            # data + 52 of headers + 56 of ESP and outer header) did not fit vw0's 1500,
            # a's TCP was told once (the inner MTU, 1446) and its later segments fit: the
            # ESP packets are not fragmented
            assert ipsec_of(a).counters["out_pmtu_local"] == 1
            assert a.tcp.counters["pmtu_reduced"] == 1
            assert a.inet.counters["out_fragmented"] <= 64  # those already sent (the window)
            assert a.inet.route_mtu(f"{NET_B}.1") == 1446


async def test_20mb_on_the_engine_out_of_order(tmp_path: Any) -> None:
    """-d cryptosim on both stacks, completing out of order with latency: every ESP
    packet is encrypted and decrypted asynchronously, sent in the order the engine
    finishes, and the data is intact."""
    with trio.fail_after(58):
        async with tunnel(tmp_path, "latency=0.2,jitter=0.1,reorder") as (a, b):
            await transfer(a, b, SIZE)
            await settle(a, b)
            check_tunnel_carried(a, b, SIZE)
            for st in (a, b):
                sim = st.crypto.provider("cryptosim0")
                assert sim is not None and sim.stats.ops > 10_000
                assert sim.counters["reordered"] > 0
                assert st.crypto.counters["fallback_sw"] == 0
                c = ipsec_of(st).counters
                assert c["out_async"] >= c["out_packets"] and c["in_async"] >= c["in_packets"]
            # the engine's completion order reached the receiver: its TCP queued segments
            # that came out of order, and the anti-replay window took them (the wire
            # duplicates nothing: no replay)
            assert b.tcp.counters["ooo_segs_in"] > 0
            assert ipsec_of(b).counters["in_drop_replay"] == 0


async def test_20mb_with_engine_faults_falls_back(tmp_path: Any) -> None:
    """The engine fails a fifth of the requests (EIO): the framework redoes each in
    software, the transfer is intact, and the fallback counters say so. A request the
    engine refuses because its ring is full (ENOBUFS, a burst of more than ``depth``
    within the latency) takes the same way, so it is counted on both sides too."""
    with trio.fail_after(55):
        async with tunnel(tmp_path, "latency=0.2,fault=0.2") as (a, b):
            await transfer(a, b, SIZE)
            await settle(a, b)
            check_tunnel_carried(a, b, SIZE)
            for st in (a, b):
                crypto = st.crypto
                sim = crypto.provider("cryptosim0")
                assert sim is not None
                faults = sim.counters["faults_injected"]
                assert faults > 1000
                redone = faults + sim.counters["ring_full"]
                assert crypto.counters["provider_errors"] == redone
                assert crypto.counters["fallback_sw"] == redone
                assert sim.stats.errors == redone
                assert crypto.provider("swcrypto").stats.ops == redone
                assert "fallback_sw" in crypto.render()
