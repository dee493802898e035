"""The algorithms of the crypto framework, numbered as NetBSD's opencrypto
(``<crypto/cryptodev.h>``), with what each takes: key sizes, IV/nonce rules, digest or
tag length. Numbers above ``CRYPTO_AES_GMAC`` (33) are this stack's own (NetBSD has no
CCM, ChaCha20-Poly1305 or key wrap in cryptodev); rmgr/include/io_pkt_crypto.h lists the
same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Alg(IntEnum):
    SHA1_HMAC = 7
    AES_CBC = 11
    SHA2_256_HMAC = 15
    SHA2_384_HMAC = 24
    SHA2_512_HMAC = 25
    AES_CTR = 27
    AES_GCM_16 = 29
    AES_CCM_16 = 34
    CHACHA20_POLY1305 = 35
    AES_KEYWRAP = 36


CIPHER, AUTH, AEAD = "cipher", "auth", "aead"


@dataclass(frozen=True)
class AlgInfo:
    alg: Alg
    kind: str
    key_sizes: tuple[int, ...]
    #: cipher IV / AEAD nonce lengths accepted (salt + per-request IV); () = none
    nonce_sizes: tuple[int, ...] = ()
    #: block size (a CBC region must be a multiple), 1 for stream modes
    block: int = 1
    #: digest length of an HMAC / default tag of an AEAD
    digest: int = 0
    #: tag lengths an AEAD accepts
    tag_sizes: tuple[int, ...] = ()
    #: HMAC hash name (hashlib)
    hash: str = ""
    #: HMAC keys may be any length (RFC 2104); key_sizes is then the recommended one
    any_key: bool = False


_AES = (16, 24, 32)
ALGS: dict[Alg, AlgInfo] = {a.alg: a for a in (
    AlgInfo(Alg.AES_CBC, CIPHER, _AES, (16,), block=16),
    AlgInfo(Alg.AES_CTR, CIPHER, _AES, (16,)),
    AlgInfo(Alg.AES_KEYWRAP, CIPHER, _AES, (), block=8),
    AlgInfo(Alg.AES_GCM_16, AEAD, _AES, (12,), digest=16, tag_sizes=(16,)),
    AlgInfo(Alg.AES_CCM_16, AEAD, _AES, (7, 8, 9, 10, 11, 12, 13), digest=16,
            tag_sizes=(4, 6, 8, 10, 12, 14, 16)),
    AlgInfo(Alg.CHACHA20_POLY1305, AEAD, (32,), (12,), digest=16, tag_sizes=(16,)),
    AlgInfo(Alg.SHA1_HMAC, AUTH, (20,), digest=20, hash="sha1", any_key=True),
    AlgInfo(Alg.SHA2_256_HMAC, AUTH, (32,), digest=32, hash="sha256", any_key=True),
    AlgInfo(Alg.SHA2_384_HMAC, AUTH, (48,), digest=48, hash="sha384", any_key=True),
    AlgInfo(Alg.SHA2_512_HMAC, AUTH, (64,), digest=64, hash="sha512", any_key=True),
)}


def info(alg: Alg | int) -> AlgInfo:
    try:
        return ALGS[Alg(alg)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown crypto algorithm {alg}") from None
