"""802.11 frame formats (IEEE 802.11-2016 §9): the MAC header, management frame bodies,
information elements, the RSN element, LLC/SNAP, and the radiotap header bpf prepends.

Parsing never trusts a length: a truncated header or element raises ``WireError`` with a
short reason, which the input path counts (``rx_bad_<reason>``)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

# frame control, first byte: type (bits 2-3) and subtype (bits 4-7)
T_MGMT, T_CTL, T_DATA = 0, 1, 2
ST_ASSOC_REQ, ST_ASSOC_RESP, ST_REASSOC_REQ, ST_REASSOC_RESP = 0, 1, 2, 3
ST_PROBE_REQ, ST_PROBE_RESP, ST_BEACON = 4, 5, 8
ST_DISASSOC, ST_AUTH, ST_DEAUTH = 10, 11, 12
ST_DATA, ST_NULL, ST_QOS_DATA = 0, 4, 8
# frame control, second byte
FC1_TODS, FC1_FROMDS, FC1_MOREFRAG, FC1_RETRY = 0x01, 0x02, 0x04, 0x08
FC1_PWRMGT, FC1_MOREDATA, FC1_PROTECTED, FC1_ORDER = 0x10, 0x20, 0x40, 0x80

MGMT_NAMES = {ST_ASSOC_REQ: "assoc_req", ST_ASSOC_RESP: "assoc_resp",
              ST_REASSOC_REQ: "reassoc_req", ST_REASSOC_RESP: "reassoc_resp",
              ST_PROBE_REQ: "probe_req", ST_PROBE_RESP: "probe_resp", ST_BEACON: "beacon",
              ST_DISASSOC: "disassoc", ST_AUTH: "auth", ST_DEAUTH: "deauth"}

# capability information
CAP_ESS, CAP_PRIVACY, CAP_SHORT_PREAMBLE, CAP_SHORT_SLOT = 0x0001, 0x0010, 0x0020, 0x0400

# element ids
E_SSID, E_RATES, E_DS, E_TIM, E_RSN, E_XRATES, E_VENDOR = 0, 1, 3, 5, 48, 50, 221

# status and reason codes (§9.4.1.7, §9.4.1.9)
S_SUCCESS, S_UNSPECIFIED, S_UNSUPP_ALG, S_TOO_MANY_STAS = 0, 1, 13, 17
S_INVALID_IE, S_INVALID_GROUP, S_INVALID_PAIRWISE, S_INVALID_AKMP = 40, 41, 42, 43
S_INVALID_RSNE = 72
R_UNSPECIFIED, R_AUTH_EXPIRE, R_AUTH_LEAVE, R_ASSOC_EXPIRE = 1, 2, 3, 4
R_ASSOC_TOOMANY, R_NOT_AUTHED, R_NOT_ASSOCED, R_ASSOC_LEAVE = 5, 6, 7, 8
R_IE_INVALID, R_MIC_FAILURE, R_4WAY_TIMEOUT, R_GROUP_TIMEOUT = 13, 14, 15, 16

BROADCAST = b"\xff" * 6
LLC_SNAP = b"\xaa\xaa\x03\x00\x00\x00"
ETHERTYPE_EAPOL = 0x888E

#: rates in 500 kb/s units (basic rates have bit 7): 1 2 5.5 11 6 9 12 18 | 24 36 48 54
RATES = bytes([0x82, 0x84, 0x8B, 0x96, 0x0C, 0x12, 0x18, 0x24])
XRATES = bytes([0x30, 0x48, 0x60, 0x6C])
#: the rate the simulated radio sends at (54 Mb/s)
DEFAULT_RATE = 108

OUI_IEEE = b"\x00\x0f\xac"
CIPHER_CCMP = OUI_IEEE + b"\x04"
AKM_PSK = OUI_IEEE + b"\x02"

TU = 1024e-6  # a time unit, seconds


class WireError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Header:
    """The MAC header of a received frame (3 or 4 addresses, QoS control)."""

    fc0: int
    fc1: int
    duration: int
    addr1: bytes
    addr2: bytes
    addr3: bytes
    seq: int  # sequence number (12 bits)
    frag: int
    addr4: bytes = b""
    qos: int | None = None
    hdr_len: int = 24

    @property
    def type(self) -> int:
        return (self.fc0 >> 2) & 3

    @property
    def subtype(self) -> int:
        return self.fc0 >> 4

    @property
    def retry(self) -> bool:
        return bool(self.fc1 & FC1_RETRY)

    @property
    def protected(self) -> bool:
        return bool(self.fc1 & FC1_PROTECTED)

    @property
    def ds(self) -> int:
        return self.fc1 & 3


_HDR = struct.Struct("<BBH6s6s6sH")


def parse_header(frame: bytes | memoryview) -> Header:
    if len(frame) < 10:
        raise WireError("short")
    fc0, fc1 = frame[0], frame[1]
    if fc0 & 3:
        raise WireError("version")
    ftype = (fc0 >> 2) & 3
    if ftype == T_CTL:
        # control frames (ACK, RTS...) carry 1-2 addresses: the simulated radio does
        # acknowledgements itself, so they are only counted
        raise WireError("control")
    if ftype == 3:
        raise WireError("type")
    if len(frame) < 24:
        raise WireError("short")
    _f0, _f1, dur, a1, a2, a3, sc = _HDR.unpack_from(frame)
    h = Header(fc0, fc1, dur, a1, a2, a3, sc >> 4, sc & 15)
    n = 24
    if ftype == T_DATA:
        if fc1 & 3 == 3:
            if len(frame) < 30:
                raise WireError("short")
            h.addr4 = bytes(frame[24:30])
            n = 30
        if (fc0 >> 4) & ST_QOS_DATA:
            if len(frame) < n + 2:
                raise WireError("short")
            h.qos = frame[n] | frame[n + 1] << 8
            n += 2
    h.hdr_len = n
    return h


def build_header(ftype: int, subtype: int, fc1: int, a1: bytes, a2: bytes, a3: bytes,
                 seq: int, duration: int = 0) -> bytes:
    return _HDR.pack((subtype << 4) | (ftype << 2), fc1, duration, a1, a2, a3,
                     (seq & 0xFFF) << 4)


def parse_ies(body: bytes | memoryview) -> dict[int, bytes]:
    """The elements of a management frame body: id → the first one's contents. A
    truncated element is an error (``ie``); an SSID over 32 bytes too."""
    out: dict[int, bytes] = {}
    i = 0
    n = len(body)
    while i < n:
        if i + 2 > n:
            raise WireError("ie")
        eid, ln = body[i], body[i + 1]
        if i + 2 + ln > n:
            raise WireError("ie")
        if eid not in out:
            out[eid] = bytes(body[i + 2:i + 2 + ln])
        i += 2 + ln
    ssid = out.get(E_SSID)
    if ssid is not None and len(ssid) > 32:
        raise WireError("ie")
    ds = out.get(E_DS)
    if ds is not None and len(ds) != 1:
        raise WireError("ie")
    return out


def ie(eid: int, body: bytes) -> bytes:
    return bytes([eid, len(body)]) + body


@dataclass(frozen=True)
class Rsn:
    """An RSN element: the ciphers and AKMs offered."""

    group: bytes = CIPHER_CCMP
    pairwise: tuple[bytes, ...] = (CIPHER_CCMP,)
    akms: tuple[bytes, ...] = (AKM_PSK,)
    caps: int = 0

    def element(self) -> bytes:
        body = struct.pack("<H", 1) + self.group
        body += struct.pack("<H", len(self.pairwise)) + b"".join(self.pairwise)
        body += struct.pack("<H", len(self.akms)) + b"".join(self.akms)
        body += struct.pack("<H", self.caps)
        return ie(E_RSN, body)


def parse_rsn(body: bytes) -> Rsn:
    """An RSN element's contents (§9.4.2.25); ``rsn`` if malformed."""
    try:
        (ver,) = struct.unpack_from("<H", body, 0)
        if ver != 1:
            raise WireError("rsn")
        group = body[2:6]
        if len(group) != 4:
            raise WireError("rsn")
        i = 6
        (np,) = struct.unpack_from("<H", body, i)
        pw = tuple(body[i + 2 + 4 * k:i + 6 + 4 * k] for k in range(np))
        i += 2 + 4 * np
        (na,) = struct.unpack_from("<H", body, i)
        akms = tuple(body[i + 2 + 4 * k:i + 6 + 4 * k] for k in range(na))
        i += 2 + 4 * na
        if any(len(x) != 4 for x in pw + akms) or i > len(body):
            raise WireError("rsn")
        caps = struct.unpack_from("<H", body, i)[0] if i + 2 <= len(body) else 0
    except struct.error:
        raise WireError("rsn") from None
    return Rsn(group, pw, akms, caps)


# -- management bodies ------------------------------------------------------------------
_BEACON = struct.Struct("<QHH")


@dataclass
class Beacon:
    tsf: int
    interval: int
    cap: int
    ies: dict[int, bytes] = field(default_factory=dict)


def parse_beacon(body: bytes | memoryview) -> Beacon:
    if len(body) < 12:
        raise WireError("body")
    tsf, interval, cap = _BEACON.unpack_from(body)
    return Beacon(tsf, interval, cap, parse_ies(body[12:]))


def beacon_body(tsf: int, interval: int, cap: int, ies: bytes) -> bytes:
    return _BEACON.pack(tsf, interval, cap) + ies


def parse_fixed(body: bytes | memoryview, fmt: str) -> tuple[int, ...]:
    s = struct.calcsize(fmt)
    if len(body) < s:
        raise WireError("body")
    return struct.unpack_from(fmt, body)


# -- radiotap ---------------------------------------------------------------------------
#: present: TSFT, FLAGS, RATE, CHANNEL, DBM_ANTSIGNAL
_RT = struct.Struct("<BBHIQBBHHb")
RT_PRESENT = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
DLT_IEEE802_11_RADIO = 127
CHAN_2GHZ, CHAN_5GHZ, CHAN_OFDM = 0x0080, 0x0100, 0x0040


def channel_freq(chan: int) -> int:
    if chan == 14:
        return 2484
    if 1 <= chan <= 13:
        return 2407 + 5 * chan
    return 5000 + 5 * chan


def radiotap(tsft: int, rate: int, chan: int, signal: int) -> bytes:
    """The radiotap header (version 0) bpf's DLT_IEEE802_11_RADIO frames start with."""
    flags = CHAN_OFDM | (CHAN_2GHZ if chan <= 14 else CHAN_5GHZ)
    return _RT.pack(0, 0, _RT.size, RT_PRESENT, tsft & (2**64 - 1), 0, rate & 0xFF,
                    channel_freq(chan), flags, max(-128, min(127, signal)))


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ssid_str(ssid: bytes) -> str:
    try:
        text = ssid.decode()
    except UnicodeDecodeError:
        return "0x" + ssid.hex()
    return text if text.isprintable() else "0x" + ssid.hex()


def iter_frames(data: bytes) -> Iterator[bytes]:  # pragma: no cover - helper for tools
    yield data
