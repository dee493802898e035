"""Qnet frames: QNX's "LwL4" header on EtherType 0x8204 (and in IP protocol 106), the LAN
resolver message and the TCS_INIT payload, laid out as Wireshark's qnet6 dissector
(packet-qnet6.c) decodes them. Parse in place (a frame's payload is a view of the
received buffer), emit into a few buffers.

The LwL4 header, little endian (version 0x2a), 38 bytes::

    0  pad      u16   always 0
    2  version  u8    0x2a (little endian; 0xaa would be big endian, not spoken here)
    3  type     u8    DATA, TCS_INIT ... LR (T_*)
    4  flags    u8    FIRST | LAST | CRC
    5  layer    u8    KIF, NR, LR, SEQ
    6  qos_info 20    src_nd_for_dst u16, dst_nd_for_src u16, sconn u32, dconn u32,
                      seq u32, qos_type u16, src_qos_idx u16
    26 offset   u32   this fragment's offset in its message
    30 length   u32   this frame's payload length
    34 crc      u32   CRC-32/MPEG-2 (register 0, no final xor) over bytes 2..34, four
                      zero bytes (the crc field) and the payload

With a shared key (``key=``) an HMAC-SHA256 of header and payload, cut to MAC_LEN bytes,
follows the payload; ``length`` does not count it, so the dissector sees a plain frame.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass

from stack.packet import Buffer

ETHERTYPE_QNET = 0x8204
IPPROTO_QNET = 106

HDR_LEN = 38
VERSION_LE = 0x2A
VERSION_BE = 0xAA

# types (qnet6.l4.type)
T_USER = 0
T_TCS_INIT = 1
T_TCS_REM_UP = 2
T_TCS_UP = 3
T_TCS_DOWN = 4
T_TCS_REM_DOWN = 5
T_DATA = 8
T_ACK = 9
T_NACK = 10
T_LR = 11
TYPES = frozenset({T_TCS_INIT, T_TCS_REM_UP, T_TCS_UP, T_TCS_DOWN, T_TCS_REM_DOWN,
                   T_DATA, T_ACK, T_NACK, T_LR})
TYPE_NAMES = {T_USER: "user", T_TCS_INIT: "tcs_init", T_TCS_REM_UP: "tcs_rem_up",
              T_TCS_UP: "tcs_up", T_TCS_DOWN: "tcs_down", T_TCS_REM_DOWN: "tcs_rem_down",
              T_DATA: "data", T_ACK: "ack", T_NACK: "nack", T_LR: "lr"}

# flags
F_FIRST = 0x01
F_LAST = 0x02
F_CRC = 0x04

# layers (qnet6.l4.layer)
L_KIF = 0
L_NR = 1
L_LR = 2
L_SEQ = 3

# qos types (qnet6.qos.qos_type)
QOS_LOADBALANCE = 0
QOS_REDUNDANT = 1
QOS_EXCLUSIVE = 2
QOS_PREFERRED = 3
QOS_NAMES = {QOS_LOADBALANCE: "loadbalance", QOS_REDUNDANT: "redundant",
             QOS_EXCLUSIVE: "exclusive", QOS_PREFERRED: "preferred"}

#: bytes of HMAC-SHA256 carried after the payload when a key is configured
MAC_LEN = 16

_HDR = struct.Struct("<HBBBBHHIIIHHIII")
_HDR_NOCRC = struct.Struct("<HBBBBHHIIIHHII")
_CRC = struct.Struct("<I")


class ParseError(ValueError):
    """A frame refused; ``reason`` is the counter it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- CRC-32/MPEG-2 with a zero register, through zlib --------------------------------------
# MPEG-2's CRC is CRC-32's polynomial without reflection; CRC-32 over bit-reversed bytes
# with the reflected register gives the bit-reversed MPEG-2 register (one C pass each).
_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rev32(x: int) -> int:
    return int.from_bytes(x.to_bytes(4, "little").translate(_REV8), "big")


def crc_start() -> int:
    """The running state of a CRC computed piecewise with ``crc_update``."""
    return 0xFFFFFFFF


def crc_update(state: int, data: Buffer) -> int:
    return zlib.crc32(bytes(data).translate(_REV8), state)


def crc_finish(state: int) -> int:
    return _rev32(~state & 0xFFFFFFFF)


def crc32_mpeg2(data: Buffer) -> int:
    return crc_finish(crc_update(crc_start(), data))


def crc32_mpeg2_slow(data: Buffer) -> int:
    """The bitwise definition (tests check the fast one against it)."""
    crc = 0
    for byte in bytes(data):
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


_ZERO4 = bytes(4)


def frame_crc(head: Buffer, payload: Buffer) -> int:
    """The header's crc: bytes 2..34 of the header, the crc field as zeros, the payload."""
    state = crc_update(crc_start(), memoryview(head)[2:34])
    state = crc_update(state, _ZERO4)
    if len(payload):
        state = crc_update(state, payload)
    return crc_finish(state)


def frame_mac(key: bytes, head: Buffer, payload: Buffer) -> bytes:
    h = hmac.new(key, bytes(head), hashlib.sha256)
    h.update(payload)
    return h.digest()[:MAC_LEN]


@dataclass(slots=True)
class Header:
    type: int = T_DATA
    flags: int = F_FIRST | F_LAST
    layer: int = L_KIF
    src_nd: int = 0   # src_nd_for_dst
    dst_nd: int = 0   # dst_nd_for_src
    sconn: int = 0
    dconn: int = 0
    seq: int = 0
    qos_type: int = QOS_LOADBALANCE
    qos_idx: int = 0
    offset: int = 0
    length: int = 0
    crc: int = 0

    def emit(self, payload: Buffer = b"", key: bytes | None = None) -> list[Buffer]:
        """The frame's buffers (header, payload[, mac]); sets ``length`` and ``crc``."""
        self.length = len(payload)
        self.flags |= F_CRC
        head = bytearray(_HDR.pack(0, VERSION_LE, self.type, self.flags, self.layer,
                                   self.src_nd, self.dst_nd, self.sconn, self.dconn,
                                   self.seq, self.qos_type, self.qos_idx, self.offset,
                                   self.length, 0))
        self.crc = frame_crc(head, payload)
        _CRC.pack_into(head, 34, self.crc)
        bufs: list[Buffer] = [bytes(head)]
        if len(payload):
            bufs.append(payload)
        if key is not None:
            bufs.append(frame_mac(key, head, payload))
        return bufs


@dataclass(slots=True)
class Frame:
    hdr: Header
    payload: memoryview


def parse(buf: Buffer, key: bytes | None = None) -> Frame:
    """Check and decode one frame (the Ethernet payload or the IP datagram's payload);
    trailing bytes past ``length`` (Ethernet padding) are ignored. Raises ParseError."""
    mv = memoryview(buf)
    if len(mv) < HDR_LEN:
        raise ParseError("drop_truncated", f"{len(mv)} bytes, the header is {HDR_LEN}")
    (_pad, ver, typ, flags, layer, src_nd, dst_nd, sconn, dconn, seq, qos_type, qos_idx,
     offset, length, crc) = _HDR.unpack_from(mv)
    if ver != VERSION_LE:
        raise ParseError("drop_bad_version", f"version {ver:#x}")
    if typ not in TYPES:
        raise ParseError("drop_unknown_type", f"type {typ}")
    if layer > L_SEQ:
        raise ParseError("drop_unknown_layer", f"layer {layer}")
    avail = len(mv) - HDR_LEN - (MAC_LEN if key is not None else 0)
    if length > avail:
        raise ParseError("drop_truncated", f"length {length}, {avail} bytes follow")
    if not flags & F_CRC:
        raise ParseError("drop_no_crc", "CRC flag not set")
    payload = mv[HDR_LEN:HDR_LEN + length]
    if frame_crc(mv[:HDR_LEN], payload) != crc:
        raise ParseError("drop_bad_crc", f"crc {crc:#010x}")
    if key is not None:
        got = bytes(mv[HDR_LEN + length:HDR_LEN + length + MAC_LEN])
        if not hmac.compare_digest(got, frame_mac(key, mv[:HDR_LEN], payload)):
            raise ParseError("drop_bad_mac", "HMAC does not match")
    return Frame(Header(typ, flags, layer, src_nd, dst_nd, sconn, dconn, seq, qos_type,
                        qos_idx, offset, length, crc), payload)


# -- TCS_INIT: four name offsets, then NUL-terminated names --------------------------------
def tcs_init_payload(src_name: str, dst_name: str, domain: str = "") -> bytes:
    names = [src_name, domain, dst_name, domain]
    offs: list[int] = []
    blob = bytearray()
    for n in names:
        offs.append(len(blob))
        blob += n.encode()[:255] + b"\0"
    return struct.pack("<4H", *offs) + bytes(blob)


def parse_tcs_init(payload: Buffer) -> tuple[str, str]:
    """(source name, destination name) of a TCS_INIT."""
    mv = bytes(payload)
    if len(mv) < 8:
        raise ParseError("drop_bad_tcs", "TCS_INIT shorter than its offsets")
    offs = struct.unpack_from("<4H", mv)
    names = mv[8:]

    def get(off: int) -> str:
        end = names.find(b"\0", off)
        if off >= len(names) or end < 0:
            raise ParseError("drop_bad_tcs", f"name at {off} not in the payload")
        try:
            return names[off:end].decode()
        except UnicodeDecodeError:
            raise ParseError("drop_bad_tcs", "name is not UTF-8") from None

    return get(offs[0]), get(offs[2])


# -- the LAN resolver message ---------------------------------------------------------------
LR_VERSION = 1
LR_REQUEST = 1
LR_REPLY = 2
LR_HDR_LEN = 56
#: the address strings are sockaddr-like: length, family, then the 6-byte MAC
LR_SA_FAMILY_MAC = 1
_LR_HDR = struct.Struct("<BBBBI12I")


@dataclass(slots=True)
class LrMessage:
    type: int = LR_REQUEST
    src_name: str = ""
    src_domain: str = ""
    src_mac: bytes = b""
    dst_name: str = ""
    dst_domain: str = ""
    dst_mac: bytes = b""

    def emit(self) -> bytes:
        parts = [self.src_name.encode(), self.src_domain.encode(), _sa(self.src_mac),
                 self.dst_name.encode(), self.dst_domain.encode(), _sa(self.dst_mac)]
        blob = bytearray()
        pairs: list[int] = []
        for p in parts:
            pairs += [len(blob), len(p)]
            blob += p + b"\0"
        return _LR_HDR.pack(LR_VERSION, 0, self.type, 0, LR_HDR_LEN + len(blob),
                            *pairs) + bytes(blob)


def _sa(mac: bytes) -> bytes:
    # always present (zeros for "unknown"): the dissector faults on an empty address
    return bytes([8, LR_SA_FAMILY_MAC]) + (mac or bytes(6))


def parse_lr(payload: Buffer) -> LrMessage:
    mv = bytes(payload)
    if len(mv) < LR_HDR_LEN:
        raise ParseError("drop_bad_lr", f"LR message of {len(mv)} bytes")
    ver, _p, typ, _p2, total, *pairs = _LR_HDR.unpack_from(mv)
    if ver != LR_VERSION or typ not in (LR_REQUEST, LR_REPLY):
        raise ParseError("drop_bad_lr", f"LR version {ver} type {typ}")
    if total > len(mv):
        raise ParseError("drop_bad_lr", f"LR total {total} over {len(mv)} bytes")
    body = mv[LR_HDR_LEN:total]
    vals: list[bytes] = []
    for i in range(6):
        off, ln = pairs[2 * i], pairs[2 * i + 1]
        if off + ln > len(body) or ln > 255:
            raise ParseError("drop_bad_lr", f"LR field {i} outside the message")
        vals.append(body[off:off + ln])
    try:
        names = [v.decode() for i, v in enumerate(vals) if i not in (2, 5)]
    except UnicodeDecodeError:
        raise ParseError("drop_bad_lr", "LR name is not UTF-8") from None

    def mac(sa: bytes) -> bytes:
        if not sa:
            return b""
        if len(sa) != 8 or sa[1] != LR_SA_FAMILY_MAC:
            raise ParseError("drop_bad_lr", "LR address is not a MAC")
        return b"" if sa[2:] == bytes(6) else sa[2:]

    return LrMessage(typ, names[0], names[1], mac(vals[2]), names[2], names[3], mac(vals[5]))
