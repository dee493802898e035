"""The ESP row: TCP bulk through an ESP tunnel (AES-GCM-16 with a 128-bit key, RFC 4106,
on swcrypto) as a percentage of plain TCP over the same wire, measured in the same run.
Two stacks in this process joined by devnp-vwire (a UNIX datagram socket pair; no root
needed), each with a network behind it (an address on lo0) and the tunnel between their
vw0 addresses, keyed by setkey statements. Per run: plain TCP between the vw0 addresses,
then through the tunnel between the inner addresses, then plain again; the run's figure
is the ESP throughput over the mean of the plain runs around it. The kernel column is
empty: the kernel here has no ESP algorithms (``ip xfrm`` refuses rfc4106(gcm(aes))).

    .venv/bin/python -m bench --only esp --runs 1 --no-write
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # bench.workloads imports this module to list its workloads
    from bench.workloads import Params

A, B = "10.66.0.1", "10.66.0.2"
NET_A, NET_B = "10.1.0.1", "10.2.0.1"
KEY_AB = "0x" + bytes(range(1, 21)).hex()  # 128-bit key ‖ 4-byte salt
KEY_BA = "0x" + bytes(range(101, 121)).hex()


def _setkey(me: str, peer: str, mynet: str, peernet: str) -> str:
    return (f"add {A} {B} esp 0x2001 -m tunnel -E aes-gcm-16 {KEY_AB};"
            f"add {B} {A} esp 0x2002 -m tunnel -E aes-gcm-16 {KEY_BA};"
            f"spdadd {mynet}/24 {peernet}/24 any -P out ipsec esp/tunnel/{me}-{peer}/require;"
            f"spdadd {peernet}/24 {mynet}/24 any -P in ipsec esp/tunnel/{peer}-{me}/require;")


@contextlib.asynccontextmanager
async def _two_stacks() -> AsyncIterator[tuple[Any, Any]]:
    from rmgr.nodes import Caller
    from stack.core import Stack, StackConfig
    from stack.ipsec import IPSEC
    from stack.l2.iface import IFF_UP
    from stack.options import Options

    with tempfile.TemporaryDirectory(prefix="iopkt-bench-esp-") as tmp:
        wire = f"{tmp}/wire.sock"
        stacks: list[Any] = []
        async with trio.open_nursery() as nursery:
            try:
                for end in (f"path={wire}", f"peer={wire}"):
                    st = Stack(StackConfig(mount=False,
                                           tcpip=Options.parse("auto_linklocal=0"),
                                           drivers=[("vwire", Options.parse(f"{end},name=vw0"))]))
                    await nursery.start(st.run)
                    stacks.append(st)
                a, b = stacks
                for st, me, peer, net, peernet in ((a, A, B, NET_A, NET_B),
                                                   (b, B, A, NET_B, NET_A)):
                    st.interfaces["vw0"].set_flags(IFF_UP)
                    st.inet.add_address("vw0", f"{me}/24")
                    st.inet.add_address("lo0", f"{net}/32")
                    st.inet.route_add(f"{peernet.rsplit('.', 1)[0]}.0/24", peer)
                    st.services.get(IPSEC).command(_setkey(me, peer, net, peernet), Caller())
                with trio.fail_after(5):
                    while a.interfaces["vw0"].peer_addr is None:
                        await trio.sleep(0.005)
                yield a, b
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    for st in stacks:
                        await st.shutdown()
                nursery.cancel_scope.cancel()


async def _bulk(a: Any, b: Any, src: str, dst: str, port: int,
                seconds: float) -> tuple[float, int]:
    """(Mbit/s, bytes) from ``src`` (on a) to a sink at ``dst`` (on b) for ``seconds``."""
    lst = b.tcp.socket()
    lst.bind((dst, port))
    lst.listen(2)
    got = [0]

    async def sink() -> None:
        s, _ = await lst.accept()
        while d := await s.recv(1 << 20):
            got[0] += len(d)
        s.close()

    data = b"\xa5" * (256 * 1024)
    async with trio.open_nursery() as n:
        n.start_soon(sink)
        c = a.tcp.socket()
        c.bind((src, 0))
        await c.connect((dst, port))
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            await c.send(data)
        c.shutdown(socket.SHUT_WR)
    elapsed = time.perf_counter() - t0
    c.close()
    lst.close()
    return got[0] * 8 / elapsed / 1e6, got[0]


async def stack_esp(p: Params) -> dict[str, Any]:
    from bench.workloads import CPU_GB, PER_GB, cpu_s, per_unit
    from stack.ipsec import IPSEC

    async with _two_stacks() as (a, b):
        port = 7300
        off: list[float] = []
        esp: list[float] = []
        cpu: list[float] = []
        for i in range(p.runs + 1):
            off.append((await _bulk(a, b, A, B, port, p.seconds))[0])
            port += 1
            if i == p.runs:
                break
            c0 = cpu_s()
            mbit, nbytes = await _bulk(a, b, NET_A, NET_B, port, p.seconds)
            cpu.append(per_unit(cpu_s() - c0, nbytes, PER_GB))  # both stacks: one process
            esp.append(mbit)
            port += 1
        ca = a.services.get(IPSEC).counters
        packets, fallbacks = ca["out_packets"], a.crypto.counters["fallback_sw"]
    if not packets:
        raise RuntimeError("no packet went through ESP")
    base = [(off[i] + off[i + 1]) / 2 for i in range(p.runs)]
    from bench.common import median

    return {"metrics": {"pct": [e / b_ * 100 for e, b_ in zip(esp, base, strict=True)],
                        "plain": off, "esp": esp, "cpu": cpu},
            "cpu_unit": CPU_GB,
            "note": f"plain {median(off):,.0f} → ESP {median(esp):,.0f} Mbit/s (medians); "
                    f"two stacks over devnp-vwire, {packets} ESP packets out; CPU: both stacks "
                    "(one process), ESP runs"
                    + (f", {fallbacks} software fallbacks" if fallbacks else "")}
