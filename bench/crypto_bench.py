"""The crypto rows: 1400-byte AES-GCM-128 AEAD requests per second through the crypto
framework, per provider (swcrypto; the cryptosim offload engine with no added latency,
so its thread hand-off is what is measured), with 256 requests kept in flight and
completions counted by their callbacks. The kernel column is the ceiling: the same
AEAD calls made directly on the ``cryptography`` library in a loop."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # bench.workloads imports this module to list its workloads
    from bench.workloads import Params

SIZE = 1400
WINDOW = 256


async def _provider_rate(provider: str, seconds: float) -> tuple[float, float]:
    """(requests/s, CPU seconds of this process per 1,000 requests) over ``seconds``."""
    from bench.workloads import PER_K, cpu_s, per_unit
    from stack.core import Stack, StackConfig
    from stack.crypto import Alg, CryptoRequest, SessionParams
    from stack.crypto.framework import ENCRYPT
    from stack.options import Options

    drivers = [("cryptosim", Options.parse("latency=0,depth=1024"))] \
        if provider != "swcrypto" else []
    st = Stack(StackConfig(mount=False, drivers=drivers,
                           tcpip=Options.parse("auto_linklocal=0")))
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        crypto = st.crypto
        s = crypto.new_session(SessionParams(cipher=Alg.AES_GCM_16, key=os.urandom(16),
                                             salt=os.urandom(4)), provider)
        payload = os.urandom(SIZE)
        done = [0]
        stop = [False]
        idle = trio.Event()
        inflight = [0]

        def cb(req: CryptoRequest) -> None:
            done[0] += 1
            if stop[0]:
                inflight[0] -= 1
                if not inflight[0]:
                    idle.set()
                return
            crypto.dispatch(CryptoRequest(s, ENCRYPT, payload, iv=bytes(8), aad=b"12345678",
                                          inject=SIZE, callback=cb))

        if provider == "swcrypto":
            # synchronous completion: a loop of batches, each completed in dispatch
            t0, c0 = time.perf_counter(), cpu_s()
            n = 0
            while time.perf_counter() - t0 < seconds:
                batch = [CryptoRequest(s, ENCRYPT, payload, iv=bytes(8), aad=b"12345678",
                                       inject=SIZE) for _ in range(WINDOW)]
                crypto.dispatch_batch(batch)
                n += len(batch)
                await trio.sleep(0)
            rate = n / (time.perf_counter() - t0)
            cpu = per_unit(cpu_s() - c0, n, PER_K)
        else:
            inflight[0] = WINDOW
            t0, c0 = time.perf_counter(), cpu_s()
            crypto.dispatch_batch([CryptoRequest(s, ENCRYPT, payload, iv=bytes(8),
                                                 aad=b"12345678", inject=SIZE, callback=cb)
                                   for _ in range(WINDOW)])
            await trio.sleep(seconds)
            n = done[0]
            rate = n / (time.perf_counter() - t0)
            cpu = per_unit(cpu_s() - c0, n, PER_K)
            stop[0] = True
            with trio.move_on_after(5):
                await idle.wait()
        await st.shutdown()
        nursery.cancel_scope.cancel()
    return rate, cpu


def _library_rate(seconds: float) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    g = AESGCM(os.urandom(16))
    payload = os.urandom(SIZE)
    nonce = os.urandom(12)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            g.encrypt(nonce, payload, b"12345678")
        n += 1000
    return n / (time.perf_counter() - t0)


async def _provider_runs(provider: str, p: Params) -> dict[str, Any]:
    runs = [await _provider_rate(provider, p.seconds) for _ in range(p.runs)]
    return {"metrics": {"rate": [r for r, _ in runs], "cpu": [c for _, c in runs]},
            "cpu_unit": "s/1k req"}


async def stack_crypto_sw(p: Params) -> dict[str, Any]:
    res = await _provider_runs("swcrypto", p)
    res["note"] = "swcrypto, completions in dispatch; kernel column: the library alone"
    return res


async def stack_crypto_sim(p: Params) -> dict[str, Any]:
    res = await _provider_runs("cryptosim0", p)
    res["note"] = f"-d cryptosim latency=0, {WINDOW} in flight; kernel column: the library"
    return res


def library_crypto(p: Params) -> dict[str, Any]:
    return {"metrics": {"rate": [_library_rate(p.seconds) for _ in range(p.runs)]}}
