"""Known answers through the framework, on each provider: swcrypto and the offload
simulator (devnp-cryptosim, completing out of order with latency)."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import pytest
import trio

from stack.crypto import Alg, Crypto, CryptoRequest, SessionParams
from stack.crypto.framework import DECRYPT, ENCRYPT
from tests.conftest import running_stack

from . import vectors as v

PROVIDERS = ["swcrypto", "cryptosim0"]


@pytest.fixture
async def crypto() -> AsyncIterator[Crypto]:
    async with running_stack(drivers=[("cryptosim", "latency=0.5,jitter=0.4,reorder")]) as st:
        yield st.crypto


async def run(crypto: Crypto, params: SessionParams, provider: str, op: int, buf: bytes,
              **kw: object) -> CryptoRequest:
    s = crypto.new_session(params, provider)
    assert s.provider.name == provider
    try:
        req = await crypto.run(CryptoRequest(s, op, buf, **kw))  # type: ignore[arg-type]
        assert req.provider == provider and not req.fallback
        return req
    finally:
        crypto.free_session(s)


@pytest.mark.parametrize("prov", PROVIDERS)
@pytest.mark.parametrize("vec", v.AEAD, ids=lambda x: x.name)
async def test_aead(crypto: Crypto, prov: str, vec: v.Aead) -> None:
    p = SessionParams(cipher=Alg[vec.alg], key=vec.key, salt=vec.salt, tag_len=len(vec.tag))
    r = await run(crypto, p, prov, ENCRYPT, vec.pt, iv=vec.iv, aad=vec.aad)
    assert (r.error, bytes(r.out or b""), r.tag) == (0, vec.ct, vec.tag)
    # inline layout: header | payload | tag appended at inject (ESP's)
    buf = b"HDR!" + vec.ct + vec.tag
    r = await run(crypto, p, prov, DECRYPT, buf, skip=4, length=len(vec.ct),
                  inject=4 + len(vec.ct), iv=vec.iv, aad=vec.aad)
    assert r.error == 0 and bytes(r.out or b"")[4:4 + len(vec.pt)] == vec.pt
    bad = bytearray(buf)
    bad[-1] ^= 1
    r = await run(crypto, p, prov, DECRYPT, bytes(bad), skip=4, length=len(vec.ct),
                  inject=4 + len(vec.ct), iv=vec.iv, aad=vec.aad)
    assert r.error == errno.EBADMSG


@pytest.mark.parametrize("prov", PROVIDERS)
async def test_chacha20_poly1305(crypto: Crypto, prov: str) -> None:
    p = SessionParams(cipher=Alg.CHACHA20_POLY1305, key=v.CHACHA_KEY)
    r = await run(crypto, p, prov, ENCRYPT, v.CHACHA_PT, iv=v.CHACHA_NONCE, aad=v.CHACHA_AAD)
    assert r.tag == v.CHACHA_TAG
    back = await run(crypto, p, prov, DECRYPT, bytes(r.out or b""), iv=v.CHACHA_NONCE,
                     aad=v.CHACHA_AAD, tag=r.tag)
    assert bytes(back.out or b"") == v.CHACHA_PT


@pytest.mark.parametrize("prov", PROVIDERS)
@pytest.mark.parametrize("alg,key,msg,mac", v.HMAC)
async def test_hmac(crypto: Crypto, prov: str, alg: str, key: bytes, msg: bytes,
                    mac: bytes) -> None:
    p = SessionParams(auth=Alg[alg], auth_key=key)
    r = await run(crypto, p, prov, ENCRYPT, msg)
    assert r.tag == mac
    trunc = SessionParams(auth=Alg[alg], auth_key=key, mac_len=16)
    ok = await run(crypto, trunc, prov, DECRYPT, msg, tag=mac[:16])
    bad = await run(crypto, trunc, prov, DECRYPT, msg, tag=bytes(16))
    assert (ok.error, bad.error) == (0, errno.EBADMSG)


@pytest.mark.parametrize("prov", PROVIDERS)
async def test_aes_nist(crypto: Crypto, prov: str) -> None:
    cbc = SessionParams(cipher=Alg.AES_CBC, key=v.CBC_KEY)
    r = await run(crypto, cbc, prov, ENCRYPT, v.CBC_PT, iv=v.CBC_IV)
    assert bytes(r.out or b"") == v.CBC_CT
    r = await run(crypto, cbc, prov, DECRYPT, v.CBC_CT, iv=v.CBC_IV)
    assert bytes(r.out or b"") == v.CBC_PT
    fips = SessionParams(cipher=Alg.AES_CBC, key=v.FIPS_KEY)
    r = await run(crypto, fips, prov, ENCRYPT, v.FIPS_PT, iv=bytes(16))
    assert bytes(r.out or b"") == v.FIPS_CT
    ctr = SessionParams(cipher=Alg.AES_CTR, key=v.CBC_KEY)
    r = await run(crypto, ctr, prov, ENCRYPT, v.CBC_PT[:16], iv=v.CTR_IV)
    assert bytes(r.out or b"") == v.CTR_CT
    r = await run(crypto, cbc, prov, ENCRYPT, v.CBC_PT[:17], iv=v.CBC_IV)
    assert r.error == errno.EINVAL


async def test_cbc_hmac_chain(crypto: Crypto) -> None:
    """Encrypt-then-MAC (ESP's AES-CBC + HMAC-SHA-256-128): the same on both providers,
    a flipped ciphertext bit fails the MAC before anything is decrypted."""
    p = SessionParams(cipher=Alg.AES_CBC, key=v.CBC_KEY, auth=Alg.SHA2_256_HMAC,
                      auth_key=b"k" * 32, mac_len=16)
    buf = b"SPI+SEQ!" + v.CBC_IV + v.CBC_PT
    outs = []
    for prov in PROVIDERS:
        r = await run(crypto, p, prov, ENCRYPT, buf, skip=24, auth_skip=0, inject=len(buf),
                      iv=v.CBC_IV)
        assert bytes(r.out or b"")[24:56] == v.CBC_CT and len(r.out or b"") == len(buf) + 16
        outs.append(bytes(r.out or b""))
    assert outs[0] == outs[1]
    for prov in PROVIDERS:
        r = await run(crypto, p, prov, DECRYPT, outs[0], skip=24, length=32, inject=56,
                      iv=v.CBC_IV)
        assert r.error == 0 and bytes(r.out or b"")[24:56] == v.CBC_PT
        bad = bytearray(outs[0])
        bad[30] ^= 4
        r = await run(crypto, p, prov, DECRYPT, bytes(bad), skip=24, length=32, inject=56,
                      iv=v.CBC_IV)
        assert r.error == errno.EBADMSG


async def test_key_wrap(crypto: Crypto) -> None:
    p = SessionParams(cipher=Alg.AES_KEYWRAP, key=v.KW_KEK)
    s = crypto.new_session(p)
    assert s.provider.name == "swcrypto"  # the simulator does not offer key wrap
    r = await crypto.run(CryptoRequest(s, ENCRYPT, v.KW_KEY))
    assert bytes(r.out or b"") == v.KW_OUT
    r = await crypto.run(CryptoRequest(s, DECRYPT, v.KW_OUT))
    assert bytes(r.out or b"") == v.KW_KEY


async def test_session_rules(crypto: Crypto) -> None:
    from stack.crypto import CryptoError

    best = crypto.new_session(SessionParams(cipher=Alg.AES_GCM_16, key=bytes(16)))
    assert best.provider.name == "cryptosim0"  # the offload engine's priority is higher
    crypto.free_session(best)
    for bad in (SessionParams(cipher=Alg.AES_GCM_16, key=bytes(15)),
                SessionParams(cipher=Alg.SHA1_HMAC, key=bytes(20)),
                SessionParams(),
                SessionParams(cipher=Alg.AES_GCM_16, key=bytes(16), auth=Alg.SHA1_HMAC,
                              auth_key=b"x")):
        with pytest.raises(CryptoError) as ei:
            crypto.new_session(bad)
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(CryptoError) as ei:
        crypto.new_session(SessionParams(cipher=Alg.AES_CBC, key=bytes(16)), "nosuch")
    assert ei.value.errno == errno.ENODEV
    # a wrong nonce length is a failed request, not a crash
    s = crypto.new_session(SessionParams(cipher=Alg.AES_GCM_16, key=bytes(16)), "swcrypto")
    r = await crypto.run(CryptoRequest(s, ENCRYPT, b"x", iv=b"short"))
    assert r.error == errno.EINVAL
    with trio.fail_after(2):
        crypto.free_session(s)
