"""UDP header (RFC 768): parse in place, emit into buffers."""

from __future__ import annotations

import struct

from stack.transport.wire.checksum import ParseError

HDR = struct.Struct("!HHHH")
HDR_LEN = 8


class UDPDatagram:
    __slots__ = ("sport", "dport", "length", "csum", "payload")

    def __init__(self, sport: int, dport: int, length: int, csum: int,
                 payload: memoryview) -> None:
        self.sport = sport
        self.dport = dport
        self.length = length
        self.csum = csum
        self.payload = payload

    def __repr__(self) -> str:
        return f"<UDP {self.sport}>{self.dport} len={self.length} csum={self.csum:#06x}>"


def parse(data: memoryview) -> UDPDatagram:
    """Parse in place. The length field must fit the IP payload (trailing bytes beyond it,
    e.g. Ethernet padding, are cut off)."""
    if len(data) < HDR_LEN:
        raise ParseError(f"UDP datagram too short ({len(data)} bytes)")
    sport, dport, length, csum = HDR.unpack_from(data, 0)
    if length < HDR_LEN or length > len(data):
        raise ParseError(f"bad UDP length {length} (have {len(data)})")
    return UDPDatagram(sport, dport, length, csum, data[HDR_LEN:length])


def emit_header(sport: int, dport: int, payload_len: int, csum: int = 0) -> bytearray:
    buf = bytearray(HDR_LEN)
    HDR.pack_into(buf, 0, sport, dport, HDR_LEN + payload_len, csum)
    return buf
