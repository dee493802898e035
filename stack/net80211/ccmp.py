"""CCMP (IEEE 802.11-2016 §12.5.3) through the crypto framework (stack/crypto).

One ``CcmpKey`` per installed temporal key (a pairwise TK or a GTK) holds an AES-CCM
session (M = 8: 8-byte MIC; L = 2: 13-byte nonce) made with ``crypto.new_session`` on the
best provider (swcrypto, or an offload engine such as ``-d cryptosim``), the 48-bit
transmit packet number, and for receive the highest PN accepted (replay check: a frame's
PN must be larger; the check is made before the request is dispatched and again when it
completes, since an engine may complete requests out of order).

Completion order: requests of one key are released in the order they were submitted
(``_release``), so an engine that completes out of order neither reorders the frames on
the air (a receiver would take a later PN first and drop the earlier frames as replays)
nor reorders received frames.

The MPDU layout: MAC header ‖ CCMP header (PN0 PN1 0 keyid<<6|ExtIV PN2 PN3 PN4 PN5) ‖
ciphertext ‖ MIC(8). The AAD is the header with FC subtype bits 4-6 (data), Retry,
PwrMgt and MoreData masked, Protected set, sequence number zeroed (fragment kept),
addr4 and the QoS TID when present; the nonce is flags(priority) ‖ A2 ‖ PN (big endian).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable

from stack.crypto.algs import Alg
from stack.crypto.framework import (
    DECRYPT,
    ENCRYPT,
    Crypto,
    CryptoRequest,
    Session,
    SessionParams,
)
from stack.net80211.wire import FC1_PROTECTED, T_DATA

CCMP_HDR = 8
CCMP_MIC = 8
PN_MAX = (1 << 48) - 1


class CcmpError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def aad_nonce(hdr: bytes | bytearray | memoryview, pn: int, hdr_len: int) -> tuple[bytes, bytes]:
    """(AAD, nonce) for a frame whose MAC header is ``hdr[:hdr_len]``."""
    fc0, fc1 = hdr[0], hdr[1]
    ftype = (fc0 >> 2) & 3
    if ftype == T_DATA:
        fc0 &= 0x8F  # subtype bits 4, 5, 6
    fc1 = (fc1 & ~0x38 & 0xFF) | FC1_PROTECTED  # retry, pwrmgt, moredata off
    aad = bytearray((fc0, fc1)) + hdr[4:22] + bytes((hdr[22] & 0x0F, 0))
    prio = 0
    if hdr_len > 24:
        if fc1 & 3 == 3:
            aad += hdr[24:30]
        if ftype == T_DATA and (hdr[0] >> 4) & 8:  # QoS data: the TID only
            q = hdr_len - 2
            prio = hdr[q] & 0x0F
            aad += bytes((prio, 0))
    nonce = bytes((prio,)) + bytes(hdr[10:16]) + pn.to_bytes(6, "big")
    return bytes(aad), nonce


def ccmp_header(pn: int, keyid: int) -> bytes:
    p = pn.to_bytes(6, "little")
    return bytes((p[0], p[1], 0, 0x20 | (keyid << 6), p[2], p[3], p[4], p[5]))


def parse_ccmp_header(b: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(PN, key id) of a CCMP header."""
    if len(b) < CCMP_HDR:
        raise CcmpError("short")
    if not b[3] & 0x20:
        raise CcmpError("no_extiv")
    pn = b[0] | b[1] << 8 | b[4] << 16 | b[5] << 24 | b[6] << 32 | b[7] << 40
    return pn, b[3] >> 6


Done = Callable[[int, bytes], None]


class CcmpKey:
    """A temporal key: its crypto session, transmit PN and receive replay counter."""

    def __init__(self, crypto: Crypto, tk: bytes, keyid: int = 0, *, tx_pn: int = 0,
                 rx_pn: int = -1) -> None:
        self.crypto = crypto
        self.tk = tk
        self.keyid = keyid
        self.session: Session = crypto.new_session(
            SessionParams(cipher=Alg.AES_CCM_16, key=tk, tag_len=CCMP_MIC))
        self.tx_pn = tx_pn  # the last PN sent
        self.rx_pn = rx_pn  # the highest PN accepted
        self._order: deque[CryptoRequest] = deque()

    @property
    def provider(self) -> str:
        return self.session.provider.name

    def free(self) -> None:
        self.crypto.free_session(self.session)
        self._order.clear()

    # -- transmit --------------------------------------------------------------------
    def encrypt(self, hdr: bytes, hdr_len: int, payload: bytes, done: Done) -> None:
        """Encrypt ``payload`` under the header; ``done(0, mpdu)`` (or an errno) later."""
        if self.tx_pn >= PN_MAX:
            done(errno.EOVERFLOW, b"")
            return
        self.tx_pn += 1
        pn = self.tx_pn
        h = bytearray(hdr)
        h[1] |= FC1_PROTECTED
        aad, nonce = aad_nonce(h, pn, hdr_len)
        buf = bytes(h) + ccmp_header(pn, self.keyid) + payload
        req = CryptoRequest(self.session, ENCRYPT, buf, skip=len(h) + CCMP_HDR,
                            length=len(payload), inject=len(buf), iv=nonce, aad=aad,
                            callback=self._completed, opaque=done)
        self._order.append(req)
        self.crypto.dispatch(req)

    # -- receive ---------------------------------------------------------------------
    def decrypt(self, frame: bytes | bytearray | memoryview, hdr_len: int, pn: int,
                done: Done) -> None:
        """Decrypt a protected MPDU whose PN was checked (``replayed``); ``done(0,
        plaintext payload)``, EBADMSG when the MIC fails, EALREADY for a replay."""
        n = len(frame) - hdr_len - CCMP_HDR - CCMP_MIC
        aad, nonce = aad_nonce(frame, pn, hdr_len)
        req = CryptoRequest(self.session, DECRYPT, bytes(frame), skip=hdr_len + CCMP_HDR,
                            length=n, inject=len(frame) - CCMP_MIC, iv=nonce, aad=aad,
                            callback=self._completed, opaque=(done, pn, hdr_len))
        self._order.append(req)
        self.crypto.dispatch(req)

    def replayed(self, pn: int) -> bool:
        return pn <= self.rx_pn

    # -- completion, in submission order -----------------------------------------------
    def _completed(self, req: CryptoRequest) -> None:
        order = self._order
        while order and (order[0].out is not None or order[0].error):
            r = order.popleft()
            self._finish(r)

    def _finish(self, req: CryptoRequest) -> None:
        out = req.out
        if req.op == ENCRYPT:
            done: Done = req.opaque
            done(req.error, bytes(out) if out is not None and not req.error else b"")
            return
        done, pn, hdr_len = req.opaque
        if req.error or out is None:
            done(req.error or errno.EIO, b"")
            return
        if pn <= self.rx_pn:  # a later frame completed first (never with swcrypto)
            done(errno.EALREADY, b"")
            return
        self.rx_pn = pn
        done(0, bytes(out[hdr_len + CCMP_HDR:len(out) - CCMP_MIC]))
