"""Known answers for WPA2-PSK: PBKDF2 (IEEE 802.11-2016 §J.4), PRF-SHA1 (§J.3), CCMP
(§J.6.4, through the crypto framework), AES key wrap (RFC 3394 §4.1), the PTK/EAPOL MIC
chain, and Debian's wpa_passphrase agreeing on the PSK."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from stack.crypto import Crypto, SwCrypto
from stack.net80211.ccmp import CcmpKey, aad_nonce, ccmp_header, parse_ccmp_header
from stack.net80211.wpa import (
    KI_MIC,
    KI_PAIRWISE,
    KI_VERSION_AES_HMAC_SHA1,
    EapolKey,
    derive_ptk,
    gtk_kde,
    parse_kdes,
    prf,
    psk,
    unwrap_key_data,
    wrap_key_data,
)

H = bytes.fromhex


@pytest.mark.parametrize("passphrase,ssid,expect", [
    ("password", "IEEE", "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"),
    ("ThisIsAPassword", "ThisIsASSID",
     "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"),
    ("a" * 32, "Z" * 32, "becb93866bb8c3832cb777c2f559807c8c59afcb6eae734885001300a981cc62"),
])
def test_pbkdf2_psk(passphrase: str, ssid: str, expect: str) -> None:
    assert psk(passphrase, ssid).hex() == expect


@pytest.mark.skipif(shutil.which("wpa_passphrase") is None, reason="wpasupplicant missing")
@pytest.mark.parametrize("passphrase,ssid", [("password", "IEEE"),
                                             ("correct horse battery", "io-pkt lab"),
                                             ("ThisIsAPassword", "ThisIsASSID")])
def test_wpa_passphrase_agrees(passphrase: str, ssid: str) -> None:
    out = subprocess.run(["wpa_passphrase", ssid, passphrase], capture_output=True,
                         text=True, check=True).stdout
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("psk="))
    assert line == "psk=" + psk(passphrase, ssid).hex()


def test_passphrase_length() -> None:
    for bad in ("short", "x" * 64):
        with pytest.raises(ValueError):
            psk(bad, "ssid")


def test_prf_sha1() -> None:
    # IEEE 802.11-2016 J.3.2: test cases 1-3 (PRF-512, PRF-256, PRF-384)
    assert prf(b"\x0b" * 20, b"prefix", b"Hi There", 512) == H(
        "bcd4c650b30b9684951829e0d75f9d54b862175ed9f00606e17d8da35402ffee"
        "75df78c3d31e0f889f012120c0862beb67753e7439ae242edb8373698356cf5a")
    assert prf(b"Jefe", b"prefix-2", b"what do ya want for nothing?", 256) == H(
        "47c4908e30c947521ad20be9053450ecbea23d3aa604b77326d8b3825ff7475c")
    assert prf(b"\xaa" * 80, b"prefix-3",
               b"Test Using Larger Than Block-Size Key - Hash Key First", 384) == H(
        "0ab6c33ccf70d0d736f4b04c8a7373255511abc5073713163bd0b8c9eeb7e195"
        "6fa066820a73ddee3f6d3bd407e0682a")


def _crypto() -> Crypto:
    c = Crypto()
    c.register(SwCrypto())
    return c


# IEEE 802.11-2016 J.6.4 (CCMP test vector)
TK = H("c97c1f67ce371185514a8a19f2bdd52f")
PN = 0xB5039776E70C
HDR = H("08 48 c3 2c 0f d2 e1 28 a5 7c 50 30 f1 84 44 08 ab ae a5 b8 fc ba 80 33".replace(" ", ""))
PLAIN = H("f8ba1a55d02f85ae967bb62fb6cda8eb7e78a050")
MPDU = H("08 48 c3 2c 0f d2 e1 28 a5 7c 50 30 f1 84 44 08 ab ae a5 b8 fc ba 80 33 0c e7 00 "
         "20 76 97 03 b5 f3 d0 a2 fe 9a 3d bf 23 42 a6 43 e4 32 46 e8 0c 3c 04 d0 19 78 45 "
         "ce 0b 16 f9 76 23".replace(" ", ""))


def test_ccmp_aad_nonce_header() -> None:
    aad, nonce = aad_nonce(HDR, PN, 24)
    assert aad == H("08400fd2e128a57c5030f1844408abaea5b8fcba0000")
    assert nonce == H("005030f1844408b5039776e70c")
    assert ccmp_header(PN, 0) == H("0ce7002076970 3b5".replace(" ", ""))
    assert parse_ccmp_header(H("0ce70020769703b5")) == (PN, 0)


def test_ccmp_vector_through_the_crypto_api() -> None:
    crypto = _crypto()
    key = CcmpKey(crypto, TK, 0, tx_pn=PN - 1)
    got: list[tuple[int, bytes]] = []
    # the header as sent has Protected set already (0x48); encrypt() sets it anyway
    key.encrypt(HDR, 24, PLAIN, lambda err, mpdu: got.append((err, mpdu)))
    assert got == [(0, MPDU)]
    assert key.provider == "swcrypto"
    assert crypto.counters["completed"] == 1
    rx = CcmpKey(crypto, TK, 0)
    out: list[tuple[int, bytes]] = []
    rx.decrypt(MPDU, 24, PN, lambda err, p: out.append((err, p)))
    assert out == [(0, PLAIN)]
    assert rx.rx_pn == PN and rx.replayed(PN) and not rx.replayed(PN + 1)
    # one bit flipped: the MIC fails, the PN is not advanced
    bad = bytearray(MPDU)
    bad[40] ^= 1
    rx2 = CcmpKey(crypto, TK, 0)
    rx2.decrypt(bytes(bad), 24, PN, lambda err, p: out.append((err, p)))
    assert out[-1][0] != 0 and rx2.rx_pn == -1
    assert crypto.counters["auth_failures"] == 1


def test_aes_key_wrap_rfc3394() -> None:
    kek = H("000102030405060708090a0b0c0d0e0f")
    data = H("00112233445566778899aabbccddeeff")
    wrapped = wrap_key_data(kek, data)
    assert wrapped == H("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5")
    assert unwrap_key_data(kek, wrapped) == data


def test_ptk_and_eapol_mic_round_trip() -> None:
    pmk = psk("password", "IEEE")
    aa, spa = H("020000000001"), H("020000000002")
    an, sn = bytes(range(32)), bytes(range(32, 64))
    ptk = derive_ptk(pmk, aa, spa, an, sn)
    assert ptk == derive_ptk(pmk, spa, aa, sn, an)  # order-independent (min/max)
    assert len(ptk.kck) == len(ptk.kek) == len(ptk.tk) == 16
    k = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_PAIRWISE | KI_MIC, replay=7, nonce=sn,
                 data=b"\x30\x14" + bytes(20))
    frame = k.pack(ptk.kck)
    back = EapolKey.parse(frame)
    assert back.replay == 7 and back.nonce == sn and back.verify(ptk.kck, frame)
    assert not back.verify(derive_ptk(psk("wrong pass", "IEEE"), aa, spa, an, sn).kck, frame)
    gtk = bytes(range(100, 116))
    wrapped = wrap_key_data(ptk.kek, b"\x30\x02\x01\x00" + gtk_kde(1, gtk, tx=True))
    assert parse_kdes(unwrap_key_data(ptk.kek, wrapped)) == (b"\x30\x02\x01\x00", (1, gtk))
