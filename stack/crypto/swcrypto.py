"""``swcrypto``: the software provider, always registered (NetBSD's swcrypto(4)).

Ciphers and AEADs are the ``cryptography`` library's (OpenSSL); HMAC is OpenSSL's through
``hmac.digest`` (one C call per MAC, cheaper per packet than an object per request).
``transform`` is the whole request in one function, so an offload engine's worker
(modules/devnp-cryptosim.py) does the same work in its own thread."""

from __future__ import annotations

import errno
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from stack.crypto.algs import ALGS, Alg, info
from stack.crypto.framework import (
    DECRYPT,
    AlgLimits,
    CryptoRequest,
    Provider,
    SessionParams,
)


class AuthFailed(Exception):
    pass


class SwSession:
    """The prepared transforms of one session (AEAD objects hold the expanded key)."""

    __slots__ = ("params", "aead", "cipher", "key", "hash", "auth_key", "mac_len", "salt",
                 "tag_len")

    def __init__(self, p: SessionParams) -> None:
        self.params = p
        self.aead: Any = None
        self.cipher = p.cipher
        self.key = p.key
        self.salt = p.salt
        self.tag_len = p.tag_size
        if p.cipher == Alg.AES_GCM_16:
            self.aead = AESGCM(p.key)
        elif p.cipher == Alg.AES_CCM_16:
            self.aead = AESCCM(p.key, tag_length=self.tag_len)
        elif p.cipher == Alg.CHACHA20_POLY1305:
            self.aead = ChaCha20Poly1305(p.key)
        self.hash = info(p.auth).hash if p.auth is not None else ""
        self.auth_key = p.auth_key
        self.mac_len = p.tag_size if p.auth is not None else 0


def _nonce(s: SwSession, iv: bytes) -> bytes:
    nonce = s.salt + iv
    assert s.cipher is not None
    sizes = info(s.cipher).nonce_sizes
    if len(nonce) not in sizes:
        raise ValueError(f"{s.cipher.name}: nonce of {len(nonce)} bytes (takes {sizes})")
    return nonce


def _cipher(s: SwSession, encrypt: bool, iv: bytes, data: bytes) -> bytes:
    alg = s.cipher
    if alg == Alg.AES_CBC:
        if len(data) % 16:
            raise ValueError("AES-CBC: the region is not a multiple of 16 bytes")
        mode: Any = modes.CBC(_nonce(s, iv))
    elif alg == Alg.AES_CTR:
        block = s.salt + iv
        if len(block) == 12:  # RFC 3686: nonce ‖ IV ‖ counter 1
            block += b"\x00\x00\x00\x01"
        if len(block) != 16:
            raise ValueError("AES-CTR: the counter block is not 16 bytes")
        mode = modes.CTR(block)
    elif alg == Alg.AES_KEYWRAP:
        if encrypt:
            return keywrap.aes_key_wrap(s.key, data)
        return keywrap.aes_key_unwrap(s.key, data)
    else:
        raise ValueError(f"{alg} is not a cipher")
    c = Cipher(algorithms.AES(s.key), mode)
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def transform(s: SwSession, req: CryptoRequest) -> None:
    """Do ``req`` (see framework.py for the layout): sets ``req.out``/``req.tag``, or
    ``req.error`` (EBADMSG: the ICV does not verify; EINVAL: a malformed request)."""
    try:
        _transform(s, req)
    except InvalidTag:
        req.error = errno.EBADMSG
    except (ValueError, TypeError, IndexError):
        req.error = errno.EINVAL


def _transform(s: SwSession, req: CryptoRequest) -> None:
    buf = req.buf
    skip = req.skip
    end = len(buf) if req.length < 0 else skip + req.length
    if skip < 0 or end > len(buf) or skip > end:
        raise ValueError("region outside the buffer")
    decrypt = req.op == DECRYPT
    taglen = s.tag_len
    inject = req.inject
    verify = req.verify or s.aead is not None
    if decrypt and taglen and verify:
        expect = bytes(buf[inject:inject + taglen]) if inject >= 0 else bytes(req.tag)
        if len(expect) != taglen:
            raise ValueError("tag missing")
    else:
        expect = b""
    out = bytearray(buf)
    region = bytes(buf[skip:end])
    if s.aead is not None:
        nonce = _nonce(s, req.iv)
        aad = bytes(req.aad) if req.aad else None
        if decrypt:
            res = s.aead.decrypt(nonce, region + expect, aad)
            out[skip:end] = res
            req.tag = expect
        else:
            ct = s.aead.encrypt(nonce, region, aad)
            out[skip:end] = ct[:-taglen]
            req.tag = ct[-taglen:]
    else:
        if s.cipher is not None:
            if decrypt:
                if s.hash and verify:
                    _verify(s, bytes(buf[req.auth_skip:end]) + req.auth_tail, expect)
                    req.tag = expect
                elif s.hash:
                    req.tag = hmac.digest(s.auth_key, bytes(buf[req.auth_skip:end])
                                          + req.auth_tail, s.hash)[:taglen]
                res = _cipher(s, False, req.iv, region)
            else:
                res = _cipher(s, True, req.iv, region)
            if len(res) == len(region):
                out[skip:end] = res
            else:  # key wrap: the region grows/shrinks by 8
                out = bytearray(bytes(buf[:skip]) + res + bytes(buf[end:]))
                end = skip + len(res)
            if not decrypt and s.hash:
                req.tag = hmac.digest(s.auth_key, bytes(out[req.auth_skip:end])
                                      + req.auth_tail, s.hash)[:taglen]
        else:  # HMAC alone
            mac = hmac.digest(s.auth_key, region, s.hash)[:taglen]
            if decrypt and verify:
                if not hmac.compare_digest(mac, expect):
                    raise InvalidTag()
            req.tag = mac
    if not decrypt and taglen and inject >= 0:
        out[inject:inject + taglen] = req.tag
    req.out = out


def _verify(s: SwSession, data: bytes, expect: bytes) -> None:
    mac = hmac.digest(s.auth_key, data, s.hash)[:s.tag_len]
    if not hmac.compare_digest(mac, expect):
        raise InvalidTag()


class SwCrypto(Provider):
    name = "swcrypto"
    priority = 0
    software = True

    def __init__(self) -> None:
        super().__init__()
        self.algs = {a: AlgLimits() for a in ALGS}

    def new_session(self, params: SessionParams) -> SwSession:
        return SwSession(params)

    def submit(self, state: Any, reqs: Sequence[CryptoRequest],
               done: Callable[[CryptoRequest], None]) -> None:
        for req in reqs:
            transform(state, req)
            done(req)


def key_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 AES key wrap, for users that store keys wrapped."""
    return keywrap.aes_key_wrap(kek, key)


def key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    return keywrap.aes_key_unwrap(kek, wrapped)
