"""Known-answer vectors (hex): the GCM spec's test cases (RFC 4106's salt ‖ IV split),
RFC 4231 HMAC-SHA-2, RFC 2202 HMAC-SHA-1, FIPS-197 / SP 800-38A AES, RFC 3610 CCM,
RFC 8439 ChaCha20-Poly1305, RFC 3394 key wrap."""

from __future__ import annotations

from dataclasses import dataclass


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


@dataclass(frozen=True)
class Aead:
    name: str
    alg: str
    key: bytes
    salt: bytes
    iv: bytes
    aad: bytes
    pt: bytes
    ct: bytes
    tag: bytes


AEAD = [
    # GCM spec test case 2 (one zero block, zero key): salt 0000 0000, IV zeros
    Aead("gcm-tc2", "AES_GCM_16", h("00" * 16), h("00000000"), h("00" * 8), b"",
         h("00" * 16), h("0388dace60b6a392f328c2b971b2fe78"),
         h("ab6e47d42cec13bdf53a67b21257bddf")),
    # GCM spec test case 4 = draft-mcgrew-gcm-test's key: salt cafebabe, IV facedbaddecaf888
    Aead("gcm-tc4", "AES_GCM_16", h("feffe9928665731c6d6a8f9467308308"), h("cafebabe"),
         h("facedbaddecaf888"), h("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
         h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"),
         h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
           "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"),
         h("5bc94fbc3221a5db94fae95ae7121a47")),
    # RFC 3610 packet vector #1 (CCM, 8-byte tag, 13-byte nonce)
    Aead("ccm-rfc3610-1", "AES_CCM_16", h("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"), b"",
         h("00000003020100a0a1a2a3a4a5"), h("0001020304050607"),
         h("08090a0b0c0d0e0f101112131415161718191a1b1c1d1e"),
         h("588c979a61c663d2f066d0c2c0f989806d5f6b61dac384"), h("17e8d12cfdf926e0")),
]

HMAC = [
    ("SHA2_256_HMAC", h("0b" * 20), b"Hi There",
     h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")),
    ("SHA2_256_HMAC", b"Jefe", b"what do ya want for nothing?",
     h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")),
    ("SHA2_512_HMAC", h("0b" * 20), b"Hi There",
     h("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
       "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854")),
    ("SHA1_HMAC", h("0b" * 20), b"Hi There", h("b617318655057264e28bc0b6fb378c8ef146be00")),
]

# SP 800-38A F.2.1 CBC-AES128.Encrypt (two blocks), F.5.1 CTR-AES128 (one block)
CBC_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
CBC_IV = h("000102030405060708090a0b0c0d0e0f")
CBC_PT = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
CBC_CT = h("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2")
CTR_IV = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
CTR_CT = h("874d6191b620e3261bef6864990db6ce")
# FIPS-197 C.1 (one block of CBC with a zero IV is the block cipher)
FIPS_KEY = h("000102030405060708090a0b0c0d0e0f")
FIPS_PT = h("00112233445566778899aabbccddeeff")
FIPS_CT = h("69c4e0d86a7b0430d8cdb78070b4c55a")
# RFC 3394 4.1
KW_KEK = h("000102030405060708090a0b0c0d0e0f")
KW_KEY = h("00112233445566778899aabbccddeeff")
KW_OUT = h("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5")
# RFC 8439 2.8.2
CHACHA_KEY = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
CHACHA_NONCE = h("070000004041424344454647")
CHACHA_AAD = h("50515253c0c1c2c3c4c5c6c7")
CHACHA_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
             b"for the future, sunscreen would be it.")
CHACHA_TAG = h("1ae10b594f09e26a7e902ecbd0600691")
