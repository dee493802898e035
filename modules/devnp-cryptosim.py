"""devnp-cryptosim: a simulated crypto offload engine (a DMA engine's behaviour).

    io-pkt -d cryptosim [name=cryptosim0,latency=MS,jitter=MS,depth=N,reorder,
                         fault=P,priority=N,max_len=BYTES]
    io-pkt mount -T io-pkt devnp-cryptosim latency=1,reorder

It registers with the crypto framework (the ``CRYPTO`` service) as an offload provider
of AES-GCM, AES-CCM, ChaCha20-Poly1305, AES-CBC, AES-CTR and HMAC-SHA1/SHA2, with a
priority above the software one, so new sessions land on it. Requests go into a ring of
``depth`` slots (a full ring refuses the request: the framework does it in software and
counts it) and are worked by the engine's own thread (started at load, joined at
unload): each completes ``latency`` ± ``jitter`` ms after it was submitted; with
``reorder`` the ones ready together complete in random order (out-of-order completion);
``fault=P`` fails each request with EIO with probability P (the framework falls back to
software). Completions are handed to the stack's trio run through its trio token.

``<prefix>/dev/socket/config/cryptosim`` shows the engine's settings and counters; a
write changes a setting: ``latency MS``, ``jitter MS``, ``reorder on|off``, ``fault P``,
``fail N`` (the next N requests fail).
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from rmgr.nodes import Caller, ControlFile
from stack.counters import Counters, names
from stack.crypto.algs import ALGS, Alg
from stack.crypto.framework import AlgLimits, CryptoRequest, Provider, SessionParams
from stack.crypto.swcrypto import SwSession, transform
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.options import OptionError
from stack.registry import Registration
from stack.services import CRYPTO

COUNTERS: frozenset[str] = names("""
    submitted completed ring_full faults_injected reordered batches stopped_pending
    deliver_failed
""")

Done = Callable[[CryptoRequest], None]


class CryptoSim(Provider):
    software = False

    def __init__(self, name: str, *, latency: float, jitter: float, depth: int,
                 reorder: bool, fault: float, priority: int, max_len: int,
                 token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self.name = name
        self.priority = priority
        self.algs = {a: AlgLimits(max_len=max_len) for a in ALGS if a != Alg.AES_KEYWRAP}
        self.latency = latency
        self.jitter = jitter
        self.depth = depth
        self.reorder = reorder
        self.fault = fault
        self.fail_next = 0
        self.counters = Counters("cryptosim", COUNTERS)
        self.token = token
        self._cond = threading.Condition()
        #: the ring: (due time, request, session state, completion)
        self._ring: list[tuple[float, CryptoRequest, SwSession, Done]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._worker, name=f"{name}-engine",
                                        daemon=True)
        self._rng = random.Random()

    # -- provider ------------------------------------------------------------------------
    def new_session(self, params: SessionParams) -> SwSession:
        return SwSession(params)

    def submit(self, state: Any, reqs: Sequence[CryptoRequest], done: Done) -> None:
        c = self.counters
        now = time.monotonic()
        refused: list[CryptoRequest] = []
        with self._cond:
            for req in reqs:
                if len(self._ring) >= self.depth:
                    c["ring_full"] += 1
                    req.error = errno.ENOBUFS
                    refused.append(req)
                    continue
                delay = self.latency
                if self.jitter:
                    delay += self._rng.uniform(-self.jitter, self.jitter)
                self._ring.append((now + max(0.0, delay), req, state, done))
                c["submitted"] += 1
            c["batches"] += 1
            self._cond.notify()
        for req in refused:  # the framework does these in software
            done(req)

    # -- the engine -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    ready = [e for e in self._ring if e[0] <= now]
                    if ready:
                        break
                    wait = min((e[0] for e in self._ring), default=now + 0.5) - now
                    self._cond.wait(max(wait, 0.0001))
                if self._stop:
                    left, self._ring = self._ring, []
                    break
                self._ring = [e for e in self._ring if e[0] > now]
                fault, fail_next, reorder = self.fault, self.fail_next, self.reorder
            if reorder and len(ready) > 1:
                self._rng.shuffle(ready)
                self.counters["reordered"] += 1
            for _due, req, state, _done in ready:
                if fail_next > 0 or (fault and self._rng.random() < fault):
                    if fail_next > 0:
                        fail_next -= 1
                        with self._cond:
                            self.fail_next = max(0, self.fail_next - 1)
                    self.counters["faults_injected"] += 1
                    req.error = errno.EIO
                else:
                    transform(state, req)
            self._deliver_soon(ready)
        for _due, req, _state, _done in left:  # unloaded with requests in the ring
            req.error = errno.EIO
            self.counters["stopped_pending"] += 1
        self._deliver_soon(left)

    def _deliver_soon(self, entries: list[tuple[float, CryptoRequest, SwSession, Done]]) -> None:
        if not entries:
            return
        try:
            self.token.run_sync_soon(self._deliver, entries)
        except trio.RunFinishedError:
            self.counters["deliver_failed"] += len(entries)

    def _deliver(self, entries: list[tuple[float, CryptoRequest, SwSession, Done]]) -> None:
        for _due, req, _state, done in entries:
            self.counters["completed"] += 1
            done(req)

    # -- the control file ------------------------------------------------------------
    def render(self) -> str:
        with self._cond:
            ring = len(self._ring)
        lines = [f"name {self.name}", f"latency_ms {self.latency * 1e3:g}",
                 f"jitter_ms {self.jitter * 1e3:g}", f"depth {self.depth}", f"ring {ring}",
                 f"reorder {'on' if self.reorder else 'off'}", f"fault {self.fault:g}",
                 f"fail_next {self.fail_next}", f"stats {self.stats.render()}"]
        lines += [f"counter {k} {v}" for k, v in self.counters.snapshot().items()]
        return "\n".join(lines) + "\n"

    def command(self, text: str, caller: Caller) -> str:
        if not caller.is_root:
            raise OSError(errno.EPERM, "needs root")
        words = text.split()
        if len(words) != 2:
            raise OSError(errno.EINVAL, "usage: latency MS | jitter MS | reorder on|off | "
                                        "fault P | fail N")
        what, val = words
        try:
            with self._cond:
                if what == "latency":
                    self.latency = max(0.0, float(val)) / 1e3
                elif what == "jitter":
                    self.jitter = max(0.0, float(val)) / 1e3
                elif what == "reorder" and val in ("on", "off"):
                    self.reorder = val == "on"
                elif what == "fault" and 0.0 <= float(val) <= 1.0:
                    self.fault = float(val)
                elif what == "fail":
                    self.fail_next = max(0, int(val))
                else:
                    raise ValueError(what)
        except ValueError:
            raise OSError(errno.EINVAL, f"bad setting {text!r}") from None
        return self.render()


async def main(ctx: ModuleContext) -> None:
    o = ctx.opts
    crypto = ctx.stack.services.get(CRYPTO)
    if crypto is None:
        raise RuntimeError("the crypto framework is not running")
    name = o.get_str("name", "cryptosim0") or "cryptosim0"

    def num(key: str, default: float, hi: float) -> float:
        v = o.get_float(key, default)
        if v is None or not 0.0 <= v <= hi:
            raise OptionError(f"option {key}={v}: out of range [0, {hi}]")
        return v

    sim = CryptoSim(
        name, latency=num("latency", 0.2, 10000.0) / 1e3, jitter=num("jitter", 0.0, 10000.0) / 1e3,
        depth=o.get_int("depth", 256, lo=1, hi=65536) or 256, reorder=o.flag("reorder"),
        fault=num("fault", 0.0, 1.0), priority=o.get_int("priority", 100, lo=-1000, hi=1000) or 0,
        max_len=o.get_int("max_len", 65536, lo=64, hi=1 << 24) or 65536,
        token=trio.lowlevel.current_trio_token())
    sim.start()
    ctx.add_cleanup(sim.stop)  # undone after the provider is unregistered (last first)
    ctx.track(crypto.register(sim))
    cfg = ctx.stack.config_dir
    cfg.add("cryptosim", ControlFile(sim.command, sim.render, mode=0o644))
    ctx.track(Registration("config/cryptosim", lambda: cfg.remove("cryptosim")))
    ctx.log.info("%s: latency %.3f ms, depth %d, reorder %s, fault %g", name,
                 sim.latency * 1e3, sim.depth, sim.reorder, sim.fault)


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="simulated crypto offload engine (DMA-like, "
                                        "asynchronous, out of order, fault injection)")
