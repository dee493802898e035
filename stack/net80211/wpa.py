"""WPA2-PSK key derivation and the EAPOL-Key frame (IEEE 802.11-2016 §12.7).

* PMK = PBKDF2-HMAC-SHA1(passphrase, SSID, 4096, 256 bits) (§J.4; what
  ``wpa_passphrase`` prints as ``psk=``);
* PRF-n (§12.7.1.2): HMAC-SHA1(K, A ‖ 0 ‖ B ‖ i) for i = 0, 1, ... truncated to n bits;
* PTK = PRF-384(PMK, "Pairwise key expansion", min(AA,SPA) ‖ max(AA,SPA) ‖
  min(ANonce,SNonce) ‖ max(ANonce,SNonce)) = KCK (16) ‖ KEK (16) ‖ TK (16);
* EAPOL-Key frames with descriptor type 2 (RSN) and key descriptor version 2: the MIC is
  HMAC-SHA1-128 with the KCK over the whole EAPOL frame with a zero MIC field, and the key
  data of message 3 and of the group key message is AES-key-wrapped (RFC 3394) with the
  KEK (padded with 0xdd 0... to a multiple of 8, at least 16 bytes).

The key derivations use hashlib/hmac directly; the key wrap is the crypto framework's
software provider's (``stack.crypto.swcrypto.key_wrap``); CCMP is in ccmp.py.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from stack.crypto.swcrypto import key_unwrap, key_wrap

EAPOL_VERSION = 2
EAPOL_KEY = 3
EAPOL_START = 1
DESC_RSN = 2

# key information bits
KI_VERSION_MASK = 0x0007
KI_VERSION_AES_HMAC_SHA1 = 2
KI_PAIRWISE = 0x0008
KI_INSTALL = 0x0040
KI_ACK = 0x0080
KI_MIC = 0x0100
KI_SECURE = 0x0200
KI_ERROR = 0x0400
KI_REQUEST = 0x0800
KI_ENCRYPTED = 0x1000

#: EAPOL header (4) + the fixed key descriptor (95) before the key data
KEY_HDR = struct.Struct("!BBHBHH8s32s16s8s8s16sH")
KEY_FIXED = KEY_HDR.size  # 99
MIC_OFFSET = 4 + 1 + 2 + 2 + 8 + 32 + 16 + 8 + 8  # 81

#: the GTK KDE (00-0f-ac:1)
OUI_IEEE = b"\x00\x0f\xac"
KDE_GTK = 1


class EapolError(ValueError):
    pass


def psk(passphrase: str | bytes, ssid: str | bytes) -> bytes:
    """PMK from a passphrase of 8..63 ASCII characters and the SSID (§J.4.1)."""
    p = passphrase.encode() if isinstance(passphrase, str) else passphrase
    s = ssid.encode() if isinstance(ssid, str) else ssid
    if not 8 <= len(p) <= 63:
        raise ValueError("a WPA passphrase has 8 to 63 characters")
    return hashlib.pbkdf2_hmac("sha1", p, s, 4096, 32)


def prf(key: bytes, label: bytes, data: bytes, bits: int) -> bytes:
    """IEEE 802.11 PRF-n over HMAC-SHA1."""
    out = b""
    i = 0
    while len(out) * 8 < bits:
        out += hmac.digest(key, label + b"\x00" + data + bytes([i]), "sha1")
        i += 1
    return out[:bits // 8]


@dataclass(frozen=True)
class Ptk:
    kck: bytes
    kek: bytes
    tk: bytes


def derive_ptk(pmk: bytes, aa: bytes, spa: bytes, anonce: bytes, snonce: bytes) -> Ptk:
    data = min(aa, spa) + max(aa, spa) + min(anonce, snonce) + max(anonce, snonce)
    k = prf(pmk, b"Pairwise key expansion", data, 384)
    return Ptk(k[:16], k[16:32], k[32:48])


def mic(kck: bytes, frame: bytes) -> bytes:
    """HMAC-SHA1-128 of the EAPOL frame (its MIC field zero)."""
    return hmac.digest(kck, frame, "sha1")[:16]


def pad_key_data(data: bytes) -> bytes:
    if len(data) < 16 or len(data) % 8:
        data += b"\xdd"
        while len(data) < 16 or len(data) % 8:
            data += b"\x00"
    return data


def wrap_key_data(kek: bytes, data: bytes) -> bytes:
    return key_wrap(kek, pad_key_data(data))


def unwrap_key_data(kek: bytes, data: bytes) -> bytes:
    if len(data) < 24 or len(data) % 8:
        raise EapolError("wrapped key data of a bad length")
    try:
        return key_unwrap(kek, data)
    except Exception as exc:  # InvalidUnwrap
        raise EapolError("key data does not unwrap") from exc


def gtk_kde(keyid: int, gtk: bytes, tx: bool = False) -> bytes:
    body = OUI_IEEE + bytes([KDE_GTK, (keyid & 3) | (0x04 if tx else 0), 0]) + gtk
    return bytes([0xDD, len(body)]) + body


def parse_kdes(data: bytes) -> tuple[bytes | None, tuple[int, bytes] | None]:
    """(the RSN IE, (key id, GTK)) found in decrypted key data."""
    rsn: bytes | None = None
    gtk: tuple[int, bytes] | None = None
    i = 0
    while i + 2 <= len(data):
        eid, ln = data[i], data[i + 1]
        if eid == 0xDD and ln == 0:  # padding
            break
        body = data[i + 2:i + 2 + ln]
        if len(body) != ln:
            raise EapolError("truncated KDE")
        if eid == 48:
            rsn = data[i:i + 2 + ln]
        elif eid == 0xDD and ln >= 6 and body[:3] == OUI_IEEE and body[3] == KDE_GTK:
            g = body[6:]
            if len(g) not in (16, 32):
                raise EapolError("GTK of a bad length")
            gtk = (body[4] & 3, g)
        i += 2 + ln
    return rsn, gtk


@dataclass
class EapolKey:
    """One EAPOL-Key frame (RSN descriptor)."""

    info: int
    key_len: int = 0
    replay: int = 0
    nonce: bytes = bytes(32)
    iv: bytes = bytes(16)
    rsc: bytes = bytes(8)
    mic: bytes = bytes(16)
    data: bytes = b""
    version: int = EAPOL_VERSION

    def pack(self, kck: bytes | None = None) -> bytes:
        """The frame; with ``kck`` the MIC is computed and set (KI_MIC must be set)."""
        body_len = KEY_FIXED - 4 + len(self.data)
        frame = bytearray(KEY_HDR.pack(self.version, EAPOL_KEY, body_len, DESC_RSN, self.info,
                                       self.key_len, self.replay.to_bytes(8, "big"),
                                       self.nonce, self.iv, self.rsc, bytes(8), bytes(16),
                                       len(self.data)) + self.data)
        if kck is not None:
            self.mic = mic(kck, bytes(frame))
            frame[MIC_OFFSET:MIC_OFFSET + 16] = self.mic
        return bytes(frame)

    @classmethod
    def parse(cls, frame: bytes) -> EapolKey:
        if len(frame) < KEY_FIXED:
            raise EapolError("EAPOL-Key frame too short")
        (ver, ptype, blen, desc, info, klen, replay, nonce, iv, rsc, _rsv, m,
         dlen) = KEY_HDR.unpack_from(frame)
        if ptype != EAPOL_KEY:
            raise EapolError(f"EAPOL packet type {ptype} is not Key")
        if desc != DESC_RSN:
            raise EapolError(f"key descriptor type {desc} is not RSN")
        if 4 + blen > len(frame) or blen < KEY_FIXED - 4 + dlen:
            raise EapolError("EAPOL body length does not match")
        if info & KI_VERSION_MASK != KI_VERSION_AES_HMAC_SHA1:
            raise EapolError(f"key descriptor version {info & 7} is not 2")
        data = bytes(frame[KEY_FIXED:KEY_FIXED + dlen])
        return cls(info, klen, int.from_bytes(replay, "big"), bytes(nonce), bytes(iv),
                   bytes(rsc), bytes(m), data, ver)

    def verify(self, kck: bytes, frame: bytes) -> bool:
        zeroed = bytearray(frame[:4 + struct.unpack_from("!H", frame, 2)[0]])
        zeroed[MIC_OFFSET:MIC_OFFSET + 16] = bytes(16)
        return hmac.compare_digest(mic(kck, bytes(zeroed)), self.mic)


__all__ = ["EapolError", "EapolKey", "Ptk", "derive_ptk", "gtk_kde", "mic", "parse_kdes",
           "prf", "psk", "unwrap_key_data", "wrap_key_data"]
