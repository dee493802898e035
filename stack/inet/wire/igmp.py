"""IGMP messages (RFC 1112 v1, RFC 2236 v2, RFC 3376 v3): parse in place, emit with the
checksum. Addresses are the IPv4 layer's 32-bit ints.

Queries (type 0x11) of the three versions are told apart by length and max response
code as RFC 3376 §7.1 says: 8 bytes with code 0 is IGMPv1, 8 bytes with a code is
IGMPv2, 12 bytes or more is IGMPv3 (9-11 bytes: ignored). ``ParseError.reason`` is the
counter the IGMP handler bumps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.inet.wire import ParseError, checksum1, verify1

HLEN = 8

QUERY = 0x11
V1_REPORT = 0x12
V2_REPORT = 0x16
V2_LEAVE = 0x17
V3_REPORT = 0x22

# RFC 3376 §4.2.12 group record types
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4
ALLOW_NEW_SOURCES = 5
BLOCK_OLD_SOURCES = 6
RECORD_TYPES = range(1, 7)

ALL_HOSTS = 0xE0000001  # 224.0.0.1
ALL_ROUTERS = 0xE0000002  # 224.0.0.2: v2 leaves
V3_ROUTERS = 0xE0000016  # 224.0.0.22: v3 reports

#: the IPv4 Router Alert option (RFC 2113) every IGMP message carries
ROUTER_ALERT = b"\x94\x04\x00\x00"

_HDR = struct.Struct("!BBHI")
_V3Q = struct.Struct("!BBH")
_REC = struct.Struct("!BBHI")


@dataclass(slots=True)
class Message:
    """A parsed IGMP message. Queries: ``version`` (1, 2, 3), ``max_resp`` in seconds,
    and for v3 ``s_flag``, ``qrv``, ``qqi`` (seconds) and ``sources``. Reports and
    leaves: ``group`` (v1/v2) or ``records`` (v3: (type, group, sources))."""

    type: int
    code: int
    group: int
    version: int = 0
    max_resp: float = 0.0
    s_flag: bool = False
    qrv: int = 0
    qqi: int = 0
    sources: tuple[int, ...] = ()
    records: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)


def decode_code(code: int) -> int:
    """RFC 3376 §4.1.1 / §4.1.7: a Max Resp Code or QQIC as its value (the exponent
    form above 127)."""
    if code < 128:
        return code
    return ((code & 0x0F) | 0x10) << (((code >> 4) & 7) + 3)


def encode_code(value: int) -> int:
    """The inverse of ``decode_code`` (rounding down where the form cannot say it)."""
    if value < 128:
        return value
    for exp in range(8):
        mant = (value >> (exp + 3)) - 0x10
        if 0 <= mant <= 0x0F:
            return 0x80 | exp << 4 | mant
    return 0xFF


def parse(data: memoryview) -> Message:
    n = len(data)
    if n < HLEN:
        raise ParseError("drop_truncated", f"{n} bytes")
    if not verify1(data):
        raise ParseError("drop_bad_checksum")
    mtype, code, _csum, group = _HDR.unpack_from(data, 0)
    if mtype == QUERY:
        if n == HLEN:
            version = 2 if code else 1
            return Message(mtype, code, group, version, (code or 100) / 10)
        if n < 12:
            raise ParseError("drop_bad_length", f"a {n}-byte query")
        flags, qqic, nsrc = _V3Q.unpack_from(data, 8)
        if 12 + 4 * nsrc > n:
            raise ParseError("drop_bad_length", f"{nsrc} sources in {n} bytes")
        sources = struct.unpack_from(f"!{nsrc}I", data, 12)
        return Message(mtype, code, group, 3, decode_code(code) / 10, bool(flags & 8),
                       flags & 7, decode_code(qqic), sources)
    if mtype == V3_REPORT:
        nrec = int.from_bytes(data[6:8], "big")
        off = 8
        records = []
        for _ in range(nrec):
            if off + 8 > n:
                raise ParseError("drop_bad_length", "record header past the end")
            rtype, aux, nsrc, rgroup = _REC.unpack_from(data, off)
            end = off + 8 + 4 * nsrc + 4 * aux
            if end > n:
                raise ParseError("drop_bad_length", "record past the end")
            if rtype not in RECORD_TYPES:
                raise ParseError("drop_bad_record", f"type {rtype}")
            records.append((rtype, rgroup, struct.unpack_from(f"!{nsrc}I", data, off + 8)))
            off = end
        return Message(mtype, code, 0, records=records)
    return Message(mtype, code, group)


def _finish(msg: bytearray) -> bytes:
    c = checksum1(msg)
    msg[2] = c >> 8
    msg[3] = c & 0xFF
    return bytes(msg)


def emit(mtype: int, group: int, code: int = 0) -> bytes:
    """An 8-byte message: a v1/v2 query, a v1/v2 report, a leave."""
    return _finish(bytearray(_HDR.pack(mtype, code, 0, group)))


def emit_query_v3(group: int = 0, max_resp_code: int = 100, sources: tuple[int, ...] = (),
                  *, s_flag: bool = False, qrv: int = 2, qqic: int = 125) -> bytes:
    msg = bytearray(_HDR.pack(QUERY, max_resp_code, 0, group))
    msg += _V3Q.pack((8 if s_flag else 0) | (qrv & 7), qqic, len(sources))
    msg += struct.pack(f"!{len(sources)}I", *sources)
    return _finish(msg)


def record(rtype: int, group: int, sources: tuple[int, ...] | list[int] = ()) -> bytes:
    return _REC.pack(rtype, 0, len(sources), group) + struct.pack(f"!{len(sources)}I",
                                                                  *sources)


def emit_v3_report(records: list[bytes]) -> bytes:
    """A v3 membership report of already emitted ``record``s."""
    msg = bytearray(_HDR.pack(V3_REPORT, 0, 0, len(records)))
    for r in records:
        msg += r
    return _finish(msg)
