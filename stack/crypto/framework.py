"""The crypto framework (NetBSD's opencrypto(9), the io-pkt "hardware crypto API").

Providers (``Provider``) register the algorithms they do, with limits and a priority.
A ``Session`` is made for an algorithm chain (a cipher, an HMAC, both — encrypt then
MAC — or an AEAD) with its keys and salt, against the best provider that can serve it
or a named one. A ``CryptoRequest`` is dispatched without blocking; its ``callback`` runs
in the stack's trio run when it completes (the software provider completes it before
``dispatch`` returns, an offload engine later and in any order). A request a provider
fails (``EIO``), refuses or cannot take (over its length limit) is done again in
software, counted (``fallback_sw``); an ICV that does not verify is ``EBADMSG`` and is
not retried.

Request layout (opencrypto's crd_skip / crd_len / crd_inject): the cipher (or AEAD
payload) region is ``buf[skip:skip+length]``; a chain's MAC covers
``buf[auth_skip:skip+length]`` (after encryption, before decryption); an HMAC alone
covers ``buf[skip:skip+length]``. The tag / MAC is written at ``inject`` on encryption
(the buffer grows when ``inject == len(buf)``) and read from there on decryption;
``inject < 0`` passes it in ``tag`` instead. The result is ``out`` (a new buffer; the
caller's ``buf`` is not changed) and ``tag``.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from stack.counters import Counters
from stack.crypto.algs import AEAD, AUTH, CIPHER, Alg, AlgInfo, info
from stack.crypto.counters import CRYPTO_COUNTERS
from stack.registry import Registration

log = logging.getLogger("io-pkt.crypto")

ENCRYPT = 1
DECRYPT = 2


class CryptoError(OSError):
    pass


@dataclass(frozen=True)
class SessionParams:
    """What a session does. ``cipher`` may be an AEAD (then no ``auth``)."""

    cipher: Alg | None = None
    key: bytes = b""
    auth: Alg | None = None
    auth_key: bytes = b""
    #: MAC truncation (RFC 4868's 128 bits of HMAC-SHA-256: 16); 0 = full digest
    mac_len: int = 0
    #: the nonce's fixed part (RFC 4106 GCM: 4 bytes, RFC 4309 CCM: 3, RFC 3686 CTR: 4);
    #: a request's ``iv`` completes it
    salt: bytes = b""
    #: AEAD tag length; 0 = the algorithm's default
    tag_len: int = 0

    def validate(self) -> None:
        if self.cipher is None and self.auth is None:
            raise CryptoError(errno.EINVAL, "a session needs a cipher, an HMAC or an AEAD")
        if self.cipher is not None:
            ci = info(self.cipher)
            if ci.kind == AUTH:
                raise CryptoError(errno.EINVAL, f"{self.cipher.name} is not a cipher")
            if len(self.key) not in ci.key_sizes:
                raise CryptoError(errno.EINVAL, f"{self.cipher.name}: key of {len(self.key)} "
                                                f"bytes (takes {ci.key_sizes})")
            if ci.kind == AEAD:
                if self.auth is not None:
                    raise CryptoError(errno.EINVAL, "an AEAD takes no separate HMAC")
                if self.tag_len and self.tag_len not in ci.tag_sizes:
                    raise CryptoError(errno.EINVAL, f"{self.cipher.name}: tag of "
                                                    f"{self.tag_len} bytes")
            if self.salt and not ci.nonce_sizes:
                raise CryptoError(errno.EINVAL, f"{self.cipher.name} takes no salt")
        if self.auth is not None:
            ai = info(self.auth)
            if ai.kind != AUTH:
                raise CryptoError(errno.EINVAL, f"{self.auth.name} is not an HMAC")
            if not self.auth_key:
                raise CryptoError(errno.EINVAL, f"{self.auth.name}: no key")
            if self.mac_len < 0 or self.mac_len > ai.digest:
                raise CryptoError(errno.EINVAL, f"{self.auth.name}: MAC of {self.mac_len} bytes")

    @property
    def algs(self) -> list[Alg]:
        return [a for a in (self.cipher, self.auth) if a is not None]

    @property
    def aead(self) -> bool:
        return self.cipher is not None and info(self.cipher).kind == AEAD

    @property
    def tag_size(self) -> int:
        """Bytes of tag / MAC a request carries (0: a cipher alone)."""
        if self.cipher is not None and info(self.cipher).kind == AEAD:
            return self.tag_len or info(self.cipher).digest
        if self.auth is not None:
            return self.mac_len or info(self.auth).digest
        return 0

    def describe(self) -> str:
        parts = []
        if self.cipher is not None:
            parts.append(f"{self.cipher.name}/{len(self.key) * 8}")
        if self.auth is not None:
            parts.append(f"{self.auth.name}/{(self.mac_len or info(self.auth).digest) * 8}")
        return "+".join(parts)


@dataclass(frozen=True)
class AlgLimits:
    """What a provider does of one algorithm: key sizes (empty: all the algorithm's) and
    the longest region one request may have."""

    key_sizes: tuple[int, ...] = ()
    max_len: int = 1 << 30


@dataclass
class ProviderStats:
    ops: int = 0
    bytes: int = 0
    errors: int = 0
    auth_failures: int = 0
    queue_depth: int = 0
    max_queue_depth: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    sessions: int = 0
    refused: int = 0

    def render(self) -> str:
        avg = self.latency_sum / self.ops * 1e6 if self.ops else 0.0
        return (f"ops {self.ops} bytes {self.bytes} errors {self.errors} "
                f"auth_failures {self.auth_failures} queue {self.queue_depth} "
                f"max_queue {self.max_queue_depth} latency_avg_us {avg:.1f} "
                f"latency_max_us {self.latency_max * 1e6:.1f} sessions {self.sessions}")


class Provider:
    """A crypto engine. Subclasses set ``name``, ``priority`` (higher wins), ``software``
    and ``algs`` and implement ``new_session`` and ``submit``."""

    name = "provider"
    priority = 0
    software = False

    def __init__(self) -> None:
        self.algs: dict[Alg, AlgLimits] = {}
        self.stats = ProviderStats()

    def supports(self, params: SessionParams) -> bool:
        for alg in params.algs:
            lim = self.algs.get(alg)
            if lim is None:
                return False
            key = params.key if alg == params.cipher else params.auth_key
            if lim.key_sizes and len(key) not in lim.key_sizes:
                return False
        return True

    def max_len(self, params: SessionParams) -> int:
        return min((self.algs[a].max_len for a in params.algs if a in self.algs), default=0)

    def new_session(self, params: SessionParams) -> Any:
        """Prepare the engine for ``params``; return the provider's session state."""
        raise NotImplementedError

    def free_session(self, state: Any) -> None:
        return None

    def submit(self, state: Any, reqs: Sequence[CryptoRequest],
               done: Callable[[CryptoRequest], None]) -> None:
        """Start ``reqs``; ``done(req)`` for each when finished (in the trio thread), with
        ``req.error`` set (0, EBADMSG for an ICV mismatch, EIO for an engine fault)."""
        raise NotImplementedError


@dataclass(eq=False)
class Session:
    sid: int
    params: SessionParams
    provider: Provider
    state: Any
    #: the software session a fallback uses (made when first needed)
    sw_state: Any = None
    freed: bool = False
    inflight: int = 0

    @property
    def tag_size(self) -> int:
        return self.params.tag_size


@dataclass(eq=False)
class CryptoRequest:
    session: Session
    op: int
    buf: bytes | bytearray | memoryview
    skip: int = 0
    length: int = -1
    auth_skip: int = 0
    inject: int = -1
    iv: bytes = b""
    aad: bytes = b""
    tag: bytes = b""
    #: bytes the MAC covers after the region but which are not in the buffer (ESP's
    #: high-order ESN bits, RFC 4303 2.2.1)
    auth_tail: bytes = b""
    #: decryption checks the MAC (False: compute it and return it in ``tag``, as
    #: cryptodev's CIOCCRYPT does; AEADs always verify)
    verify: bool = True
    callback: Callable[[CryptoRequest], None] | None = None
    opaque: Any = None
    # -- results -------------------------------------------------------------------
    error: int = 0
    out: bytearray | None = None
    provider: str = ""
    fallback: bool = False
    t0: float = 0.0
    #: set on the trio thread when the request completes (before its callback): an
    #: engine's thread fills ``out`` before the completion is delivered, so "was it
    #: done inside dispatch()" is this flag, never ``out``
    finished: bool = False
    _event: trio.Event | None = field(default=None, repr=False)

    @property
    def region(self) -> int:
        return len(self.buf) - self.skip if self.length < 0 else self.length


Done = Callable[[CryptoRequest], None]
_FINAL = (0, errno.EBADMSG, errno.EINVAL)


class Crypto:
    """The framework: the providers, the sessions, dispatch and completion."""

    def __init__(self) -> None:
        self.counters = Counters("crypto", CRYPTO_COUNTERS)
        self.providers: list[Provider] = []
        self.sessions: dict[int, Session] = {}
        self._next_sid = 1
        self.software: Provider | None = None

    # -- providers -------------------------------------------------------------------
    def register(self, provider: Provider) -> Registration:
        if any(p.name == provider.name for p in self.providers):
            raise ValueError(f"crypto provider {provider.name} already registered")
        self.providers.append(provider)
        self.providers.sort(key=lambda p: -p.priority)
        if provider.software and self.software is None:
            self.software = provider
        self.counters["providers_registered"] += 1
        log.info("crypto provider %s (priority %d): %s", provider.name, provider.priority,
                 " ".join(a.name for a in provider.algs))
        return Registration(f"crypto provider {provider.name}",
                            lambda: self.unregister(provider))

    def unregister(self, provider: Provider) -> None:
        if provider not in self.providers:
            return
        self.providers.remove(provider)
        if self.software is provider:
            self.software = next((p for p in self.providers if p.software), None)
        # its sessions move to the best provider left (NetBSD: crypto_unregister
        # migrates sessions on the next request)
        for s in self.sessions.values():
            if s.provider is provider:
                self._rehome(s)
        self.counters["providers_unregistered"] += 1

    def _rehome(self, s: Session) -> None:
        for p in self._candidates(s.params, None, True):
            try:
                s.state = p.new_session(s.params)
            except Exception:
                continue
            s.provider.stats.sessions -= 1
            s.provider = p
            p.stats.sessions += 1
            self.counters["sessions_migrated"] += 1
            return
        s.freed = True

    def provider(self, name: str) -> Provider | None:
        return next((p for p in self.providers if p.name == name), None)

    def _candidates(self, params: SessionParams, name: str | None,
                    allow_soft: bool) -> list[Provider]:
        out = []
        for p in self.providers:
            if name is not None and p.name != name:
                continue
            if p.software and not allow_soft:
                continue
            if p.supports(params):
                out.append(p)
        return out

    # -- sessions --------------------------------------------------------------------
    def new_session(self, params: SessionParams, provider: str | None = None, *,
                    allow_soft: bool = True) -> Session:
        """A session against the best provider that serves ``params`` (highest
        priority), or the one named. ENODEV / EINVAL when none can."""
        params.validate()
        cands = self._candidates(params, provider, allow_soft)
        if not cands:
            self.counters["session_no_provider"] += 1
            if provider is not None and self.provider(provider) is None:
                raise CryptoError(errno.ENODEV, f"no crypto provider {provider}")
            raise CryptoError(errno.EINVAL, f"no provider does {params.describe()}")
        err: Exception | None = None
        for p in cands:
            try:
                state = p.new_session(params)
            except Exception as exc:
                p.stats.refused += 1
                err = exc
                continue
            s = Session(self._next_sid, params, p, state)
            self._next_sid += 1
            self.sessions[s.sid] = s
            p.stats.sessions += 1
            self.counters["sessions_created"] += 1
            return s
        self.counters["session_no_provider"] += 1
        raise CryptoError(errno.EINVAL, f"no provider took {params.describe()}: {err}")

    def free_session(self, s: Session) -> None:
        if s.freed:
            return
        s.freed = True
        self.sessions.pop(s.sid, None)
        s.provider.stats.sessions -= 1
        try:
            s.provider.free_session(s.state)
        except Exception:
            log.exception("crypto provider %s: free_session raised", s.provider.name)
        self.counters["sessions_freed"] += 1

    # -- requests --------------------------------------------------------------------
    def dispatch(self, req: CryptoRequest) -> None:
        """Start ``req``; its callback runs when it completes (maybe before this returns)."""
        self.dispatch_batch((req,))

    def dispatch_batch(self, reqs: Iterable[CryptoRequest]) -> None:
        """Start several requests of one or more sessions: each provider gets its share
        in one submission (one doorbell for an engine)."""
        groups: dict[int, tuple[Provider, Any, list[CryptoRequest]]] = {}
        c = self.counters
        now = time.perf_counter()
        for req in reqs:
            s = req.session
            c["dispatched"] += 1
            if s.freed:
                c["bad_session"] += 1
                req.error = errno.EINVAL
                self._finish(req)
                continue
            p = s.provider
            if req.region > p.max_len(s.params):
                c["fallback_limit"] += 1
                self._software(req)
                continue
            req.t0 = now
            req.provider = p.name
            s.inflight += 1
            p.stats.queue_depth += 1
            if p.stats.queue_depth > p.stats.max_queue_depth:
                p.stats.max_queue_depth = p.stats.queue_depth
            key = id(s)
            g = groups.get(key)
            if g is None:
                groups[key] = (p, s.state, [req])
            else:
                g[2].append(req)
        for p, state, batch in groups.values():
            try:
                p.submit(state, batch, self._done)
            except Exception:
                log.exception("crypto provider %s: submit raised", p.name)
                for req in batch:
                    if req.provider == p.name and req.out is None and not req.error:
                        req.error = errno.EIO
                        self._done(req)

    def _done(self, req: CryptoRequest) -> None:
        """A provider finished ``req`` (trio thread)."""
        s = req.session
        p = s.provider if s.provider.name == req.provider else self.provider(req.provider)
        s.inflight -= 1
        if p is not None:
            st = p.stats
            st.queue_depth -= 1
            lat = time.perf_counter() - req.t0
            st.latency_sum += lat
            if lat > st.latency_max:
                st.latency_max = lat
            if req.error == 0:
                st.ops += 1
                st.bytes += req.region
            elif req.error == errno.EBADMSG:
                st.ops += 1
                st.auth_failures += 1
            else:
                st.errors += 1
        # an ICV mismatch or a malformed request is the answer; anything else is the
        # engine's fault: software does it again
        if req.error not in _FINAL and not (p is not None and p.software):
            self.counters["provider_errors"] += 1
            self._software(req)
            return
        self._finish(req)

    def _software(self, req: CryptoRequest) -> None:
        """Do ``req`` in software (an engine failed or cannot take it)."""
        sw = self.software
        s = req.session
        if sw is None:
            req.error = errno.ENODEV
            self._finish(req)
            return
        self.counters["fallback_sw"] += 1
        req.fallback = True
        req.error = 0
        req.out = None
        if s.provider is sw:
            state = s.state
        else:
            if s.sw_state is None:
                s.sw_state = sw.new_session(s.params)
            state = s.sw_state
        req.provider = sw.name
        req.t0 = time.perf_counter()
        sw.stats.queue_depth += 1
        s.inflight += 1
        sw.submit(state, (req,), self._done)

    def _finish(self, req: CryptoRequest) -> None:
        req.finished = True
        c = self.counters
        if req.error == 0:
            c["completed"] += 1
        elif req.error == errno.EBADMSG:
            c["auth_failures"] += 1
        else:
            c["failed"] += 1
        if req._event is not None:
            req._event.set()
        cb = req.callback
        if cb is not None:
            try:
                cb(req)
            except Exception:
                c["callback_errors"] += 1
                log.exception("crypto completion callback raised")

    async def run(self, req: CryptoRequest) -> CryptoRequest:
        """Dispatch ``req`` and wait for it (for callers that may block: /dev/crypto)."""
        req._event = trio.Event()
        self.dispatch(req)
        await req._event.wait()
        return req

    # -- state -----------------------------------------------------------------------
    def render(self) -> str:
        lines = []
        for p in self.providers:
            algs = ",".join(a.name for a in p.algs)
            kind = "software" if p.software else "offload"
            lines.append(f"provider {p.name} priority {p.priority} {kind} algs {algs}")
            lines.append(f"  {p.stats.render()}")
        lines.append(f"sessions {len(self.sessions)}")
        lines += [f"counter {k} {v}" for k, v in self.counters.snapshot().items()]
        return "\n".join(lines) + "\n"


def alg_info(alg: Alg) -> AlgInfo:
    return info(alg)


__all__ = ["AEAD", "AUTH", "CIPHER", "DECRYPT", "ENCRYPT", "AlgLimits", "Crypto",
           "CryptoError", "CryptoRequest", "Provider", "ProviderStats", "Session",
           "SessionParams"]
